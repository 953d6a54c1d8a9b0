# -*- test-case-name: tests.test_bounce -*-
"""
Delivery status notifications (RFC 3464): the bounce program of smtpd.

L{BounceBuilder} turns an envelope, some of its recipients and the original
message into a C{multipart/report; report-type=delivery-status} message, ready
to be queued from C{<>} to the envelope sender. The output is assembled by hand,
with CRLF line endings and no header folding other than our own, so that what is
queued is exactly what is meant; every value taken from the envelope or a remote
reply is reduced to printable ASCII first (no header injection through a reply).

For an internationalized message (SMTPUTF8, RFC 6531) the report is the RFC
6533 kind: C{report-type=global-delivery-status}, its status part
C{message/global-delivery-status} with C{utf-8} address types, the original
returned as C{message/global} or its header as C{message/global-headers};
values then keep their printable UTF-8 (controls still become C{?}).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone
from email.utils import format_datetime

from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.intl import addr_xtext, unitext

FAILED = "failed"
DELAYED = "delayed"
DELIVERED = "delivered"
RELAYED = "relayed"
ACTIONS = (FAILED, DELAYED, DELIVERED, RELAYED)

_SUBJECTS = {
    FAILED: "Undelivered Mail Returned to Sender",
    DELAYED: "Delayed Mail (still being retried)",
    DELIVERED: "Successful Mail Delivery Report",
    RELAYED: "Successful Mail Delivery Report",
}

# The Status field when a recipient has none of its own (RFC 3463 X.0.0).
_DEFAULT_STATUS = {FAILED: "5.0.0", DELAYED: "4.0.0", DELIVERED: "2.0.0", RELAYED: "2.0.0"}

_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")
_NEWLINES = re.compile(rb"\r\n|\r|\n")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_NOT_BCHAR = re.compile(r"[^0-9A-Za-z'()+_,./:=?-]")  # RFC 2046 5.1.1, minus space
_FIELD_LIMIT = 900  # characters of one field value: physical lines stay far below 998
_WIDTH = 78

_FAILED_TEXT = """\
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. {attached}

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message."""

_DELAYED_TEXT = """\
####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for {age}.
{until}"""

_SUCCESS_TEXT = """\
Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems."""


def clean(text: str, utf8: bool = False) -> str:
    """
    C{text} as one line of printable ASCII (with C{utf8}: printable UTF-8):
    line breaks and tabs become spaces, other control and (without C{utf8})
    non-ASCII characters become C{?}.
    """
    text = " ".join(text.replace("\t", " ").splitlines())
    if utf8:
        return "".join(c if c.isprintable() else "?" for c in text).strip()
    return _UNPRINTABLE.sub("?", text).strip()


def rfc5322_date(seconds: float) -> str:
    """An RFC 5322 date-time in UTC (C{Sat, 30 Nov 2024 03:40:00 +0000})."""
    return format_datetime(datetime.fromtimestamp(int(seconds), timezone.utc))


def format_age(seconds: float) -> str:
    """A duration for people: C{"45 minutes"}, C{"12 hours"}, C{"2 days"}."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            amount = round(seconds / size, 1)
            number = f"{amount:g}"
            return f"{number} {unit}" + ("" if number == "1" else "s")
    return f"{int(seconds)} seconds"


def has_8bit(data: bytes) -> bool:
    """Whether C{data} has any octet outside 7-bit ASCII."""
    return not data.isascii()


def _field(name: str, value: str, utf8: bool = False) -> str:
    """
    One header-style field C{name: value}, folded at spaces to about 78
    columns with CRLF + space (RFC 5322 2.2.3), the value capped in length.
    """
    words = clean(value, utf8)[:_FIELD_LIMIT].split(" ")
    lines = [f"{name}: {words[0]}"]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > _WIDTH and lines[-1].strip():
            lines.append(" " + word)
        else:
            lines[-1] += " " + word
    return "\r\n".join(lines)


