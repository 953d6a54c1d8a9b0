# -*- test-case-name: tests.test_mx -*-
"""
The hosts file (hosts(5)) as a resolver for outbound mail: read once and kept
parsed, read again only when the file changes (its size, time or inode), so an
A/AAAA lookup costs one stat, not a read and parse of the whole file.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.names import common, dns
from twisted.python.failure import Failure


class HostsFile(common.ResolverBase):
    """
    Answers A and AAAA lookups from a hosts(5) file.

    @param path: the file (C{/etc/hosts}); a missing or unreadable file
        answers nothing.
    @param ttl: the TTL of the records given.

    @ivar loads: how many times the file was read (for the curious and tests).
    """

    def __init__(self, path: str = "/etc/hosts", ttl: int = 3600):
        common.ResolverBase.__init__(self)
        self.path = path
        self.ttl = ttl
        self.loads = 0
        self._stamp: tuple[int, int, int] | None = None
        self._names: dict[bytes, list[str]] = {}

    def lookupAddress(self, name: Any, timeout: Any = None) -> Deferred:
        """The IPv4 addresses of C{name} in the file, as A records."""
        return self._answer(name, dns.A, dns.Record_A, 4)

    def lookupIPV6Address(self, name: Any, timeout: Any = None) -> Deferred:
        """The IPv6 addresses of C{name} in the file, as AAAA records."""
        return self._answer(name, dns.AAAA, dns.Record_AAAA, 6)

    lookupAllRecords = lookupAddress

    def addresses(self, name: bytes) -> list[str]:
        """Every address the file gives C{name} (any case), reading it again if it changed."""
        self._refresh()
        return self._names.get(name.lower().rstrip(b"."), [])

    def _answer(self, name: Any, kind: int, record: Any, version: int) -> Deferred:
        name = dns.domainString(name)
        found = tuple(
            dns.RRHeader(name, kind, dns.IN, self.ttl, record(address, self.ttl))
            for address in self.addresses(name)
            if ipaddress.ip_address(address).version == version
        )
        if found:
            return succeed((found, (), ()))
        return fail(Failure(dns.DomainError(name)))

    def _refresh(self) -> None:
        """Parse the file again when it is not the one parsed last."""
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            stamp = None
        if stamp == self._stamp and self.loads:
            return
        self._stamp = stamp
        self.loads += 1
        try:
            with open(self.path, "rb") as f:
                self._names = parse_hosts(f.read())
        except OSError:
            self._names = {}


def parse_hosts(content: bytes) -> dict[bytes, list[str]]:
    """The addresses of each name (lower case) in hosts(5) text, in file order."""
    names: dict[bytes, list[str]] = {}
    for line in content.splitlines():
        parts = line.split(b"#", 1)[0].split()
        if len(parts) < 2:
            continue
        try:
            address = str(ipaddress.ip_address(parts[0].decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            continue
        for name in parts[1:]:
            names.setdefault(name.lower().rstrip(b"."), []).append(address)
    return names
