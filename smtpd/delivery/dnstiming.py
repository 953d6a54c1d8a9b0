# -*- test-case-name: tests.test_dns_timing -*-
"""
Every DNS query the server sends, timed. L{TimedResolver} wraps the
twisted.names resolver that relay (MX, A, AAAA), mail authentication (TXT for
SPF, DKIM, DMARC) and the reverse lookups of clients share, and tells the
subscribers of a L{DNSLookups} the query type, the outcome and the seconds each
query took; L{TimedTLSALookup} does the same for DANE's TLSA lookups. The
metrics subscribe; nothing here knows about them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IResolver, IResolverSimple
from twisted.logger import Logger
from twisted.names import dns, error
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger(namespace="smtpd.delivery")

# What became of a query: an answer (possibly empty), the name does not exist,
# the server failed or refused, nobody answered in time, anything else.
OUTCOMES = ("answer", "nxdomain", "servfail", "refused", "timeout", "error")

# A subscriber: observer(query type, outcome, seconds).
Observer = Callable[[str, str, float], object]


class DNSLookups:
    """The finished DNS queries of the server, told to whoever subscribed."""

    def __init__(self) -> None:
        self.observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        """Call C{observer(qtype, outcome, seconds)} after each query."""
        self.observers.append(observer)

    def unsubscribe(self, observer: Observer) -> None:
        """Stop calling C{observer}."""
        if observer in self.observers:
            self.observers.remove(observer)

    def report(self, qtype: str, outcome: str, seconds: float) -> None:
        """One query of type C{qtype} ended with C{outcome} after C{seconds}."""
        for observer in list(self.observers):
            try:
                observer(qtype, outcome, seconds)
            except Exception:
                log.failure("DNS lookup observer {observer!r} failed", observer=observer)


def outcome(reason: BaseException | None) -> str:
    """The L{OUTCOMES} name of a query that ended with C{reason} (None: an answer)."""
    if reason is None:
        return "answer"
    if isinstance(reason, (error.DNSNameError, error.AuthoritativeDomainError)):
        return "nxdomain"
    if isinstance(reason, error.DNSServerError):
        return "servfail"
    if isinstance(reason, error.DNSQueryRefusedError):
        return "refused"
    if isinstance(reason, (error.DNSQueryTimeoutError, defer.TimeoutError, TimeoutError)):
        return "timeout"
    return "error"


def type_name(rtype: int) -> str:
    """The mnemonic of a record type (C{MX}), or its number for one without."""
    return dns.QUERY_TYPES.get(rtype) or dns.EXT_QUERIES.get(rtype) or str(rtype)


# The IResolver lookup methods and the record type each asks for.
LOOKUP_TYPES = {
    "lookupAddress": dns.A, "lookupIPV6Address": dns.AAAA, "lookupAddress6": dns.A6,
    "lookupMailExchange": dns.MX, "lookupNameservers": dns.NS,
    "lookupCanonicalName": dns.CNAME, "lookupMailBox": dns.MB, "lookupMailGroup": dns.MG,
    "lookupMailRename": dns.MR, "lookupPointer": dns.PTR, "lookupAuthority": dns.SOA,
    "lookupNull": dns.NULL, "lookupWellKnownServices": dns.WKS, "lookupHostInfo": dns.HINFO,
    "lookupMailboxInfo": dns.MINFO, "lookupText": dns.TXT, "lookupResponsibility": dns.RP,
    "lookupAFSDatabase": dns.AFSDB, "lookupService": dns.SRV, "lookupAllRecords": dns.ALL_RECORDS,
    "lookupSenderPolicy": dns.SPF, "lookupNamingAuthorityPointer": dns.NAPTR,
    "lookupZone": dns.AXFR,
}


@implementer(IResolver, IResolverSimple)
class TimedResolver:
    """
    A resolver that asks C{resolver} and reports each query to C{lookups}.

    @param resolver: the twisted.names resolver asked.
    @param clock: an C{IReactorTime}: the duration is read from it.
    @param lookups: the L{DNSLookups} told about each finished query.
    """

    def __init__(self, resolver: Any, clock: Any, lookups: DNSLookups):
        self.resolver = resolver
        self.clock = clock
        self.lookups = lookups

    def timed(self, qtype: str, d: defer.Deferred) -> defer.Deferred:
        """C{d} (a query of type C{qtype} just sent), reported when it ends."""
        started = self.clock.seconds()

        def ended(result: Any) -> Any:
            reason = result.value if isinstance(result, Failure) else None
            self.lookups.report(qtype, outcome(reason), self.clock.seconds() - started)
            return result

        return d.addBoth(ended)

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred:
        """Ask C{query} (the call the resolver chain and the checks make)."""
        return self.timed(type_name(query.type), self.resolver.query(query, timeout))

    def getHostByName(self, name: str, timeout: Any = None) -> defer.Deferred:
        """The first address of C{name} (timed as an A query)."""
        return self.timed("A", self.resolver.getHostByName(name, timeout))


def _lookup_method(method: str, rtype: int) -> Callable[..., defer.Deferred]:
    def lookup(self: TimedResolver, name: Any, timeout: Any = None) -> defer.Deferred:
        return self.timed(type_name(rtype), getattr(self.resolver, method)(name, timeout))

    lookup.__name__ = method
    lookup.__doc__ = f"The {type_name(rtype)} records of C{{name}} (timed)."
    return lookup


for _method, _rtype in LOOKUP_TYPES.items():
    setattr(TimedResolver, _method, _lookup_method(_method, _rtype))
del _method, _rtype


class TimedTLSALookup:
    """
    The TLSA lookups of DANE (made with dnspython in a thread, not through
    the twisted.names resolver), each reported to C{lookups} as a C{TLSA}
    query: an answer (none found included), or an error when no server
    answered.

    @param tlsa: the L{smtpd.mailauth.dane.TLSALookup} asked.
    """

    def __init__(self, tlsa: Any, clock: Any, lookups: DNSLookups):
        self.tlsa = tlsa
        self.clock = clock
        self.lookups = lookups

    async def lookup(self, host: str, port: int = 25) -> Any:
        """The TLSA answer for C{host} and C{port} (see L{TLSALookup.lookup}), timed."""
        started = self.clock.seconds()
        try:
            answer = await self.tlsa.lookup(host, port)
        except Exception:
            self.lookups.report("TLSA", "error", self.clock.seconds() - started)
            raise
        self.lookups.report("TLSA", "answer", self.clock.seconds() - started)
        return answer

    async def secure(self, name: str, rdtype: str = "MX") -> bool:
        """Whether the answer to C{name} and C{rdtype} is secure (L{TLSALookup.secure}), timed."""
        started = self.clock.seconds()
        try:
            secure = await self.tlsa.secure(name, rdtype)
        except Exception:
            self.lookups.report(rdtype, "error", self.clock.seconds() - started)
            raise
        self.lookups.report(rdtype, "answer", self.clock.seconds() - started)
        return secure
