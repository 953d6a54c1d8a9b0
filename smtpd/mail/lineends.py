# -*- test-case-name: tests.test_local -*-
"""Line endings: one converter for every part that rewrites them."""

from __future__ import annotations


def line_ends(data: bytes, end: bytes) -> bytes:
    """C{data} with every line ending (CRLF, bare CR, bare LF) made C{end}."""
    joined = end.join(data.splitlines())
    return joined + end if data[-1:] in (b"\r", b"\n") else joined
