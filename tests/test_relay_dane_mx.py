"""
Tests for when DANE applies to an MX host (RFC 7672 2.2: only when the MX
RRset and the host's address records were obtained securely) and for the SNI
the relay sends (RFC 7672 8.1), end to end: a real DNS server on loopback
that sets the AD bit for some names only, real TLS peers with certificates of
a test CA.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from smtpd.config import Config, DeliveryConfig, ServerConfig
from smtpd.delivery.mx import MXResolver, make_resolver
from smtpd.delivery.relay import RelayManager
from smtpd.delivery.sni import sni_name
from smtpd.delivery.tlsoutcome import (
    DNSSEC_INVALID,
    NO_POLICY,
    POLICY_TLSA,
    SUCCESS,
    TLSA_INVALID,
)
from smtpd.delivery.tlspolicy import TLSPolicies
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource
from smtpd.mailauth.dane import TLSALookup
from tests.support import (
    CertificateAuthority,
    SinkScript,
    a,
    mx,
    start_dns_server,
    start_smtp_sinks,
)
from tests.test_mailauth_dane import Record_TLSA, spki_sha256

CA = CertificateAuthority()
MESSAGE = b"From: a@ours.test\r\nSubject: hello\r\n\r\nbody\r\n"
MX1 = "127.0.0.2"


class DANEMXTests(unittest.TestCase):
    """Whether DANE governs an MX host, and the server name the MX host sees."""

    def setUp(self) -> None:
        self.mailroot = os.path.abspath(self.mktemp())
        self.server_names: list[bytes | None] = []
        [self.sink] = start_smtp_sinks(self, [MX1], [SinkScript(tls=self.serving())])
        self.port = self.sink.port
        self.zone = {
            "example.test": [mx(10, "mx1.example.test")],
            "mx1.example.test": [a(MX1)],
        }
        self.outcomes: list = []

    def serving(self):
        """
        Server TLS options for mx1.example.test that record the SNI server
        name of each handshake (None: the client sent none).
        """
        options = CA.server_options("mx1.example.test")
        options.getContext().set_tlsext_servername_callback(
            lambda connection: self.server_names.append(connection.get_servername()))
        return options

    def publish_tlsa(self, matching: bool) -> None:
        """A 3 1 1 TLSA record of mx1's served key, or of another key."""
        served = self.sink.script.tls.certificate.to_cryptography()
        other = CA.server_options("mx1.example.test").certificate.to_cryptography()
        self.zone[f"_{self.port}._tcp.mx1.example.test"] = [
            Record_TLSA(3, 1, 1, spki_sha256(served if matching else other))]

    def relay(self, dane: dict | None = None, **dns_options) -> RelayManager:
        """
        A relay at C{dnssec = trust-ad} asking a test DNS server started with
        C{dns_options}; with C{dane}, the AD-bit queries of DANE go to a
        second server of the same zone started with those options instead.
        """
        self.dns = start_dns_server(self, {"test": self.zone}, authenticated=True, **dns_options)
        dane_dns = self.dns
        if dane is not None:
            dane_dns = start_dns_server(self, {"test": self.zone}, authenticated=True, **dane)
        config = Config(
            path=os.path.join(self.mailroot, "etc", "smtpd.ini"),
            root=self.mailroot,
            server=ServerConfig(hostname="smtp.ours.test", mailroot=self.mailroot),
            delivery=DeliveryConfig(remote_port=self.port, outbound_tls="may",
                                    mta_sts=False, dnssec="trust-ad"),
        )
        resolver = make_resolver([self.dns], reactor)
        policies = TLSPolicies(tlsa=TLSALookup([dane_dns], deferToThread, timeout=2),
                               clock=reactor)
        relay = RelayManager(config, reactor, MXResolver(resolver, reactor, "smtp.ours.test"),
                             client_tls=CA.trust_root(), policies=policies)
        relay.tls_outcomes.subscribe(self.outcomes.append)
        self.addCleanup(relay.stop)
        return relay

    async def send(self, relay: RelayManager):
        recipient = Recipient("b@example.test")
        envelope = Envelope(id="0A1B2C", sender="a@ours.test", recipients=[recipient],
                            arrival=0.0)
        [status] = await relay.deliver(envelope, [(recipient, None)], BytesSource(MESSAGE))
        return status

    def tlsa_queries(self) -> int:
        return self.dns.query_count(52) + self.dns.query_count("TLSA")

    async def test_insecure_mx_no_dane(self) -> None:
        """
        An MX answer without the AD bit, a TLSA answer with it: DANE does not
        apply (RFC 7672 2.2.1), so a mismatching TLSA record does not defer;
        the message goes with opportunistic TLS, policy "" (not dane), and
        the TLSA records are not even asked for.
        """
        self.publish_tlsa(matching=False)
        status = await self.send(self.relay(insecure=("example.test",)))
        self.assertEqual((status.code, status.tls, status.tls_policy), (250, True, ""))
        self.assertEqual(len(self.sink.messages), 1)
        self.assertEqual(self.tlsa_queries(), 0)
        self.assertEqual([(o.policy_type, o.result) for o in self.outcomes],
                         [(NO_POLICY, SUCCESS)])

    async def test_insecure_address_records_no_dane(self) -> None:
        """
        A secure MX answer but an insecure A answer for the MX host: no DANE
        for that host either (RFC 7672 2.2.2); delivered with opportunistic TLS.
        """
        self.publish_tlsa(matching=False)
        status = await self.send(self.relay(insecure=("mx1.example.test",)))
        self.assertEqual((status.code, status.tls, status.tls_policy), (250, True, ""))
        self.assertEqual(self.tlsa_queries(), 0)

    async def test_secure_mx_mismatch_defers(self) -> None:
        """
        MX, address and TLSA answers all with the AD bit and a mismatching
        TLSA record: DANE applies, the message is deferred with 4.7.5 and not
        sent; the outcome is tlsa-invalid.
        """
        self.publish_tlsa(matching=False)
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.status, status.tls_policy), (451, "4.7.5", "dane"))
        self.assertEqual(self.sink.messages, [])
        self.assertEqual([(o.policy_type, o.result) for o in self.outcomes],
                         [(POLICY_TLSA, TLSA_INVALID)])

    async def test_bogus_mx_defers(self) -> None:
        """
        A bogus MX RRset (the validating resolver answers SERVFAIL): nothing
        is sent, the message is deferred (a temporary DNS failure), never
        delivered without DANE.
        """
        self.publish_tlsa(matching=False)
        status = await self.send(self.relay(servfail=("example.test",)))
        self.assertEqual((status.code, status.status[0]), (451, "4"))
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(self.server_names, [])

    async def test_bogus_mx_in_dane_query_defers(self) -> None:
        """
        The AD-bit MX query gets SERVFAIL (bogus) while the plain lookup had
        the hosts: the hosts are skipped with 4.7.5, dnssec-invalid, nothing
        is sent and no TLS is even tried.
        """
        self.publish_tlsa(matching=True)
        status = await self.send(self.relay(dane={"servfail": ("example.test",)}))
        self.assertEqual((status.code, status.status, status.tls_policy), (451, "4.7.5", "dane"))
        self.assertIn("MX lookup of example.test", status.reply)
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(self.server_names, [])
        self.assertEqual([(o.policy_type, o.result) for o in self.outcomes],
                         [(POLICY_TLSA, DNSSEC_INVALID)])

    async def test_bogus_address_records_skip_host(self) -> None:
        """
        A secure MX answer, but SERVFAIL (bogus) for the AD-bit A query of
        the MX host: the host is skipped with 4.7.5, dnssec-invalid.
        """
        self.publish_tlsa(matching=True)
        status = await self.send(self.relay(dane={"servfail": ("mx1.example.test",)}))
        self.assertEqual((status.code, status.status, status.tls_policy), (451, "4.7.5", "dane"))
        self.assertIn("A lookup of mx1.example.test", status.reply)
        self.assertEqual(self.sink.messages, [])

    async def test_dane_sends_sni(self) -> None:
        """
        Under DANE (a matching TLSA record) the ClientHello names the MX host,
        the TLSA base domain (RFC 7672 8.1), and the message is delivered.
        """
        self.publish_tlsa(matching=True)
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.tls_policy), (250, "dane"))
        self.assertEqual(self.server_names, [b"mx1.example.test"])

    async def test_opportunistic_tls_sends_sni(self) -> None:
        """Opportunistic TLS (no DANE) to an MX host sends its name as SNI too."""
        status = await self.send(self.relay(insecure=("example.test",)))
        self.assertEqual((status.code, status.tls, status.tls_policy), (250, True, ""))
        self.assertEqual(self.server_names, [b"mx1.example.test"])


class SNINameTests(unittest.TestCase):
    """The name sent as SNI."""

    def test_names(self) -> None:
        """A host name goes as ASCII without a trailing dot; an IP literal never goes."""
        self.assertEqual(sni_name("MX1.Example.Test."), b"mx1.example.test")
        self.assertEqual(sni_name("bücher.test"), b"xn--bcher-kva.test")
        self.assertEqual(sni_name("127.0.0.2"), b"")
        self.assertEqual(sni_name("[IPv6:::1]"), b"")
        self.assertEqual(sni_name(""), b"")
