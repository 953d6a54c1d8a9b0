# -*- test-case-name: tests.test_web_queue -*-
"""
The queue's shape (Postfix's qshape): deferred entries by the destination
domains of their pending recipients and by age.

The scheduler knows each entry's state, arrival and next attempt without
reading its envelope, but the recipients' domains are only in the envelope.
So each deferred entry's envelope is read once and its domains kept by queue
id; it is read again only when the entry's next attempt changed (an attempt
may have delivered some of its recipients), and forgotten when the entry is
no longer deferred. A request then costs a pass over the schedule in memory
plus the envelopes that are new or changed since the one before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock

# Upper bounds (minutes) of the age columns; the last column is older.
AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)

# Envelopes read per thread hand-off.
READ_BATCH = 500


def table(entries: Iterable[tuple[float, Iterable[str]]], now: float) -> dict:
    """
    The qshape table of C{(arrival, destination domains)} pairs of deferred
    entries: C{buckets} (column titles, minutes) and C{rows} of C{[domain,
    total, counts...]}, a C{TOTAL} row first, then the most deferred first.
    """
    columns = len(AGE_BUCKETS) + 1
    counts: dict[str, list[int]] = {}
    for arrival, domains in entries:
        minutes = max(0.0, now - arrival) / 60
        column = next((i for i, b in enumerate(AGE_BUCKETS) if minutes <= b), columns - 1)
        for domain in domains:
            counts.setdefault(domain, [0] * columns)[column] += 1
    totals = [sum(row[i] for row in counts.values()) for i in range(columns)]
    rows = sorted(([d, sum(c), *c] for d, c in counts.items()), key=lambda r: (-r[1], r[0]))
    titles = [str(b) for b in AGE_BUCKETS] + [f"{AGE_BUCKETS[-1]}+"]
    return {"buckets": titles, "rows": [["TOTAL", sum(totals), *totals], *rows]}


def pending_domains(envelope) -> frozenset[str]:
    """The destination domains of an envelope's pending recipients (lower case)."""
    return frozenset(r.address.rpartition("@")[2].lower() for r in envelope.pending())


class QueueShape:
    """
    The qshape table of the running queue, its domains kept per entry.

    @param qmgr: the L{smtpd.queue.manager.QueueManager} (its C{deferred()}).
    @param queue: the L{smtpd.queue.store.Queue} (its C{envelopes(ids)}).
    @param run_blocking: C{run_blocking(f, *args)}: a Deferred of C{f(*args)} in a thread.
    @ivar reads: how many envelopes were read since start.
    """

    def __init__(self, qmgr: Any, queue: Any, run_blocking: Callable[..., Deferred]):
        self.qmgr = qmgr
        self.queue = queue
        self.run_blocking = run_blocking
        self.reads = 0
        # queue id -> (the next attempt when read, its pending domains)
        self._known: dict[str, tuple[float | None, frozenset[str]]] = {}
        # Equal domain sets share one object (most entries have the same few).
        self._sets: dict[frozenset[str], frozenset[str]] = {}
        self._lock = DeferredLock()

    def shape(self, now: float) -> Deferred[dict]:
        """The table (see L{table}) of the deferred entries at C{now}."""
        return self._lock.run(lambda: Deferred.fromCoroutine(self._shape(now)))

    async def _shape(self, now: float) -> dict:
        deferred = self.qmgr.deferred()
        await self._refresh(deferred)
        known = self._known
        return table(((arrival, known[i][1]) for i, arrival, _ in deferred if i in known), now)

    async def _refresh(self, deferred: list[tuple[str, float, float | None]]) -> None:
        """Forget entries no longer deferred; read those new or changed."""
        current = {queue_id for queue_id, _, _ in deferred}
        for queue_id in [i for i in self._known if i not in current]:
            del self._known[queue_id]
        stale = [(queue_id, due) for queue_id, _, due in deferred
                 if self._stale(queue_id, due)]
        for start in range(0, len(stale), READ_BATCH):
            batch = dict(stale[start:start + READ_BATCH])
            envelopes = await self.run_blocking(self.queue.envelopes, list(batch))
            self.reads += len(batch)
            for envelope in envelopes:
                domains = pending_domains(envelope)
                self._known[envelope.id] = (batch[envelope.id],
                                            self._sets.setdefault(domains, domains))
        if len(self._sets) > 2 * len(self._known) + 1000:
            self._sets = {d: d for _, d in self._known.values()}

    def _stale(self, queue_id: str, due: float | None) -> bool:
        """Whether the domains of C{queue_id} must be read (again)."""
        known = self._known.get(queue_id)
        # While an attempt runs the entry has no next attempt: what was read
        # stands until the attempt gives it one.
        return known is None or (due is not None and known[0] != due)
