# -*- test-case-name: tests.test_scheduler -*-
"""
What is due: the schedule of the queue (Postfix's qmgr "active queue" in
miniature). Per entry only its state, arrival and next attempt time are kept in
memory, in one heap served by one timer on the injected clock; envelopes are
read from disk only when an entry is due. At most C{max_in_flight} attempts
run at once, and one operation per entry at a time.

The retry schedule (C{[delivery] retry}) and the deadlines that bring an
attempt forward (the delay warning, expiry) are computed here too.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred

from smtpd.config import Config
from smtpd.mail.envelope import DEFERRED, HELD, QUEUED, Envelope
from smtpd.queue.index import QueueIndex
from smtpd.queue.results import wants

# Envelopes read per thread hand-off while the schedule is loaded at start.
LOAD_BATCH = 500
# How long a failed attempt (an error, not a delivery result) waits, at least.
DEFAULT_RETRY = 900.0
# How many envelopes of entries just stored are kept in memory for their first
# attempt (beyond that the attempt reads the envelope from disk, as any other).
FRESH_LIMIT = 1024


class Scheduler:
    """
    Decides which entries are attempted when.

    @param queue: the L{smtpd.queue.store.Queue} (for L{Queue.schedule} at
        start and L{Queue.read_envelope} when due).
    @param clock: an C{IReactorTime}.
    @param config: the L{Config} (the retry schedule and deadlines); may be
        replaced on reload.
    @param errors: a logger with C{failure} for failed attempts.
    @param max_in_flight: how many attempts may run at once.
    """

    def __init__(self, queue: Any, clock: Any, config: Config, errors: Any,
                 max_in_flight: int):
        self.queue = queue
        self.clock = clock
        self.config = config
        self.max_in_flight = max_in_flight
        self._errors = errors
        self._states: dict[str, str] = {}
        # Arrival times, for the queue's shape by age (the metrics).
        self._arrivals: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._timer: Any = None
        self._busy: dict[str, Deferred] = {}
        self._attempting: set[str] = set()
        self._pumping = False
        self.loading: Deferred[None] | None = None
        self._attempt: Callable[[str], Awaitable[None]] | None = None
        # Envelopes of entries just stored, as stored: the first attempt
        # needs no disk read (copies: the caller's object may change).
        self._fresh: dict[str, Envelope] = {}
        # Every entry id in order, for listings (those found at start whose
        # envelopes are still being read included).
        self._index = QueueIndex()
        # Told C{[(queue id, next attempt, pending domains)]} of the deferred
        # entries of each batch read at start (the queue's shape keeps them).
        self.load_observers: list[Callable[[list[tuple[str, float, frozenset[str]]]],
                                           object]] = []

    # -- start and stop

    def start(self, attempt: Callable[[str], Awaitable[None]]) -> None:
        """
        Load the schedule from the queue folder and start attempting what is
        due with C{attempt(queue_id)} (a coroutine function).
        """
        self._attempt = attempt
        self.load([])
        ids = self.queue.recover()
        self._index.reset(ids)
        self.loading = Deferred.fromCoroutine(self._load_batches(ids))
        self.pump()

    async def _load_batches(self, ids: list[str]) -> None:
        """
        Read the envelopes of C{ids} in the queue's thread, a batch at a time,
        adding each batch to the schedule as it comes: a big queue does not
        delay the listeners, and what is due is attempted while the rest is
        still being read.
        """
        for start in range(0, len(ids), LOAD_BATCH):
            batch = ids[start:start + LOAD_BATCH]
            try:
                entries = await self.queue.read_schedule(batch)
            except Exception:
                self._errors.failure("Cannot read the queue at start")
                return
            if not self.running:
                return
            self.add(entries)
            self._loaded(entries)
            for queue_id in batch:
                if queue_id not in self._states:
                    self._index.discard(queue_id)  # moved to corrupt/, or gone
            self.pump()

    def _loaded(self, entries: list[tuple]) -> None:
        """Tell the L{load_observers} of the deferred entries in a batch read at start."""
        if not self.load_observers:
            return
        states = self._states
        deferred = [(entry[1], entry[0], entry[4]) for entry in entries
                    if len(entry) > 4 and states.get(entry[1]) == DEFERRED]
        for observer in list(self.load_observers):
            try:
                observer(deferred)
            except Exception:
                self._errors.failure("Queue load observer {observer!r} failed",
                                     observer=observer)

    def add(self, entries: Iterable[tuple]) -> None:
        """
        Add C{(next_attempt, queue_id, state, arrival)} of entries not known
        yet (anything after those four is for the L{load_observers}).
        """
        for when, queue_id, state, arrival, *_ in entries:
            if queue_id in self._states:
                continue
            state = state if state in (QUEUED, DEFERRED, HELD) else QUEUED
            self._states[queue_id] = state
            self._index.add(queue_id)
            self._arrivals[queue_id] = arrival
            if state != HELD:
                self._due[queue_id] = when
                heapq.heappush(self._heap, (when, queue_id))

    def stop(self) -> list[Deferred[None]]:
        """Start nothing more; Deferreds for the operations still running."""
        self._attempt = None
        self._fresh.clear()
        self._disarm()
        return [settled(d) for d in self._busy.values()]

    @property
    def running(self) -> bool:
        """Whether attempts are being started."""
        return self._attempt is not None

    def load(self, entries: Iterable[tuple]) -> None:
        """Replace the schedule with C{(next_attempt, queue_id, state, arrival)} of entries."""
        self._states = {}
        self._arrivals = {}
        self._due = {}
        for when, queue_id, state, arrival, *_ in entries:
            state = state if state in (QUEUED, DEFERRED, HELD) else QUEUED
            self._states[queue_id] = state
            self._arrivals[queue_id] = arrival
            if state != HELD:
                self._due[queue_id] = when
        self._heap = [(when, queue_id) for queue_id, when in self._due.items()]
        heapq.heapify(self._heap)
        self._index.reset(self._states)

    # -- what the other parts tell it

    def added(self, envelope: Envelope) -> None:
        """
        A new entry was stored: it is tried at once (unless held; on the next
        turn of the reactor, one timer for all the entries stored meanwhile),
        with the envelope as stored (kept in memory: no disk read for it).
        """
        if not self.running:
            return
        self._index.add(envelope.id)
        self._arrivals[envelope.id] = envelope.arrival
        if envelope.state == HELD:
            self._states[envelope.id] = HELD
            return
        self._states[envelope.id] = DEFERRED if envelope.state == DEFERRED else QUEUED
        if len(self._fresh) < FRESH_LIMIT:
            self._fresh[envelope.id] = copy_envelope(envelope)
        self.schedule(envelope.id, self.clock.seconds())
        self._arm()

    def schedule(self, queue_id: str, when: float) -> None:
        """Make C{queue_id} due at C{when} (replacing any earlier schedule)."""
        self._due[queue_id] = when
        heapq.heappush(self._heap, (when, queue_id))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(t, i) for i, t in self._due.items()]
            heapq.heapify(self._heap)

    def unschedule(self, queue_id: str) -> None:
        """C{queue_id} is not due until scheduled again."""
        self._due.pop(queue_id, None)
        self._fresh.pop(queue_id, None)

    def forget(self, queue_id: str) -> None:
        """The entry left the queue."""
        self._states.pop(queue_id, None)
        self._index.discard(queue_id)
        self._arrivals.pop(queue_id, None)
        self._due.pop(queue_id, None)
        self._fresh.pop(queue_id, None)

    def state(self, queue_id: str) -> str | None:
        """The state of entry C{queue_id}, or L{None} when unknown."""
        return self._states.get(queue_id)

    def known(self, queue_id: str) -> str:
        """
        The state of entry C{queue_id}.

        @raise KeyError: for an unknown id.
        """
        if queue_id not in self._states:
            raise KeyError(f"no queue entry {queue_id!r}")
        return self._states[queue_id]

    def set_state(self, queue_id: str, state: str) -> None:
        """Record the state of a known entry (a held one is never due)."""
        if queue_id in self._states:
            self._states[queue_id] = state
            if state == HELD:
                self._due.pop(queue_id, None)
                self._fresh.pop(queue_id, None)

    def ids(self) -> list[str]:
        """Every entry id, sorted (ids sort roughly by arrival)."""
        return self._index.all()

    def page(self, limit: int | None, offset: int = 0,
             after: str | None = None) -> list[tuple[str, str | None]]:
        """
        One page of entries in id order (L{QueueIndex.page}), each id with its
        state: L{None} for an entry found at start whose envelope is still
        being read (the state stored in it is the one in force).
        """
        states = self._states
        return [(i, states.get(i)) for i in self._index.page(limit, offset, after)]

    def position(self, after: str | None) -> tuple[int, int]:
        """C{(ids up to and including after, all ids)} of the listing order (L{page})."""
        return self._index.position(after), len(self._index)

    def deferred(self) -> list[tuple[str, float, float | None]]:
        """
        C{(queue id, arrival, next attempt)} of each deferred entry, from
        memory; the next attempt is L{None} while an attempt runs.
        """
        arrivals, due = self._arrivals, self._due
        return [(i, arrivals.get(i, 0.0), due.get(i))
                for i, state in self._states.items() if state == DEFERRED]

    def counts(self) -> dict[str, int]:
        """How many entries are queued, deferred and held."""
        counts = {QUEUED: 0, DEFERRED: 0, HELD: 0}
        for state in self._states.values():
            counts[state] = counts.get(state, 0) + 1
        return counts

    def ages(self, now: float, bounds: tuple[float, ...]) -> dict[str, list[int]]:
        """
        How many entries of each state arrived how long before C{now}: per
        state one count per upper bound of C{bounds} (seconds, ascending; an
        age equal to a bound counts in its column) and one more for older.
        """
        shape = {state: [0] * (len(bounds) + 1) for state in (QUEUED, DEFERRED, HELD)}
        for queue_id, state in self._states.items():
            age = now - self._arrivals.get(queue_id, now)
            column = next((i for i, b in enumerate(bounds) if age <= b), len(bounds))
            shape.setdefault(state, [0] * (len(bounds) + 1))[column] += 1
        return shape

    def attempting(self, queue_id: str) -> bool:
        """Whether an attempt on C{queue_id} is under way."""
        return queue_id in self._attempting

    def make_all_due(self) -> list[str]:
        """Every entry that is neither held nor being attempted is due now; their ids."""
        now = self.clock.seconds()
        ids = [i for i, s in self._states.items() if s != HELD and i not in self._attempting]
        self._due = dict.fromkeys(ids, now)
        self._heap = [(now, i) for i in ids]
        return ids

    # -- reading entries

    async def read(self, queue_id: str) -> Envelope | None:
        """
        The entry's envelope, or L{None} when the entry is gone (then forgotten).
        An entry just stored is not read again: its envelope is the one stored.

        @raise Exception: when it cannot be read.
        """
        fresh = self._fresh.pop(queue_id, None)
        if fresh is not None:
            return fresh
        try:
            return await self.queue.read_envelope(queue_id)
        except FileNotFoundError:
            self.forget(queue_id)
            return None

    def exclusive(self, queue_id: str, work: Callable[[], Awaitable[Any]]) -> Deferred:
        """
        Run C{work()} for C{queue_id} after any attempt or admin operation on
        the same entry has finished: one operation per entry at a time.
        """
        previous = self._busy.get(queue_id)

        async def run() -> Any:
            if previous is not None:
                await settled(previous)
            return await work()

        d = Deferred.fromCoroutine(run())
        self._busy[queue_id] = d

        def release(result: object) -> object:
            if self._busy.get(queue_id) is d:
                del self._busy[queue_id]
            return result

        d.addBoth(release)
        return d

    # -- the timer

    def pump(self) -> None:
        """Start every due entry, up to the limit of attempts in flight."""
        if self._pumping or not self.running:
            return
        self._pumping = True
        try:
            now = self.clock.seconds()
            while not self._full():
                earliest = self._earliest()
                if earliest is None or earliest > now:
                    break
                _, queue_id = heapq.heappop(self._heap)
                del self._due[queue_id]
                self._begin(queue_id)
        finally:
            self._pumping = False
        self._arm()

    def _begin(self, queue_id: str) -> None:
        """Attempt C{queue_id} now; an error is logged and retried later."""
        attempt = self._attempt
        self._attempting.add(queue_id)
        d = self.exclusive(queue_id, lambda: attempt(queue_id))

        def failed(failure: Any) -> None:
            self._errors.failure("Delivery attempt for {queue_id} failed", failure,
                                 queue_id=queue_id)
            if self.running and self._states.get(queue_id) not in (None, HELD):
                self.schedule(queue_id, self.clock.seconds() + self.interval(1))

        def done(_: object) -> None:
            self._attempting.discard(queue_id)
            self.pump()

        d.addErrback(failed)
        d.addBoth(done)

    def _full(self) -> bool:
        return len(self._attempting) >= self.max_in_flight

    def _earliest(self) -> float | None:
        """When the first entry is due; drops replaced heap items on the way."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _arm(self) -> None:
        """Keep the one timer set for the earliest due entry (none when full)."""
        earliest = self._earliest()
        if not self.running or earliest is None or self._full():
            self._disarm()
            return
        delay = max(0.0, earliest - self.clock.seconds())
        if self._timer is None or not self._timer.active():
            self._timer = self.clock.callLater(delay, self._fire)
        elif self._timer.getTime() != self.clock.seconds() + delay:
            self._timer.reset(delay)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self.pump()

    # -- the retry schedule

    def interval(self, attempts: int) -> float:
        """The retry interval after attempt number C{attempts} (the last repeats)."""
        retry = self.config.delivery.retry or (DEFAULT_RETRY,)
        return max(1.0, retry[min(attempts - 1, len(retry) - 1)])

    def next_attempt(self, envelope: Envelope, now: float) -> float:
        """
        The next retry per C{[delivery] retry}, brought forward to the moment a
        delay warning is due or the message expires, so both happen on time.
        """
        when = now + self.interval(envelope.attempts)
        delivery = self.config.delivery
        deadlines = [envelope.arrival + delivery.expiration]
        if delivery.delay_notification > 0 and envelope.sender and any(
            not r.notified_delay and wants(r, "DELAY") for r in envelope.pending()
        ):
            deadlines.append(envelope.arrival + delivery.delay_notification)
        return min([when] + [t for t in deadlines if t > now])


def copy_envelope(envelope: Envelope) -> Envelope:
    """A copy of C{envelope} whose recipients can change without touching the original."""
    return replace(envelope, recipients=[replace(r) for r in envelope.recipients])


def settled(d: Deferred) -> Deferred[None]:
    """A Deferred firing (with None) when C{d} fires, leaving C{d}'s result alone."""
    waiter: Deferred[None] = Deferred()

    def passthrough(result: object) -> object:
        waiter.callback(None)
        return result

    d.addBoth(passthrough)
    return waiter
