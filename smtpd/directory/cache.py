# -*- test-case-name: tests.test_directory_ldap -*-
"""
A bounded cache of directory answers with separate lifetimes for positive
answers (a mailbox) and negative ones (no such address), read against an
injected clock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")

MISSING = object()
"""What L{AnswerCache.get} returns for a key with no live answer."""


class AnswerCache(Generic[T]):
    """
    Answers by key: a value (kept C{positive_ttl} seconds) or L{None} (kept
    C{negative_ttl} seconds). A TTL of 0 keeps nothing of that kind. At most
    C{size} keys; the oldest insertion goes first.
    """

    def __init__(self, clock: IReactorTime, positive_ttl: float, negative_ttl: float,
                 size: int = 10000):
        self.clock = clock
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.size = size
        self._answers: OrderedDict[str, tuple[float, T | None]] = OrderedDict()

    def get(self, key: str) -> object:
        """The live answer for C{key} (a value or L{None}), or L{MISSING}."""
        found = self._answers.get(key)
        if found is None:
            return MISSING
        expires, value = found
        if self.clock.seconds() >= expires:
            del self._answers[key]
            return MISSING
        return value

    def put(self, key: str, value: T | None) -> None:
        """Remember C{value} (L{None} for a negative answer) for C{key}."""
        ttl = self.negative_ttl if value is None else self.positive_ttl
        self._answers.pop(key, None)
        if ttl <= 0:
            return
        self._answers[key] = (self.clock.seconds() + ttl, value)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)

    def clear(self) -> None:
        """Forget every answer."""
        self._answers.clear()

    def __len__(self) -> int:
        return len(self._answers)

