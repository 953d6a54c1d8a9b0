# -*- test-case-name: tests.test_client -*-
"""
What the outbound SMTP client puts on the wire and makes of what comes back:
the transaction to carry, the command lines (with SIZE, BODY and the RFC 3461
DSN parameters), the dot-stuffed DATA stream or the BDAT chunks, and replies turned into one
printable line and an RFC 3463 status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from smtpd.mail.address import is_mailbox, is_utf8_mailbox
from smtpd.mail.envelope import Recipient
from smtpd.mail.intl import addr_xtext, ascii_address, unitext
from smtpd.mail.lineends import LineEnds
from smtpd.mail.source import IMessageSource

# Longest reply text kept for a status (a reply may be many lines).
MAX_REPLY = 900

_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")


class Reply(NamedTuple):
    """One complete reply: its code, as one line (code first), and its lines' texts."""

    code: int
    text: str
    lines: list[bytes]


class SessionError(Exception):
    """
    The session with one host failed as a whole, before or outside any
    recipient's own answer: no connection, a refusing greeting, EHLO or MAIL
    rejected, TLS or AUTH impossible, the connection lost or timed out.

    @ivar code: the reply code (real, or synthesised: 451 for a local
        diagnosis such as a refused connection).
    @ivar status: the RFC 3463 status.
    @ivar reply: a one-line reply text, code first.
    @ivar stale: the failure hit a reused connection before MAIL was
        accepted: the same host may well work on a fresh connection.
    @ivar final: the host refused the transaction itself (a 5xx to MAIL), or
        no host could take it as it is: the other hosts of the route are
        not tried.
    @ivar tls_failure: TLS itself failed (STARTTLS refused, or the
        handshake): the same host may work without TLS.
    @ivar tls_result: for a TLS problem, its RFC 8460 result type
        (L{smtpd.delivery.tlsoutcome}), else "".
    """

    def __init__(self, code: int, status: str, reply: str, stale: bool = False,
                 final: bool = False, tls_failure: bool = False, tls_result: str = ""):
        super().__init__(reply)
        self.code = code
        self.status = status
        self.reply = reply
        self.stale = stale
        self.final = final
        self.tls_failure = tls_failure
        self.tls_result = tls_result

    @property
    def permanent(self) -> bool:
        """Whether no retry will cure it."""
        return self.code >= 500


def refusal(code: int, reply: str) -> SessionError:
    """The error for a refusing reply C{reply} (code first); not 4xx/5xx is a protocol error."""
    if not 400 <= code < 600:
        return SessionError(451, "4.5.0", f"451 4.5.0 unexpected reply: {reply}")
    return SessionError(code, enhanced_status(code, reply), reply)


@dataclass(frozen=True)
class OutboundMessage:
    """
    One mail transaction to carry.

    @ivar sender: the reverse-path without angle brackets ("" for C{<>}).
    @ivar recipients: the recipients, with their RFC 3461 NOTIFY and ORCPT.
    @ivar source: the message (header and body), CRLF line endings, an
        L{IMessageSource} read in chunks.
    @ivar ret: RFC 3461 RET or "".
    @ivar envid: RFC 3461 ENVID (decoded) or "".
    @ivar eight_bit: whether the message needs BODY=8BITMIME.
    @ivar binary: a BODY=BINARYMIME message (RFC 3030): it goes only by BDAT,
        byte for byte, to a host that offers BINARYMIME and CHUNKING.
    @ivar smtputf8: the envelope or the header needs SMTPUTF8 (RFC 6531): it
        goes only to a host that offers it, with the parameter.
    @ivar requiretls: RFC 8689 REQUIRETLS: only over verified TLS, to hosts
        that offer REQUIRETLS (the parameter is passed on).
    @ivar tls_optional: RFC 8689 5 C{TLS-Required: No}: recipient-side TLS
        policies (MTA-STS, DANE) do not apply.
    @ivar tls_report: the message is a TLS report: the sessions that carry it
        are not counted for TLS reporting (RFC 8460 5.3).
    """

    sender: str
    recipients: tuple[Recipient, ...]
    source: IMessageSource
    ret: str = ""
    envid: str = ""
    eight_bit: bool = False
    binary: bool = False
    smtputf8: bool = False
    requiretls: bool = False
    tls_optional: bool = False
    tls_report: bool = False


