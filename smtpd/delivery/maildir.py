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

import hashlib
import itertools
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smtpd.delivery.interfaces import IMailboxAgent
from smtpd.delivery.outcome import disk_error
from smtpd.mail.envelope import DeliveryStatus, Envelope, valid_queue_id
from smtpd.mail.intl import is_utf8_char_ok, normalize_local
from smtpd.mail.lineends import convert_chunks
from smtpd.mail.source import IMessageSource, read_chunks
from smtpd.util import faults
from smtpd.util.durable import (
    FolderSync,
    fsync_directory,
    make_folder,
    unlink_quietly,
    write_chunks,
)

log = Logger()

# Maildir: a file left in tmp/ this long is a failed delivery's, to remove.
TMP_MAX_AGE = 36 * 3600.0
# Messages up to this size delivered to several Maildirs in one batch are
# read (and converted to LF line endings) once for all their copies.
SHARED_BODY_MAX = 1024 * 1024


class MailboxError(Exception):
    """A mailbox name that is unsafe or does not name a folder under mailroot."""


def _check_name_part(value: str, what: str, mailbox: str) -> None:
    # Path traversal and hidden-folder tricks: "..", "a/b", ".x", NUL; in a
    # UTF-8 name also controls, separators and bidi overrides (a name that
    # displays as another).
    if not value or value in (".", "..") or value.startswith("."):
        raise MailboxError(f"unsafe {what} in mailbox {mailbox!r}")
    if "/" in value or "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise MailboxError(f"unsafe {what} in mailbox {mailbox!r}")
    if not all(c.isascii() or is_utf8_char_ok(c) for c in value):
        raise MailboxError(f"unsafe {what} in mailbox {mailbox!r}")


def split_mailbox(mailbox: str) -> tuple[str, str]:
    """
    Split C{localpart@domain} into its lower-cased parts, refusing anything
    that is not safe as two folder names. A UTF-8 local part is its folder
    name in Unicode NFC (RFC 6530 10.1), UTF-8 encoded on disk, as Dovecot's
    C{%n} gives it; the domain is the local domain as configured.

    @raise MailboxError: when it is not.
    """
    localpart, at, domain = mailbox.lower().rpartition("@")
    localpart = normalize_local(localpart)
    if not at:
        raise MailboxError(f"mailbox {mailbox!r} has no domain")
    _check_name_part(localpart, "local part", mailbox)
    _check_name_part(domain, "domain", mailbox)
    return localpart, domain


def header_value(value: str, what: str) -> bytes:
    """C{value} as the UTF-8 value of a header line; L{MailboxError} if it breaks the line."""
    # Header injection: an address must never carry a line break into the file.
    if any(c in value for c in "\r\n\0"):
        raise MailboxError(f"{what} {value!r} contains a line break or NUL")
    return value.encode("utf-8")


def _inside(path: str, folder: str) -> bool:
    """
    Whether C{path}, an entry of C{folder} (with a name checked by
    L{split_mailbox}), leads to a place inside C{folder}. A real folder (or
    nothing yet) there does; a symlink must resolve to a place inside.
    """
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return True
    except FileNotFoundError:
        return True
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder and path != folder