def _wrap(text: str, indent: str = "    ") -> list[str]:
    """C{text} as lines of about 78 columns, continuation lines indented."""
    words = text.split(" ")
    lines = [words[0]]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > _WIDTH and lines[-1].strip():
            lines.append(indent + word)
        else:
            lines[-1] += " " + word
    return lines


def _crlf(data: bytes) -> bytes:
    """C{data} with every line ending (CRLF, bare CR, bare LF) made CRLF."""
    return _NEWLINES.sub(b"\r\n", data)


def split_headers(message: bytes) -> bytes:
    """The header section of C{message} (CRLF endings), without the blank line."""
    message = _crlf(message)
    if message.startswith(b"\r\n") or not message:
        return b""
    end = message.find(b"\r\n\r\n")
    headers = message if end < 0 else message[: end + 2]
    return headers if headers.endswith(b"\r\n") else headers + b"\r\n"


def _status(recipient: Recipient, action: str) -> str:
    """The RFC 3463 status to report for C{recipient}, consistent with C{action}."""
    status = recipient.status
    # A failure may carry a persistent transient status (4.4.7: expired).
    classes = "45" if action == FAILED else _DEFAULT_STATUS[action][0]
    if _STATUS.match(status) and status[0] in classes:
        return status
    return _DEFAULT_STATUS[action]


def _remote_host(recipient: Recipient) -> str:
    """The DNS name of the remote MTA (C{"mx.example.com [192.0.2.1]"} -> name)."""
    parts = clean(recipient.remote_mta).split()
    return parts[0] if parts else ""


def _orcpt(value: str, utf8: bool) -> str:
    """An ORCPT value as an Original-Recipient field value: C{type; address}."""
    kind, sep, address = value.partition(";")
    if sep and kind.lower() == "utf-8":
        return "utf-8; " + (unitext(address) if utf8 else addr_xtext(address))
    kind, sep, address = clean(value).partition(";")
    if not sep:
        return f"rfc822; {kind.strip()}"
    return f"{kind.strip()}; {address.strip()}"


def _address_field(address: str, utf8: bool) -> str:
    """
    A recipient as a Final-Recipient value: C{rfc822} for ASCII, else
    the C{utf-8} type of RFC 6533 3 (unitext in a global report, its 7-bit
    xtext form in a plain one).
    """
    if address.isascii():
        return f"rfc822; {address}"
    return "utf-8; " + (unitext(address) if utf8 else addr_xtext(address))


