# -*- test-case-name: tests.test_dotstream -*-
"""
SMTP's transparency (RFC 5321 4.5.2) undone as the data streams in: finds the
CRLF.CRLF terminator and removes the stuffed leading dots, across chunk
boundaries, holding back at most four octets between chunks.
"""

from __future__ import annotations

_EOD = b"\r\n.\r\n"
# Suffixes of a chunk that may be the start of a terminator or of a stuffed
# line: held back until the next chunk shows what they are.
_PARTIAL = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")


class DotDecoder:
    """
    Decodes one message's DATA. Only CRLF.CRLF ends it: a dot line after a
    bare LF does not (SMTP smuggling).
    """

    def __init__(self) -> None:
        # The data starts at the start of a line: as if after a CRLF, which
        # lets one search find a terminator on the very first line.
        self._held = b"\r\n"
        self._strip = True

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        """
        Decode the next C{data}: the message octets it completes, and, once
        the terminator is found, the input after it (else L{None}).
        """
        search = self._held + data if self._held else data
        end = search.find(_EOD)
        if end >= 0:
            body, rest = search[: end + 2], search[end + 5 :]
            self._held = b""
        else:
            keep = 0
            for partial in _PARTIAL:
                if search.endswith(partial):
                    keep = len(partial)
                    break
            cut = len(search) - keep
            body, rest, self._held = search[:cut], None, search[cut:]
        if not body:
            return b"", rest
        out = body.replace(b"\r\n.", b"\r\n")
        if self._strip:
            self._strip = False
            out = out[2:]
        return out, rest
