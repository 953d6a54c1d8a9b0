# -*- test-case-name: tests.test_tlsrpt -*-
"""
The TLS outcomes of each UTC day, counted per policy and failure detail, and
kept on disk as one small JSON file per day in C{mailroot/tlsrpt/}
(C{2026-12-01.json}): written in a thread (temporary file, fsync, rename,
folder fsync) at most every L{FLUSH_INTERVAL} seconds while new outcomes
arrive, and at stop, so that a restart keeps the day's counts (a crash loses
at most the last interval). The file also lists the domains whose report
for that day was sent; it goes once every report of the day is done.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from zope.interface import implementer

from smtpd.mailauth.tlsrpt.outcome import ITLSOutcomes, TLSOutcome, TLSPolicy
from smtpd.util.durable import fsync_directory, make_folder, replace_file, unlink_quietly

DAY = 86400
# Seconds between writes of the counts while outcomes arrive.
FLUSH_INTERVAL = 60.0
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.json$")
# The fields that tell one failure detail from another (RFC 8460 4.4).
DETAIL_FIELDS = ("result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-ip",
                 "receiving-mx-helo", "failure-reason-code")

log = Logger()


def day_of(seconds: float) -> str:
    """The UTC day of C{seconds} since the epoch, as C{YYYY-MM-DD}."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d")


def day_start(day: str) -> float:
    """The first second of UTC day C{day} (C{YYYY-MM-DD})."""
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()


def _detail(outcome: TLSOutcome) -> tuple[str, ...]:
    """The failure detail key of a failed outcome, in L{DETAIL_FIELDS} order."""
    return (outcome.result_type, outcome.sending_mta_ip, outcome.receiving_mx_hostname,
            outcome.receiving_ip, outcome.receiving_mx_helo, outcome.failure_reason_code)


