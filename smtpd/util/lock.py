# -*- test-case-name: tests.test_lifecycle -*-
"""
One server per mailroot: an exclusive C{flock} on C{mailroot/.lock}, held for
the life of the process, with the holder's pid written in the file so that a
second instance (or C{smtpctl}) can say who holds it.
"""

from __future__ import annotations

import errno
import fcntl
import os

LOCK_NAME = ".lock"


class LockHeld(Exception):
    """Another process holds the mailroot lock; C{pid} is its process id (0 if unknown)."""

    def __init__(self, path: str, pid: int):
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"{path} is locked by {holder}: another smtpd serves this mailroot")


def lock_path(mailroot: str) -> str:
    """The lock file of C{mailroot}."""
    return os.path.join(mailroot, LOCK_NAME)


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


class MailrootLock:
    """
    The exclusive lock on one mailroot.

    @param mailroot: the mailroot folder (created when missing, nothing else in it).
    """

    def __init__(self, mailroot: str):
        self.path = lock_path(mailroot)
        self._fd = -1

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd >= 0

    def acquire(self) -> None:
        """
        Take the lock and write our pid into it.

        @raise LockHeld: when another process holds it.
        @raise OSError: when the lock file cannot be created.
        """
        os.makedirs(os.path.dirname(self.path), 0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            pid = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise LockHeld(self.path, pid) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays; its content is no longer current)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def lock_holder(mailroot: str) -> int | None:
    """
    The pid of the process holding C{mailroot}'s lock (0 when it is held but
    the pid is unknown), or L{None} when nobody holds it. Never takes the lock
    for longer than the test.
    """
    try:
        fd = os.open(lock_path(mailroot), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
