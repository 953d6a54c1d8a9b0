# -*- test-case-name: tests.test_source -*-
"""Message sources: the same data from a file or from memory, readable again and again."""

from __future__ import annotations

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smtpd.mail.source import (
    BytesSource,
    FileSource,
    IMessageSource,
    read_all,
    read_chunks,
    read_head,
)


class SourceTests(unittest.TestCase):
    """L{FileSource} and L{BytesSource}."""

    def test_file_source(self):
        """A file source reports the file's size and reads it from the start each time."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"Subject: x\r\n\r\nbody\r\n")
        source = FileSource(path)
        verifyObject(IMessageSource, source)
        self.assertEqual(source.size, 20)
        with source.open() as f:
            self.assertEqual(f.read(9), b"Subject: ")
        self.assertEqual(read_all(source), b"Subject: x\r\n\r\nbody\r\n")

    def test_bytes_source(self):
        """A bytes source copies its data: later changes to the buffer do not leak in."""
        buffer = bytearray(b"abc")
        source = BytesSource(buffer)
        verifyObject(IMessageSource, source)
        buffer[0:1] = b"X"
        self.assertEqual(source.size, 3)
        self.assertEqual(read_all(source), b"abc")
        self.assertEqual(read_all(source), b"abc")

    def test_read_chunks(self):
        """read_chunks gives the data in pieces of at most the size asked."""
        source = BytesSource(b"x" * 10)
        self.assertEqual([len(c) for c in read_chunks(source, 4)], [4, 4, 2])

    def test_read_head(self):
        """
        read_head gives the header section with CRLF endings, without the
        blank line and the body, whatever the line endings and the cut.
        """
        for data in (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\nB: 2\n\nbody\n",
                     b"A: 1\rB: 2\r\rbody"):
            self.assertEqual(read_head(BytesSource(data)), b"A: 1\r\nB: 2\r\n")
        self.assertEqual(read_head(BytesSource(b"\r\nbody only\r\n")), b"")
        self.assertEqual(read_head(BytesSource(b"A: 1\r\nB: 2")), b"A: 1\r\nB: 2")

    def test_read_head_bounded(self):
        """A header section without end is cut after a whole line at the limit."""
        data = b"X-Long: " + b"y" * 100 + b"\r\n"
        head = read_head(BytesSource(data * 100_000), limit=1000)
        self.assertEqual(head, data * (1000 // len(data)))
