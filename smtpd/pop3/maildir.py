# -*- test-case-name: tests.test_pop3_maildir -*-
"""
One Maildir as one POP3 session sees it (RFC 1939 over the Maildir rules).

At login the session takes every message in C{new/} into C{cur/} (adding the
C{:2,} info part, as a Maildir reader must), then lists C{cur/}. The list
stays fixed for the session: message numbers never change, messages marked
with DELE are removed only when the client QUITs (the UPDATE state).

Another reader (Dovecot over IMAP) may rename a message meanwhile to change
its flags (C{name:2,S}); a message is therefore found again by its unique
name, the part of the file name before the first C{:} or C{,}, which is also
its UIDL and never changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from twisted.internet.defer import Deferred
from twisted.mail import pop3
from zope.interface import implementer

from smtpd.util.durable import fsync_directory

# Dovecot's extension field: the size with CRLF line ends, as POP3 counts it.
_VIRTUAL_SIZE = re.compile(r",W=(\d+)")
_ORDER = re.compile(r"(\d+)\.(?:M(\d+))?")
# RFC 1939 7: a unique-id is 1 to 70 characters from 0x21 to 0x7E.
_UIDL_CHARS = re.compile(r"[\x21-\x7e]{1,70}\Z")


@dataclass
class MaildirMessage:
    """
    One message of a session's listing.

    @ivar name: its current file name in C{cur/}.
    @ivar uid: its UIDL.
    @ivar size: its size in octets as sent (LF line ends counted as CRLF).
    """

    name: str
    uid: str
    size: int


def unique_name(name: str) -> str:
    """The unique part of a Maildir file name: before any C{:} info or C{,} field."""
    return name.split(":", 1)[0].split(",", 1)[0]


def uidl(name: str) -> str:
    """
    The UIDL of the message in file C{name}: its unique name, or a digest of
    it when that is not a valid RFC 1939 unique-id (too long, odd characters).
    """
    unique = unique_name(name)
    if _UIDL_CHARS.match(unique):
        return unique
    return hashlib.sha256(unique.encode("utf-8", "surrogateescape")).hexdigest()[:64]


def _virtual_size(path: str, name: str, size: int) -> int:
    """The size of a message with every LF sent as CRLF."""
    match = _VIRTUAL_SIZE.search(unique_name_fields(name))
    if match:
        return int(match.group(1))
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            lines += chunk.count(b"\n") - chunk.count(b"\r\n")
    return size + lines


def unique_name_fields(name: str) -> str:
    """A Maildir file name without its info part (C{:2,FLAGS})."""
    return name.split(":", 1)[0]


def _order(message: MaildirMessage) -> tuple[int, int, str]:
    """Delivery order: the seconds and microseconds a unique name starts with."""
    match = _ORDER.match(message.name)
    if not match:
        return (0, 0, message.name)
    return (int(match.group(1)), int(match.group(2) or 0), message.name)


def take_new(folder: str) -> None:
    """Move every message of C{new/} into C{cur/} with an empty info part."""
    new, cur = os.path.join(folder, "new"), os.path.join(folder, "cur")
    try:
        names = os.listdir(new)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith("."):
            continue
        target = name if ":" in name else name + ":2,"
        try:
            os.rename(os.path.join(new, name), os.path.join(cur, target))
        except FileNotFoundError:
            continue  # another reader took it first


def scan(folder: str) -> list[MaildirMessage]:
    """
    Blocking: take C{new/} into C{cur/}, then list C{cur/} in delivery
    order. A Maildir that does not exist yet is empty.
    """
    take_new(folder)
    cur = os.path.join(folder, "cur")
    try:
        names = os.listdir(cur)
    except FileNotFoundError:
        return []
    messages = []
    for name in names:
        path = os.path.join(cur, name)
        try:
            st = os.stat(path)
            if name.startswith(".") or not stat.S_ISREG(st.st_mode):
                continue
            messages.append(MaildirMessage(name, uidl(name), _virtual_size(path, name, st.st_size)))
        except FileNotFoundError:
            continue  # expunged by another reader meanwhile
    messages.sort(key=_order)
    return messages


def find(folder: str, message: MaildirMessage) -> str | None:
    """
    The path of C{message} now: its known name, or the name another reader
    gave it by changing its flags; L{None} when it is gone.
    """
    cur = os.path.join(folder, "cur")
    path = os.path.join(cur, message.name)
    if os.path.exists(path):
        return path
    unique = unique_name(message.name)
    for name in os.listdir(cur):
        if unique_name(name) == unique:
            message.name = name
            return os.path.join(cur, name)
    return None


def open_message(folder: str, message: MaildirMessage) -> IO[bytes]:
    """
    Blocking: open C{message} for reading.

    @raise ValueError: when it is gone (Twisted answers "-ERR").
    """
    path = find(folder, message)
    if path is None:
        raise ValueError("message removed by another client")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ValueError("message removed by another client") from None


def expunge(folder: str, messages: list[MaildirMessage]) -> int:
    """Blocking: remove C{messages} from C{cur/} durably; how many were removed."""
    removed = 0
    for message in messages:
        path = find(folder, message)
        if path is None:
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed += 1
    if removed:
        fsync_directory(os.path.join(folder, "cur"))
    return removed


@implementer(pop3.IMailbox)
class MaildirInbox(pop3.Mailbox):
    """
    The messages of one Maildir for one session (Twisted's L{pop3.IMailbox}).
    Numbers passed in are 0-based and index the listing made at login.

    @param folder: the Maildir.
    @param messages: its listing, from L{scan}.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk work.
    """

    def __init__(self, folder: str, messages: list[MaildirMessage],
                 run_blocking: Callable[..., Deferred]):
        self.folder = folder
        self.messages = messages
        self.deleted: set[int] = set()
        self._run = run_blocking

    def _message(self, i: int) -> MaildirMessage:
        if not 0 <= i < len(self.messages):
            raise ValueError(f"no message {i + 1}")
        return self.messages[i]

    def listMessages(self, i: int | None = None):
        """The size of message C{i} (0 once deleted), or of all of them."""
        if i is None:
            return [0 if n in self.deleted else m.size for n, m in enumerate(self.messages)]
        message = self._message(i)
        return 0 if i in self.deleted else message.size

    def present(self) -> list[tuple[int, MaildirMessage]]:
        """The messages not marked deleted, with their 0-based numbers."""
        return [(n, m) for n, m in enumerate(self.messages) if n not in self.deleted]

    def getMessage(self, i: int) -> Deferred[IO[bytes]]:
        """The message as an open binary file (opened in a thread)."""
        return self._run(open_message, self.folder, self._message(i))

    def getUidl(self, i: int) -> str:
        """The UIDL of message C{i}."""
        return self._message(i).uid

    def deleteMessage(self, i: int) -> None:
        """
        Mark message C{i} deleted (removed at QUIT).

        @raise ValueError: when there is no such message or it is marked already.
        """
        self._message(i)
        if i in self.deleted:
            raise ValueError(f"message {i + 1} already deleted")
        self.deleted.add(i)

    def undeleteMessages(self) -> None:
        """RSET: unmark every message."""
        self.deleted.clear()

    def expunge(self) -> Deferred[int]:
        """Remove the marked messages from the Maildir; fires with how many."""
        doomed = [self.messages[i] for i in sorted(self.deleted)]
        return self._run(expunge, self.folder, doomed)
