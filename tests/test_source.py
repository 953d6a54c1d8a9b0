# -*- test-case-name: tests.test_source -*-
"""Message sources: the same data from a file or from memory, readable again and again."""

from __future__ import annotations

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smtpd.mail.source import BytesSource, FileSource, IMessageSource, read_all


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
