"""
Tests for the recipient-side TLS policies in the relay (L{smtpd.delivery.tlspolicy}):
MTA-STS policies served by a real HTTPS server on loopback with a test CA's
certificate, DANE TLSA records from a real DNS server that sets the AD bit,
REQUIRETLS toward peers, and the L{TLSOutcome}s the relay publishes.
"""

from __future__ import annotations

import os

from twisted.internet import reactor, ssl
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.server import Site

from smtpd.config import Config, DeliveryConfig, ServerConfig
from smtpd.delivery.mx import MXResolver, make_resolver
from smtpd.delivery.relay import RelayManager, tls_not_required
from smtpd.delivery.tlsoutcome import (
    CERTIFICATE_HOST_MISMATCH,
    NO_POLICY,
    POLICY_STS,
    POLICY_TLSA,
    STARTTLS_NOT_SUPPORTED,
    SUCCESS,
    TLSA_INVALID,
    VALIDATION_FAILURE,
    TLSOutcome,
    TLSOutcomes,
)
from smtpd.delivery.tlspolicy import tls_policies
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
from tests.test_mailauth_checks import txt
from tests.test_mailauth_dane import Record_TLSA, spki_sha256
from tests.test_mailauth_mtasts import PolicyPage

CA = CertificateAuthority()
MESSAGE = b"From: a@ours.test\r\nSubject: hello\r\n\r\nbody\r\n"
MX1, MX2 = "127.0.0.2", "127.0.0.3"


