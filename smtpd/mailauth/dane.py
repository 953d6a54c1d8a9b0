# -*- test-case-name: tests.test_mailauth_dane -*-
"""
DANE for SMTP (RFC 7672), for the relay to call: TLSA records of an MX host,
believed only when a validating resolver the operator trusts sets the AD
bit (Postfix's C{smtp_tls_dane_insecure_mx_policy} with trust-ad), and the
matching of a server's certificate chain against them.

twisted.names can neither set the AD bit in a query nor parse TLSA records,
so this lookup is dnspython's, run in a thread against the same configured
servers.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet.defer import Deferred

from smtpd.mailauth.lookup import TemporaryLookupError

DANE_TA, DANE_EE = 2, 3
FULL_CERTIFICATE, PUBLIC_KEY = 0, 1
EXACT, SHA256, SHA512 = 0, 1, 2
DNS_TIMEOUT = 5.0


@dataclass(frozen=True)
class TLSARecord:
    """One TLSA record (RFC 6698 2.1): usage, selector, matching type, data."""

    usage: int
    selector: int
    matching_type: int
    data: bytes

    @property
    def usable(self) -> bool:
        """RFC 7672 3.1.3: only DANE-TA(2) and DANE-EE(3), with known selector and matching type."""
        return (self.usage in (DANE_TA, DANE_EE) and self.selector in (0, 1)
                and self.matching_type in (0, 1, 2))


@dataclass(frozen=True)
class TLSAAnswer:
    """
    The TLSA records of one MX host.

    @ivar secure: whether the resolver vouched for the answer (AD bit):
        an insecure answer must be ignored (RFC 7672 2.1.1).
    """

    records: tuple[TLSARecord, ...]
    secure: bool

    @property
    def applies(self) -> bool:
        """Whether DANE governs this host: a secure answer with a usable record (RFC 7672 2.2)."""
        return self.secure and any(r.usable for r in self.records)


class TLSALookup:
    """
    TLSA lookups at C{_PORT._tcp.HOST} with the AD bit asked for, and
    whether the MX RRset and address records that led there were secure.

    @param servers: C{(ip, port)} of the validating resolvers; empty means
        the nameservers of /etc/resolv.conf.
    @param run_blocking: C{f(callable, *args) -> Deferred} on a thread pool.
    """

    def __init__(self, servers: Sequence[tuple[str, int]],
                 run_blocking: Callable[..., Deferred], timeout: float = DNS_TIMEOUT) -> None:
        self.servers = list(servers)
        self.run_blocking = run_blocking
        self.timeout = timeout

    async def lookup(self, host: str, port: int = 25) -> TLSAAnswer:
        """The TLSA answer for C{host}; L{TemporaryLookupError} when no server answers."""
        servers = self.servers or [(ns, 53) for ns in dns.resolver.Resolver().nameservers]
        name = f"_{port}._tcp.{host.rstrip('.')}."
        return await self.run_blocking(query_tlsa, name, servers, self.timeout)

    async def secure(self, name: str, rdtype: str = "MX") -> bool:
        """
        Whether the answer to C{name} and C{rdtype} (C{"MX"}, C{"A"}) is
        secure (AD bit, RFC 7672 2.2); L{TemporaryLookupError} when no server
        answers or the answer is bogus (SERVFAIL).
        """
        servers = self.servers or [(ns, 53) for ns in dns.resolver.Resolver().nameservers]
        name = f"{name.rstrip('.')}."
        return await self.run_blocking(query_secure, name, rdtype, servers, self.timeout)


def query_tlsa(name: str, servers: list[tuple[str, int]], timeout: float) -> TLSAAnswer:
    """The TLSA records at C{name} (blocking: run in a thread)."""
    response = query_ad(name, dns.rdatatype.TLSA, servers, timeout)
    secure = bool(response.flags & dns.flags.AD)
    records = tuple(
        TLSARecord(rr.usage, rr.selector, rr.mtype, bytes(rr.cert))
        for rrset in response.answer if rrset.rdtype == dns.rdatatype.TLSA for rr in rrset
    )
    return TLSAAnswer(records, secure)


def query_secure(name: str, rdtype: str, servers: list[tuple[str, int]],
                 timeout: float) -> bool:
    """
    Whether the resolver vouches (AD bit) for its answer to C{name} and
    C{rdtype} (records, none, or no such name alike; blocking: run in a thread).
    """
    response = query_ad(name, dns.rdatatype.from_text(rdtype), servers, timeout)
    return bool(response.flags & dns.flags.AD)


def query_ad(name: str, rdtype: Any, servers: list[tuple[str, int]],
             timeout: float) -> dns.message.Message:
    """
    Ask each server in turn with the AD bit (RFC 6840 5.7) for a NOERROR or
    NXDOMAIN answer (blocking: run in a thread). A validating resolver answers
    SERVFAIL for bogus data (RFC 4035 5.5): L{TemporaryLookupError} when no
    server gave an answer.
    """
    query = dns.message.make_query(name, rdtype)
    query.flags |= dns.flags.AD
    problems = []
    for host, port in servers:
        try:
            response = dns.query.udp(query, host, port=port, timeout=timeout)
            if response.flags & dns.flags.TC:
                response = dns.query.tcp(query, host, port=port, timeout=timeout)
        except (dns.exception.DNSException, OSError) as e:
            problems.append(f"{host}: {e.__class__.__name__}")
            continue
        if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return response
        problems.append(f"{host}: {dns.rcode.to_text(response.rcode())}")
    kind = dns.rdatatype.to_text(rdtype)
    raise TemporaryLookupError(f"{kind} lookup of {name} failed: {', '.join(problems)}")


def _selected(certificate: x509.Certificate, selector: int) -> bytes:
    if selector == FULL_CERTIFICATE:
        return certificate.public_bytes(Encoding.DER)
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def record_matches(record: TLSARecord, certificate: x509.Certificate) -> bool:
    """Whether C{certificate} is the one C{record} describes (RFC 6698 2.1.2-2.1.3)."""
    data = _selected(certificate, record.selector)
    if record.matching_type == SHA256:
        data = hashlib.sha256(data).digest()
    elif record.matching_type == SHA512:
        data = hashlib.sha512(data).digest()
    return data == record.data


def name_matches(certificate: x509.Certificate, names: Sequence[str]) -> bool:
    """Whether a DNS name of C{certificate} (one-label wildcards allowed) is one of C{names}."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        presented = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        presented = []
    wanted = {n.lower().rstrip(".") for n in names}
    for pattern in (p.lower().rstrip(".") for p in presented):
        if pattern in wanted:
            return True
        if pattern.startswith("*.") and any(
            n.partition(".")[2] == pattern[2:] and n.partition(".")[0] for n in wanted
        ):
            return True
    return False


