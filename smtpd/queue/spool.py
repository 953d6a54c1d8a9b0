# -*- test-case-name: tests.test_spool -*-
"""
A message being received (Postfix's cleanup writing its queue file): kept in
memory while it is small, spilled to a temporary file in the queue folder once
it passes a threshold, so that memory does not grow with the message.

The store commits a spilled spool by fsync and rename into C{<id>.eml} (no
copy); a spool that is never committed removes its temporary file when
discarded. Disk writes run off the reactor thread, one at a time; the writer is
told to pause (L{Spool.write} returns C{False}) while more than L{HIGH_WATER}
octets wait for the disk, and L{Spool.drained} fires when they have gone.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from typing import BinaryIO

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from smtpd.mail.source import IMessageSource
from smtpd.util import faults
from smtpd.util.durable import temp_name, unlink_quietly, write_file

# Below this a message stays in memory: the all-local fast path (4 KiB
# messages, bench/bench.py inbound) never touches a temporary file.
THRESHOLD = 128 * 1024
# Octets that may wait for the disk before the sender is paused.
HIGH_WATER = 256 * 1024
COPY_CHUNK = 64 * 1024


@implementer(IMessageSource)
class Spool:
    """
    The data of one message as it arrives; an L{IMessageSource} once
    L{finish} has fired.

    @param directory: where a large message spills (the queue folder, so that
        the commit is a rename).
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk work.
    @param threshold: the size beyond which the data goes to disk.
    """

    def __init__(self, directory: str, run_blocking: Callable[..., Deferred],
                 threshold: int = THRESHOLD):
        self.directory = directory
        self.size = 0
        self._run = run_blocking
        self._threshold = threshold
        self._memory: bytearray | None = bytearray()
        self._head = b""
        self.path: str | None = None
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._writing: Deferred | None = None
        self._waiters: list[Deferred] = []
        self._error: BaseException | None = None
        self._committed = False
        self._discarded = False

    @property
    def on_disk(self) -> bool:
        """Whether the data went to a file."""
        return self._memory is None

    def write(self, data: bytes) -> bool:
        """
        Append C{data}; C{False} when the caller should stop sending until
        L{drained} fires (the disk lags).
        """
        if self._discarded:
            return True
        self.size += len(data)
        if self._memory is not None:
            self._memory += data
            if len(self._memory) <= self._threshold:
                return True
            data, self._memory = bytes(self._memory), None
        self._pending.append(data)
        self._pending_size += len(data)
        self._kick()
        return self._pending_size < HIGH_WATER

    def drained(self) -> Deferred[None]:
        """Fires when the octets waiting for the disk are below L{HIGH_WATER}."""
        if self._pending_size < HIGH_WATER or self._error is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def _kick(self) -> None:
        if self._writing is not None or not self._pending or self._error is not None:
            return
        chunk = b"".join(self._pending)
        self._pending = []
        self._writing = self._run(self._write_blocking, chunk)
        self._writing.addCallbacks(self._written, self._write_failed, (len(chunk),))

    def _write_blocking(self, chunk: bytes) -> None:
        if self._fd is None:
            os.makedirs(self.directory, 0o700, exist_ok=True)
            self.path = temp_name(os.path.join(self.directory, "spool"))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                               0o600)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view):]
        faults.point("spool")

    def _written(self, _: object, size: int) -> None:
        self._writing = None
        self._pending_size -= size
        if self._discarded:
            self._close_and_remove()
            return
        self._wake()
        self._kick()

    def _write_failed(self, failure) -> None:
        self._writing = None
        self._error = failure.value
        self._pending, self._pending_size = [], 0
        self._wake()
        if self._discarded:
            self._close_and_remove()

    def _wake(self) -> None:
        if self._pending_size < HIGH_WATER or self._error is not None:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    async def finish(self) -> None:
        """Wait until every octet is written; raises the write's L{OSError}."""
        while self._writing is not None or self._pending:
            if self._error is not None:
                break
            if self._writing is None:
                self._kick()
            d: Deferred[None] = Deferred()
            self._writing.addBoth(lambda r, d=d: (d.callback(None), r)[1])
            await d
        if self._error is not None:
            raise self._error

    def prepend(self, header: bytes) -> None:
        """Put C{header} (whole header lines) before the data: filters' fields."""
        if not header:
            return
        self.size += len(header)
        if self._memory is not None:
            self._memory[:0] = header
        else:
            self._head = header + self._head

    def held_data(self) -> bytes | None:
        """The data when it is held in memory (a small message), else L{None}."""
        return bytes(self._memory) if self._memory is not None else None

    # -- IMessageSource

    def open(self) -> BinaryIO:
        """A file object over the data (after L{finish}); blocking when on disk."""
        if self._memory is not None:
            return io.BytesIO(bytes(self._memory))
        if self._head:
            return JoinedReader(self._head, open(self.path, "rb"))
        return open(self.path, "rb")

    # -- commit or discard

    def commit_blocking(self, path: str) -> None:
        """
        Make the data the durable file C{path} (which must not exist): written
        and fsync'd from memory, or the temporary file fsync'd and renamed
        (copied only when filters prepended fields). The caller fsyncs the
        folder. Runs off the reactor thread, after L{finish}.
        """
        if self._memory is not None:
            write_file(path, bytes(self._memory))
        elif self._head:
            self._copy_with_head(path)
        else:
            os.fsync(self._fd)
            if os.path.lexists(path):
                raise FileExistsError(path)
            os.rename(self.path, path)
            self._close()
            self.path = path
        self._committed = True

    def uncommit_blocking(self) -> None:
        """Take back a commit whose entry could not be completed."""
        if self._committed and self.on_disk and not self._head:
            # The data file was our temporary file: it is gone with the entry.
            self.path = None
        self._committed = False

    def _copy_with_head(self, path: str) -> None:
        tmp = temp_name(path)
        with open(tmp, "xb") as out, open(self.path, "rb") as data:
            try:
                out.write(self._head)
                shutil.copyfileobj(data, out, COPY_CHUNK)
                out.flush()
                os.fsync(out.fileno())
                os.rename(tmp, path)
            except BaseException:
                unlink_quietly(tmp)
                raise

    def discard(self) -> None:
        """
        The spool is no longer needed: its temporary file (when there is one
        and it was not committed) is removed, now or after the write under way.
        """
        self._discarded = True
        self._pending, self._pending_size = [], 0
        self._memory = bytearray() if self._memory is not None else None
        if self._writing is None:
            self._close_and_remove()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _close_and_remove(self) -> None:
        self._close()
        if self.path is not None and not (self._committed and not self._head):
            unlink_quietly(self.path)
            self.path = None

    def __repr__(self) -> str:
        where = self.path if self.on_disk else "memory"
        return f"Spool({self.size} octets in {where})"


class JoinedReader(io.RawIOBase):
    """A binary file object reading C{head}, then the file object C{rest}."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = io.BytesIO(head)
        self._rest = rest

    def readable(self) -> bool:
        """Always: this is a reader."""
        return True

    def readinto(self, buffer) -> int:
        """Fill C{buffer} from the head while it lasts, then from the file."""
        n = self._head.readinto(buffer)
        if n:
            return n
        return self._rest.readinto(buffer)

    def close(self) -> None:
        """Close the file."""
        self._rest.close()
        super().close()


def place_blocking(source: IMessageSource, path: str) -> None:
    """
    Make C{source}'s data the durable new file C{path}: a L{Spool} commits
    itself, any other source is copied in chunks, fsync'd and renamed. The
    caller fsyncs the folder.
    """
    if isinstance(source, Spool):
        source.commit_blocking(path)
        return
    if os.path.lexists(path):
        raise FileExistsError(path)
    tmp = temp_name(path)
    try:
        with source.open() as data, open(tmp, "xb") as out:
            shutil.copyfileobj(data, out, COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