class DotStuffer:
    """
    Turns message data into an SMTP DATA stream (RFC 5321 4.5.2), a chunk at a
    time: every line ends in CRLF (a bare CR or LF becomes CRLF), a line that
    starts with "." gets another one, wherever the chunks are cut, and the
    stream ends with CRLF "." CRLF.
    """

    def __init__(self) -> None:
        self._line_ends = LineEnds(b"\r\n")
        self._line_start = True

    def feed(self, chunk: bytes) -> bytes:
        """The DATA stream for the next piece of the message."""
        text = self._line_ends.feed(chunk)
        if not text:
            return b""
        if self._line_start and text.startswith(b"."):
            text = b"." + text
        text = text.replace(b"\r\n.", b"\r\n..")
        self._line_start = text.endswith(b"\r\n")
        return text

    def finish(self) -> bytes:
        """The end of the stream: a CRLF when the message lacks one, then ".CRLF"."""
        held = self._line_ends.finish()
        tail = b"\r\n" if held or not self._line_start else b""
        self._line_start = True
        return tail + b".\r\n"


class BdatChunker:
    """
    Turns message data into BDAT chunks (RFC 3030), a piece at a time: each
    piece, its line ends made CRLF as for DATA, after a C{BDAT <n>} command
    with its exact size; no dot-stuffing. The last chunk carries C{LAST}
    (C{BDAT 0 LAST} when nothing is left), after a final CRLF when the message
    lacks one. With C{binary} (BINARYMIME) every octet goes as it is: no line
    end is touched or added, and the last chunk is C{BDAT 0 LAST}.
    """

    def __init__(self, binary: bool = False) -> None:
        self._line_ends = LineEnds(b"\r\n")
        self._line_start = True
        self._binary = binary

    def feed(self, chunk: bytes) -> bytes:
        """The BDAT command and chunk for the next piece (b"" when nothing to send yet)."""
        if self._binary:
            return b"BDAT %d\r\n" % len(chunk) + chunk if chunk else b""
        text = self._line_ends.feed(chunk)
        if not text:
            return b""
        self._line_start = text.endswith(b"\r\n")
        return b"BDAT %d\r\n" % len(text) + text

    def whole(self, data: bytes) -> bytes:
        """
        All of a message held in memory as one chunk, C{BDAT <n> LAST}: the
        same octets as L{feed} and L{finish} would send in their chunks.
        """
        if self._binary:
            return b"BDAT %d LAST\r\n" % len(data) + data
        text = self._line_ends.feed(data)
        if self._line_ends.finish() or (text and not text.endswith(b"\r\n")):
            text += b"\r\n"
        return b"BDAT %d LAST\r\n" % len(text) + text

    def finish(self) -> bytes:
        """The last chunk: C{BDAT <n> LAST} and what the message still needs."""
        if self._binary:
            return b"BDAT 0 LAST\r\n"
        held = self._line_ends.finish()
        tail = b"\r\n" if held or not self._line_start else b""
        self._line_start = True
        return b"BDAT %d LAST\r\n" % len(tail) + tail


def dot_stuff(data: bytes) -> bytes:
    """The whole DATA stream for C{data}, final dot line included."""
    stuffer = DotStuffer()
    return stuffer.feed(data) + stuffer.finish()


def xtext(value: str) -> str:
    """RFC 3461 xtext: C{+}, C{=}, controls and non-ASCII as C{+HH}."""
    out = []
    for char in value:
        if 33 <= ord(char) <= 126 and char not in "+=":
            out.append(char)
        else:
            out.extend(f"+{b:02X}" for b in char.encode("utf-8"))
    return "".join(out)