def chain_matches(
    records: Sequence[TLSARecord],
    chain: Sequence[x509.Certificate],
    names: Sequence[str],
    now: datetime.datetime,
) -> bool:
    """
    Whether the chain a server presented (its certificate first) satisfies a
    usable record: DANE-EE matches the server certificate alone, whatever its
    names and dates (RFC 7672 3.1.1); DANE-TA matches a certificate of the
    chain that signs down to the server certificate, which must then carry
    one of C{names} and be in date (RFC 7672 3.1.2).
    """
    if not chain:
        return False
    usable = [r for r in records if r.usable]
    if any(r.usage == DANE_EE and record_matches(r, chain[0]) for r in usable):
        return True
    anchors = [r for r in usable if r.usage == DANE_TA]
    if not anchors or not name_matches(chain[0], names) or not _in_date(chain[0], now):
        return False
    for depth in range(1, len(chain)):
        if not _issued_by(chain[depth - 1], chain[depth]):
            return False
        if any(record_matches(r, chain[depth]) for r in anchors):
            return True
    return False


def peer_chain(transport: Any) -> list[x509.Certificate]:
    """The chain a TLS peer presented (its certificate first), from a Twisted TLS transport."""
    chain = transport.getHandle().get_peer_cert_chain() or []
    return [c.to_cryptography() for c in chain]


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _in_date(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc
