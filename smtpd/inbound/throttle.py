# -*- test-case-name: tests.test_throttle -*-
"""
Limits kept per client address across sessions, in the manner of Postfix's
anvil: failed AUTH attempts (a password guesser that reconnects is blocked at
connect for a while; failed POP3 logins count too, and a blocked address gets
no POP3 login either), the connection rate and the message rate.

Every counter lives in one L{Throttle}, in memory, bounded: entries whose
windows are over are dropped as new events come in, and at most
C{max_addresses} are kept (the least recently seen go first). IPv6 clients are
counted per /64, the block a single site usually holds.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from smtpd.config import AccessConfig
from smtpd.inbound.policy import in_networks

RATE_UNIT = 60.0  # connection_rate and message_rate count per minute
MAX_ADDRESSES = 100_000


@dataclass
class Window:
    """Events counted in a fixed window that starts at the first event."""

    start: float = 0.0
    count: int = 0

    def add(self, now: float, length: float) -> int:
        """Count one event at C{now}; the count in the current window."""
        if now - self.start >= length:
            self.start, self.count = now, 0
        self.count += 1
        return self.count

    def current(self, now: float, length: float) -> int:
        """The count at C{now} (0 once the window is over)."""
        return self.count if now - self.start < length else 0


@dataclass
class ClientRecord:
    """What is known about one client address (or IPv6 /64)."""

    connections: Window
    messages: Window
    auth_failures: Window
    blocked_until: float = 0.0

    def expires(self, access: AccessConfig) -> float:
        """When nothing of this record matters any more."""
        return max(
            self.connections.start + RATE_UNIT,
            self.messages.start + RATE_UNIT,
            self.auth_failures.start + access.auth_failure_window,
            self.blocked_until,
        )


@functools.lru_cache(maxsize=4096)
def client_key(ip: str) -> str:
    """The address a client is counted under: itself, or its IPv6 /64 (remembered)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class Throttle:
    """
    The per-address counters of every session of the server.

    @param clock: an L{IReactorTime}; all windows run on C{clock.seconds()}.
    @param access: returns the current C{[access]} section (it changes on reload).
    """

    def __init__(
        self,
        clock,
        access: Callable[[], AccessConfig],
        max_addresses: int = MAX_ADDRESSES,
    ):
        self.clock = clock
        self.access = access
        self.max_addresses = max_addresses
        self._records: OrderedDict[str, ClientRecord] = OrderedDict()

    def _record(self, ip: str) -> ClientRecord:
        """The record of C{ip}, made most recent; expired ones dropped first."""
        self._expire()
        key = client_key(ip)
        record = self._records.get(key)
        if record is None:
            record = ClientRecord(Window(), Window(), Window())
            self._records[key] = record
            while len(self._records) > self.max_addresses:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(key)
        return record

    def _expire(self) -> None:
        """Drop the least recently seen records while they are over."""
        now, access = self.clock.seconds(), self.access()
        while self._records:
            key, record = next(iter(self._records.items()))
            if record.expires(access) > now:
                break
            del self._records[key]

    def _exempt(self, ip: str) -> bool:
        """The relay networks (the site's own hosts) have no rate limits."""
        return in_networks(ip, self.access().relay)

    def connect(self, ip: str) -> str | None:
        """
        Count a connection from C{ip}; the C{421} text when it must be
        refused (blocked after failed AUTH, or over C{connection_rate}).
        """
        access, now = self.access(), self.clock.seconds()
        record = self._record(ip)
        count = record.connections.add(now, RATE_UNIT)
        if record.blocked_until > now:
            return "4.7.0 Error: too many failed authentications from your address, try later"
        if access.connection_rate and count > access.connection_rate and not self._exempt(ip):
            return "4.7.0 Error: too many connections from your address, slow down"
        return None

    def message(self, ip: str) -> str | None:
        """Count a message (a MAIL command) from C{ip}; the C{451} text when over the rate."""
        access, now = self.access(), self.clock.seconds()
        count = self._record(ip).messages.add(now, RATE_UNIT)
        if access.message_rate and count > access.message_rate and not self._exempt(ip):
            return "4.7.1 Error: too many messages from your address, slow down"
        return None

    def blocked(self, ip: str) -> bool:
        """
        Whether C{ip} is blocked after failed logins now (nothing is counted:
        for services other than SMTP, such as POP3, that share the block).
        """
        record = self._records.get(client_key(ip))
        return record is not None and record.blocked_until > self.clock.seconds()

    def auth_failed(self, ip: str) -> tuple[float, bool]:
        """
        Count a failed AUTH from C{ip}: how long to wait before answering it
        (C{auth_failure_delay} when it failed before in the window), and
        whether the address is now blocked for C{auth_block}.
        """
        access, now = self.access(), self.clock.seconds()
        record = self._record(ip)
        count = record.auth_failures.add(now, access.auth_failure_window)
        delay = access.auth_failure_delay if count > 1 else 0.0
        if access.auth_failure_limit and count >= access.auth_failure_limit:
            record.blocked_until = now + access.auth_block
            return delay, True
        return delay, False

    def snapshot(self) -> list[dict]:
        """Every address with a live counter, as plain data (the admin API)."""
        self._expire()
        now = self.clock.seconds()
        failure_window = self.access().auth_failure_window
        return [
            {
                "address": key,
                "connections_per_minute": record.connections.current(now, RATE_UNIT),
                "messages_per_minute": record.messages.current(now, RATE_UNIT),
                "auth_failures": record.auth_failures.current(now, failure_window),
                "blocked_until": record.blocked_until if record.blocked_until > now else None,
            }
            for key, record in self._records.items()
        ]

    def __len__(self) -> int:
        return len(self._records)
