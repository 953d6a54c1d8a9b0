# -*- test-case-name: tests.test_source -*-
"""
Message data as delivery agents read it: from the queue file on disk, or from
memory for a small message that has not been written anywhere yet. Agents open
it and read it in chunks; nothing hands a whole message around as one C{bytes}
between the parts.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import BinaryIO

from zope.interface import Attribute, Interface, implementer

from smtpd.mail.lineends import LineEnds


# How much of a message is read at a time.
CHUNK_SIZE = 65536

# The most of a header section L{read_head} returns.
HEAD_LIMIT = 1 << 20


class IMessageSource(Interface):
    """The RFC 5322 data of one message (CRLF line endings), readable many times."""

    size = Attribute("The size of the data in octets.")

    def open() -> BinaryIO:
        """
        A new binary file object positioned at the start of the data; the
        caller reads it (in chunks) and closes it. Blocking for a file on disk:
        call it off the reactor thread, or read small chunks.
        """


@implementer(IMessageSource)
class FileSource:
    """The data in a file (a queue data file)."""

    def __init__(self, path: str, size: int | None = None):
        self.path = path
        self.size = os.path.getsize(path) if size is None else size

    def open(self) -> BinaryIO:
        """The file, opened for reading."""
        return open(self.path, "rb")

    def __repr__(self) -> str:
        return f"FileSource({self.path!r}, {self.size})"


@implementer(IMessageSource)
class BytesSource:
    """The data held in memory (a small message, a report being built)."""

    def __init__(self, data: bytes):
        self._data = bytes(data)
        self.size = len(self._data)

    def open(self) -> BinaryIO:
        """A file object over the data."""
        return io.BytesIO(self._data)

    def held_data(self) -> bytes:
        """The data (held in memory: reading it never blocks)."""
        return self._data

    def __repr__(self) -> str:
        return f"BytesSource({self.size} octets)"


def held_data(source: IMessageSource) -> bytes | None:
    """
    The data of C{source} when it is held in memory (reading it costs no
    disk access, so it may be read on the reactor thread), else L{None}.
    """
    held = getattr(source, "held_data", None)
    return held() if held is not None else None


def read_all(source: IMessageSource) -> bytes:
    """The whole data of C{source}: only for small messages and for tests."""
    with source.open() as f:
        return f.read()


def read_chunks(source: IMessageSource, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """
    The data of C{source} in pieces of at most C{size} octets (blocking for
    a file: iterate off the reactor thread).
    """
    with source.open() as f:
        while chunk := f.read(size):
            yield chunk


def read_head(source: IMessageSource, limit: int = HEAD_LIMIT) -> bytes:
    """
    The header section of the data of C{source} with CRLF line endings, up
    to and including the line end before the blank line (at most C{limit}
    octets, cut after a whole line); the body is not read.
    """
    converter = LineEnds(b"\r\n")
    head = bytearray()
    for chunk in read_chunks(source):
        start = max(0, len(head) - 3)
        head += converter.feed(chunk)
        if head.startswith(b"\r\n"):
            return b""
        end = head.find(b"\r\n\r\n", start)
        if end >= 0:
            return bytes(head[: end + 2])
        if len(head) >= limit:
            break
    else:
        head += converter.finish()
    if len(head) > limit:
        del head[head.rfind(b"\r\n", 0, limit) + 2 :]
    return bytes(head)