def policy_text(mode: str, *patterns: str) -> bytes:
    """An MTA-STS policy body."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {p}" for p in patterns),
             "max_age: 86400"]
    return ("\r\n".join(lines) + "\r\n").encode()


class PolicyRelayTests(unittest.TestCase):
    """MTA-STS and DANE applied by L{RelayManager}, end to end on loopback."""

    def setUp(self) -> None:
        self.mailroot = os.path.abspath(self.mktemp())
        self.page = PolicyPage()
        site = Site(self.page)
        https = reactor.listenSSL(0, site, CA.server_options("mta-sts.example.test"),
                                  interface="127.0.0.1")
        self.https, self.https_port = https, https.getHost().port
        self.addCleanup(lambda: https.stopListening() if https.connected else None)
        self.sinks = start_smtp_sinks(self, [MX1, MX2], [
            SinkScript(tls=CA.server_options("mx1.example.test")),
            SinkScript(tls=CA.server_options("wrong.test")),
        ])
        self.port = self.sinks[0].port
        self.zone = {
            "example.test": [mx(10, "mx1.example.test")],
            "mx1.example.test": [a(MX1)],
            "mx2.example.test": [a(MX2)],
            "mta-sts.example.test": [a("127.0.0.1")],
            "_mta-sts.example.test": [txt("v=STSv1; id=20261201")],
        }
        self.outcomes: list = []

    def serve_dns(self, authenticated: bool = False):
        """The test DNS server for the current zone (AD bit set when C{authenticated})."""
        self.dns = start_dns_server(self, {"test": self.zone}, authenticated=authenticated)
        return self.dns

    def relay(self, dnssec: str = "no", mta_sts: bool = True, **delivery) -> RelayManager:
        """A relay trusting the test CA, its MTA-STS cache in the test mailroot."""
        config = Config(
            path=os.path.join(self.mailroot, "etc", "smtpd.ini"),
            root=self.mailroot,
            server=ServerConfig(hostname="smtp.ours.test", mailroot=self.mailroot),
            delivery=DeliveryConfig(remote_port=self.port, outbound_tls="may",
                                    mta_sts=mta_sts, dnssec=dnssec, **delivery),
        )
        resolver = make_resolver([self.dns], reactor)
        policies = tls_policies(config, resolver, reactor, deferToThread,
                                trust_root=CA.trust_root(),
                                https_port=self.https_port)
        policies.tlsa = TLSALookup([self.dns], deferToThread, timeout=2)
        relay = RelayManager(config, reactor, MXResolver(resolver, reactor, "smtp.ours.test"),
                             client_tls=CA.trust_root(), policies=policies)
        relay.tls_outcomes.subscribe(self.outcomes.append)
        self.addCleanup(relay.stop)
        return relay

    async def send(self, relay: RelayManager, address: str = "b@example.test",
                   data: bytes = MESSAGE, **env):
        recipient = Recipient(address)
        envelope = Envelope(id="0A1B2C", sender="a@ours.test", recipients=[recipient],
                            arrival=0.0, **env)
        [status] = await relay.deliver(envelope, [(recipient, None)], BytesSource(data))
        return status

    # ------------------------------------------------------------ MTA-STS

    async def test_sts_enforce_matching_mx(self) -> None:
        """
        Under an enforce policy that lists the MX host, the message goes over
        TLS verified for the MX name; the log shows sts-enforce and a success
        outcome carries the policy strings.
        """
        self.page.body = policy_text("enforce", "mx1.example.test")
        self.serve_dns()
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.tls, status.tls_policy), (250, True, "sts-enforce"))
        [got] = self.sinks[0].messages
        self.assertTrue(got.tls)
        [outcome] = self.outcomes
        self.assertEqual(
            (outcome.policy_type, outcome.policy_domain, outcome.mx_host, outcome.result),
            (POLICY_STS, "example.test", "mx1.example.test", SUCCESS))
        self.assertIn("mode: enforce", outcome.policy_strings)
        self.assertIn("mx: mx1.example.test", outcome.policy_strings)

    async def test_sts_enforce_mx_not_listed(self) -> None:
        """
        Under an enforce policy that does not list the MX host, the message is
        deferred (4.7.5, never bounced, never sent in plain text) and no
        connection is made.
        """
        self.page.body = policy_text("enforce", "mx9.example.test")
        self.serve_dns()
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.status, status.tls_policy),
                         (451, "4.7.5", "sts-enforce"))
        self.assertIn("not in the MTA-STS policy", status.reply)
        self.assertEqual(self.sinks[0].connections, 0)
        self.assertEqual([o.result for o in self.outcomes], [VALIDATION_FAILURE])

    async def test_sts_enforce_certificate_for_other_name(self) -> None:
        """
        An MX host the policy lists whose certificate is for another name:
        deferred with 4.7.5, no plain-text retry, certificate-host-mismatch.
        """
        self.zone["example.test"] = [mx(10, "mx2.example.test")]
        self.page.body = policy_text("enforce", "*.example.test")
        self.serve_dns()
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.status), (451, "4.7.5"))
        self.assertEqual((self.sinks[1].connections, self.sinks[1].messages), (1, []))
        [outcome] = self.outcomes
        self.assertEqual((outcome.result, outcome.receiving_ip),
                         (CERTIFICATE_HOST_MISMATCH, MX2))

    async def test_sts_testing_delivers_as_usual(self) -> None:
        """
        Under a testing policy a failure (certificate for another name) is
        reported and logged, and the message is delivered as usual.
        """
        self.zone["example.test"] = [mx(10, "mx2.example.test")]
        self.page.body = policy_text("testing", "mx2.example.test")
        self.serve_dns()
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.tls_policy), (250, "sts-testing"))
        self.assertEqual(len(self.sinks[1].messages), 1)
        # Only the failure counts for the policy: the usual delivery was not verified.
        self.assertEqual([o.result for o in self.outcomes], [CERTIFICATE_HOST_MISMATCH])

    async def test_policy_remembered(self) -> None:
        """A second message to the domain within a minute asks neither DNS nor HTTPS again."""
        self.page.body = policy_text("enforce", "mx1.example.test")
        self.serve_dns()
        relay = self.relay()
        for _ in range(2):
            self.assertEqual((await self.send(relay)).tls_policy, "sts-enforce")
        self.assertEqual((self.dns.query_count("TXT"), len(self.page.requests)), (1, 1))

    async def test_sts_testing_mx_not_listed(self) -> None:
        """Under a testing policy an MX host it does not list still gets the message."""
        self.page.body = policy_text("testing", "mx9.example.test")
        self.serve_dns()
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.tls_policy), (250, "sts-testing"))
        self.assertEqual([o.result for o in self.outcomes], [VALIDATION_FAILURE])

    async def test_sts_off(self) -> None:
        """With mta_sts = no the policy is not even fetched: the MX gets the mail as today."""
        self.page.body = policy_text("enforce", "mx9.example.test")
        self.serve_dns()
        status = await self.send(self.relay(mta_sts=False))
        self.assertEqual((status.code, status.tls_policy), (250, ""))
        self.assertEqual(self.page.requests, [])
        self.assertEqual([o.policy_type for o in self.outcomes], [NO_POLICY])

    async def test_sts_cache_survives_restart(self) -> None:
        """
        A policy fetched once is kept in mailroot/mta-sts/: a new relay over
        the same mailroot (as after a restart) applies it while the HTTPS
        server is gone, and still defers to an MX host it does not list.
        """
        self.page.body = policy_text("enforce", "mx1.example.test")
        self.serve_dns()
        self.assertEqual((await self.send(self.relay())).code, 250)
        self.assertTrue(os.path.exists(os.path.join(self.mailroot, "mta-sts", "example.test.json")))
        await self.https.stopListening()
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.tls_policy), (250, "sts-enforce"))
        self.zone["example.test"] = [mx(10, "mx2.example.test")]
        self.serve_dns()
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.status, status.tls_policy),
                         (451, "4.7.5", "sts-enforce"))
        self.assertEqual(len(self.page.requests), 1)
        self.assertEqual(self.sinks[1].messages, [])

    async def test_sts_fetch_failure_uses_cache(self) -> None:
        """
        When the TXT record announces a new policy id but the fetch fails, the
        cached policy (still within max_age) goes on applying.
        """
        self.page.body = policy_text("enforce", "mx1.example.test")
        self.serve_dns()
        await self.send(self.relay())
        self.page.code = 500
        self.zone["_mta-sts.example.test"] = [txt("v=STSv1; id=20261202")]
        self.zone["example.test"] = [mx(10, "mx2.example.test")]
        self.serve_dns()
        self.outcomes.clear()
        status = await self.send(self.relay())
        self.assertEqual((status.code, status.status, status.tls_policy),
                         (451, "4.7.5", "sts-enforce"))
        self.assertEqual(len(self.page.requests), 2)
        # The failed fetch is reported, with the policy that went on applying.
        fetch, refused = self.outcomes
        self.assertEqual((fetch.policy_type, fetch.result, fetch.mx_host, fetch.mode),
                         (POLICY_STS, "sts-policy-fetch-error", "", "enforce"))
        self.assertIn("mx: mx1.example.test", fetch.policy_strings)
        self.assertEqual(refused.result, VALIDATION_FAILURE)

    # ------------------------------------------------------------ DANE

    def tlsa(self, usage: int, certificate) -> None:
        """Publish a C{usage 1 1} TLSA record of C{certificate} for mx1.example.test."""
        self.zone[f"_{self.port}._tcp.mx1.example.test"] = [
            Record_TLSA(usage, 1, 1, spki_sha256(certificate))]

    def mx1_leaf(self):
        """A new certificate for mx1.example.test, served by the MX1 sink."""
        options = CA.server_options("mx1.example.test")
        self.sinks[0].script.tls = options
        return options.certificate.to_cryptography()

    async def test_dane_ee_match(self) -> None:
        """
        A 3 1 1 record of the served key, in an answer with the AD bit: the
        message goes over TLS; DANE beats an MTA-STS policy that does not list
        the host; the outcome is a tlsa success with the record.
        """
        leaf = self.mx1_leaf()
        self.tlsa(3, leaf)
        self.page.body = policy_text("enforce", "mx9.example.test")
        self.serve_dns(authenticated=True)
        status = await self.send(self.relay(dnssec="trust-ad"))
        self.assertEqual((status.code, status.tls, status.tls_policy), (250, True, "dane"))
        [outcome] = self.outcomes
        self.assertEqual((outcome.policy_type, outcome.result), (POLICY_TLSA, SUCCESS))
        self.assertEqual(outcome.policy_strings, (f"3 1 1 {spki_sha256(leaf).hex()}",))

    async def test_dane_ta_match(self) -> None:
        """
        A 2 1 1 record of the CA matches a certificate it issued for the MX
        name, with the CA in the chain the server presents (RFC 7672 3.1.2).
        """
        key_pem, cert_pem = CA.server_pem("mx1.example.test")
        leaf = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem)
        self.sinks[0].script.tls = ssl.CertificateOptions(
            privateKey=leaf.privateKey.original, certificate=leaf.original,
            extraCertChain=[ssl.Certificate.loadPEM(CA.ca_pem()).original])
        self.tlsa(2, CA.certificate)
        self.serve_dns(authenticated=True)
        status = await self.send(self.relay(dnssec="trust-ad", mta_sts=False))
        self.assertEqual((status.code, status.tls_policy), (250, "dane"))

    async def test_dane_mismatch_defers(self) -> None:
        """
        A 3 1 1 record of another key: the message is deferred (4.7.5), not
        sent in plain text, and the outcome is tlsa-invalid.
        """
        self.mx1_leaf()
        self.tlsa(3, CA.server_options("mx1.example.test").certificate.to_cryptography())
        self.serve_dns(authenticated=True)
        status = await self.send(self.relay(dnssec="trust-ad", mta_sts=False))
        self.assertEqual((status.code, status.status, status.tls_policy),
                         (451, "4.7.5", "dane"))
        self.assertIn("TLSA", status.reply)
        self.assertEqual(self.sinks[0].messages, [])
        self.assertEqual([o.result for o in self.outcomes], [TLSA_INVALID])

    async def test_dane_requires_starttls(self) -> None:
        """Usable TLSA records force TLS: a host that offers no STARTTLS is deferred."""
        self.tlsa(3, self.mx1_leaf())
        self.sinks[0].script.tls = None
        self.serve_dns(authenticated=True)
        status = await self.send(self.relay(dnssec="trust-ad", mta_sts=False))
        self.assertEqual((status.code, status.status, status.tls_policy), (451, "4.7.5", "dane"))
        self.assertEqual(self.sinks[0].messages, [])
        self.assertEqual([o.result for o in self.outcomes], [STARTTLS_NOT_SUPPORTED])

    async def test_dane_needs_ad_bit(self) -> None:
        """Without the AD bit the same mismatching record is ignored: delivered as usual."""
        self.tlsa(3, CA.server_options("mx1.example.test").certificate.to_cryptography())
        self.serve_dns(authenticated=False)
        status = await self.send(self.relay(dnssec="trust-ad", mta_sts=False))
        self.assertEqual((status.code, status.tls_policy), (250, ""))

    async def test_dane_off(self) -> None:
        """With dnssec = no, TLSA records are never looked up."""
        self.tlsa(3, CA.server_options("mx1.example.test").certificate.to_cryptography())
        self.serve_dns(authenticated=True)
        status = await self.send(self.relay(mta_sts=False))
        self.assertEqual(status.code, 250)
        self.assertEqual(self.dns.query_count(52) + self.dns.query_count("TLSA"), 0)
        self.assertGreater(self.dns.query_count("MX"), 0)

    # ------------------------------------------------------------ RFC 8689

    async def test_tls_required_no_ignores_policy(self) -> None:
        """
        C{TLS-Required: No} (RFC 8689 5): an enforce policy that does not list
        the MX host does not stop the delivery.
        """
        self.page.body = policy_text("enforce", "mx9.example.test")
        self.serve_dns()
        data = b"TLS-Required: No\r\n" + MESSAGE
        status = await self.send(self.relay(), data=data)
        self.assertEqual((status.code, status.tls_policy), (250, ""))

    async def test_requiretls_ignores_tls_required_no(self) -> None:
        """With REQUIRETLS the C{TLS-Required: No} header field is ignored (RFC 8689 4.1)."""
        self.page.body = policy_text("enforce", "mx9.example.test")
        self.serve_dns()
        data = b"TLS-Required: No\r\n" + MESSAGE
        status = await self.send(self.relay(), data=data, requiretls=True)
        self.assertEqual((status.code, status.status), (451, "4.7.5"))

    async def test_requiretls_delivered_to_verified_peer(self) -> None:
        """
        A REQUIRETLS message goes to a peer with a certificate the CA signed
        for its name that offers REQUIRETLS, with the parameter passed on.
        """
        self.sinks[0].script.extensions += ("REQUIRETLS",)
        self.serve_dns()
        status = await self.send(self.relay(mta_sts=False), requiretls=True)
        self.assertEqual((status.code, status.tls), (250, True))
        [got] = self.sinks[0].messages
        self.assertTrue(got.mail.endswith(" REQUIRETLS"))

    async def test_requiretls_bounced_without_verified_tls(self) -> None:
        """
        A REQUIRETLS message toward a peer whose certificate is for another
        name is bounced (5.7.10), though outbound_tls is only may.
        """
        self.sinks[1].script.extensions += ("REQUIRETLS",)
        self.zone["example.test"] = [mx(10, "mx2.example.test")]
        self.serve_dns()
        status = await self.send(self.relay(mta_sts=False), requiretls=True)
        self.assertEqual((status.code, status.status), (550, "5.7.10"))
        self.assertEqual(self.sinks[1].messages, [])

    async def test_requiretls_bounced_without_peer_support(self) -> None:
        """A verified peer that does not offer REQUIRETLS does not get the message: 5.7.30."""
        self.serve_dns()
        status = await self.send(self.relay(mta_sts=False), requiretls=True)
        self.assertEqual((status.code, status.status), (550, "5.7.30"))
        self.assertEqual(self.sinks[0].messages, [])


class TLSRequiredTests(unittest.TestCase):
    """L{tls_not_required}: the C{TLS-Required} header field."""

    def test_header(self) -> None:
        """Only a C{TLS-Required: No} in the header counts, in any case; not in the body."""
        self.assertTrue(tls_not_required(BytesSource(b"tls-required:  NO \r\n\r\nx\r\n")))
        self.assertFalse(tls_not_required(BytesSource(b"TLS-Required: yes\r\n\r\nx\r\n")))
        self.assertFalse(tls_not_required(BytesSource(b"A: b\r\n\r\nTLS-Required: No\r\n")))


class TLSOutcomesTests(unittest.TestCase):
    """L{TLSOutcomes}: the hook TLS reporting subscribes to."""

    def test_subscribe_publish_unsubscribe(self) -> None:
        """
        Every observer gets each outcome; one that raises is logged and the
        others still get it; after unsubscribing nothing more arrives.
        """
        outcomes, seen = TLSOutcomes(), []

        def broken(outcome) -> None:
            raise RuntimeError("observer bug")

        outcomes.subscribe(broken)
        stop = outcomes.subscribe(seen.append)
        outcome = TLSOutcome("example.test", NO_POLICY, (), "mx.example.test", "192.0.2.1",
                             SUCCESS)
        outcomes.publish(outcome)
        self.assertEqual(seen, [outcome])
        self.assertTrue(outcome.succeeded)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        stop()
        outcomes.publish(outcome)
        self.assertEqual(seen, [outcome])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