@implementer(IMailboxAgent)
class MaildirDelivery:
    """
    The C{local} agent: delivers into C{mailroot/mailbox/<domain>/<localpart>/}, a Maildir created
    on first delivery, by the Maildir rules: a unique name in C{tmp/}, fsync,
    rename into C{new/}, fsync C{new/}.

    Deliveries go to disk in batches, each one call of C{run_blocking} with
    one fsync per C{new/} folder for all its messages (group commit). While
    the disk keeps up (under C{slow_disk} seconds per message), one batch is
    written at a time and deliveries requested meanwhile wait for the next:
    fewer thread hand-offs, folder fsyncs and threads contending for the same
    folders, which is what limits a fast disk. On a slower disk the waiting
    deliveries are spread over up to C{max_batches} batches at once, so that
    their fsyncs overlap.

    A Maildir's folders are created and checked against symlinks leading out
    of C{mailroot/mailbox/} at its first delivery in this process, and files
    left in its C{tmp/} for over 36 hours (failed deliveries) removed; later
    deliveries trust that check (a Maildir removed meanwhile is made again).

    @param mailroot: the mailroot folder.
    @param hostname: this server's name, part of every file name.
    @param clock: an C{IReactorTime}.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk work.
    @param max_batches: how many batches may be written at once on a slow
        disk (at most the threads C{run_blocking} has).
    @param slow_disk: the time per message, in seconds, from which the disk
        counts as slow.
    """

    def __init__(self, mailroot: str, hostname: str, clock: Any,
                 run_blocking: Callable[..., Deferred], max_batches: int = 8,
                 slow_disk: float = 0.002):
        self.root = os.path.join(os.path.abspath(mailroot), "mailbox")
        # Maildir: "/" and ":" in the host name are written as octal escapes.
        self._hostname = hostname.replace("/", r"\057").replace(":", r"\072")
        self._clock = clock
        self._run = run_blocking
        self._max_batches = max(1, max_batches)
        self._slow_disk = slow_disk
        # Seconds per message of recent batches (moving average).
        self._disk_time = 0.0
        # Checked Maildir folder -> the group commit of its new/ folder.
        self._checked: dict[str, FolderSync] = {}
        self._checking = threading.Lock()
        self._waiting: list[tuple[tuple, Deferred]] = []
        self._batches = 0
        self._started = clock.seconds()

    name = "local"

    def deliver(self, envelope: Envelope, deliveries: Sequence[tuple[Any, Any]],
                message: IMessageSource) -> Deferred[list[DeliveryStatus]]:
        """
        Deliver C{message} once per mailbox of C{deliveries} (aliases of one
        account share a copy); one status per delivery, never failing: an
        unsafe mailbox is 550 5.1.1, a disk problem 452 4.3.1 or 451 4.3.0.
        """
        mailboxes: dict[str, list[int]] = {}
        for i, (_, destination) in enumerate(deliveries):
            mailboxes.setdefault(destination.mailbox, []).append(i)
        writes = self.write_many(envelope, list(mailboxes), message)
        jobs = [Deferred.fromCoroutine(self._deliver_one(envelope, mailbox, write))
                for mailbox, write in zip(mailboxes, writes)]

        def statuses(replies: list[tuple[int, str, str]]) -> list[DeliveryStatus]:
            found: list[DeliveryStatus | None] = [None] * len(deliveries)
            for indexes, (code, status, text) in zip(mailboxes.values(), replies):
                for i in indexes:
                    found[i] = DeliveryStatus(deliveries[i][0].address, code, status, text)
            return [s for s in found if s is not None]

        return gatherResults(jobs).addCallback(statuses)

    async def _deliver_one(self, envelope: Envelope, mailbox: str,
                           write: Deferred[str]) -> tuple[int, str, str]:
        """The reply for the recipients of C{mailbox}, whose copy C{write} makes."""
        try:
            await write
        except MailboxError as e:
            return 550, "5.1.1", f"<{mailbox}>: mailbox unavailable: {e}"
        except OSError as e:
            log.error("Maildir delivery of {queue_id} failed: {error}",
                      queue_id=envelope.id, error=e)
            return disk_error(e, "local delivery")
        except Exception:
            log.failure("Maildir delivery of {queue_id} to {mailbox} failed",
                        queue_id=envelope.id, mailbox=mailbox)
            return 451, "4.3.0", "local delivery error"
        return 250, "2.0.0", f"delivered to maildir of {mailbox}"

    def stop(self) -> None:
        """Nothing to release: every write finishes on its own."""

    def write(self, envelope: Envelope, mailbox: str, message: IMessageSource) -> Deferred[str]:
        """
        Deliver C{message} (CRLF, from the queue) to C{mailbox}
        (C{localpart@domain}, alias-mapped), with C{Return-Path:} and
        C{Delivered-To:} prepended and LF line endings, copied from the
        source in chunks. Fires with the path of the new file (for L{remove}).

        Fails with L{MailboxError} for an unsafe mailbox, L{OSError} on disk
        errors; nothing is left in C{tmp/} or C{new/} on failure.
        """
        [done] = self.write_many(envelope, [mailbox], message)
        return done

    def write_many(self, envelope: Envelope, mailboxes: Sequence[str],
                   message: IMessageSource) -> list[Deferred[str]]:
        """
        L{write} into each of C{mailboxes}, all in the same batch (one thread
        job, one fsync per C{new/} folder) when no batch is being written; a
        Deferred per mailbox, in order.
        """
        writes: list[Deferred[str]] = []
        binary = envelope.body.upper() == "BINARYMIME"
        eol = b"\r\n" if binary else b"\n"
        for mailbox in mailboxes:
            try:
                localpart, domain = split_mailbox(mailbox)
                header = (b"Return-Path: <" + header_value(envelope.sender, "sender")
                          + b">" + eol + b"Delivered-To: "
                          + header_value(mailbox.lower(), "mailbox") + eol)
                # Named after the queue id: a delivery replayed after a crash
                # replaces its own copy instead of adding a second one.
                name = self.message_name(envelope, mailbox)
            except MailboxError as e:
                writes.append(self._run(raise_error, e))
                continue
            done: Deferred[str] = Deferred()
            self._waiting.append(((domain, localpart, name, header, message, binary), done))
            writes.append(done)
        self._write_waiting()
        return writes

    def remove(self, path: str) -> Deferred[None]:
        """
        Take back a message L{deliver} put at C{path} (a delivery that must
        not count), durably. A file already gone is fine.
        """
        return self._run(self._remove_blocking, path)

    def message_name(self, envelope: Envelope, mailbox: str) -> str:
        """
        The Maildir name of C{envelope}'s copy for C{mailbox}: unique (the
        queue id never repeats) and the same every time that copy is written,
        so a delivery replayed after a crash (the Maildir written, the queue
        not yet told) replaces its own file instead of adding a second one.
        """
        if not valid_queue_id(envelope.id):
            raise MailboxError(f"invalid queue id {envelope.id!r}")
        digest = hashlib.sha256(mailbox.lower().encode("utf-8")).hexdigest()[:12]
        return f"{_stamp(envelope)}.Q{envelope.id}M{digest}.{self._hostname}"

    def maildir(self, mailbox: str) -> str:
        """The Maildir folder of C{mailbox} (not checked against symlinks)."""
        localpart, domain = split_mailbox(mailbox)
        return os.path.join(self.root, domain, localpart)

    # -- batches (reactor thread)

    def _write_waiting(self) -> None:
        """Hand the waiting deliveries to the disk, in as many batches as allowed."""
        free = self._max_batches - self._batches
        if not self._waiting or free <= 0:
            return
        if self._disk_time < self._slow_disk:
            if self._batches:
                return  # the next batch starts when this one ends
            batches = [self._waiting]
        else:
            n = min(free, len(self._waiting))
            batches = [self._waiting[i::n] for i in range(n)]
        self._waiting = []
        started = self._clock.seconds()
        for batch in batches:
            self._batches += 1
            d = maybeDeferred(self._run, self._deliver_batch, [job for job, _ in batch])
            d.addBoth(self._batch_written, [waiter for _, waiter in batch], started)

    def _batch_written(self, results, waiters: list[Deferred], started: float) -> None:
        self._batches -= 1
        per_message = (self._clock.seconds() - started) / len(waiters)
        self._disk_time += (per_message - self._disk_time) / 8
        if isinstance(results, Failure):
            results = [(False, results)] * len(waiters)
        for waiter, (ok, value) in zip(waiters, results):
            if ok:
                waiter.callback(value)
            else:
                waiter.errback(value)
        self._write_waiting()

    # -- disk work (thread pool)

    def _deliver_batch(self, jobs: list[tuple]) -> list[tuple[bool, Any]]:
        """
        Write each job's file into C{new/}, then fsync each C{new/} folder
        once; per job C{(True, path)} or C{(False, Failure)}.
        """
        results: list[tuple[bool, Any]] = []
        placed: dict[FolderSync, list[int]] = {}
        # The copies of one message (its recipients' Maildirs) share its body
        # as written (LF line ends unless binary), made once when small enough.
        shared: dict[int, tuple[list[bytes], int]] = {}
        counts: dict[int, int] = {}
        for job in jobs:
            counts[id(job[4])] = counts.get(id(job[4]), 0) + 1
        for domain, localpart, name, header, message, binary in jobs:
            try:
                if counts[id(message)] > 1 and getattr(message, "size", None) is not None \
                        and message.size <= SHARED_BODY_MAX:
                    if id(message) not in shared:
                        shared[id(message)] = _body(message, binary)
                    message = shared[id(message)]
                new, path = self._place(domain, localpart, name, header, message, binary)
            except Exception:
                results.append((False, Failure()))
            else:
                placed.setdefault(new, []).append(len(results))
                results.append((True, path))
                faults.point("maildir")
        for new, indexes in placed.items():
            try:
                new.sync()
            except Exception:
                failure = Failure()
                for i in indexes:
                    unlink_quietly(results[i][1])
                    results[i] = (False, failure)
        return results

    def _place(self, domain: str, localpart: str, name: str, header: bytes,
               message: IMessageSource | tuple[list[bytes], int],
               binary: bool) -> tuple[FolderSync, str]:
        """Write one message into C{new/} of its Maildir (not yet fsync'd there)."""
        folder = os.path.join(self.root, domain, localpart)
        new = self._checked.get(folder)
        if new is not None:
            try:
                return new, _write_into(folder, name, header, message, binary)
            except FileNotFoundError:
                # The Maildir was removed after its check: check it again.
                self._checked.pop(folder, None)
        new = self._check(domain, localpart)
        return new, _write_into(folder, name, header, message, binary)

    def _check(self, domain: str, localpart: str) -> FolderSync:
        """
        Create the Maildir of C{localpart@domain} when missing and make sure no
        symlink on the way leads outside; the group commit of its C{new/}.
        """
        domain_folder = os.path.join(self.root, domain)
        folder = os.path.join(domain_folder, localpart)
        # A symlink planted anywhere on the way must not lead outside.
        if not (_inside(domain_folder, self.root) and _inside(folder, domain_folder)):
            raise MailboxError(f"mailbox {localpart}@{domain} resolves outside {domain_folder}")
        for sub in ("tmp", "new", "cur"):
            make_folder(os.path.join(folder, sub))
            if not _inside(os.path.join(folder, sub), folder):
                raise MailboxError(f"{sub}/ of mailbox {localpart}@{domain} leads outside it")
        clean_tmp(os.path.join(folder, "tmp"), self._clock.seconds(),
                  f".{self._hostname}", self._started)
        with self._checking:
            return self._checked.setdefault(folder, FolderSync(os.path.join(folder, "new")))

    def _remove_blocking(self, path: str) -> None:
        path = os.path.abspath(path)
        if os.path.commonpath([path, self.root]) != self.root:
            raise MailboxError(f"{path!r} is not a delivered message")
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        new = self._checked.get(os.path.dirname(os.path.dirname(path)))
        if new is not None:
            new.sync()
        else:
            fsync_directory(os.path.dirname(path))


