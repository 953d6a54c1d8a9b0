# -*- test-case-name: tests.test_mailauth_checks -*-
"""
DNS lookups for mail authentication through an injected twisted.names
resolver (the one built from C{[delivery] dns_servers}): answers of one type,
CNAME chains followed, no answer and NXDOMAIN both empty, every other failure
a L{TemporaryLookupError}.
"""

from __future__ import annotations

from typing import Any

from twisted.names import dns, error

# RFC 7208 4.6.4 / RFC 1034: a resolver follows a bounded CNAME chain.
MAX_CNAME = 10
# Seconds per attempt: a bounded total, so a dead server costs one deferral, not minutes.
DEFAULT_TIMEOUT = (1, 3, 5)


class TemporaryLookupError(Exception):
    """SERVFAIL, REFUSED, timeout or another failure that may pass (a temperror)."""


class DNSLookup:
    """
    Record lookups for the checks.

    @param resolver: a twisted.names L{IResolver}.
    @param timeout: the per-attempt timeout sequence handed to the resolver.
    """

    def __init__(self, resolver: Any, timeout: tuple[int, ...] = DEFAULT_TIMEOUT) -> None:
        self.resolver = resolver
        self.timeout = timeout

    async def records(self, name: str, rtype: int) -> list[Any]:
        """The payloads of the C{rtype} records of C{name}; [] when there are none."""
        try:
            answers, _, _ = await self.resolver.query(dns.Query(name, rtype, dns.IN), self.timeout)
        except (error.DNSNameError, error.AuthoritativeDomainError):
            return []
        except Exception as e:
            kind = dns.QUERY_TYPES.get(rtype, str(rtype))
            raise TemporaryLookupError(f"DNS {kind} lookup of {name} failed: {describe(e)}") from e
        return follow_cnames(name, rtype, answers)

    async def txt(self, name: str) -> list[bytes]:
        """Each TXT record of C{name}, its character-strings joined (RFC 7208 3.3)."""
        return [b"".join(p.data) for p in await self.records(name, dns.TXT)]


def follow_cnames(name: str, rtype: int, answers: list[Any]) -> list[Any]:
    """The C{rtype} payloads for C{name} in an answer section, through its CNAME chain."""
    by_name: dict[str, list[Any]] = {}
    for rr in answers:
        by_name.setdefault(rr.name.name.decode("ascii", "replace").lower(), []).append(rr)
    current = name.lower().rstrip(".")
    for _ in range(MAX_CNAME + 1):
        found = by_name.get(current, [])
        wanted = [rr.payload for rr in found if rr.type == rtype]
        if wanted:
            return wanted
        aliases = [rr.payload for rr in found if rr.type == dns.CNAME]
        if not aliases or rtype == dns.CNAME:
            return []
        current = aliases[0].name.name.decode("ascii", "replace").lower()
    return []


def describe(e: Exception) -> str:
    """A short human description of a resolver failure."""
    if isinstance(e, error.DNSServerError):
        return "server failure (SERVFAIL)"
    if isinstance(e, error.DNSQueryRefusedError):
        return "query refused (REFUSED)"
    if isinstance(e, error.DNSQueryTimeoutError) or isinstance(e, TimeoutError):
        return "timeout"
    return e.__class__.__name__
