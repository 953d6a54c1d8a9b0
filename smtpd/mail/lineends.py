# -*- test-case-name: tests.test_lineends -*-
"""
Line endings: one converter for every part that rewrites them, whole or a
chunk at a time (a CR at the end of one chunk and the LF that starts the next
are one line ending).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class LineEnds:
    """
    Makes every line ending (CRLF, bare CR, bare LF) C{end}, over data given
    in pieces cut anywhere: L{feed} each piece, then L{finish}.

    @param end: the line ending wanted (C{b"\\r\\n"} or C{b"\\n"}).
    """

    def __init__(self, end: bytes):
        self.end = end
        self._held_cr = False

    def feed(self, chunk: bytes) -> bytes:
        """The converted text for the next piece of the data."""
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            # It may be the first half of a CRLF that the next piece completes.
            chunk = chunk[:-1]
            self._held_cr = True
        # Three passes in C, much faster than a regular expression's
        # substitution: CRLF and bare CR become LF, then LF becomes the end.
        text = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return text if self.end == b"\n" else text.replace(b"\n", self.end)

    def finish(self) -> bytes:
        """What is still held at the end of the data (a final bare CR, converted)."""
        held, self._held_cr = self._held_cr, False
        return self.end if held else b""


def line_ends(data: bytes, end: bytes) -> bytes:
    """C{data} with every line ending (CRLF, bare CR, bare LF) made C{end}."""
    converter = LineEnds(end)
    return converter.feed(data) + converter.finish()


def convert_chunks(chunks: Iterable[bytes], end: bytes) -> Iterator[bytes]:
    """The pieces C{chunks} with every line ending made C{end}, piece by piece."""
    converter = LineEnds(end)
    for chunk in chunks:
        if text := converter.feed(chunk):
            yield text
    if tail := converter.finish():
        yield tail
