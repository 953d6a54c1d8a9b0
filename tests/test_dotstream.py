"""L{smtpd.inbound.dotstream.DotDecoder}: the terminator and stuffed dots across chunks."""

from __future__ import annotations

from twisted.trial import unittest

from smtpd.inbound.dotstream import DotDecoder

WIRE = b"Subject: x\r\n\r\n..leading dot\r\n..\r\nmiddle\r\n...\r\nend\r\n.\r\nNOOP\r\n"
MESSAGE = b"Subject: x\r\n\r\n.leading dot\r\n.\r\nmiddle\r\n..\r\nend\r\n"


def decode(chunks: list[bytes]) -> tuple[bytes, bytes | None]:
    decoder = DotDecoder()
    out = b""
    for i, chunk in enumerate(chunks):
        body, rest = decoder.feed(chunk)
        out += body
        if rest is not None:
            return out, rest + b"".join(chunks[i + 1 :])
    return out, None


class DotDecoderTests(unittest.TestCase):
    """Decoding gives the same message whatever the chunking."""

    def test_whole(self):
        """One chunk: the message unstuffed, the input after the terminator returned."""
        self.assertEqual(decode([WIRE]), (MESSAGE, b"NOOP\r\n"))

    def test_every_split(self):
        """Split at every position, and one octet at a time: the same result."""
        for i in range(len(WIRE) + 1):
            self.assertEqual(decode([WIRE[:i], WIRE[i:]]), (MESSAGE, b"NOOP\r\n"), i)
        self.assertEqual(decode([bytes([b]) for b in WIRE]), (MESSAGE, b"NOOP\r\n"))

    def test_empty_message(self):
        """A terminator on the first line is an empty message."""
        self.assertEqual(decode([b".\r\nQUIT\r\n"]), (b"", b"QUIT\r\n"))

    def test_bare_lf_dot_is_not_an_end(self):
        """LF.LF and LF.CRLF do not end the data (SMTP smuggling)."""
        out, rest = decode([b"a\n.\nb\n.\r\nc\r\n"])
        self.assertIsNone(rest)
        self.assertEqual(out, b"a\n.\nb\n.\r\nc")
