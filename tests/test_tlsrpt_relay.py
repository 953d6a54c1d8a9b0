"""
The TLS outcomes the relay publishes, as TLS-RPT records them
(L{smtpd.delivery.tlsreporting.TLSReportRecorder} subscribed to
C{RelayManager.tls_outcomes}), over real loopback connections to SMTP sinks
with and without STARTTLS, with certificates from a test CA (valid, for
another name, expired) and MX records from a real DNS server.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.config import Config, DeliveryConfig, DomainConfig, ServerConfig, SmartHost
from smtpd.delivery.mx import MXResolver, make_resolver
from smtpd.delivery.relay import RelayManager
from smtpd.delivery.tlsreporting import TLSReportRecorder, is_recipient_domain, mx_patterns
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource
from smtpd.delivery.tlsoutcome import is_tls_report
from smtpd.mailauth.tlsrpt.message import ReportMail, report_message
from smtpd.mailauth.tlsrpt.outcome import MemoryOutcomes, TLSOutcome, TLSPolicy
from smtpd.mailauth.tlsrpt.store import OutcomeStore, day_of
from tests.support import (
    CertificateAuthority,
    SinkScript,
    a,
    broken_tls_options,
    mx,
    start_dns_server,
    start_smtp_sinks,
)

MESSAGE = b"From: a@ours.test\r\nSubject: hello\r\n\r\nbody\r\n"
ZONES = {
    "test": {
        "example.test": [mx(10, "mx1.example.test")],
        "mx1.example.test": [a("127.0.0.2")],
        "other.test": [mx(10, "mx.other.test")],
        "mx.other.test": [a("127.0.0.3")],
    },
}
MX1, OTHER = "127.0.0.2", "127.0.0.3"
CA = CertificateAuthority()
# A TLS report as the reporter makes it (RFC 8460 5.3), for other.test's rua.
REPORT = report_message(
    ReportMail("example.net", "ours.test", "2025-11-30T00:00:00Z_example.net",
               "noreply-smtp-tls-reporting@ours.test", ("tlsrpt@other.test",),
               "ours.test!example.net!1764460800!1764547199.json.gz", "2025-11-30"),
    b"\x1f\x8b not really gzip", 1764547200.0)


def expired_options(hostname: str) -> ssl.CertificateOptions:
    """Server TLS options with a certificate for C{hostname} from L{CA} that expired yesterday."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(CA.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
        .sign(CA.key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + cert.public_bytes(
        serialization.Encoding.PEM)
    return ssl.PrivateCertificate.loadPEM(pem).options()


class RelayOutcomeTests(unittest.TestCase):
    """What L{RelayManager} tells its L{ITLSOutcomes} about each new connection."""

    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONES)
        self.outcomes = MemoryOutcomes()

    def sinks(self, mx1: SinkScript | None, other: SinkScript | None = None) -> list:
        started = start_smtp_sinks(self, [MX1, OTHER], [mx1, other])
        self.port = started[0].port
        return started

    def relay(self, tls: str, domains=(), smart_host=None) -> RelayManager:
        config = Config(
            path="/srv/mail/etc/smtpd.ini", root="/srv/mail",
            server=ServerConfig(hostname="smtp.ours.test"),
            delivery=DeliveryConfig(remote_port=self.port, outbound_tls=tls,
                                    smart_host=smart_host),
            domains=tuple(domains),
        )
        resolver = MXResolver(make_resolver([self.dns], reactor), reactor, "smtp.ours.test")
        relay = RelayManager(config, reactor, resolver, client_tls=CA.trust_root())
        relay.tls_outcomes.subscribe(TLSReportRecorder(self.outcomes, config))
        self.addCleanup(relay.stop)
        return relay

    async def send(self, relay: RelayManager, *addresses: str, data: bytes = MESSAGE) -> list:
        recipients = [Recipient(r) for r in addresses]
        envelope = Envelope(id="0A1B2C", sender="a@ours.test", recipients=recipients,
                            arrival=0.0)
        statuses = await relay.deliver(envelope, [(r, None) for r in recipients],
                                       BytesSource(data))
        return [s.code for s in statuses]

    def outcome(self, domain: str, host: str, ip: str, result: str = "",
                reason: str = "") -> TLSOutcome:
        return TLSOutcome(TLSPolicy("no-policy-found", domain), host, ip, "127.0.0.1",
                          result, reason)

    async def test_may_success_and_no_starttls(self) -> None:
        """
        outbound_tls = may: a host with STARTTLS counts a success, one
        without counts starttls-not-supported (the mail still goes).
        """
        self.sinks(SinkScript(tls=CA.server_options("mx1.example.test")), None)
        codes = await self.send(self.relay("may"), "b@example.test", "c@other.test")
        self.assertEqual(codes, [250, 250])
        self.assertEqual(sorted(self.outcomes.outcomes, key=lambda o: o.policy.domain), [
            self.outcome("example.test", "mx1.example.test", MX1),
            self.outcome("other.test", "mx.other.test", OTHER, "starttls-not-supported"),
        ])

    async def test_handshake_failure_counted_once(self) -> None:
        """
        A failed handshake counts one validation-failure with the error as
        its reason; the plain-text retry of outbound_tls = may is not
        another TLS session.
        """
        sinks = self.sinks(SinkScript(tls=broken_tls_options()))
        self.assertEqual(await self.send(self.relay("may"), "b@example.test"), [250])
        self.assertEqual(sinks[0].connections, 2)
        [outcome] = self.outcomes.outcomes
        self.assertEqual((outcome.result_type, outcome.receiving_mx_hostname),
                         ("validation-failure", "mx1.example.test"))
        self.assertTrue(outcome.failure_reason_code.startswith(
            "451 4.7.5 TLS negotiation failed: "), outcome.failure_reason_code)

    async def test_verify_certificate_failures(self) -> None:
        """
        outbound_tls = verify: a certificate for another name counts
        certificate-host-mismatch, an expired one certificate-expired (its
        dates are checked: OpenSSL only says "certificate verify failed");
        both defer.
        """
        self.sinks(SinkScript(tls=CA.server_options("wrong.test")),
                   SinkScript(tls=expired_options("mx.other.test")))
        codes = await self.send(self.relay("verify"), "b@example.test", "c@other.test")
        self.assertEqual(codes, [451, 451])
        found = {o.policy.domain: o.result_type for o in self.outcomes.outcomes}
        self.assertEqual(found, {"example.test": "certificate-host-mismatch",
                                 "other.test": "certificate-expired"})

    async def test_untrusted_and_required(self) -> None:
        """
        A certificate from an unknown CA counts certificate-not-trusted; a
        host without STARTTLS under encrypt counts starttls-not-supported.
        """
        other_ca = CertificateAuthority()
        self.sinks(SinkScript(tls=other_ca.server_options("mx1.example.test")), None)
        codes = await self.send(self.relay("verify"), "b@example.test")
        self.assertEqual(codes, [451])
        codes = await self.send(self.relay("encrypt"), "c@other.test")
        self.assertEqual(codes, [451])
        self.assertEqual([o.result_type for o in self.outcomes.outcomes],
                         ["certificate-not-trusted", "starttls-not-supported"])
        self.assertEqual(self.outcomes.outcomes[1].failure_reason_code,
                         "451 4.7.5 TLS is required, but was not offered by host")

    async def test_not_counted(self) -> None:
        """
        Nothing counts for outbound_tls = none, for a smart host, nor for a
        host that refused us before STARTTLS.
        """
        self.sinks(SinkScript(greeting="554 5.3.2 go away"), None)
        await self.send(self.relay("none"), "c@other.test")
        await self.send(self.relay("may"), "b@example.test")
        smart = SmartHost("127.0.0.3", None, False)
        await self.send(self.relay("may", smart_host=smart), "c@other.test")
        remote = DomainConfig(name="other.test", type="remote", outbound_tls="none")
        await self.send(self.relay("may", domains=[remote]), "c@other.test")
        self.assertEqual(self.outcomes.outcomes, [])

    async def test_report_sessions_not_counted(self) -> None:
        """
        RFC 8460 5.3: the session that delivers a TLS report is not counted:
        a report relayed to a host whose TLS fails (and then in plain text,
        outbound_tls = may) leaves the day's counts as they were; an
        ordinary message over the same failing TLS counts the failure.
        """
        sinks = self.sinks(None, SinkScript(tls=broken_tls_options()))
        clock = Clock()
        clock.advance(1764547200.0 + 3600)
        self.outcomes = OutcomeStore(self.mktemp(), clock, maybeDeferred)
        relay = self.relay("may")
        self.assertEqual(await self.send(relay, "tlsrpt@other.test", data=REPORT), [250])
        self.assertEqual(sinks[1].connections, 2)  # TLS failed, then plain text
        self.assertEqual(sinks[1].messages[-1].data, REPORT)
        self.assertEqual(self.outcomes.days, {})
        await relay.stop()
        self.assertEqual(await self.send(self.relay("may"), "c@other.test"), [250])
        [day] = self.outcomes.days.values()
        self.assertEqual(day.day, day_of(clock.seconds()))
        [counts] = day.for_domain("other.test")
        self.assertEqual((counts.successes, counts.failure_count), (0, 1))

    def test_is_tls_report(self) -> None:
        """
        A report message is told by its C{multipart/report;
        report-type="tlsrpt"} and C{TLS-Report-Domain}; other mail, or
        another report type, is not one.
        """
        self.assertTrue(is_tls_report(BytesSource(REPORT)))
        self.assertFalse(is_tls_report(BytesSource(MESSAGE)))
        dmarc = REPORT.replace(b'report-type="tlsrpt"', b'report-type="dmarc"')
        self.assertFalse(is_tls_report(BytesSource(dmarc)))
        unnamed = REPORT.replace(b"TLS-Report-Domain:", b"X-Report-Domain:")
        self.assertFalse(is_tls_report(BytesSource(unnamed)))


