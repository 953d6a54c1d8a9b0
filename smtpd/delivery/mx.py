# -*- test-case-name: tests.test_mx -*-
"""
Where mail for a domain goes: MX resolution (RFC 5321 section 5.1) with null MX
(RFC 7505), implicit MX, backup-MX truncation and a TTL-bounded answer cache.

Every failure is a L{DNSError} that carries the SMTP reply code and RFC 3463
status the delivery agents report for the affected recipients.
"""

from __future__ import annotations

import random
import socket
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, gatherResults
from twisted.names import client, dns, error, resolve

from smtpd.delivery.dnstiming import DNSLookups, TimedResolver
from smtpd.delivery.hostsfile import HostsFile
from smtpd.delivery.quietudp import QuietDatagramReactor
from smtpd.mail.address import ip_literal

# Answers are cached at most this long, whatever their TTL says.
MAX_CACHE_TTL = 86400.0


class DNSError(Exception):
    """
    A lookup that decides the fate of a delivery attempt.

    @ivar code: the SMTP reply code to report (C{451}, C{550}, C{554}).
    @ivar status: the RFC 3463 enhanced status (C{"5.1.2"}).
    @ivar message: a one-line diagnostic.
    """

    default_code = 451

    def __init__(self, status: str, message: str, code: int | None = None):
        self.status = status
        self.message = message
        self.code = self.default_code if code is None else code
        super().__init__(f"{self.code} {status} {message}")

    @property
    def reply(self) -> str:
        """The diagnostic as a one-line SMTP-style reply."""
        return str(self)


class TemporaryDNSError(DNSError):
    """The answer could not be had now (SERVFAIL, timeout, refused): retry later."""

    default_code = 451


class PermanentDNSError(DNSError):
    """
    The answer says mail cannot go there: NXDOMAIN (5.1.2), null MX (5.1.10),
    no usable host (5.4.4), a mail loop (5.4.6, code 554).
    """

    default_code = 550

    def __init__(self, status: str, message: str, code: int | None = None):
        if code is None and status == "5.4.6":
            code = 554
        super().__init__(status, message, code)


@dataclass(frozen=True)
class MXHost:
    """
    One host that receives mail for a domain.

    @ivar name: the host name (lower case, no trailing dot) or IP literal.
    @ivar preference: the MX preference (0 for an implicit MX).
    @ivar addresses: its IP addresses, IPv4 first.
    """

    name: str
    preference: int
    addresses: tuple[str, ...]


class _Answer:
    """Records of one type for one name, or the negative answer for it."""

    def __init__(self, payloads: list[Any], nxdomain: bool = False):
        self.payloads = payloads
        self.nxdomain = nxdomain


def dns_name(domain: str) -> str:
    """
    The lower-case ASCII form of C{domain} without a trailing dot.

    @raise PermanentDNSError: 5.1.2 when C{domain} is not a valid DNS name.
    """
    name = domain.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise PermanentDNSError("5.1.2", f"{domain!r} is not a valid domain name")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(0 < len(x) < 64 for x in labels):
        raise PermanentDNSError("5.1.2", f"{domain!r} is not a valid domain name")
    if not all(c.isalnum() or c in "-_" for x in labels for c in x):
        raise PermanentDNSError("5.1.2", f"{domain!r} is not a valid domain name")
    return name


