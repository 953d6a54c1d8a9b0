# -*- test-case-name: tests.test_queue -*-
"""
Disk jobs of one kind gathered into batches (group commit on the reactor
side): while one batch is being written in the thread pool, the jobs asked
for meanwhile wait, and go together in the next one. One thread hand-off and
one folder fsync then serve many jobs, and each job's Deferred still fires
only once its own work is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

# What a batch function returns per job, in order: (True, value) or (False, Failure).
Outcome = tuple[bool, Any]


class DiskBatches:
    """
    Runs C{work(items)} in the thread pool for the items submitted, one batch
    at a time.

    @param run_blocking: C{f(callable, *args) -> Deferred} for disk work.
    @param work: C{work(items) -> [Outcome, ...]}, one outcome per item in
        order; it runs in a thread and must not raise for one item's error
        (an exception fails the whole batch).
    """

    def __init__(self, run_blocking: Callable[..., Deferred],
                 work: Callable[[list[Any]], list[Outcome]]):
        self._run = run_blocking
        self._work = work
        self._waiting: list[tuple[Any, Deferred]] = []
        self._running = False

    def submit(self, item: Any) -> Deferred:
        """Have C{item} done in the next batch; fires with its value, or fails with its error."""
        done: Deferred = Deferred()
        self._waiting.append((item, done))
        self._next()
        return done

    def _next(self) -> None:
        if self._running or not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        self._running = True
        d = maybeDeferred(self._run, self._work, [item for item, _ in batch])
        d.addBoth(self._done, [waiter for _, waiter in batch])

    def _done(self, outcomes: list[Outcome] | Failure, waiters: list[Deferred]) -> None:
        self._running = False
        if isinstance(outcomes, Failure):
            outcomes = [(False, outcomes)] * len(waiters)
        # The next batch is under way before the callbacks run (they may submit more).
        self._next()
        for waiter, (ok, value) in zip(waiters, outcomes):
            if ok:
                waiter.callback(value)
            else:
                waiter.errback(value)
