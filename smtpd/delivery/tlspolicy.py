# -*- test-case-name: tests.test_relay_tls_policy -*-
"""
The recipient side's TLS policy for one MX host: DANE (RFC 7672) when a
validating resolver vouches for the domain's MX RRset, the host's address
records and usable TLSA records of the host (C{[delivery] dnssec =
trust-ad}), else the domain's MTA-STS policy (RFC 8461,
C{[delivery] mta_sts = yes}), else none. DANE beats MTA-STS (RFC 8461 2).

L{TLSPolicies} finds them; L{HostPolicy} says what the relay does with a
host: the TLS level to use, whether a failure defers (enforce, DANE) or is
only logged (testing).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from smtpd.config import Config
from smtpd.delivery.dnstiming import DNSLookups, TimedTLSALookup
from smtpd.delivery.tlsoutcome import NO_POLICY, POLICY_STS, POLICY_TLSA, TLSA_INVALID
from smtpd.delivery.wire import SessionError
from smtpd.mailauth.dane import TLSAAnswer, TLSALookup, TLSARecord, chain_matches, peer_chain
from smtpd.mailauth.https import https_agent
from smtpd.mailauth.lookup import DNSLookup, TemporaryLookupError
from smtpd.mailauth.mtasts import MTASTS, PolicyCache, PolicyFailure, STSPolicy

DNSSEC_MODES = ("no", "trust-ad")

# Seconds a domain's MTA-STS policy (or its absence) and a host's TLSA answer
# are remembered in memory, so a busy route does not ask DNS for every message.
MEMO_SECONDS = 60.0

log = Logger()


@dataclass(frozen=True)
class HostPolicy:
    """
    The policy for one MX host of one recipient domain.

    @ivar domain: the recipient (policy) domain.
    @ivar kind: L{POLICY_TLSA}, L{POLICY_STS} or L{NO_POLICY}.
    @ivar mode: C{dane}, C{enforce}, C{testing} or "" (no policy).
    @ivar strings: the policy as RFC 8460 policy strings.
    @ivar tlsa: the usable TLSA records (DANE).
    @ivar sts: the MTA-STS policy.
    @ivar error: why the host's TLSA records could not be had (it is not used).
    """

    domain: str
    kind: str = NO_POLICY
    mode: str = ""
    strings: tuple[str, ...] = ()
    tlsa: tuple[TLSARecord, ...] = ()
    sts: STSPolicy | None = None
    error: str = ""

    @property
    def label(self) -> str:
        """How the delivery log line shows it: C{dane}, C{sts-enforce}, C{sts-testing} or ""."""
        if self.kind == POLICY_STS:
            return f"sts-{self.mode}"
        return self.mode

    @property
    def enforced(self) -> bool:
        """Whether a failure under this policy defers the host (not only logged)."""
        return self.mode in ("dane", "enforce")

    def allows(self, host: str) -> bool:
        """Whether MTA-STS lets mail go to MX host C{host} (always, without a policy)."""
        return self.sts is None or self.sts.allows(host)


def sts_strings(policy: STSPolicy) -> tuple[str, ...]:
    """The policy's lines as RFC 8460 C{policy-string}s."""
    return ("version: STSv1", f"mode: {policy.mode}",
            *(f"mx: {m}" for m in policy.mx), f"max_age: {policy.max_age}")


def tlsa_string(record: TLSARecord) -> str:
    """A TLSA record in presentation form: C{"3 1 1 ab12..."}."""
    return f"{record.usage} {record.selector} {record.matching_type} {record.data.hex()}"


