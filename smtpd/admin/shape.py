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

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock

# Upper bounds (minutes) of the age columns; the last column is older.
AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)

# The same in seconds: an age equal to a bound counts in its column.
_BOUNDS = tuple(60.0 * b for b in AGE_BUCKETS)

# Envelopes read per thread hand-off.
READ_BATCH = 500


def table(entries: Iterable[tuple[float, frozenset[str]]], now: float) -> dict:
    """
    The qshape table of C{(arrival, destination domains)} pairs of deferred
    entries: C{buckets} (column titles, minutes) and C{rows} of C{[domain,
    total, counts...]}, a C{TOTAL} row (the sum of the domains' rows) first,
    then the most deferred domain first.
    """
    columns = len(AGE_BUCKETS) + 1
    # Entries with the same domains and column are counted together first:
    # most entries share a few domain sets.
    grouped = Counter((domains, bisect_left(_BOUNDS, now - arrival))
                      for arrival, domains in entries)
    counts: dict[str, list[int]] = {}
    for (domains, column), n in grouped.items():
        for domain in domains:
            counts.setdefault(domain, [0] * columns)[column] += n
    totals = [sum(row[i] for row in counts.values()) for i in range(columns)]
    rows = sorted(([d, sum(c), *c] for d, c in counts.items()), key=lambda r: (-r[1], r[0]))
    titles = [str(b) for b in AGE_BUCKETS] + [f"{AGE_BUCKETS[-1]}+"]
    return {"buckets": titles, "rows": [["TOTAL", sum(totals), *totals], *rows]}


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
        # The deferred entries read at start come with their domains: the
        # first request after a restart reads no envelope for them.
        qmgr.observe_load(self.seed)

    def seed(self, entries: list[tuple[str, float, frozenset[str]]]) -> None:
        """Keep C{(queue id, next attempt, pending domains)} of deferred entries read at start."""
        known, sets = self._known, self._sets
        for queue_id, due, domains in entries:
            if queue_id not in known:
                known[queue_id] = (due, sets.setdefault(domains, domains))

    def shape(self, now: float) -> Deferred[dict]:
        """The table (see L{table}) of the deferred entries at C{now}."""
        return self._lock.run(lambda: Deferred.fromCoroutine(self._shape(now)))

    async def _shape(self, now: float) -> dict:
        return table(await self._current(self.qmgr.deferred()), now)

    async def _current(self, deferred: list[tuple[str, float, float | None]]
                       ) -> list[tuple[float, frozenset[str]]]:
        """
        C{(arrival, domains)} of the C{deferred} entries: those known and
        unchanged from memory, the others read (then known); the entries no
        longer deferred are forgotten.
        """
        known, fresh = self._known, {}
        found: list[tuple[float, frozenset[str]]] = []
        stale: list[tuple[str, float | None, float]] = []
        for queue_id, arrival, due in deferred:
            kept = known.get(queue_id)
            # While an attempt runs the entry has no next attempt: what was
            # read stands until the attempt gives it one.
            if kept is None or (due is not None and kept[0] != due):
                stale.append((queue_id, due, arrival))
            else:
                fresh[queue_id] = kept
                found.append((arrival, kept[1]))
        self._known = fresh
        for start in range(0, len(stale), READ_BATCH):
            found.extend(await self._read(stale[start:start + READ_BATCH]))
        if len(self._sets) > 2 * len(fresh) + 1000:
            self._sets = {d: d for _, d in fresh.values()}
        return found

    async def _read(self, batch: list[tuple[str, float | None, float]]
                    ) -> list[tuple[float, frozenset[str]]]:
        """Read the domains of C{batch} (C{(id, next attempt, arrival)}); keep them."""
        envelopes = await self.run_blocking(self.queue.envelopes, [i for i, _, _ in batch])
        self.reads += len(batch)
        domains = {e.id: e.pending_domains() for e in envelopes}
        found = []
        for queue_id, due, arrival in batch:
            # One gone or unreadable (moved to corrupt/ at its next attempt)
            # counts nowhere, and is not read again until its next attempt changes.
            these = domains.get(queue_id, frozenset())
            these = self._sets.setdefault(these, these)
            self._known[queue_id] = (due, these)
            found.append((arrival, these))
        return found