def reply_text(code: int, lines: list[bytes] | bytes | str | None) -> str:
    """A reply as one printable line, code first: C{"550 5.1.1 no such user"}."""
    if isinstance(lines, list):
        lines = b"\n".join(lines)
    if isinstance(lines, bytes):
        lines = lines.decode("utf-8", "replace")
    text = " ".join(line.strip() for line in (lines or "").splitlines())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    return f"{code} {text}".strip()[:MAX_REPLY]


def enhanced_status(code: int, reply: str) -> str:
    """
    The RFC 3463 status in C{reply} (code first) when it agrees with C{code},
    else the generic one of its class (C{"4.0.0"}).
    """
    text = reply[4:] if reply[:3] == str(code) else reply
    match = _ENHANCED.match(text)
    if match and match.group(1) == str(code)[0]:
        return match.group(0)
    if 200 <= code < 600:
        return f"{code // 100}.0.0"
    return "4.0.0"


def safe_address(address: str, smtputf8: bool = False) -> bool:
    """
    Whether C{address} can go on a command line: printable ASCII without
    spaces, or a mailbox whose quoted local part holds them
    (C{"john smith"@example.org}, legal and sent as received); with
    C{smtputf8} a UTF-8 mailbox too (RFC 6531 3.3); without it one whose
    only non-ASCII part is the domain (sent as A-labels).
    """
    if not address.isascii():
        if smtputf8:
            return is_utf8_mailbox(address)
        address = ascii_address(address) or ""
        if not address:
            return False
    if not address.isprintable():
        return False
    return " " not in address or is_mailbox(address)


def wire_address(address: str, smtputf8: bool) -> str:
    """
    C{address} as it goes in MAIL or RCPT: as it is with SMTPUTF8, else its
    internationalized domain in A-labels (RFC 6531 3.7: U-labels only when
    SMTPUTF8 is used).
    """
    return address if smtputf8 else (ascii_address(address) or address)


def mail_command(message: OutboundMessage, size: int, extensions: dict[str, str]) -> bytes:
    """The MAIL command for C{message}, with the parameters the host offers."""
    params = []
    if "SIZE" in extensions:
        params.append(f"SIZE={size}")
    if message.binary:
        params.append("BODY=BINARYMIME")
    elif message.eight_bit and "8BITMIME" in extensions:
        params.append("BODY=8BITMIME")
    if message.smtputf8:
        params.append("SMTPUTF8")
    if "DSN" in extensions:
        if message.ret:
            params.append(f"RET={message.ret.upper()}")
        if message.envid:
            params.append(f"ENVID={xtext(message.envid)}")
    if message.requiretls and "REQUIRETLS" in extensions:
        params.append("REQUIRETLS")
    sender = wire_address(message.sender, message.smtputf8)
    return " ".join([f"MAIL FROM:<{sender}>"] + params).encode("utf-8")


def rcpt_command(recipient: Recipient, extensions: dict[str, str],
                 smtputf8: bool = False) -> bytes:
    """The RCPT command for C{recipient}, with DSN parameters when the host offers DSN."""
    params = []
    if "DSN" in extensions:
        if recipient.notify:
            params.append("NOTIFY=" + ",".join(n.upper() for n in recipient.notify))
        kind, semi, original = recipient.orcpt.partition(";")
        if semi and kind.lower() == "utf-8":
            # RFC 6533 3: unitext with SMTPUTF8, else its 7-bit form.
            params.append(f"ORCPT=utf-8;{unitext(original) if smtputf8 else addr_xtext(original)}")
        elif semi and _ADDR_TYPE.match(kind):
            # RFC 3461 4.2: the address is xtext on the wire.
            params.append(f"ORCPT={kind};{xtext(original)}")
    address = wire_address(recipient.address, smtputf8)
    return " ".join([f"RCPT TO:<{address}>"] + params).encode("utf-8")


def parse_extensions(lines: list[bytes]) -> dict[str, str]:
    """The EHLO keywords (upper case) and their parameters, from the reply lines."""
    extensions = {}
    for line in lines[1:]:
        keyword, _, value = line.strip().partition(b" ")
        extensions[keyword.upper().decode("ascii", "replace")] = (
            value.strip().decode("ascii", "replace"))
    return extensions