def _body(message: IMessageSource, binary: bool) -> tuple[list[bytes], int]:
    """
    The data of C{message} as a Maildir file holds it (LF line endings,
    unless C{binary}), and the number of line ends it gained (0 when binary).
    """
    if binary:
        return list(read_chunks(message)), 0
    chunks = list(convert_chunks(read_chunks(message), b"\n"))
    return chunks, sum(chunk.count(b"\n") for chunk in chunks)


def _write_into(folder: str, name: str, header: bytes,
                message: IMessageSource | tuple[list[bytes], int],
                binary: bool = False) -> str:
    """
    Write C{header} and C{message} (with LF line endings; or the body as
    L{_body} made it, with its count) to Maildir C{folder} as C{tmp/name},
    a chunk at a time, fsync it, rename it into C{new/}; its path there.
    Nothing stays behind on failure.

    A BINARYMIME message (C{binary}) is written byte for byte as it was
    received, CRLF line ends and all (C{header} has CRLF too): turning its
    CRLFs into LF would change binary content that happens to hold them.
    Dovecot and mutt read a Maildir file with CRLF line ends.
    """
    tmp = os.path.join(folder, "tmp", name)
    if isinstance(message, tuple):
        body, lines = message
        lines += 0 if binary else header.count(b"\n")
        size = _write_new(tmp, [header, *body])
    else:
        lines = 0

        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            nonlocal lines
            for chunk in chunks:
                lines += 0 if binary else chunk.count(b"\n")
                yield chunk

        body_chunks = (read_chunks(message) if binary
                       else convert_chunks(read_chunks(message), b"\n"))
        size = _write_new(tmp, counted(itertools.chain([header], body_chunks)))
    # S= the size on disk, W= the size with CRLF line ends (Dovecot's fields):
    # POP3 (smtpd's and Dovecot's) lists sizes without reading every message.
    final = os.path.join(folder, "new", f"{name},S={size},W={size + lines}")
    try:
        os.rename(tmp, final)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return final


