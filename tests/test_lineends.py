"""
Tests for L{smtpd.mail.lineends}: the one line-ending converter, whole and a
chunk at a time.
"""

from __future__ import annotations

import itertools
import re

from twisted.trial import unittest

from smtpd.mail.lineends import LineEnds, convert_chunks, line_ends

_ANY_END = re.compile(rb"\r\n|\r|\n")


class LineEndsTests(unittest.TestCase):
    """L{LineEnds} and L{convert_chunks}."""

    def test_every_cut(self) -> None:
        """
        Cutting the data anywhere (a CR at the end of one piece and its LF at
        the start of the next included) gives the same text as converting
        it whole.
        """
        data = b"a\r\nb\rc\nd\r\r\ne\n\rf\r"
        for end in (b"\r\n", b"\n"):
            whole = _ANY_END.sub(end, data)
            self.assertEqual(line_ends(data, end), whole)
            for i, j in itertools.combinations(range(len(data) + 1), 2):
                pieces = [data[:i], data[i:j], data[j:]]
                self.assertEqual(b"".join(convert_chunks(pieces, end)), whole, (i, j, end))

    def test_final_cr(self) -> None:
        """A bare CR at the very end is a line ending, given out by finish()."""
        converter = LineEnds(b"\n")
        self.assertEqual(converter.feed(b"x\r"), b"x")
        self.assertEqual(converter.finish(), b"\n")
        self.assertEqual(converter.finish(), b"")

    def test_no_final_line_end_added(self) -> None:
        """Data that does not end in a line ending gets none."""
        self.assertEqual(line_ends(b"a\nb", b"\r\n"), b"a\r\nb")