class PolicyCounts:
    """
    The sessions of one day under one policy.

    @ivar successes: sessions that negotiated TLS.
    @ivar failures: failed sessions by detail (a tuple in L{DETAIL_FIELDS} order).
    """

    def __init__(self, policy: TLSPolicy) -> None:
        self.policy = policy
        self.successes = 0
        self.failures: dict[tuple[str, ...], int] = {}

    def add(self, outcome: TLSOutcome) -> None:
        """Count one session."""
        if outcome.success:
            self.successes += 1
        else:
            key = _detail(outcome)
            self.failures[key] = self.failures.get(key, 0) + 1

    def merge(self, other: PolicyCounts) -> None:
        """Add the counts of C{other} (the same policy)."""
        self.successes += other.successes
        for key, count in other.failures.items():
            self.failures[key] = self.failures.get(key, 0) + count

    def copy(self) -> PolicyCounts:
        """A copy that later counts do not change."""
        counts = PolicyCounts(self.policy)
        counts.successes = self.successes
        counts.failures = dict(self.failures)
        return counts

    @property
    def failure_count(self) -> int:
        """How many sessions failed."""
        return sum(self.failures.values())

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-ready values."""
        policy = self.policy
        return {
            "policy": {"type": policy.type, "domain": policy.domain,
                       "strings": list(policy.strings), "mx_host": list(policy.mx_host)},
            "successes": self.successes,
            "failures": [dict(zip(DETAIL_FIELDS, key), count=count)
                         for key, count in sorted(self.failures.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyCounts:
        """The counts written by L{to_dict}; ValueError, KeyError or TypeError when damaged."""
        p = data["policy"]
        counts = cls(TLSPolicy(str(p["type"]), str(p["domain"]),
                               tuple(map(str, p["strings"])), tuple(map(str, p["mx_host"]))))
        counts.successes = int(data["successes"])
        for failure in data["failures"]:
            key = tuple(str(failure[name]) for name in DETAIL_FIELDS)
            counts.failures[key] = int(failure["count"])
        return counts


class DayCounts:
    """
    The sessions of one UTC day, per policy, and the domains whose report for
    the day has been sent.
    """

    def __init__(self, day: str) -> None:
        self.day = day
        self.policies: dict[TLSPolicy, PolicyCounts] = {}
        self.sent: set[str] = set()

    def add(self, outcome: TLSOutcome) -> None:
        """Count one session."""
        counts = self.policies.get(outcome.policy)
        if counts is None:
            counts = self.policies[outcome.policy] = PolicyCounts(outcome.policy)
        counts.add(outcome)

    def merge(self, other: DayCounts) -> None:
        """Add the counts and sent domains of C{other} (the same day)."""
        for policy, counts in other.policies.items():
            mine = self.policies.get(policy)
            if mine is None:
                self.policies[policy] = mine = PolicyCounts(policy)
            mine.merge(counts)
        self.sent |= other.sent

    def domains(self) -> list[str]:
        """The policy domains with sessions this day, sorted."""
        return sorted({policy.domain for policy in self.policies})

    def unsent(self) -> list[str]:
        """The policy domains whose report has not been sent yet."""
        return [d for d in self.domains() if d not in self.sent]

    def for_domain(self, domain: str) -> list[PolicyCounts]:
        """The counts of C{domain}'s policies."""
        return [c for p, c in self.policies.items() if p.domain == domain]

    def copy(self) -> DayCounts:
        """A copy that later counts do not change (cheap: for the reactor thread)."""
        day = DayCounts(self.day)
        day.policies = {policy: counts.copy() for policy, counts in self.policies.items()}
        day.sent = set(self.sent)
        return day

    def to_json(self) -> bytes:
        """The day as the bytes of its file."""
        return json.dumps({
            "day": self.day, "sent": sorted(self.sent),
            "policies": [c.to_dict() for c in self.policies.values()],
        }, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> DayCounts:
        """The day from its file; ValueError (or KeyError, TypeError) when damaged."""
        raw = json.loads(data)
        day = cls(str(raw["day"]))
        day.sent = set(map(str, raw["sent"]))
        for item in raw["policies"]:
            counts = PolicyCounts.from_dict(item)
            day.policies[counts.policy] = counts
        return day


@implementer(ITLSOutcomes)
class OutcomeStore:
    """
    The counts of every day not yet reported, in memory and in C{folder}.

    @param folder: C{mailroot/tlsrpt}.
    @param clock: gives C{seconds()} (which day an outcome belongs to).
    @param run_blocking: C{f(callable, *args) -> Deferred} for the file work.
    """

    def __init__(self, folder: str, clock: Any, run_blocking: Callable[..., Deferred]) -> None:
        self.folder = folder
        self.clock = clock
        self.run_blocking = run_blocking
        self.days: dict[str, DayCounts] = {}
        self._dirty: set[str] = set()
        self._lock = DeferredLock()
        self._loaded = False

    def record(self, outcome: TLSOutcome) -> None:
        """Count C{outcome} in today's (UTC) counts (ITLSOutcomes)."""
        day = day_of(self.clock.seconds())
        counts = self.days.get(day)
        if counts is None:
            counts = self.days[day] = DayCounts(day)
        counts.add(outcome)
        self._dirty.add(day)

    @property
    def dirty(self) -> bool:
        """Whether some counts are not on disk yet."""
        return bool(self._dirty)

    async def load(self) -> None:
        """
        Add the counts kept on disk to those in memory: at start, before
        anything is written (L{flush} writes nothing until then).
        """
        for counts in await self.run_blocking(_read_days, self.folder):
            mine = self.days.get(counts.day)
            if mine is None:
                self.days[counts.day] = counts
            else:
                mine.merge(counts)
                self._dirty.add(counts.day)
        self._loaded = True

    async def flush(self) -> None:
        """
        Write the days whose counts changed (once L{load} is done, so that no
        file is replaced by counts that lack its own); a failed write is
        logged and tried again later.
        """
        if not self._loaded:
            return
        await self._lock.acquire()
        try:
            dirty, self._dirty = self._dirty, set()
            # Copied here, encoded in the thread: the counts go on changing meanwhile.
            files = {day: self.days[day].copy() for day in dirty if day in self.days}
            if not files:
                return
            try:
                await self.run_blocking(_write_days, self.folder, files)
            except OSError as e:
                self._dirty |= dirty
                log.error("TLS-RPT counts not written to {folder}: {error}",
                          folder=self.folder, error=e)
        finally:
            self._lock.release()

    def complete_days(self) -> list[str]:
        """The days before today (UTC) that have counts, oldest first."""
        today = day_of(self.clock.seconds())
        return sorted(day for day in self.days if day < today)

    async def mark_sent(self, day: str, domain: str) -> None:
        """Note that C{domain}'s report for C{day} is sent, on disk before it returns."""
        self.days[day].sent.add(domain)
        self._dirty.add(day)
        await self.flush()

    async def forget(self, day: str) -> None:
        """Drop C{day}'s counts, and its file."""
        await self._lock.acquire()
        try:
            self.days.pop(day, None)
            self._dirty.discard(day)
            await self.run_blocking(_remove_day, self.folder, day)
        finally:
            self._lock.release()


def _read_days(folder: str) -> list[DayCounts]:
    """Every day file of C{folder}; a damaged one is logged and left alone."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    days = []
    for name in names:
        match = _DAY_FILE.match(name)
        if match is None:
            continue
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                counts = DayCounts.from_json(f.read())
            if counts.day != match[1]:
                raise ValueError(f"holds day {counts.day}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("TLS-RPT counts in {path} not read: {error}", path=path, error=e)
            continue
        days.append(counts)
    return days


def _write_days(folder: str, files: dict[str, DayCounts]) -> None:
    """Replace the files of the days in C{files} durably."""
    make_folder(folder)
    for day, counts in files.items():
        replace_file(os.path.join(folder, day + ".json"), counts.to_json(), 0o600)
    fsync_directory(folder)


def _remove_day(folder: str, day: str) -> None:
    """Remove a day file, durably."""
    path = os.path.join(folder, day + ".json")
    if os.path.exists(path):
        unlink_quietly(path)
        fsync_directory(folder)