def _write_new(tmp: str, chunks: Iterable[bytes]) -> int:
    """
    L{write_chunks} to C{tmp}; a file already there is this copy's own, left
    by a crash mid-write: it is replaced (nothing was taken from C{chunks}
    when the name was found taken).
    """
    try:
        return write_chunks(tmp, chunks)
    except FileExistsError:
        unlink_quietly(tmp)
        return write_chunks(tmp, chunks)


def _stamp(envelope: Envelope) -> int:
    """
    The time part of a Maildir name: the second in the queue id (a report
    made again after a crash keeps its id, not its arrival), else the arrival.
    """
    head = envelope.id[:8]
    if len(envelope.id) == 24 and all(c in "0123456789ABCDEF" for c in head):
        return int(head, 16)
    return int(envelope.arrival)


def clean_tmp(tmp: str, now: float, ours: str = "", started: float = 0.0) -> None:
    """
    Remove the files of a Maildir's C{tmp/} neither accessed nor changed for
    L{TMP_MAX_AGE} (the Maildir rule: 36 hours), and our own (names ending
    in C{ours}) last changed before C{started}: deliveries cut short by a
    crash of an earlier run. Errors are ignored.
    """
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                continue
            crashed = ours and entry.name.endswith(ours) and info.st_mtime < started
            if crashed or now - max(info.st_atime, info.st_mtime) > TMP_MAX_AGE:
                os.unlink(entry.path)
        except OSError:
            continue


def raise_error(error: Exception) -> None:
    """Raise C{error} (run through C{run_blocking} to fail the way disk work does)."""
    raise error
