# -*- test-case-name: tests.test_rdns -*-
"""
Reverse DNS of inbound clients (IIS "Perform reverse DNS lookup on incoming
messages", C{[access] reverse_dns}): the PTR name of the client's address,
trusted only when forward-confirmed (an A or AAAA record of that name holds
the address again), within a short timeout.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns, error

from smtpd.mail import address

log = Logger()

MAX_NAMES = 3  # PTR names tried for a forward confirmation


def reverse_name(ip: str) -> str:
    """The C{in-addr.arpa} or C{ip6.arpa} name of C{ip}."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.reverse_pointer


def _host_name(raw: bytes) -> str | None:
    """
    A PTR target as a lower-case host name, or L{None} when it is not one (a
    DNS label may hold any octet: nothing else may reach a header).
    """
    try:
        name = raw.decode("ascii").rstrip(".").lower()
    except UnicodeDecodeError:
        return None
    return name if address.is_domain(name) else None


class ReverseDNS:
    """
    Forward-confirmed reverse lookups through a twisted.names resolver.

    @param resolver: an L{IResolver} (the one of C{[delivery] dns_servers}).
    @param clock: an L{IReactorTime} for the timeout.
    """

    def __init__(self, resolver, clock):
        self.resolver = resolver
        self.clock = clock

    def lookup(self, ip: str, timeout: float) -> defer.Deferred[str | None]:
        """
        The confirmed name of C{ip}, or L{None} (no name, a name that does not
        lead back, a DNS failure, or no answer within C{timeout} seconds).
        Never fails.
        """
        d = defer.Deferred.fromCoroutine(self._confirmed(ip, timeout))
        d.addTimeout(timeout, self.clock)
        d.addErrback(self._unknown, ip)
        return d

    def _unknown(self, failure, ip: str) -> None:
        if not failure.check(defer.TimeoutError, defer.CancelledError):
            log.debug("Reverse lookup of {ip} failed: {why}", ip=ip, why=failure.getErrorMessage())
        return None

    async def _confirmed(self, ip: str, timeout: float) -> str | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        answers, _, _ = await self.resolver.lookupPointer(
            reverse_name(str(addr)), timeout=(timeout,)
        )
        names = [_host_name(rr.payload.name.name) for rr in answers if rr.type == dns.PTR]
        for name in [n for n in names if n is not None][:MAX_NAMES]:
            if await self._leads_back(name, addr, timeout):
                return name
        return None

    async def _leads_back(self, name: str, addr, timeout: float) -> bool:
        """Whether C{name} has an A (AAAA for IPv6) record holding C{addr}."""
        ipv6 = isinstance(addr, ipaddress.IPv6Address)
        lookup = self.resolver.lookupIPV6Address if ipv6 else self.resolver.lookupAddress
        try:
            answers, _, _ = await lookup(name, timeout=(timeout,))
        except (ValueError, TimeoutError, error.ResolverError):
            # DomainError and AuthoritativeDomainError are ValueErrors.
            return False
        wanted = dns.AAAA if ipv6 else dns.A
        found = {ipaddress.ip_address(rr.payload.address) for rr in answers if rr.type == wanted}
        return addr in found
