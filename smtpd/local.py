# -*- test-case-name: tests.test_local -*-
"""
Delivery agents for mail that stays on this server (SPEC 4, 6): per-account
Maildirs under C{mailroot/mailbox/<domain>/<localpart>/}, and IIS-style drop
files in C{mailroot/drop/} for C{type = drop} domains.

Disk errors come out as the L{OSError} they are (the queue manager maps them to
4.3.x and retries); a mailbox name that could escape its folder is refused with
L{MailboxError}.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred

from smtpd.envelope import Envelope
from smtpd.queue import fsync_directory, temp_name, valid_queue_id, write_file

_LINE_END = re.compile(rb"\r\n|\r|\n")


class MailboxError(Exception):
    """A mailbox name that is unsafe or does not name a folder under mailroot."""


def _check_name_part(value: str, what: str, mailbox: str) -> None:
    # Path traversal and hidden-folder tricks: "..", "a/b", ".x", NUL.
    if not value or value in (".", "..") or value.startswith("."):
        raise MailboxError(f"unsafe {what} in mailbox {mailbox!r}")
    if "/" in value or "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise MailboxError(f"unsafe {what} in mailbox {mailbox!r}")


def split_mailbox(mailbox: str) -> tuple[str, str]:
    """
    Split C{localpart@domain} into its lower-cased parts, refusing anything
    that is not safe as two folder names.

    @raise MailboxError: when it is not.
    """
    localpart, at, domain = mailbox.lower().rpartition("@")
    if not at:
        raise MailboxError(f"mailbox {mailbox!r} has no domain")
    _check_name_part(localpart, "local part", mailbox)
    _check_name_part(domain, "domain", mailbox)
    return localpart, domain


def _header_value(value: str, what: str) -> bytes:
    # Header injection: an address must never carry a line break into the file.
    if any(c in value for c in "\r\n\0"):
        raise MailboxError(f"{what} {value!r} contains a line break or NUL")
    return value.encode("utf-8")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder and path != folder


def _make_folder(path: str) -> None:
    """Create folder C{path} (and missing parents) durably; no-op when it exists."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    _make_folder(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    fsync_directory(parent)


class MaildirDelivery:
    """
    Delivers into C{mailroot/mailbox/<domain>/<localpart>/}, a Maildir created
    on first delivery, by the Maildir rules: a unique name in C{tmp/}, fsync,
    rename into C{new/}, fsync C{new/}.

    @param mailroot: the mailroot folder.
    @param hostname: this server's name, part of every file name.
    @param clock: an C{IReactorTime}.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk work.
    """

    def __init__(self, mailroot: str, hostname: str, clock: Any,
                 run_blocking: Callable[..., Deferred]):
        self.root = os.path.join(os.path.abspath(mailroot), "mailbox")
        # Maildir: "/" and ":" in the host name are written as octal escapes.
        self._hostname = hostname.replace("/", r"\057").replace(":", r"\072")
        self._clock = clock
        self._run = run_blocking
        self._counter = itertools.count(1)

    def deliver(self, envelope: Envelope, mailbox: str, data: bytes) -> Deferred[None]:
        """
        Deliver C{data} (CRLF, from the queue) to C{mailbox}
        (C{localpart@domain}, alias-mapped), with C{Return-Path:} and
        C{Delivered-To:} prepended and LF line endings.

        Fails with L{MailboxError} for an unsafe mailbox, L{OSError} on disk
        errors; nothing is left in C{tmp/} or C{new/} on failure.
        """
        try:
            localpart, domain = split_mailbox(mailbox)
            header = (b"Return-Path: <" + _header_value(envelope.sender, "sender")
                      + b">\nDelivered-To: " + _header_value(mailbox.lower(), "mailbox") + b"\n")
        except MailboxError as e:
            return self._run(_raise, e)
        name = self._unique_name()
        return self._run(self._deliver_blocking, domain, localpart, name, header, data)

    def _unique_name(self) -> str:
        now = self._clock.seconds()
        seconds = int(now)
        micro = int((now - seconds) * 1_000_000)
        return (f"{seconds}.M{micro}P{os.getpid()}Q{next(self._counter)}"
                f"R{secrets.token_hex(4)}.{self._hostname}")

    def maildir(self, mailbox: str) -> str:
        """The Maildir folder of C{mailbox} (not checked against symlinks)."""
        localpart, domain = split_mailbox(mailbox)
        return os.path.join(self.root, domain, localpart)

    def _deliver_blocking(self, domain: str, localpart: str, name: str,
                          header: bytes, data: bytes) -> None:
        domain_folder = os.path.join(self.root, domain)
        folder = os.path.join(domain_folder, localpart)
        # A symlink planted anywhere on the way must not lead outside.
        if not (_inside(domain_folder, self.root) and _inside(folder, domain_folder)):
            raise MailboxError(f"mailbox {localpart}@{domain} resolves outside {domain_folder}")
        for sub in ("tmp", "new", "cur"):
            _make_folder(os.path.join(folder, sub))
            if not _inside(os.path.join(folder, sub), folder):
                raise MailboxError(f"{sub}/ of mailbox {localpart}@{domain} leads outside it")
        content = header + _LINE_END.sub(b"\n", data)
        tmp = os.path.join(folder, "tmp", name)
        write_file(tmp, content)
        final = os.path.join(folder, "new", f"{name},S={len(content)}")
        try:
            os.rename(tmp, final)
            fsync_directory(os.path.join(folder, "new"))
        except BaseException:
            for path in (tmp, final):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise


class DropDelivery:
    """
    Writes one C{.eml} file per message into C{mailroot/drop/} (IIS Drop
    format): C{x-sender:} and C{x-receiver:} lines, then the message, CRLF.

    @param mailroot: the mailroot folder.
    @param clock: an C{IReactorTime}.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk work.
    """

    def __init__(self, mailroot: str, clock: Any, run_blocking: Callable[..., Deferred]):
        self.folder = os.path.join(os.path.abspath(mailroot), "drop")
        self._clock = clock
        self._run = run_blocking

    def deliver(self, envelope: Envelope, recipients: Sequence[str],
                data: bytes) -> Deferred[None]:
        """
        Drop C{data} for C{recipients} as one file. Fails with L{MailboxError}
        for an address carrying a line break, L{OSError} on disk errors.
        """
        try:
            lines = [b"x-sender: " + _header_value(envelope.sender, "sender") + b"\r\n"]
            lines += [b"x-receiver: " + _header_value(r, "recipient") + b"\r\n"
                      for r in recipients]
        except MailboxError as e:
            return self._run(_raise, e)
        stem = envelope.id if valid_queue_id(envelope.id) else "message"
        name = f"{stem}.{int(self._clock.seconds()):X}{secrets.token_hex(4).upper()}.eml"
        content = b"".join(lines) + _LINE_END.sub(b"\r\n", data)
        return self._run(self._drop_blocking, name, content)

    def _drop_blocking(self, name: str, content: bytes) -> None:
        _make_folder(self.folder)
        path = os.path.join(self.folder, name)
        tmp = temp_name(path)
        write_file(tmp, content)
        try:
            os.rename(tmp, path)
            fsync_directory(self.folder)
        except BaseException:
            for p in (tmp, path):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            raise


def _raise(error: Exception) -> None:
    raise error
