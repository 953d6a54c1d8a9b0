# -*- test-case-name: tests.test_qmgr -*-
"""
What an administrator does to the queue (C{smtpctl queue ...}, the admin
interface): retry (one entry, all, or those for a domain: ETRN), hold,
release, delete (with or without an NDR), a summary of the states, and a paged
listing of entries read from disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed

from smtpd.mail.address import split_address
from smtpd.mail.envelope import DEFERRED, HELD, QUEUED, Envelope
from smtpd.queue.notifier import Notifier
from smtpd.queue.scheduler import Scheduler


@dataclass(frozen=True)
class EntrySummary:
    """
    One queue entry as a listing shows it.

    @ivar id: the queue id.
    @ivar sender: the reverse-path ("" for C{<>}).
    @ivar recipients: every recipient address.
    @ivar pending: how many recipients are still pending.
    @ivar state: C{queued}, C{deferred} or C{held}.
    @ivar arrival: when it arrived (seconds since the epoch).
    @ivar next_attempt: when it is tried next.
    @ivar attempts: how many attempts were made.
    @ivar size: the message size in octets.
    """

    id: str
    sender: str
    recipients: tuple[str, ...]
    pending: int
    state: str
    arrival: float
    next_attempt: float
    attempts: int
    size: int

    @classmethod
    def of(cls, envelope: Envelope) -> EntrySummary:
        """The summary of C{envelope}."""
        return cls(envelope.id, envelope.sender,
                   tuple(r.address for r in envelope.recipients), len(envelope.pending()),
                   envelope.state, envelope.arrival, envelope.next_attempt,
                   envelope.attempts, envelope.size)


class Operations:
    """
    The administrative operations on the queue.

    @param queue: the L{smtpd.queue.store.Queue}.
    @param clock: an C{IReactorTime}.
    @param scheduler: the L{Scheduler}.
    @param notifier: the L{Notifier} (the NDR of a delete with bounce).
    """

    def __init__(self, queue: Any, clock: Any, scheduler: Scheduler, notifier: Notifier):
        self.queue = queue
        self.clock = clock
        self.scheduler = scheduler
        self.notifier = notifier

    def retry(self, id: str | None = None) -> int:
        """
        Attempt entry C{id} now, or every entry that is not held when C{id}
        is L{None}; returns how many were made due.

        @raise KeyError: for an unknown id.
        """
        scheduler = self.scheduler
        if id is None:
            ids = scheduler.make_all_due()
        elif scheduler.known(id) == HELD or scheduler.attempting(id):
            return 0
        else:
            ids = [id]
            scheduler.schedule(id, self.clock.seconds())
        scheduler.pump()
        return len(ids)

    async def flush_domain(self, domain: str, subdomains: bool = False) -> int:
        """
        Make due now every entry with a pending recipient in C{domain} (and,
        with C{subdomains}, in the domains under it), except held ones (ETRN,
        RFC 1985); returns how many entries that is, those already being
        attempted included. Each envelope is read from disk and dropped.
        """
        domain = domain.lower().rstrip(".")
        scheduler = self.scheduler
        found = 0
        for queue_id in scheduler.ids():
            if scheduler.state(queue_id) in (None, HELD):
                continue
            try:
                envelope = await self.queue.read_envelope(queue_id)
            except (OSError, ValueError):
                continue  # gone meanwhile, or unreadable
            if scheduler.state(queue_id) in (None, HELD) or not any(
                _in_domain(r.address, domain, subdomains) for r in envelope.pending()
            ):
                continue  # gone or held meanwhile, or nothing for the domain
            found += 1
            if not scheduler.attempting(queue_id):
                scheduler.schedule(queue_id, self.clock.seconds())
        scheduler.pump()
        return found

    def hold(self, id: str) -> Deferred[None]:
        """
        Stop attempting entry C{id} until L{release}d (kept across restarts).

        @raise KeyError: for an unknown id.
        """
        self.scheduler.known(id)
        self.scheduler.set_state(id, HELD)
        return self.scheduler.exclusive(id, lambda: self._set_state(id, HELD))

    def release(self, id: str) -> Deferred[None]:
        """
        Attempt a held entry again, at once.

        @raise KeyError: for an unknown id.
        """
        if self.scheduler.known(id) != HELD:
            return succeed(None)
        return self.scheduler.exclusive(id, lambda: self._set_state(id, None))

    async def _set_state(self, queue_id: str, state: str | None) -> None:
        """Write a held state (or, for L{None}, the released one) to disk."""
        envelope = await self.scheduler.read(queue_id)
        if envelope is None:
            return
        now = self.clock.seconds()
        if state is None:
            state = DEFERRED if envelope.attempts else QUEUED
            envelope.next_attempt = now
        envelope.state = state
        await self.queue.update(envelope)
        if self.scheduler.state(queue_id) is not None:
            self.scheduler.set_state(queue_id, state)
            if state != HELD:
                self.scheduler.schedule(queue_id, now)
                self.scheduler.pump()

    def delete(self, id: str, bounce: bool = False) -> Deferred[None]:
        """
        Remove entry C{id}; with C{bounce}, first return an NDR (5.0.0) for
        its pending recipients (a report from C{<>} goes to badmail instead).

        @raise KeyError: for an unknown id.
        """
        self.scheduler.known(id)
        self.scheduler.unschedule(id)
        return self.scheduler.exclusive(id, lambda: self._delete(id, bounce))

    async def _delete(self, queue_id: str, bounce: bool) -> None:
        envelope = await self.scheduler.read(queue_id)
        if envelope is None:
            return
        if bounce and envelope.pending():
            message = self.queue.source(queue_id)
            if not await self.notifier.return_deleted(envelope, message):
                # Not deleted: the entry goes back on the schedule as it was.
                self.scheduler.schedule(queue_id, envelope.next_attempt)
                self.scheduler.pump()
                raise RuntimeError(f"cannot queue the NDR for {queue_id}; not deleted")
            if envelope.sender == "":
                self.scheduler.forget(queue_id)  # it is in badmail now
                return
        await self.queue.remove(queue_id)
        self.scheduler.forget(queue_id)

    def summary(self) -> dict[str, int]:
        """How many entries are queued, deferred and held."""
        return self.scheduler.counts()

    async def list(self, offset: int = 0, limit: int = 100) -> list[EntrySummary]:
        """
        One page of the entries, oldest first: at most C{limit} from position
        C{offset}, each read from disk (an entry gone meanwhile or unreadable is left
        out).
        """
        page = self.scheduler.ids()[max(0, offset): max(0, offset) + max(0, limit)]
        found = []
        for queue_id in page:
            try:
                envelope = await self.queue.read_envelope(queue_id)
            except (OSError, ValueError):
                continue  # gone meanwhile, or unreadable (badmail at the next start)
            found.append(EntrySummary.of(envelope))
        return found


def _in_domain(address: str, domain: str, subdomains: bool) -> bool:
    """Whether C{address} is at C{domain} (or, with C{subdomains}, under it)."""
    at = split_address(address)[1].lower().rstrip(".")
    return at == domain or (subdomains and at.endswith("." + domain))