class RecorderTests(unittest.TestCase):
    """What the recorder takes from the relay's outcomes."""

    def test_recipient_domains_only(self):
        """Smart hosts (by name or address, with a port) and address literals are no policy domains."""
        smart = {"relay.isp.test"}
        self.assertTrue(is_recipient_domain("example.test", smart))
        for name in ("relay.isp.test", "[192.0.2.1]", "relay.isp.test:587", "192.0.2.1",
                     "2001:db8::1", ""):
            self.assertFalse(is_recipient_domain(name, smart), name)

    def test_mx_patterns(self):
        """The mx-host list of an MTA-STS policy comes from its mx: lines."""
        strings = ("version: STSv1", "mode: enforce", "mx: mx1.example.com",
                   "mx: *.example.net", "max_age: 86400")
        self.assertEqual(mx_patterns(strings), ("mx1.example.com", "*.example.net"))

    def test_convert_sts(self):
        """
        An MTA-STS outcome keeps its policy strings, gets the mx-host
        patterns, and its failure text (one line, bounded) as reason code.
        """
        from smtpd.delivery import tlsoutcome as relay_outcome
        from smtpd.delivery.tlsreporting import convert

        strings = ("version: STSv1", "mode: enforce", "mx: *.example.com", "max_age: 600")
        outcome = relay_outcome.TLSOutcome(
            "example.com", "sts", strings, "mx1.example.com", "192.0.2.25",
            "certificate-host-mismatch", "451 4.7.5 TLS negotiation failed:\n  mismatch " * 20)
        converted = convert(outcome, "198.51.100.1")
        self.assertEqual(converted.policy, TLSPolicy("sts", "example.com", strings,
                                                     ("*.example.com",)))
        self.assertEqual((converted.result_type, converted.sending_mta_ip),
                         ("certificate-host-mismatch", "198.51.100.1"))
        self.assertEqual(len(converted.failure_reason_code), 200)
        self.assertNotIn("\n", converted.failure_reason_code)
        success = relay_outcome.TLSOutcome("example.com", "no-policy-found", (), "mx1",
                                           "192.0.2.25", relay_outcome.SUCCESS, "ignored")
        self.assertTrue(convert(success, "").success)
        utf8 = relay_outcome.TLSOutcome("bücher.example", "no-policy-found", (), "mx1",
                                        "192.0.2.25", relay_outcome.SUCCESS)
        self.assertEqual(convert(utf8, "").policy.domain, "xn--bcher-kva.example")
        self.assertEqual(convert(success, "").failure_reason_code, "")
