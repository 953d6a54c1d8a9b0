# -*- test-case-name: tests.test_web_metrics -*-
"""
Delivery statistics since start, kept beside the counters of
L{smtpd.queue.results.Results}: results by transport and status class, the
messages, recipients and octets received, the delay from arrival to delivery
as histogram buckets, and deferred results by destination domain. The admin
API and C{/metrics} read these same objects at the time they are asked.
"""

from __future__ import annotations

from collections import Counter

# Upper bounds (seconds) of the arrival-to-delivery histogram buckets.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                   3600.0, 4 * 3600.0, 86400.0)

# At most this many destination domains are remembered for deferred counts;
# past it, the least deferred one makes room (memory stays bounded).
MAX_DOMAINS = 1000


class Histogram:
    """Cumulative-free bucket counts, a sum and a count (Prometheus reads them)."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation of C{value}."""
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """C{(upper bound, observations <= bound)} pairs, the last bound being infinity."""
        total, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            out.append((bound, total))
        return out


class DeliveryStats:
    """
    What the queue did since start.

    @ivar results: C{(result, transport, status class)} -> recipient results,
        where result is C{delivered}, C{deferred} or C{bounced} and the class
        is the first digit of the enhanced status code (C{"2"}, C{"4"}, C{"5"}).
    @ivar received: C{messages}, C{recipients} and C{bytes} received.
    @ivar latency: a L{Histogram} of seconds from arrival to delivery.
    @ivar deferred_domains: destination domain -> deferred recipient results.
    @ivar remote_delivered: C{tls} and C{plain}: recipients relayed by encryption.
    """

    def __init__(self):
        self.results: Counter[tuple[str, str, str]] = Counter()
        self.received = Counter({"messages": 0, "recipients": 0, "bytes": 0})
        self.latency = Histogram()
        self.deferred_domains: Counter[str] = Counter()
        self.remote_delivered = Counter({"tls": 0, "plain": 0})

    def message(self, recipients: int, size: int) -> None:
        """Count one message received with C{recipients} recipients and C{size} octets."""
        self.received["messages"] += 1
        self.received["recipients"] += recipients
        self.received["bytes"] += size

    def result(self, result: str, transport: str, status: str, address: str,
               delay: float, tls: bool = False) -> None:
        """
        Count one recipient result; C{delay} is the time since arrival, C{tls}
        whether it was delivered over an encrypted connection.
        """
        status_class = (status or "4")[0]
        self.results[(result, transport, status_class)] += 1
        if result == "delivered" and transport == "remote":
            self.remote_delivered["tls" if tls else "plain"] += 1
        if result == "delivered":
            self.latency.observe(delay)
        elif result == "deferred":
            self.deferred(address.rpartition("@")[2].lower())

    def deferred(self, domain: str) -> None:
        """Count one deferred result for C{domain}, forgetting the least deferred when full."""
        if domain not in self.deferred_domains and len(self.deferred_domains) >= MAX_DOMAINS:
            [(least, _)] = self.deferred_domains.most_common()[-1:]
            del self.deferred_domains[least]
        self.deferred_domains[domain] += 1

    def top_deferred(self, n: int) -> list[tuple[str, int]]:
        """The C{n} most deferred destination domains with their counts."""
        return self.deferred_domains.most_common(n)
