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
from typing import BinaryIO

from zope.interface import Attribute, Interface, implementer


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

    def __repr__(self) -> str:
        return f"BytesSource({self.size} octets)"


def read_all(source: IMessageSource) -> bytes:
    """The whole data of C{source}: only for small messages and for tests."""
    with source.open() as f:
        return f.read()
