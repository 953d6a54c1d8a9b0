# -*- test-case-name: tests.test_queue -*-
"""
The durable queue (SPEC 4): C{mailroot/queue/} holds, per message, the RFC 5322
data in C{<id>.eml} and the JSON envelope in C{<id>.json}.

Every file is written to a temporary name in the same folder, fsync'd, renamed
into place, and the folder fsync'd. The envelope is written last: it is the
commit marker, so a data file without an envelope is an incomplete store and an
envelope always has its data. Removal goes the other way (envelope first).
Entries that cannot be read are moved to C{mailroot/badmail/}, never lost.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from smtpd.mail.envelope import Envelope, valid_queue_id
from smtpd.mail.source import BytesSource, FileSource, IMessageSource, held_data, read_chunks
from smtpd.queue.batch import DiskBatches
from smtpd.queue.records import badmail_report, parse_envelope
from smtpd.queue.recovery import move_to_corrupt, remove_leftover
from smtpd.queue.spool import Spool, place_blocking
from smtpd.util import faults
from smtpd.util.durable import (
    TEMP_SUFFIX,
    FolderSync,
    fsync_directory,
    replace_file,
    temp_name,
    unlink_quietly,
    write_chunks,
)


log = Logger()

# The data of an entry just stored from memory stays there for its first
# attempt, which follows at once: the attempt reads no file (no open, stat or
# read on the reactor thread, no thread hop to scan it). At most this many
# octets are kept in all; beyond it, attempts read their files as usual.
FRESH_DATA_BUDGET = 32 * 1024 * 1024


def _check_id(queue_id: str) -> str:
    if not valid_queue_id(queue_id):
        raise ValueError(f"invalid queue id {queue_id!r}")
    return queue_id


class Queue:
    """
    The on-disk queue of accepted messages.

    @param directory: the queue folder (C{mailroot/queue}); C{badmail} is its
        sibling.
    @param clock: an C{IReactorTime} (for L{new_id}).
    @param run_blocking: C{f(callable, *args) -> Deferred} running blocking disk
        work off the reactor thread.
    @param fresh_budget: the most octets of just-stored data kept in memory
        for first attempts.
    """

    def __init__(self, directory: str, clock: Any, run_blocking: Callable[..., Deferred],
                 fresh_budget: int = FRESH_DATA_BUDGET):
        self.directory = os.path.abspath(directory)
        self.badmail = os.path.join(os.path.dirname(self.directory), "badmail")
        self._clock = clock
        self._run = run_blocking
        self._observers: list[Callable[[Envelope], object]] = []
        self._folder_sync = FolderSync(self.directory)
        self._removals = DiskBatches(run_blocking, self._remove_batch)
        self._fresh_data: dict[str, bytes] = {}
        self._fresh_size = 0
        self._fresh_budget = fresh_budget

    # -- naming

    def new_id(self) -> str:
        """
        A fresh queue id: upper-case hex, the arrival second then 64 random
        bits, so ids sort roughly by arrival and never repeat across restarts
        or processes.
        """
        return f"{int(self._clock.seconds()):08X}{secrets.randbits(64):016X}"

    def data_path(self, queue_id: str) -> str:
        """The path of the message data file of entry C{queue_id}."""
        return os.path.join(self.directory, _check_id(queue_id) + ".eml")

    def envelope_path(self, queue_id: str) -> str:
        """The path of the envelope file of entry C{queue_id}."""
        return os.path.join(self.directory, _check_id(queue_id) + ".json")

    # -- observers

    def add_observer(self, callback: Callable[[Envelope], object]) -> None:
        """Call C{callback(envelope)} after each successful L{store}."""
        self._observers.append(callback)

    def _notify(self, envelope: Envelope) -> None:
        for callback in list(self._observers):
            try:
                callback(envelope)
            except Exception:
                log.failure("queue observer {callback!r} failed for {id}",
                            callback=callback, id=envelope.id)

    # -- writing

    def store(self, envelope: Envelope, message: IMessageSource | bytes) -> Deferred[None]:
        """
        Make a new entry durable: data first, envelope last. Fires when both
        files and their names are on disk; fails with the L{OSError} (nothing
        left behind) when they cannot be.

        @param message: the data: an L{IMessageSource} (a
            L{smtpd.queue.spool.Spool} on disk becomes the data file by fsync
            and rename, without a copy) or C{bytes}.
        """
        if isinstance(message, (bytes, bytearray)):
            message = BytesSource(message)
        return Deferred.fromCoroutine(self._store(envelope, message))

    async def _store(self, envelope: Envelope, message: IMessageSource) -> None:
        # Serialised here, on the caller's thread: later changes to the
        # envelope object cannot race with the write.
        record = envelope.to_json()
        await self._run(self._store_blocking, envelope.id, message, record)
        self._keep_fresh(envelope.id, message)
        self._notify(envelope)

    def _keep_fresh(self, queue_id: str, message: IMessageSource) -> None:
        """Keep the data of a just-stored entry for its first attempt (L{source})."""
        data = held_data(message)
        if data is not None and self._fresh_size + len(data) <= self._fresh_budget:
            self._fresh_data[queue_id] = data
            self._fresh_size += len(data)

    def _drop_fresh(self, queue_id: str) -> bytes | None:
        data = self._fresh_data.pop(queue_id, None)
        if data is not None:
            self._fresh_size -= len(data)
        return data

    def _store_blocking(self, queue_id: str, message: IMessageSource, record: bytes) -> None:
        eml, js = self.data_path(queue_id), self.envelope_path(queue_id)
        placed: list[str] = []
        try:
            self._ensure_directory()
            for path in (eml, js):
                if os.path.lexists(path):
                    raise OSError(errno.EEXIST, "queue entry exists", path)
            place_blocking(message, eml)
            placed.append(eml)
            faults.point("store-data")
            replace_file(js, record)
            placed.append(js)
            self._sync_directory()
        except BaseException:
            for path in reversed(placed):
                unlink_quietly(path)
            if placed and isinstance(message, Spool):
                message.uncommit_blocking()
            raise

    def update(self, envelope: Envelope) -> Deferred[None]:
        """
        Atomically rewrite the envelope of an existing entry.
        Fails with L{FileNotFoundError} when the entry is gone (so a removed
        entry is never resurrected as an envelope without data).
        """
        record = envelope.to_json()
        return self._run(self._update_blocking, envelope.id, record)

    def _update_blocking(self, queue_id: str, record: bytes) -> None:
        eml = self.data_path(queue_id)
        if not os.path.exists(eml):
            raise FileNotFoundError(errno.ENOENT, "queue entry is gone", eml)
        replace_file(self.envelope_path(queue_id), record)
        self._sync_directory()

    def remove(self, queue_id: str) -> Deferred[None]:
        """
        Remove an entry: envelope first, then data. Missing files are fine.
        Fires once the removal is durable. Removals asked for while others are
        being written go together in the next batch (one thread job, one
        folder fsync).
        """
        self._drop_fresh(queue_id)
        return self._removals.submit(queue_id)

    def _remove_batch(self, ids: list[str]) -> list[tuple[bool, Any]]:
        """Remove the entries C{ids}, then fsync the folder once; an outcome per entry."""
        outcomes: list[tuple[bool, Any]] = []
        for queue_id in ids:
            try:
                self._unlink_entry(queue_id)
            except Exception:
                outcomes.append((False, Failure()))
            else:
                outcomes.append((True, None))
        try:
            self._sync_directory()
        except Exception:
            failure = Failure()
            outcomes = [(False, failure) if ok else (ok, value) for ok, value in outcomes]
        return outcomes

    def _remove_blocking(self, queue_id: str) -> None:
        self._unlink_entry(queue_id)
        self._sync_directory()

    def _unlink_entry(self, queue_id: str) -> None:
        for path in (self.envelope_path(queue_id), self.data_path(queue_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _ensure_directory(self) -> None:
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory, 0o700, exist_ok=True)
            fsync_directory(os.path.dirname(self.directory))

    def _sync_directory(self) -> None:
        """fsync the queue folder, shared by concurrent callers (group commit)."""
        self._folder_sync.sync()

    # -- reading

    def source(self, queue_id: str) -> IMessageSource:
        """
        The message data of entry C{queue_id}, to be read in chunks: from
        memory the first time after a store from memory (the same octets as
        the data file), else from the data file.

        @raise FileNotFoundError: when the entry has no data file.
        """
        data = self._drop_fresh(queue_id)
        if data is not None:
            return BytesSource(data)
        return FileSource(self.data_path(queue_id))

    def read_envelope(self, queue_id: str) -> Deferred[Envelope]:
        """The envelope of entry C{queue_id}, as last stored or updated."""
        path = self.envelope_path(queue_id)
        return self._run(lambda: parse_envelope(_read_file(path), queue_id))

    def scan(self, cleanup: bool = True) -> list[Envelope]:
        """
        Every complete entry, oldest first. Synchronous: used by
        C{smtpctl queue list}.

        With C{cleanup} (at start, when nothing else writes here): create
        the folder when missing, remove temporary files and data files without
        an envelope (incomplete stores), and move envelopes that do not parse or
        have no data to C{corrupt/} (L{smtpd.queue.recovery}), logging each. Without it nothing on disk is touched and
        unreadable entries are skipped, so it is safe while the server runs.
        """
        entries = list(self._walk(cleanup))
        entries.sort(key=lambda e: (e.arrival, e.id))
        return entries

    def entry_ids(self) -> list[str]:
        """
        The ids of the complete entries (an envelope and its data), sorted
        (roughly by arrival), from the file names alone: no envelope is
        read. Synchronous; touches nothing on disk.
        """
        try:
            names = set(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        return sorted(name[:-5] for name in names if name.endswith(".json")
                      and valid_queue_id(name[:-5]) and name[:-5] + ".eml" in names)

    def envelopes(self, ids: list[str]) -> list[Envelope]:
        """
        The envelopes of entries C{ids}, in that order, leaving out those gone
        meanwhile or unreadable. Synchronous (a listing's page, in a thread);
        touches nothing on disk.
        """
        found = []
        for queue_id in ids:
            envelope = self._scan_entry(queue_id, True, False)
            if envelope is not None:
                found.append(envelope)
        return found

    def schedule(self, cleanup: bool = True) -> list[tuple[float, str, str]]:
        """
        C{(next_attempt, queue_id, state)} of every complete entry: what the
        scheduler keeps, without holding the envelopes. Synchronous, at
        start; C{cleanup} as for L{scan}.
        """
        return [(e.next_attempt, e.id, e.state) for e in self._walk(cleanup)]

    def recover(self) -> list[str]:
        """
        At start, before anything else writes here: create the folder when
        missing, remove temporary files and data files without an envelope,
        move envelopes without data to C{corrupt/} (L{smtpd.queue.recovery}),
        all from the names alone; the ids of the entries that have both
        files, for L{read_schedule}. Synchronous and quick: no envelope is
        read.
        """
        self._ensure_directory()
        names = set(os.listdir(self.directory))
        ids = []
        for name in names:
            stem, ext = os.path.splitext(name)
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                remove_leftover(self.directory, name, "temporary file")
            elif not valid_queue_id(stem):
                continue
            elif ext == ".eml" and stem + ".json" not in names:
                remove_leftover(self.directory, name, "data file without envelope")
            elif ext == ".json" and stem + ".eml" not in names:
                move_to_corrupt(self.directory, stem, "message data file missing")
            elif ext == ".json":
                ids.append(stem)
        fsync_directory(self.directory)
        return ids

    def read_schedule(self, ids: list[str]
                      ) -> Deferred[list[tuple[float, str, str, float, frozenset[str]]]]:
        """
        C{(next_attempt, queue_id, state, arrival, pending domains)} of the
        entries C{ids} (from L{recover}), reading each envelope off the reactor
        thread; one that
        cannot be parsed moves to C{corrupt/}.
        """
        return self._run(self._read_schedule_blocking, ids)

    def _read_schedule_blocking(self, ids: list[str]
                                ) -> list[tuple[float, str, str, float, frozenset[str]]]:
        found = []
        for queue_id in ids:
            envelope = self._scan_entry(queue_id, True, True)
            if envelope is not None:
                found.append((envelope.next_attempt, envelope.id, envelope.state,
                              envelope.arrival, envelope.pending_domains()))
        return found

    def _walk(self, cleanup: bool) -> Iterator[Envelope]:
        """The envelope of each complete entry, one at a time (see L{scan})."""
        if cleanup:
            self._ensure_directory()
        try:
            names = set(os.listdir(self.directory))
        except FileNotFoundError:
            return
        for name in names:
            stem, ext = os.path.splitext(name)
            if cleanup and name.startswith(".") and name.endswith(TEMP_SUFFIX):
                remove_leftover(self.directory, name, "temporary file")
            elif cleanup and ext == ".eml" and stem + ".json" not in names:
                if valid_queue_id(stem):
                    remove_leftover(self.directory, name, "data file without envelope")
            elif ext == ".json" and valid_queue_id(stem):
                envelope = self._scan_entry(stem, stem + ".eml" in names, cleanup)
                if envelope is not None:
                    yield envelope
        if cleanup:
            fsync_directory(self.directory)

    def _scan_entry(self, queue_id: str, has_data: bool, cleanup: bool) -> Envelope | None:
        try:
            raw = _read_file(self.envelope_path(queue_id))
        except FileNotFoundError:
            return None  # removed while we were listing
        except OSError as e:
            log.error("queue entry {id} cannot be read: {error}", id=queue_id, error=e)
            return None
        try:
            envelope = parse_envelope(raw, queue_id)
        except ValueError as e:
            if cleanup:
                move_to_corrupt(self.directory, queue_id, f"unreadable envelope: {e}")
            return None
        if not has_data:
            if cleanup:
                move_to_corrupt(self.directory, queue_id, "message data file missing")
            return None
        return envelope

    # -- badmail

    def move_to_badmail(self, envelope: Envelope, reason: str) -> Deferred[None]:
        """
        Put a message that can be neither delivered nor returned into
        C{badmail/<id>.bad} (its data) and C{<id>.bdr} (why, sender,
        recipients), durably, then remove it from the queue.
        """
        report = badmail_report(reason, envelope)
        self._drop_fresh(envelope.id)
        return self._run(self._badmail_blocking, envelope.id, report)

    def _badmail_blocking(self, queue_id: str, report: bytes) -> None:
        self._write_badmail(queue_id, FileSource(self.data_path(queue_id)), report)
        self._remove_blocking(queue_id)

    def _write_badmail(self, queue_id: str, data: bytes | IMessageSource,
                       report: bytes) -> None:
        _check_id(queue_id)
        if not os.path.isdir(self.badmail):
            os.makedirs(self.badmail, 0o700, exist_ok=True)
            fsync_directory(os.path.dirname(self.badmail))
        bad = os.path.join(self.badmail, queue_id + ".bad")
        if isinstance(data, bytes):
            replace_file(bad, data)
        else:
            _copy_into(bad, data)
        replace_file(os.path.join(self.badmail, queue_id + ".bdr"), report)
        fsync_directory(self.badmail)


def _copy_into(path: str, source: IMessageSource) -> None:
    """Give C{path} the data of C{source} atomically, in chunks (the caller fsyncs the folder)."""
    tmp = temp_name(path)
    write_chunks(tmp, read_chunks(source))
    try:
        os.rename(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