class TLSPolicies:
    """
    Finds the policies of recipient domains and their MX hosts.

    @param sts: the L{MTASTS} finder, or None (never MTA-STS).
    @param tlsa: the L{TLSALookup}, or None (never DANE).
    @param clock: gives C{seconds()} for the in-memory memo (L{MEMO_SECONDS});
        None: nothing is remembered.
    """

    def __init__(self, sts: MTASTS | None = None, tlsa: TLSALookup | None = None,
                 clock: Any = None):
        self.sts = sts
        self.tlsa = tlsa
        self.clock = clock
        self._memo: dict[tuple[str, ...], tuple[float, Any]] = {}

    def _recall(self, key: tuple[str, ...]) -> tuple[bool, Any]:
        """C{(True, value)} when C{key} was remembered less than L{MEMO_SECONDS} ago."""
        found = self._memo.get(key)
        if found is None or self.clock is None or found[0] <= self.clock.seconds():
            self._memo.pop(key, None)
            return False, None
        return True, found[1]

    def _remember(self, key: tuple[str, ...], value: Any) -> Any:
        if self.clock is not None:
            if len(self._memo) > 10000:
                self._memo.clear()
            self._memo[key] = (self.clock.seconds() + MEMO_SECONDS, value)
        return value

    async def domain_policy(self, config: Config,
                            domain: str) -> tuple[STSPolicy | None, PolicyFailure | None]:
        """
        The MTA-STS policy of C{domain} in force (enforce or testing), or
        None; and why an announced policy could not be fetched just now (the
        cached one, if any, is returned then).
        """
        if self.sts is None or not config.delivery.mta_sts:
            return None, None
        known, policy = self._recall(("sts", domain))
        if known:
            return policy, None
        try:
            policy, failure = await self.sts.find(domain)
        except Exception:
            log.failure("MTA-STS policy of {domain}: lookup failed", domain=domain)
            return None, None
        if policy is not None and policy.mode == "none":
            policy = None
        return self._remember(("sts", domain), policy), failure

    async def host_policy(self, config: Config, domain: str, host: str, port: int,
                          sts: STSPolicy | None) -> HostPolicy:
        """
        The policy for MX C{host} of C{domain}: DANE when it applies, else
        C{sts}. DANE applies only when the MX RRset of C{domain} and the
        address records of C{host} are secure (RFC 7672 2.2): an insecure
        answer means no DANE; a bogus one (SERVFAIL) or none skips the host.
        """
        if self.tlsa is not None and config.delivery.dnssec == "trust-ad":
            try:
                answer = await self._dane_answer(domain, host, port)
            except TemporaryLookupError as e:
                # RFC 7672 2.1.1, 2.2: an indeterminate answer: the host is not used.
                return HostPolicy(domain, POLICY_TLSA, "dane", error=str(e))
            if answer is not None and answer.applies:
                usable = tuple(r for r in answer.records if r.usable)
                return HostPolicy(domain, POLICY_TLSA, "dane",
                                  tuple(tlsa_string(r) for r in usable), tlsa=usable)
        if sts is not None:
            return HostPolicy(domain, POLICY_STS, sts.mode, sts_strings(sts), sts=sts)
        return HostPolicy(domain)

    async def _dane_answer(self, domain: str, host: str, port: int) -> TLSAAnswer | None:
        """
        The TLSA answer of C{host}, or None when the MX RRset of C{domain} or
        the address records of C{host} are insecure (the TLSA records are not
        even asked for then, RFC 7672 2.2.1, 2.2.2).
        """
        for name, rdtype in ((domain, "MX"), (host, "A")):
            if not await self._secure(name, rdtype):
                log.debug("DANE: the {rdtype} answer for {name} is insecure: no DANE for "
                          "{host}", rdtype=rdtype, name=name, host=host)
                return None
        key = ("tlsa", host, str(port))
        known, answer = self._recall(key)
        if not known:
            answer = self._remember(key, await self.tlsa.lookup(host, port))
        return answer

    async def _secure(self, name: str, rdtype: str) -> bool:
        """Whether the answer to C{name} and C{rdtype} is secure (remembered like TLSA)."""
        key = ("secure", name, rdtype)
        known, secure = self._recall(key)
        if not known:
            secure = self._remember(key, await self.tlsa.secure(name, rdtype))
        return secure


def dane_check(policy: HostPolicy, host: str, clock: Any) -> Callable[[Any], None]:
    """
    The check of a TLS peer under DANE: its chain must match a usable TLSA
    record of C{host} (DANE-TA also needs the MX host or the recipient domain
    as a name of the certificate, RFC 7672 3.2.2); else 4.7.5, tlsa-invalid.
    """
    names = [host, policy.domain]

    def check(transport: Any) -> None:
        """Raise L{SessionError} unless the peer's chain matches."""
        now = datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc)
        if not chain_matches(policy.tlsa, peer_chain(transport), names, now):
            raise SessionError(451, "4.7.5", f"451 4.7.5 the certificate of {host} matches "
                               "none of its TLSA records", tls_result=TLSA_INVALID)

    return check


def tls_policies(config: Config, resolver: Any, reactor: Any,
                 run_blocking: Callable[..., Any], trust_root: Any = None,
                 https_port: int | None = None,
                 dns_lookups: DNSLookups | None = None) -> TLSPolicies:
    """
    The policies as the server uses them: MTA-STS through C{resolver} (the
    C{dns_servers}), fetched over HTTPS verified against C{trust_root}
    (None: the platform's) and cached in C{mailroot/mta-sts/}; TLSA lookups
    at the same servers. Whether each applies is read from the config at
    delivery time (C{mta_sts}, C{dnssec}), so a reload switches them.

    @param run_blocking: runs blocking work (cache files, TLSA queries) in a thread.
    @param https_port: fetch policies from this port instead of 443 (tests).
    @param dns_lookups: where the TLSA lookups are reported (timed), or None.
    """
    lookup = DNSLookup(resolver)
    agent = https_agent(reactor, lookup, trust_root, https_port)
    cache = PolicyCache(os.path.join(config.server.mailroot, "mta-sts"), run_blocking)
    sts = MTASTS(lookup, agent, cache, reactor, reactor)
    tlsa: Any = TLSALookup(config.delivery.dns_servers, run_blocking)
    if dns_lookups is not None:
        tlsa = TimedTLSALookup(tlsa, reactor, dns_lookups)
    return TLSPolicies(sts, tlsa, reactor)