class MXResolver:
    """
    Resolves a mail domain to the ordered list of hosts to try.

    @param resolver: a L{twisted.names} L{IResolver}.
    @param clock: an L{IReactorTime}; the cache expires by it.
    @param hostname: our own host name: an MX of that name is ourselves.
    @param rng: the source of randomness among equal preferences.
    @param timeout: the query timeout sequence passed to the resolver, or None
        for the resolver's default.
    @param cache_size: how many answers the cache holds at most.

    @ivar hostname: our host name (lower case); the relay manager updates it
        when the configuration is reloaded.
    """

    def __init__(
        self,
        resolver: Any,
        clock: Any,
        hostname: str,
        rng: random.Random | None = None,
        timeout: tuple[float, ...] | None = None,
        cache_size: int = 10000,
    ):
        self._resolver = resolver
        self._clock = clock
        self.hostname = hostname.lower().rstrip(".")
        self._rng = rng if rng is not None else random.Random()
        self._timeout = timeout
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], tuple[float, _Answer]] = OrderedDict()

    def use_resolver(self, resolver: Any) -> None:
        """Ask C{resolver} from now on (a reload's DNS servers); forget cached answers."""
        self._resolver = resolver
        self._cache.clear()

    def lookup(self, domain: str) -> Deferred[list[MXHost]]:
        """
        The hosts that receive mail for C{domain}, in the order to try them.

        @raise PermanentDNSError: (as a failure) 5.1.2, 5.1.10, 5.4.4, 5.4.6.
        @raise TemporaryDNSError: (as a failure) 4.4.3.
        """
        return Deferred.fromCoroutine(self._lookup(domain))

    def lookup_host(self, host: str) -> Deferred[list[MXHost]]:
        """
        The addresses of one host (a bracketed smart host): A and AAAA only,
        never MX; an IP literal is returned without any query.
        """
        return Deferred.fromCoroutine(self._lookup_host(host))

    async def _lookup_host(self, host: str) -> list[MXHost]:
        literal = ip_literal(host)
        if literal is not None:
            return [MXHost(literal, 0, (literal,))]
        name = dns_name(host)
        addresses = await self._addresses(name)
        if not addresses:
            raise PermanentDNSError("5.4.4", f"host {name} has no address records")
        return [MXHost(name, 0, addresses)]

    async def _lookup(self, domain: str) -> list[MXHost]:
        name = dns_name(domain)
        answer = await self._query(name, dns.MX)
        if answer.nxdomain:
            raise PermanentDNSError("5.1.2", f"domain {name} not found")
        exchanges = [(r.preference, str(r.name).lower().rstrip(".")) for r in answer.payloads]
        if not exchanges:
            return await self._implicit(name)
        usable = [(pref, host) for pref, host in exchanges if host]
        if not usable:
            # RFC 7505: "0 ." says the domain accepts no mail at all.
            raise PermanentDNSError("5.1.10", f"domain {name} accepts no mail (null MX)")
        ordered = self._below_ourselves(name, self._order(usable))
        return await self._resolve_hosts(name, ordered)

    async def _implicit(self, name: str) -> list[MXHost]:
        """RFC 5321 5.1: no MX records, so the domain itself is the host."""
        addresses = await self._addresses(name)
        if not addresses:
            raise PermanentDNSError("5.4.4", f"domain {name} has no MX or address records")
        if name == self.hostname:
            raise PermanentDNSError("5.4.6", f"mail for {name} loops back to myself")
        return [MXHost(name, 0, addresses)]

    def _order(self, exchanges: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """By preference; random order among equal preferences (RFC 5321 5.1)."""
        groups: dict[int, list[str]] = {}
        for pref, host in exchanges:
            if host not in groups.setdefault(pref, []):
                groups[pref].append(host)
        ordered = []
        for pref in sorted(groups):
            names = sorted(groups[pref])
            self._rng.shuffle(names)
            ordered.extend((pref, host) for host in names)
        return ordered

    def _below_ourselves(
        self, name: str, ordered: list[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        """
        RFC 5321 5.1: when we are one of the MX hosts, only the more preferred
        ones may be used; when none is, the mail would loop.
        """
        ours = [pref for pref, host in ordered if host == self.hostname]
        if not ours:
            return ordered
        better = [(pref, host) for pref, host in ordered if pref < min(ours)]
        if not better:
            raise PermanentDNSError(
                "5.4.6", f"mail for {name} loops back to myself (MX {self.hostname})"
            )
        return better

    async def _resolve_hosts(self, name: str, ordered: list[tuple[int, str]]) -> list[MXHost]:
        results = await gatherResults(
            [Deferred.fromCoroutine(self._host_addresses(host)) for _, host in ordered]
        )
        found = [
            MXHost(host, pref, addrs)
            for (pref, host), (addrs, _) in zip(ordered, results)
            if addrs
        ]
        if found:
            return found
        temporary = [err for _, err in results if err is not None]
        if temporary:
            raise TemporaryDNSError("4.4.3", f"MX hosts of {name}: {temporary[0].message}")
        raise PermanentDNSError("5.4.4", f"no MX host of {name} has an address")

    async def _host_addresses(
        self, host: str
    ) -> tuple[tuple[str, ...], TemporaryDNSError | None]:
        try:
            return await self._addresses(host), None
        except TemporaryDNSError as e:
            return (), e

    async def _addresses(self, name: str) -> tuple[str, ...]:
        """
        The A then AAAA addresses of C{name}; () when it has none.

        @raise TemporaryDNSError: when no address was found and a query failed
            temporarily.
        """
        results = await gatherResults(
            [
                Deferred.fromCoroutine(self._try_query(name, dns.A)),
                Deferred.fromCoroutine(self._try_query(name, dns.AAAA)),
            ]
        )
        addresses = []
        problems = []
        for answer in results:
            if isinstance(answer, TemporaryDNSError):
                problems.append(answer)
                continue
            for record in answer.payloads:
                family = socket.AF_INET if record.TYPE == dns.A else socket.AF_INET6
                addresses.append(socket.inet_ntop(family, record.address))
        if not addresses and problems:
            raise problems[0]
        return tuple(dict.fromkeys(addresses))

    async def _try_query(self, name: str, rtype: int) -> _Answer | TemporaryDNSError:
        try:
            return await self._query(name, rtype)
        except TemporaryDNSError as e:
            return e

    async def _query(self, name: str, rtype: int) -> _Answer:
        """
        One query, through the cache.

        @raise TemporaryDNSError: on SERVFAIL, REFUSED, timeout and the like.
        """
        key = (name, rtype)
        cached = self._cache.get(key)
        if cached is not None:
            expires, answer = cached
            if expires > self._clock.seconds():
                self._cache.move_to_end(key)
                return answer
            del self._cache[key]
        answer, ttl = await self._ask(name, rtype)
        self._remember(key, answer, ttl)
        return answer

    async def _ask(self, name: str, rtype: int) -> tuple[_Answer, float | None]:
        kind = dns.QUERY_TYPES.get(rtype, str(rtype))
        try:
            answers, authority, _ = await self._resolver.query(
                dns.Query(name, rtype, dns.IN), self._timeout
            )
        except (error.DNSNameError, error.AuthoritativeDomainError) as e:
            return _Answer([], nxdomain=True), _negative_ttl(_authority_of(e))
        except Exception as e:
            raise TemporaryDNSError("4.4.3", f"DNS {kind} lookup of {name} failed: {_describe(e)}")
        records = [rr for rr in answers if rr.type == rtype]
        if records:
            ttl = min(rr.ttl for rr in answers if rr.type in (rtype, dns.CNAME))
            return _Answer([rr.payload for rr in records]), float(ttl)
        return _Answer([]), _negative_ttl(authority)

    def _remember(self, key: tuple[str, int], answer: _Answer, ttl: float | None) -> None:
        if not ttl or ttl <= 0 or self._cache_size <= 0:
            return
        self._cache[key] = (self._clock.seconds() + min(ttl, MAX_CACHE_TTL), answer)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _authority_of(failure_value: Exception) -> list[Any]:
    """The authority section of the response carried by a DNS error, if any."""
    message = failure_value.args[0] if failure_value.args else None
    return list(getattr(message, "authority", ()) or ())


def _negative_ttl(authority: Any) -> float | None:
    """RFC 2308 section 5: a negative answer lives min(SOA TTL, SOA minimum)."""
    for rr in authority or ():
        if rr.type == dns.SOA:
            return float(min(rr.ttl, rr.payload.minimum))
    return None


def _describe(e: Exception) -> str:
    """A short human description of a resolver failure."""
    if isinstance(e, error.DNSServerError):
        return "server failure (SERVFAIL)"
    if isinstance(e, error.DNSQueryRefusedError):
        return "query refused (REFUSED)"
    if isinstance(e, (defer.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(e, error.DNSFormatError):
        return "format error (FORMERR)"
    return e.__class__.__name__


def resolv_conf_servers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """
    The name servers of C{path} (C{nameserver} lines), port 53; the local
    server when there is none or the file cannot be read, as the C resolver does.
    """
    servers = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    address = ip_literal(words[1].split("%", 1)[0])
                    if address is not None:
                        servers.append((address, 53))
    except OSError:
        pass
    return servers or [("127.0.0.1", 53)]


def make_resolver(dns_servers: tuple[tuple[str, int], ...] | list, reactor: Any,
                  hosts_file: str = "/etc/hosts",
                  resolv_conf: str = "/etc/resolv.conf",
                  lookups: DNSLookups | None = None) -> Any:
    """
    The resolver for outbound mail: the hosts file for addresses (kept
    parsed, read again only when it changes), then DNS through
    C{dns_servers} (C{(ip, port)} pairs) or, when there are none, those of
    C{resolv_conf} as they are now (read again on reload or restart; no timer
    re-reads it in the background, and no line is logged per re-read).
    With C{lookups}, every DNS query is timed and reported to it.
    """
    servers = list(dns_servers) or resolv_conf_servers(resolv_conf)
    # One UDP port per query (a random source port), without four log lines each.
    theResolver = client.Resolver(servers=servers, reactor=QuietDatagramReactor(reactor))
    if lookups is not None:
        theResolver = TimedResolver(theResolver, reactor, lookups)
    return resolve.ResolverChain([HostsFile(hosts_file), theResolver])
