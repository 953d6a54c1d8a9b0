# -*- test-case-name: tests.test_mailauth_checks -*-
"""
SPF (RFC 7208) for the MAIL FROM and HELO identities.

The evaluation is pyspf's (macros, include/redirect, the 10-lookup and
2-void-lookup limits of section 4.6.4, checked against the RFC's test suite
by its authors), run in a thread. Its DNS queries do not use its own
resolver: each one is handed to the reactor and answered by the injected
twisted.names resolver, so SPF asks the same C{[delivery] dns_servers} as
everything else and the reactor never blocks.
"""

from __future__ import annotations

import ipaddress
import queue
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import spf
from twisted.internet.defer import Deferred
from twisted.names import dns
from twisted.python.failure import Failure

from smtpd.mailauth.lookup import DNSLookup, TemporaryLookupError

QUERY_TYPES = {"A": dns.A, "AAAA": dns.AAAA, "MX": dns.MX, "PTR": dns.PTR, "TXT": dns.TXT}
# Seconds for one whole SPF evaluation (RFC 7208 4.6.4 suggests at least 20).
SPF_TIME_LIMIT = 20
# Seconds a pyspf thread waits for one answer from the reactor: a bound, so
# that a thread never outlives a stopped reactor (the pool joins its threads).
ANSWER_WAIT = 15
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$", re.I)


@dataclass(frozen=True)
class SPFResult:
    """
    One SPF verdict.

    @ivar identity: C{"mailfrom"} or C{"helo"}.
    @ivar domain: the domain checked.
    @ivar result: pass, fail, softfail, neutral, none, temperror or permerror.
    @ivar reason: pyspf's explanation, for the log and the reply.
    """

    identity: str
    domain: str
    result: str
    reason: str = ""


class _ReactorQuery(spf.query):
    """A pyspf query whose DNS lookups are answered on the reactor thread."""

    def __init__(self, answer: Callable[[str, str], list[Any]], *args: Any, **kwargs: Any):
        self.answer = answer
        spf.query.__init__(self, *args, **kwargs)

    def dns(self, name, qtype, cnames=None, ignore_void=False):
        """pyspf's lookup hook: the records of C{name}, counting void lookups (RFC 7208 4.6.4)."""
        name = str(name).rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, qtype)
        if key not in self.cache:
            self.cache[key] = self.answer(name, qtype)
        result = self.cache[key]
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def is_domain(text: str) -> bool:
    """Whether C{text} is a plausible fully qualified domain name (not an address literal)."""
    return bool(_DOMAIN.match(text.rstrip(".")))


class SPFChecker:
    """
    Evaluates SPF for the identities of one SMTP transaction.

    @param lookup: the L{DNSLookup} every query goes to.
    @param reactor: the reactor that runs C{lookup} while the thread waits.
    @param run_blocking: C{f(callable, *args) -> Deferred} running pyspf in a thread pool.
    """

    def __init__(self, lookup: DNSLookup, reactor: Any, run_blocking: Callable[..., Deferred]):
        self.lookup = lookup
        self.reactor = reactor
        self.run_blocking = run_blocking

    async def check_helo(self, ip: str, helo: str) -> SPFResult:
        """The HELO identity (RFC 7208 2.3): C{none} when HELO is not a domain name."""
        if not is_domain(helo):
            return SPFResult("helo", helo, "none", "HELO is not a domain name")
        return await self._check("helo", helo, ip, "postmaster@" + helo, helo)

    async def check_mail_from(self, ip: str, sender: str, helo: str) -> SPFResult:
        """The MAIL FROM identity (RFC 7208 2.4); a null sender is checked as postmaster@HELO."""
        if not sender:
            return await self.check_helo(ip, helo)
        domain = sender.rsplit("@", 1)[-1].lower()
        if not is_domain(domain):
            return SPFResult("mailfrom", domain, "none", "the sender domain is not a domain name")
        return await self._check("mailfrom", domain, ip, sender, helo)

    async def _check(self, identity: str, domain: str, ip: str, sender: str, helo: str) -> SPFResult:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return SPFResult(identity, domain, "none", "no client IP address")
        result, _, reason = await self.run_blocking(self._evaluate, ip, sender, helo)
        return SPFResult(identity, domain, result, reason)

    def _evaluate(self, ip: str, sender: str, helo: str) -> tuple[str, int, str]:
        """pyspf's check_host(), in a thread."""
        query = _ReactorQuery(self._answer, ip, sender, helo, querytime=SPF_TIME_LIMIT)
        return query.check()

    def _answer(self, name: str, qtype: str) -> list[Any]:
        """Answer one pyspf query from the resolver, in pyspf's value shapes."""
        rtype = QUERY_TYPES.get(qtype)
        if rtype is None:
            return []
        try:
            payloads = self._on_reactor(name, rtype)
        except TemporaryLookupError as e:
            raise spf.TempError(str(e)) from e
        return [_value(qtype, p) for p in payloads]

    def _on_reactor(self, name: str, rtype: int) -> list[Any]:
        """Run the lookup on the reactor thread and wait (bounded) for its result."""
        results: queue.Queue = queue.Queue()

        def start() -> None:
            """Start the lookup; its result or failure goes to the waiting thread."""
            d = Deferred.fromCoroutine(self.lookup.records(name, rtype))
            d.addBoth(results.put)

        self.reactor.callFromThread(start)
        try:
            result = results.get(timeout=ANSWER_WAIT)
        except queue.Empty:
            raise TemporaryLookupError(f"no answer for {name} in {ANSWER_WAIT}s") from None
        if isinstance(result, Failure):
            result.raiseException()
        return result


def _value(qtype: str, payload: Any) -> Any:
    """One record in the shape pyspf's dnspython driver gives."""
    if qtype in ("A", "AAAA"):
        return payload.dottedQuad() if qtype == "A" else ipaddress.ip_address(payload.address).compressed
    if qtype == "MX":
        return (payload.preference, payload.name.name.decode("ascii", "replace"))
    if qtype == "PTR":
        return payload.name.name.decode("ascii", "replace")
    return list(payload.data)
