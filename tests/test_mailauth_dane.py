"""
Tests for L{smtpd.mailauth.dane}: TLSA records from a real DNS server on
loopback that plays a validating resolver (AD bit), matched against the
certificate a real TLS server presents.
"""

from __future__ import annotations

import datetime
import hashlib

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.names import dns as tdns
from twisted.trial import unittest
from zope.interface import implementer

from smtpd.mailauth.dane import (
    TLSALookup,
    TLSARecord,
    chain_matches,
    peer_chain,
)
from smtpd.mailauth.lookup import TemporaryLookupError
from tests.support import CertificateAuthority, start_dns_server

CA = CertificateAuthority()
NOW = datetime.datetime.now(datetime.timezone.utc)


class Record_TLSA(tdns.UnknownRecord):
    """A TLSA record (type 52) for the test DNS server, in wire form."""

    TYPE = 52

    def __init__(self, usage: int, selector: int, mtype: int, data: bytes, ttl: int = 300):
        super().__init__(bytes([usage, selector, mtype]) + data, ttl)


def spki_sha256(certificate) -> bytes:
    """The data of a C{x 1 1} record for C{certificate}."""
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


class Closing(Protocol):
    """Fires C{closed} when the connection ends."""

    def __init__(self) -> None:
        self.closed = defer.Deferred()

    def connectionLost(self, reason) -> None:
        self.closed.callback(None)


@implementer(IHandshakeListener)
class ChainGrabber(Closing):
    """Takes the server's chain once the TLS handshake is done, then hangs up."""

    def __init__(self) -> None:
        super().__init__()
        self.chain = defer.Deferred()

    def handshakeCompleted(self) -> None:
        self.chain.callback(peer_chain(self.transport))
        self.transport.loseConnection()


class DANETests(unittest.TestCase):
    """Lookups with and without the AD bit, and matching against a live TLS server."""

    def setUp(self) -> None:
        self.server_options = CA.server_options("mx.example.com")
        self.leaf = self.server_options.certificate.to_cryptography()
        self.other = CA.server_options("mx.example.com").certificate.to_cryptography()
        self.zones = {"example.com": {
            "_25._tcp.mx.example.com": [Record_TLSA(3, 1, 1, spki_sha256(self.leaf))],
            "_25._tcp.ta.example.com": [Record_TLSA(2, 1, 1, spki_sha256(CA.certificate))],
            "_25._tcp.old.example.com": [Record_TLSA(1, 1, 1, spki_sha256(self.leaf))],
            "mx.example.com": [tdns.Record_A("127.0.0.1")],
        }}

    def lookup(self, host: str, **server) -> defer.Deferred:
        address = start_dns_server(self, self.zones, **server)
        tlsa = TLSALookup([address], deferToThread, timeout=2)
        return defer.Deferred.fromCoroutine(tlsa.lookup(host))

    @defer.inlineCallbacks
    def presented_chain(self):
        """The chain a real TLS server for mx.example.com presents."""
        served: list[Closing] = []

        def serve() -> Closing:
            served.append(Closing())
            return served[-1]

        port = reactor.listenSSL(0, Factory.forProtocol(serve),
                                 self.server_options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        grabber = ChainGrabber()
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port,
                                      ssl.CertificateOptions())
        yield endpoint.connect(Factory.forProtocol(lambda: grabber))
        chain = yield grabber.chain
        yield grabber.closed
        yield defer.gatherResults([p.closed for p in served])
        return chain

    @defer.inlineCallbacks
    def test_secure_answer(self):
        """With the AD bit the records are believed and DANE applies."""
        answer = yield self.lookup("mx.example.com", authenticated=True)
        self.assertTrue(answer.secure)
        self.assertTrue(answer.applies)
        self.assertEqual(answer.records, (TLSARecord(3, 1, 1, spki_sha256(self.leaf)),))

    @defer.inlineCallbacks
    def test_insecure_answer_ignored(self):
        """Without the AD bit the same records do not make DANE apply (RFC 7672 2.1.1)."""
        answer = yield self.lookup("mx.example.com")
        self.assertFalse(answer.secure)
        self.assertFalse(answer.applies)

    @defer.inlineCallbacks
    def test_unusable_usage(self):
        """PKIX usages (0, 1) are unusable for SMTP (RFC 7672 3.1.3): DANE does not apply."""
        answer = yield self.lookup("old.example.com", authenticated=True)
        self.assertEqual(len(answer.records), 1)
        self.assertFalse(answer.applies)

    @defer.inlineCallbacks
    def test_no_records(self):
        """A host without TLSA records: a secure empty answer."""
        answer = yield self.lookup("none.example.com", authenticated=True)
        self.assertEqual(answer.records, ())
        self.assertFalse(answer.applies)

    @defer.inlineCallbacks
    def test_servfail(self):
        """SERVFAIL is a temporary error, so the relay defers (RFC 7672 2.1.1)."""
        yield self.assertFailure(
            self.lookup("mx.example.com", authenticated=True, servfail=("mx.example.com",)),
            TemporaryLookupError)

    @defer.inlineCallbacks
    def test_dane_ee_matches_live_server(self):
        """A 3 1 1 record of the served key matches the chain a live TLS server presents."""
        answer = yield self.lookup("mx.example.com", authenticated=True)
        chain = yield self.presented_chain()
        self.assertTrue(chain_matches(answer.records, chain, ["mx.example.com"], NOW))

    @defer.inlineCallbacks
    def test_dane_ee_mismatch(self):
        """A 3 1 1 record of another key does not match the live server's certificate."""
        chain = yield self.presented_chain()
        record = TLSARecord(3, 1, 1, spki_sha256(self.other))
        self.assertFalse(chain_matches([record], chain, ["mx.example.com"], NOW))

    @defer.inlineCallbacks
    def test_dane_ta(self):
        """A 2 1 1 record of the CA matches a chain that includes it, for the right name only."""
        answer = yield self.lookup("ta.example.com", authenticated=True)
        chain = [self.leaf, CA.certificate]
        self.assertTrue(chain_matches(answer.records, chain, ["mx.example.com"], NOW))
        self.assertFalse(chain_matches(answer.records, chain, ["mx.example.org"], NOW))
        self.assertFalse(chain_matches(answer.records, [self.leaf], ["mx.example.com"], NOW))
        later = NOW + datetime.timedelta(days=60)
        self.assertFalse(chain_matches(answer.records, chain, ["mx.example.com"], later))

    def test_dane_ta_wrong_issuer(self):
        """A chain whose server certificate was not signed by the matching anchor fails."""
        stranger = CertificateAuthority()
        leaf = stranger.server_options("mx.example.com").certificate.to_cryptography()
        record = TLSARecord(2, 1, 1, spki_sha256(CA.certificate))
        self.assertFalse(chain_matches([record], [leaf, CA.certificate], ["mx.example.com"], NOW))
