# -*- test-case-name: tests.test_log -*-
"""
Log files that rotate (C{[logging] rotate = daily | size | none}, with
L{twisted.python.logfile}), reopen on SIGUSR1, start each new file with a
header, and take lines into a buffer that is written on a short timer of the
injected clock (and when large, and on close): one write(2) per batch on the
reactor thread instead of one per line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from twisted.python import logfile

# How long a line may wait in the buffer, and how much may wait.
FLUSH_DELAY = 0.5
FLUSH_SIZE = 64 * 1024


class _HeaderMixin:
    """Writes C{header()} at the start of every new file after a rotation."""

    header: Callable[[], bytes] | None = None

    def rotate(self):
        """Rotate, then start the new file with the header."""
        super().rotate()  # type: ignore[misc]
        if self.header is not None:
            self.write(self.header())  # type: ignore[attr-defined]


class SizeLogFile(_HeaderMixin, logfile.LogFile):
    """A log file renamed to C{.1}, C{.2}, ... when it reaches its size."""


class DailyLogFile(_HeaderMixin, logfile.DailyLogFile):
    """
    A log file renamed to C{.YYYY_M_D} when the UTC date changes (IIS W3C
    files roll over at midnight UTC); the date comes from the injected clock.
    """

    clock = None

    def toDate(self, *args):
        """The UTC (year, month, day) of a Unix time, or of now by the clock."""
        when = args[0] if args else (self.clock.seconds() if self.clock else time.time())
        return time.gmtime(when)[:3]


class LogWriter:
    """
    Buffered lines into a rotating file.

    @param rotate: C{daily}, C{size} or C{none}.
    @param rotate_size: the size that starts a new file with C{size}.
    @param header: makes the bytes every new (empty) file starts with, or None.
    """

    def __init__(self, path: str, clock, rotate: str = "none", rotate_size: int = 0,
                 header: Callable[[], bytes] | None = None):
        self.path = path
        self.clock = clock
        self.rotate = rotate
        self.rotate_size = rotate_size
        self.header = header
        self._file: logfile.BaseLogFile | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._timer = None

    def open(self) -> None:
        """Open (append to) the file, with the header when it is empty."""
        if self._file is not None:
            return
        if self.rotate == "daily":
            opened = DailyLogFile.fromFullPath(self.path)
            opened.clock = self.clock
        else:
            length = self.rotate_size if self.rotate == "size" else None
            opened = SizeLogFile.fromFullPath(self.path, rotateLength=length)
        opened.header = self.header
        self._file = opened
        self._start_file()

    def _start_file(self) -> None:
        if self.header is not None and os.path.getsize(self.path) == 0:
            self._file.write(self.header())

    def write(self, line: bytes) -> None:
        """Add one line (without its newline) to the buffer."""
        self._buffer.append(line + b"\n")
        self._buffered += len(line) + 1
        if self._buffered >= FLUSH_SIZE:
            self.flush()
        elif self._timer is None:
            self._timer = self.clock.callLater(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Write what the buffer holds now."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._buffer or self._file is None:
            return
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self._file.write(data)

    def reopen(self) -> None:
        """After an outside rename (logrotate): go on in a new file at C{path}."""
        self.flush()
        if self._file is not None:
            self._file.reopen()
            self._start_file()

    def close(self) -> None:
        """Write the buffer and close the file."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
