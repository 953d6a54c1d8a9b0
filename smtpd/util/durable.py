# -*- test-case-name: tests.test_queue -*-
"""
Durable writes, in one place for every part that keeps files: a new file is
written to a temporary name, fsync'd and renamed into place, and the folder
fsync'd; concurrent writers into one folder share its fsync (group commit).
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterable

TEMP_SUFFIX = ".tmp"


def fsync_directory(path: str) -> None:
    """Make the entries of folder C{path} (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FolderSync:
    """
    fsync of one folder shared by concurrent threads (group commit): many
    renames into a folder become durable with one fsync.

    Each caller takes a ticket after its renames. A folder fsync that
    I{starts} after a ticket was taken covers that caller's renames, so a
    caller whose ticket is already covered by a finished fsync returns
    without one; callers that arrive during an fsync share the next one.

    @param fsync: makes the entries of a folder durable (L{fsync_directory}).
    """

    def __init__(self, path: str, fsync: Callable[[str], None] = fsync_directory):
        self.path = path
        self._fsync = fsync
        self._ticket_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._requested = 0
        self._synced = 0

    @property
    def requested(self) -> int:
        """How many calls to L{sync} have been made so far."""
        return self._requested

    def sync(self) -> None:
        """Return once every change made to the folder before the call is durable."""
        with self._ticket_lock:
            self._requested += 1
            ticket = self._requested
        with self._sync_lock:
            if self._synced >= ticket:
                return
            with self._ticket_lock:
                covered = self._requested
            self._fsync(self.path)
            self._synced = covered


def write_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """
    Write C{data} to a new file C{path} (which must not exist) and fsync it.
    On failure the partial file is removed and the L{OSError} re-raised.
    """
    write_chunks(path, (data,), mode)


def temp_name(path: str) -> str:
    """
    A fresh temporary name beside C{path}: C{dir/.name.<random>.tmp} (hidden,
    never taken for an entry, unique so concurrent writers never collide).
    """
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def replace_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """
    Atomically give C{path} the content C{data}: temporary file, fsync, rename.
    The caller fsyncs the folder. Nothing half-written stays on failure.
    """
    tmp = temp_name(path)
    write_file(tmp, data, mode)
    try:
        os.rename(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def unlink_quietly(path: str) -> None:
    """Remove file C{path} when it is there; any error is ignored."""
    try:
        os.unlink(path)
    except OSError:
        pass


def make_folder(path: str, mode: int = 0o700) -> None:
    """Create folder C{path} (and missing parents) durably; no-op when it exists."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    make_folder(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    fsync_directory(parent)


def write_chunks(path: str, chunks: Iterable[bytes], mode: int = 0o600) -> int:
    """
    Write the pieces C{chunks} to a new file C{path} (which must not exist),
    one at a time, and fsync it; how many octets were written. On failure the
    partial file is removed and the error re-raised.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    written = 0
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            written += len(chunk)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)
    return written
