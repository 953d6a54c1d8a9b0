# -*- test-case-name: tests.test_queue_listing -*-
"""
The ids of the queue's entries in order, for listings a page at a time: queue
ids begin with the arrival second, so id order is arrival order to the second.
A page is found by bisection, without going through the whole queue.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable


class QueueIndex:
    """A sorted set of queue ids."""

    def __init__(self, ids: Iterable[str] = ()):
        self._ids = sorted(set(ids))

    def __len__(self) -> int:
        return len(self._ids)

    def reset(self, ids: Iterable[str]) -> None:
        """Hold exactly C{ids}."""
        self._ids = sorted(set(ids))

    def add(self, queue_id: str) -> None:
        """Hold C{queue_id} too (a new id sorts last: no copying)."""
        ids = self._ids
        at = bisect_left(ids, queue_id)
        if at == len(ids) or ids[at] != queue_id:
            ids.insert(at, queue_id)

    def discard(self, queue_id: str) -> None:
        """Forget C{queue_id}, if held."""
        ids = self._ids
        at = bisect_left(ids, queue_id)
        if at < len(ids) and ids[at] == queue_id:
            del ids[at]

    def page(self, limit: int | None, offset: int = 0, after: str | None = None) -> list[str]:
        """
        The ids after C{after} (all when L{None}), C{offset} of them skipped,
        then at most C{limit} (all when L{None}), in order.
        """
        start = offset + (0 if after is None else bisect_right(self._ids, after))
        return self._ids[start:] if limit is None else self._ids[start:start + limit]

    def position(self, after: str | None) -> int:
        """How many ids held sort before or at C{after} (0 for L{None})."""
        return 0 if after is None else bisect_right(self._ids, after)

    def all(self) -> list[str]:
        """Every id held, in order (a copy)."""
        return list(self._ids)
