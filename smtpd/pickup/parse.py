# -*- test-case-name: tests.test_pickup -*-
"""
The envelope of a pickup file, from its header section (SPEC 4): leading
C{X-Sender:} / C{X-Receiver:} lines (removed), or else C{From:} and C{To:},
C{Cc:}, C{Bcc:} (C{Bcc:} removed from the copy sent). C{Date:} and
C{Message-ID:} are added when missing.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from email.utils import getaddresses

from smtpd.mail import address

# The header section must end within this many octets.
MAX_HEADER = 256 * 1024

_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"^[!-9;-~]+:", re.MULTILINE)


class PickupError(ValueError):
    """The file cannot be sent; the text says why (it goes into the C{.bdr})."""


@dataclass
class PickupEnvelope:
    """
    What a pickup file's header gives.

    @ivar sender: the reverse-path ("" for C{<>}).
    @ivar recipients: the forward-paths, in order, without duplicates.
    @ivar header: the header section to send, CRLF line endings, with its
        blank line: envelope lines and C{Bcc:} removed, missing fields added.
    @ivar body_offset: where the body starts in the file.
    """

    sender: str
    recipients: list[str]
    header: bytes
    body_offset: int


def header_end(head: bytes, complete: bool) -> tuple[int, int]:
    """
    Where the header section of C{head} (the file's first octets) ends:
    (end of the header, start of the body). C{complete}: C{head} is the whole
    file, which may have no body.

    @raise PickupError: when no end is found within L{MAX_HEADER}.
    """
    if head.startswith((b"\n", b"\r\n")):
        return 0, head.index(b"\n") + 1
    match = _END.search(head)
    if match is not None:
        return match.start(), match.end()
    if complete:
        return len(head), len(head)
    raise PickupError(f"no end of the header section within {MAX_HEADER} octets")


def split_fields(header: bytes) -> list[bytes]:
    """The fields of a header section, each with its continuation lines, endings CRLF."""
    fields: list[bytes] = []
    for line in header.splitlines():
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        elif line:
            if not _FIELD_START.match(line):
                raise PickupError(f"not a header field: {line[:60]!r}")
            fields.append(line)
    return fields


def field_name(field: bytes) -> str:
    """The lower-case name of one field."""
    return field.split(b":", 1)[0].strip().decode("ascii").lower()


def field_value(field: bytes) -> str:
    """The unfolded value of one field."""
    value = field.split(b":", 1)[1].decode("utf-8", "replace")
    return " ".join(value.split())


def mailbox(text: str, null_ok: bool) -> str:
    """One address as an envelope path, checked by the SMTP rules."""
    text = text.strip()
    path = text if text.startswith("<") else f"<{text}>"
    try:
        found, rest = address.parse_path(path, null_ok=null_ok)
    except address.AddressError as e:
        raise PickupError(f"bad address {text!r}: {e}") from None
    if rest:
        raise PickupError(f"bad address {text!r}: junk after address")
    return found


def parse(head: bytes, complete: bool, hostname: str, date: str) -> PickupEnvelope:
    """
    The envelope and the header to send of a file starting with C{head}.

    @param date: the C{Date:} value to add when missing.
    @raise PickupError: when it has no usable sender or recipient.
    """
    end, body = header_end(head, complete)
    fields = split_fields(head[:end])
    sender, recipients, fields = _envelope_lines(fields)
    if sender is None:
        sender, recipients, fields = _from_header(fields)
    names = {field_name(f) for f in fields}
    added = []
    if "date" not in names:
        added.append(f"Date: {date}".encode())
    if "message-id" not in names:
        added.append(f"Message-ID: <{secrets.token_hex(12)}@{hostname}>".encode())
    if not recipients:
        raise PickupError("no valid recipient")
    header = b"".join(f + b"\r\n" for f in added + fields) + b"\r\n"
    return PickupEnvelope(sender, _unique(recipients), header, body)


def _envelope_lines(fields: list[bytes]) -> tuple[str | None, list[str], list[bytes]]:
    """Leading X-Sender / X-Receiver lines (IIS): (sender or None, recipients, rest)."""
    sender, recipients, taken = None, [], 0
    for f in fields:
        name = field_name(f)
        if name == "x-sender":
            if sender is not None:
                raise PickupError("more than one X-Sender line")
            sender = mailbox(field_value(f), null_ok=True)
        elif name == "x-receiver":
            recipients.append(mailbox(field_value(f), null_ok=False))
        else:
            break
        taken += 1
    if taken and sender is None:
        raise PickupError("X-Receiver lines without an X-Sender line")
    return sender, recipients, fields[taken:]


def _from_header(fields: list[bytes]) -> tuple[str, list[str], list[bytes]]:
    """From gives the sender, To/Cc/Bcc the recipients; Bcc is removed."""
    sender = None
    recipients: list[str] = []
    kept = []
    for f in fields:
        name = field_name(f)
        if name == "from" and sender is None:
            found = [a for _, a in getaddresses([field_value(f)]) if a]
            if not found:
                raise PickupError("From has no address")
            sender = mailbox(found[0], null_ok=False)
        if name in ("to", "cc", "bcc"):
            for _, a in getaddresses([field_value(f)]):
                if a:
                    recipients.append(mailbox(a, null_ok=False))
        if name != "bcc":
            kept.append(f)
    if sender is None:
        raise PickupError("no X-Sender line and no From field")
    return sender, recipients, kept


def _unique(addresses: list[str]) -> list[str]:
    # parse_path lower-cases the domain; local parts keep their case.
    return list(dict.fromkeys(addresses))