class BounceBuilder:
    """
    Builds RFC 3464 delivery status notifications: non-delivery reports,
    delay warnings and success reports, as the C{Mail Delivery System} of
    C{hostname}. Dates come from C{clock}.
    """

    def __init__(self, hostname: str, clock) -> None:
        self.hostname = clean(hostname)
        self.clock = clock

    def build(
        self,
        envelope: Envelope,
        recipients: list[Recipient],
        action: str,
        original: bytes,
        *,
        retry_until: float | None = None,
        utf8: bool = False,
    ) -> bytes:
        """
        A complete DSN message (CRLF line endings) about C{recipients} of
        C{envelope}, addressed to the envelope sender.

        @param action: C{"failed"}, C{"delayed"}, C{"delivered"} or C{"relayed"}
            (RFC 3464 2.3.3), the same for every recipient of this report.
        @param original: the original message; a failure report returns it
            whole when the sender asked for C{RET=FULL}, every other report
            returns its headers only (RFC 3461 4.3).
        @param retry_until: for C{"delayed"}: when delivery attempts end
            (the C{Will-Retry-Until} field).
        @param utf8: about an internationalized message: an RFC 6533
            global report.
        @raise ValueError: for an unknown C{action}.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown DSN action {action!r}")
        now = self.clock.seconds()
        # A BINARYMIME original cannot travel in a report: its header only.
        full = (action == FAILED and envelope.ret.upper() == "FULL"
                and envelope.body.upper() != "BINARYMIME")
        returned = _crlf(original) if full else split_headers(original)
        if returned and not returned.endswith(b"\r\n"):
            returned += b"\r\n"
        parts = [
            self._notification(envelope, recipients, action, full, retry_until, now, utf8),
            self._report(envelope, recipients, action, retry_until, utf8),
            self._returned(returned, full, action, utf8),
        ]
        boundary = self._boundary(envelope, now, parts)
        eight = has_8bit(returned)
        body = [b"This is a MIME-encapsulated message.\r\n"]
        for part in parts:
            body.append(b"\r\n--" + boundary.encode("ascii") + b"\r\n" + part)
        body.append(b"\r\n--" + boundary.encode("ascii") + b"--\r\n")
        headers = self._headers(envelope, action, boundary, eight, now, utf8)
        return headers + b"\r\n" + b"".join(body)

    def _headers(
        self, envelope: Envelope, action: str, boundary: str, eight: bool, now: float,
        utf8: bool,
    ) -> bytes:
        """The top-level header section, CRLF-terminated lines."""
        stamp = datetime.fromtimestamp(int(now), timezone.utc).strftime("%Y%m%d%H%M%S")
        message_id = f"<{stamp}.{clean(envelope.id)}.{secrets.token_hex(4)}@{self.hostname}>"
        lines = [
            f"From: Mail Delivery System <MAILER-DAEMON@{self.hostname}>",
            _field("To", envelope.sender, utf8),
            f"Subject: {_SUBJECTS[action]}",
            f"Date: {rfc5322_date(now)}",
            f"Message-ID: {message_id}",
            "MIME-Version: 1.0",
            "Auto-Submitted: auto-replied",  # RFC 3834 5: never answered automatically
            "Content-Type: multipart/report; "
            f"report-type={'global-delivery-status' if utf8 else 'delivery-status'};",
            f' boundary="{boundary}"',
            f"Content-Transfer-Encoding: {'8bit' if eight or utf8 else '7bit'}",
        ]
        return "".join(line + "\r\n" for line in lines).encode("utf-8")

    def _boundary(self, envelope: Envelope, now: float, parts: list[bytes]) -> str:
        """A MIME boundary (RFC 2046 5.1.1) that occurs in none of C{parts}."""
        base = _NOT_BCHAR.sub("_", f"{envelope.id}.{int(now)}/{self.hostname}")[:50]
        boundary = base
        while any(boundary.encode("ascii") in part for part in parts):
            boundary = f"{base}.{secrets.token_hex(6)}"
        return boundary

    def _notification(
        self,
        envelope: Envelope,
        recipients: list[Recipient],
        action: str,
        full: bool,
        retry_until: float | None,
        now: float,
        utf8: bool,
    ) -> bytes:
        """Part 1: the text/plain explanation for people."""
        if action == FAILED:
            attached = "It's attached below." if full else "Its headers are attached below."
            intro = _FAILED_TEXT.format(attached=attached)
        elif action == DELAYED:
            until = ""
            if retry_until is not None:
                until = f"It will be retried until {rfc5322_date(retry_until)}."
            intro = _DELAYED_TEXT.format(age=format_age(now - envelope.arrival), until=until)
        else:
            intro = _SUCCESS_TEXT
        lines = [f"This is the mail system at host {self.hostname}.", ""]
        lines += intro.rstrip("\n").split("\n")
        lines += ["", "                   The mail system"]
        for recipient in recipients:
            lines.append("")
            lines += _wrap(self._explain(envelope, recipient, action, now, utf8))
        text = "\r\n".join(lines)
        head = ("Content-Description: Notification\r\nContent-Type: text/plain; "
                f"charset={'utf-8' if utf8 else 'us-ascii'}\r\n")
        if utf8:
            head += "Content-Transfer-Encoding: 8bit\r\n"
        return (head + "\r\n" + text + "\r\n").encode("utf-8")

    def _explain(self, envelope: Envelope, recipient: Recipient, action: str, now: float,
                 utf8: bool = False) -> str:
        """One recipient's line of the human-readable part."""
        who = f"<{clean(recipient.address, utf8)[:_FIELD_LIMIT]}>:"
        reply = clean(recipient.last_reply, utf8)[:_FIELD_LIMIT]
        host = clean(recipient.remote_mta)[:_FIELD_LIMIT]
        if action in (DELIVERED, RELAYED):
            where = f"relayed to {host}" if host else "delivered to mailbox"
            return f"{who} {where}" + (f": {reply}" if reply else "")
        if recipient.status == "4.4.7":
            age = format_age(now - envelope.arrival)
            text = f"{who} delivery time expired: message undeliverable for {age}"
            return text + (f"; last reply: {reply}" if reply else "")
        if host and reply:
            return f"{who} host {host} said: {reply}"
        return f"{who} {reply or _status(recipient, action)}"

    def _report(
        self,
        envelope: Envelope,
        recipients: list[Recipient],
        action: str,
        retry_until: float | None,
        utf8: bool,
    ) -> bytes:
        """
        Part 2: the machine-readable message/delivery-status (RFC 3464 2),
        message/global-delivery-status for an internationalized message
        (RFC 6533 6.2: UTF-8 in its fields, sent 8bit).
        """
        blocks = [self._per_message(envelope)]
        for recipient in recipients:
            blocks.append(self._per_recipient(recipient, action, retry_until, utf8))
        head = "Content-Description: Delivery report\r\n"
        if utf8:
            head += ("Content-Type: message/global-delivery-status\r\n"
                     "Content-Transfer-Encoding: 8bit\r\n")
        else:
            head += "Content-Type: message/delivery-status\r\n"
        return (head + "\r\n" + "\r\n\r\n".join(blocks) + "\r\n").encode("utf-8")

    def _per_message(self, envelope: Envelope) -> str:
        """The per-message fields (RFC 3464 2.2)."""
        fields = [_field("Reporting-MTA", f"dns; {self.hostname}")]
        if envelope.envid:
            fields.append(_field("Original-Envelope-Id", envelope.envid))
        fields.append(_field("Arrival-Date", rfc5322_date(envelope.arrival)))
        return "\r\n".join(fields)

    def _per_recipient(self, recipient: Recipient, action: str, retry_until: float | None,
                       utf8: bool = False) -> str:
        """The per-recipient fields (RFC 3464 2.3, RFC 6533 3 for UTF-8 addresses)."""
        fields = []
        if recipient.orcpt:
            fields.append(_field("Original-Recipient", _orcpt(recipient.orcpt, utf8), utf8))
        fields.append(_field("Final-Recipient", _address_field(recipient.address, utf8), utf8))
        fields.append(f"Action: {action}")
        fields.append(f"Status: {_status(recipient, action)}")
        host = _remote_host(recipient)
        if host:
            fields.append(_field("Remote-MTA", f"dns; {host}"))
        if clean(recipient.last_reply):
            fields.append(_field("Diagnostic-Code", f"smtp; {recipient.last_reply}", utf8))
        if action == DELAYED and retry_until is not None:
            fields.append(_field("Will-Retry-Until", rfc5322_date(retry_until)))
        return "\r\n".join(fields)

    def _returned(self, returned: bytes, full: bool, action: str, utf8: bool = False) -> bytes:
        """
        Part 3: the original message (C{message/rfc822}) or its headers
        (C{text/rfc822-headers}); C{message/global} and
        C{message/global-headers} for an internationalized message (RFC 6532 3.7,
        RFC 6533 6.3).
        """
        what = "Undelivered Message" if action == FAILED else "Message"
        if full:
            kind = "message/global" if utf8 else "message/rfc822"
            head = f"Content-Description: {what}\r\nContent-Type: {kind}\r\n"
        else:
            kind = "message/global-headers" if utf8 else "text/rfc822-headers"
            head = f"Content-Description: {what} Headers\r\nContent-Type: {kind}\r\n"
        head += f"Content-Transfer-Encoding: {'8bit' if has_8bit(returned) else '7bit'}\r\n"
        return head.encode("ascii") + b"\r\n" + returned
