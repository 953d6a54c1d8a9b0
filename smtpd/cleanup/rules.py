# -*- test-case-name: tests.test_cleanup -*-
"""
The rules one message's data must keep, checked while it streams in, in
chunks of any size (the data as the client meant it: dot-unstuffed):

* size: C{[messages] max_message_size} and what is left of the session's
  C{max_session_size} (C{552 5.3.4});
* lines: at most 998 octets before CRLF (RFC 5321 4.5.3.1.6; C{500 5.5.2});
* bare CR or LF, the stuff of SMTP smuggling: refused (C{550 5.6.0}) or made
  CRLF, per C{[messages] bare_newlines};
* hops: C{Received:} fields in the header section beyond C{max_hop_count}
  (RFC 5321 6.3; C{554 5.4.6}).

A C{BODY=BINARYMIME} message (RFC 3030 3, only by BDAT) is binary data: the
line length and bare CR/LF rules do not apply to it and nothing in it is
converted (a NUL, a bare CR or LF is kept as it came); size and hops still
count.

Only counters and a few octets of state are kept, whatever the message size.
"""

from __future__ import annotations

import re

from smtpd.cleanup.interfaces import MessageRefused

MAX_LINE = 998 + 1  # octets before LF: the line and its CR
_NEWLINE = re.compile(rb"\r\n|\r|\n")
_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
_LINE_START_KEEP = 16  # octets of an unfinished header line kept: "received:" fits


class MessageRules:
    """
    The streaming checks of one message.

    @param max_size: the largest message allowed, 0 for no limit.
    @param room: what the session may still send, L{None} for no limit.
    @param normalize: make bare CR and LF into CRLF instead of refusing.
    @param max_hops: the most C{Received:} fields allowed.
    @param binary: BINARYMIME data: no line rules, nothing converted.
    """

    def __init__(self, max_size: int, room: int | None, normalize: bool, max_hops: int,
                 binary: bool = False):
        self.size = 0
        self._binary = binary
        self._max_size = max_size
        self._room = room
        self._normalize = normalize
        self._max_hops = max_hops
        self._long_line = False
        self._line = 0
        self._cr = self._lf = self._crlf = 0
        self._last_cr = False
        self._held = b""
        self._in_header = True
        self._head = b""
        self.hops = 0

    @property
    def hopeless(self) -> bool:
        """Whether the message will be refused whatever follows (keep nothing)."""
        return (
            (self._max_size and self.size > self._max_size)
            or (self._room is not None and self.size > self._room)
            or self._long_line
            or self._lf != self._crlf
            or self._cr - self._last_cr != self._crlf
        )

    def feed(self, chunk: bytes) -> bytes:
        """Check C{chunk}; returns the octets to keep (normalised when asked)."""
        if self._binary:
            self.size += len(chunk)
            if self._in_header and chunk:
                self._count_hops(chunk)
            return chunk
        if self._normalize:
            chunk = self._normalized(chunk)
        elif chunk:
            self._count_newlines(chunk)
        if chunk:
            self.size += len(chunk)
            self._check_lines(chunk)
            if self._in_header:
                self._count_hops(chunk)
        return chunk

    def finish(self) -> bytes:
        """The end of the data: octets still held back (a final bare CR)."""
        if not self._held:
            return b""
        self._held = b""
        return self.feed(b"\r\n")

    def refusal(self) -> MessageRefused | None:
        """Why the complete message must be refused, or L{None}."""
        if self._max_size and self.size > self._max_size:
            return MessageRefused(552, "5.3.4", "Message size exceeds fixed maximum message size")
        if self._cr != self._crlf or self._lf != self._crlf:
            return MessageRefused(550, "5.6.0", "Error: bare CR or LF in message data")
        if self._long_line:
            return MessageRefused(500, "5.5.2", "Error: line too long in message data")
        if self._room is not None and self.size > self._room:
            return MessageRefused(552, "5.3.4", "Session size limit exceeded")
        if self.hops > self._max_hops:
            return MessageRefused(554, "5.4.6", "Error: too many hops")
        return None

    def _count_newlines(self, chunk: bytes) -> None:
        crlf = chunk.count(b"\r\n")
        if self._last_cr and chunk[0] == 0x0A:
            crlf += 1
        self._crlf += crlf
        self._cr += chunk.count(b"\r")
        self._lf += chunk.count(b"\n")
        self._last_cr = chunk[-1] == 0x0D

    def _normalized(self, chunk: bytes) -> bytes:
        data = self._held + chunk
        self._held = b""
        if data.endswith(b"\r"):
            data, self._held = data[:-1], b"\r"
        crlf = data.count(b"\r\n")
        if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
            data = _NEWLINE.sub(b"\r\n", data)
        return data

    def _check_lines(self, chunk: bytes) -> None:
        if self._long_line:
            return
        first = chunk.find(b"\n")
        if first < 0:
            self._line += len(chunk)
            self._long_line = self._line > MAX_LINE
            return
        last = chunk.rfind(b"\n")
        if self._line + first > MAX_LINE:
            self._long_line = True
        elif last - first > MAX_LINE + 1:
            middle = chunk[first + 1 : last]
            self._long_line = max(map(len, middle.split(b"\n"))) > MAX_LINE
        self._line = len(chunk) - last - 1
        self._long_line = self._long_line or self._line > MAX_LINE

    def _count_hops(self, chunk: bytes) -> None:
        work = self._head + chunk
        end = (b"\n" + work).find(b"\n\r\n")
        if end >= 0:
            self._in_header = False
            self._head = b""
            self.hops += len(_RECEIVED.findall(work, 0, end))
            return
        last = work.rfind(b"\n") + 1
        self.hops += len(_RECEIVED.findall(work, 0, last))
        self._head = work[last : last + _LINE_START_KEEP]
