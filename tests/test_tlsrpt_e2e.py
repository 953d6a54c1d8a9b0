"""
TLS-RPT end to end: the whole server relays to a recipient domain's MX (a
real SMTP sink, found through a real DNS server that also publishes
C{_smtp._tls}), counting each connection's TLS outcome on disk; the next
day's run (on a L{Clock}) builds the report, which goes through the
server's own cleanup stage (DKIM-signed) and queue to the rua domain's MX,
where it is verified with dkimpy, gunzipped and checked against RFC 8460.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import os

import dkim
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.names import client
from twisted.trial import unittest

from smtpd.admin.api import Admin
from smtpd.config import load_config
from smtpd.mailauth.lookup import DNSLookup
from smtpd.mailauth.tlsrpt.reporter import START_DELAY, TLSReporter
from smtpd.mailauth.tlsrpt.store import DAY, OutcomeStore, day_of
from smtpd.tap import build
from tests import support
from tests.test_e2e import eventually
from tests.test_mailauth_checks import RSA_KEY, txt
from tests.test_mailauth_signing import dnspython_lookup
from tests.test_tlsrpt import validate_report
from tests.inbound import connect

ZONES = {
    "dest.test": {
        "dest.test": [support.mx(10, "mx.dest.test")],
        "mx.dest.test": [support.a("127.0.0.2")],
        "_smtp._tls.dest.test": [txt("v=TLSRPTv1; rua=mailto:tls-reports@reports.test")],
    },
    "reports.test": {
        "reports.test": [support.mx(10, "mx.reports.test")],
        "mx.reports.test": [support.a("127.0.0.3")],
    },
    "example.com": {"s1._domainkey.example.com": [txt(RSA_KEY.record)]},
}
MESSAGE = b"From: <ann@example.com>\r\nTo: <bob@dest.test>\r\nSubject: hi\r\n\r\nHello.\r\n"


class ReportEndToEndTests(unittest.TestCase):
    """Relayed mail -> counts on disk -> the next day's report, mailed to the rua."""

    timeout = 60

    def start(self) -> None:
        self.dns = support.start_dns_server(self, ZONES)
        self.dest, self.reports = support.start_smtp_sinks(self, ["127.0.0.2", "127.0.0.3"])
        root = self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc", "dkim"))
        with open(os.path.join(root, "etc", "dkim", "example.com.rsa"), "wb") as f:
            f.write(RSA_KEY.key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        path = self.write()
        self.top = build(load_config(path), reactor)
        self.top.startService()
        self.addCleanup(self.top.stopService)
        [listener] = self.top.listeners.listeners
        self.port = listener.address()[1]

    def write(self, tlsrpt: str = "enabled = yes\norganization = Ours Test\n") -> str:
        """The config, with C{tlsrpt} as the [tlsrpt] section."""
        path = os.path.join(self.root, "etc", "smtpd.ini")
        with open(path, "w") as f:
            f.write(
                "[server]\nhostname = mx.ours.test\nlisten = tcp:0:interface=127.0.0.1\n"
                f"[delivery]\ndns_servers = 127.0.0.1:{self.dns[1]}\n"
                f"remote_port = {self.dest.port}\noutbound_tls = may\n"
                "max_messages_per_connection = 1\n"
                f"[tlsrpt]\n{tlsrpt}sender = tlsrpt@example.com\n"
                "[domain:example.com]\ntype = local\ndkim = s1:etc/dkim/example.com.rsa\n"
            )
        return path

    async def send(self) -> None:
        smtp = await connect(self, self.port)
        await smtp.command(b"EHLO client.test\r\n")
        self.assertTrue((await smtp.command(b"MAIL FROM:<ann@example.com>\r\n")).startswith("250"))
        self.assertTrue((await smtp.command(b"RCPT TO:<bob@dest.test>\r\n")).startswith("250"))
        self.assertTrue((await smtp.command(b"DATA\r\n")).startswith("354"))
        reply = await smtp.command(MESSAGE + b".\r\n")
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        await smtp.command(b"QUIT\r\n")

    async def test_report_mailed_to_rua(self):
        """
        One delivery over TLS and one to an MX without STARTTLS are counted
        for dest.test; the next day's report reaches the rua address's MX,
        DKIM-signed for the sender's domain, with RFC 8460's headers and a
        gzip JSON report of one success and one starttls-not-supported.
        """
        self.start()
        await self.send()
        await eventually(lambda: len(self.dest.messages) == 1)
        self.dest.script.tls = support.CertificateAuthority().server_options("mx.dest.test")
        await self.send()
        await eventually(lambda: len(self.dest.messages) == 2)
        self.assertEqual([m.tls for m in self.dest.messages], [False, True])
        store = self.top.tlsrpt.store
        await store.flush()
        today = day_of(reactor.seconds())
        folder = os.path.join(self.root, "mailroot", "tlsrpt")
        self.assertEqual(os.listdir(folder), [f"{today}.json"])

        # The next day, a reporter reading that folder afresh (as after a restart).
        clock = Clock()
        clock.advance(reactor.seconds() + DAY)
        lookup = DNSLookup(client.Resolver(servers=[self.dns], reactor=reactor))
        reporter = TLSReporter(self.top.tlsrpt.config, OutcomeStore(folder, clock, deferToThread),
                               lookup, self.top.tlsrpt.submit, clock)
        reporter.startService()
        self.addCleanup(lambda: reporter.stopService() if reporter.running else None)
        await reporter._starting
        clock.advance(START_DELAY)
        await eventually(lambda: self.reports.messages, timeout=20)

        [received] = self.reports.messages
        self.assertEqual((received.sender, received.recipients),
                         ("tlsrpt@example.com", ["tls-reports@reports.test"]))
        verify = lambda: dkim.verify(received.data, dnsfunc=dnspython_lookup(self.dns))  # noqa: E731
        self.assertTrue(await deferToThread(verify))
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        self.assertEqual((message["TLS-Report-Domain"], message["TLS-Report-Submitter"]),
                         ("dest.test", "example.com"))
        self.assertEqual(message.get_param("report-type"), "tlsrpt")
        [attachment] = [p for p in message.iter_parts()
                        if p.get_content_type() == "application/tlsrpt+gzip"]
        report = json.loads(gzip.decompress(attachment.get_content()))
        validate_report(self, report)
        self.assertEqual((report["organization-name"], report["contact-info"]),
                         ("Ours Test", "tlsrpt@example.com"))
        self.assertEqual(report["date-range"]["start-datetime"], f"{today}T00:00:00Z")
        [entry] = report["policies"]
        self.assertEqual(entry["policy"], {"policy-type": "no-policy-found",
                                           "policy-domain": "dest.test"})
        self.assertEqual(entry["summary"], {"total-successful-session-count": 1,
                                            "total-failure-session-count": 1})
        self.assertEqual(entry["failure-details"], [{
            "result-type": "starttls-not-supported", "sending-mta-ip": "127.0.0.1",
            "receiving-mx-hostname": "mx.dest.test", "receiving-ip": "127.0.0.2",
            "failed-session-count": 1}])
        await eventually(lambda: not os.path.exists(os.path.join(folder, f"{today}.json")))

    def test_reload(self):
        """
        A reload hands the new [tlsrpt] settings to the reporter; turning it
        off is reported as taking a restart (the counting goes on till then).
        """
        self.start()
        self.write("enabled = no\norganization = Renamed\n")
        report = Admin(self.top.admin.server, "tester").reload()
        self.assertEqual((report["changed"], report["at_restart"]),
                         (["tlsrpt.organization"], ["tlsrpt.enabled"]))
        self.assertEqual(self.top.tlsrpt.config.tlsrpt.organization, "Renamed")
