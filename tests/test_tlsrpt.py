"""
TLS-RPT (RFC 8460): the day's counts on disk across a restart, the JSON
report checked against the RFC's schema, the C{_smtp._tls} record, and the
daily run driven by a L{Clock}: reports found through a real DNS server,
mailed as C{multipart/report; report-type="tlsrpt"} and posted to a real
HTTPS server.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import os
import re
from datetime import datetime, timezone

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.names import client
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from smtpd.config import Config, ServerConfig, TLSRPTConfig
from smtpd.mailauth.https import https_agent
from smtpd.mailauth.lookup import DNSLookup
from smtpd.mailauth.tlsrpt.outcome import RESULT_TYPES, TLSOutcome, TLSPolicy
from smtpd.mailauth.tlsrpt.record import ReportAddresses, parse_record
from smtpd.mailauth.tlsrpt.reporter import (
    GIVE_UP,
    REPORT_DELAY,
    RETRY,
    START_DELAY,
    TLSReporter,
    queue_id,
)
from smtpd.mailauth.tlsrpt.store import DAY, OutcomeStore, day_of
from tests.support import CertificateAuthority, a, start_dns_server
from tests.test_mailauth_checks import txt

# 2026-12-01T00:00:00Z
DAY1 = datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp()
STS = TLSPolicy("sts", "example.com", ("version: STSv1", "mode: enforce",
                                       "mx: mx1.example.com", "max_age: 86400"),
                ("mx1.example.com",))
NONE = TLSPolicy("no-policy-found", "example.net")
CA = CertificateAuthority()
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def success(policy: TLSPolicy = STS, host: str = "mx1.example.com") -> TLSOutcome:
    """A session that negotiated TLS."""
    return TLSOutcome(policy, host, "192.0.2.25", "198.51.100.1")


def failure(result: str, policy: TLSPolicy = STS, host: str = "mx1.example.com",
            reason: str = "") -> TLSOutcome:
    """A session that failed with C{result}."""
    return TLSOutcome(policy, host, "192.0.2.25", "198.51.100.1", result, reason)


def validate_report(test: unittest.TestCase, report: dict) -> None:
    """
    Fail C{test} unless C{report} has the structure of RFC 8460 4.4: every
    required field with its type, RFC 3339 date-times, known policy and
    result types, and failure counts that add up to the summary.
    """
    test.assertEqual(set(report), {"organization-name", "date-range", "contact-info",
                                   "report-id", "policies"})
    for name in ("organization-name", "contact-info", "report-id"):
        test.assertIsInstance(report[name], str)
        test.assertTrue(report[name])
    dates = report["date-range"]
    test.assertEqual(set(dates), {"start-datetime", "end-datetime"})
    for value in dates.values():
        test.assertRegex(value, _DATETIME)
    test.assertLess(dates["start-datetime"], dates["end-datetime"])
    test.assertIsInstance(report["policies"], list)
    test.assertTrue(report["policies"])
    for entry in report["policies"]:
        test.assertEqual(set(entry), {"policy", "summary", "failure-details"})
        policy = entry["policy"]
        test.assertTrue(set(policy) <= {"policy-type", "policy-string", "policy-domain",
                                        "mx-host"})
        test.assertIn(policy["policy-type"], ("sts", "tlsa", "no-policy-found"))
        test.assertIsInstance(policy["policy-domain"], str)
        for name in ("policy-string", "mx-host"):
            test.assertTrue(all(isinstance(s, str) for s in policy.get(name, [])))
        summary = entry["summary"]
        test.assertEqual(set(summary), {"total-successful-session-count",
                                        "total-failure-session-count"})
        test.assertTrue(all(isinstance(n, int) and n >= 0 for n in summary.values()))
        counted = 0
        for detail in entry["failure-details"]:
            test.assertTrue({"result-type", "failed-session-count"} <= set(detail))
            test.assertTrue(all(isinstance(v, str) for k, v in detail.items()
                                if k != "failed-session-count"))
            test.assertTrue(set(detail) <= {
                "result-type", "sending-mta-ip", "receiving-mx-hostname",
                "receiving-mx-helo", "receiving-ip", "failed-session-count",
                "additional-information", "failure-reason-code"})
            test.assertIn(detail["result-type"], RESULT_TYPES)
            test.assertIsInstance(detail["failed-session-count"], int)
            counted += detail["failed-session-count"]
        test.assertEqual(counted, summary["total-failure-session-count"])


class RecordTests(unittest.TestCase):
    """The C{_smtp._tls} TXT record (RFC 8460 3)."""

    def test_rua(self):
        """mailto and https URIs are taken, percent-decoded; other schemes and bad addresses are not."""
        found = parse_record([b"v=TLSRPTv1; rua=mailto:tls%2Breports@example.com,"
                              b" https://reports.example.com/v1 ,mailto:not an address,"
                              b"ftp://x.example.com/", b"v=spf1 -all"])
        self.assertEqual(found, ReportAddresses(("tls+reports@example.com",),
                                                ("https://reports.example.com/v1",)))

    def test_not_exactly_one(self):
        """No TLSRPTv1 record, or two of them, means no reports (RFC 8460 3)."""
        self.assertIsNone(parse_record([b"v=STSv1; id=1"]))
        self.assertIsNone(parse_record([b"v=TLSRPTv1; rua=mailto:a@example.com"] * 2))
        self.assertFalse(parse_record([b"v=TLSRPTv1; rua=gopher://example.com"]))


class StoreTests(unittest.TestCase):
    """The day's counts in C{mailroot/tlsrpt/}."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(DAY1 + DAY - 60)  # 2026-12-01T23:59:00Z

    def store(self) -> OutcomeStore:
        return OutcomeStore(self.folder, self.clock, deferToThread)

    async def test_counts_survive_restart(self):
        """
        Outcomes are counted per UTC day, policy and failure detail; a new
        store on the same folder (a restart) has the same counts.
        """
        store = self.store()
        await store.load()
        store.record(success())
        store.record(success())
        store.record(failure("certificate-expired"))
        store.record(failure("certificate-expired"))
        store.record(failure("starttls-not-supported", NONE, "mx.example.net"))
        self.clock.advance(120)
        store.record(success(NONE, "mx.example.net"))
        self.assertTrue(store.dirty)
        await store.flush()
        self.assertFalse(store.dirty)
        self.assertEqual(sorted(os.listdir(self.folder)), ["2026-12-01.json", "2026-12-02.json"])
        again = self.store()
        await again.load()
        self.assertEqual(again.complete_days(), ["2026-12-01"])
        day = again.days["2026-12-01"]
        self.assertEqual(day.domains(), ["example.com", "example.net"])
        [sts] = day.for_domain("example.com")
        self.assertEqual((sts.policy, sts.successes, sts.failure_count), (STS, 2, 2))
        [net] = again.days["2026-12-02"].for_domain("example.net")
        self.assertEqual((net.successes, net.failure_count), (1, 0))

    async def test_nothing_written_before_load(self):
        """
        Outcomes recorded while the files are being read are added to them,
        never written over them.
        """
        store = self.store()
        await store.load()
        store.record(success())
        await store.flush()
        again = self.store()
        again.record(success())
        await again.flush()  # not loaded yet: writes nothing
        await again.load()
        await again.flush()
        third = self.store()
        await third.load()
        [counts] = third.days["2026-12-01"].for_domain("example.com")
        self.assertEqual(counts.successes, 2)

    async def test_damaged_file_skipped(self):
        """A damaged day file is logged and left alone; the others load."""
        os.makedirs(self.folder)
        with open(os.path.join(self.folder, "2026-11-30.json"), "w") as f:
            f.write("{not json")
        store = self.store()
        store.record(success())
        await store.load()
        await store.flush()
        self.assertEqual(list(store.days), ["2026-12-01"])
        self.assertEqual(sorted(os.listdir(self.folder)), ["2026-11-30.json", "2026-12-01.json"])


class HTTPSCollector(Resource):
    """Takes POSTed reports."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[bytes, bytes, bytes]] = []

    def render_POST(self, request):
        self.posts.append((request.path, request.getHeader(b"content-type"),
                           request.content.read()))
        return b"thanks"


class ReporterTests(unittest.TestCase):
    """The daily run, on a L{Clock}, against a real DNS server."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(DAY1 + 12 * 3600)  # 2026-12-01T12:00:00Z
        self.collector = HTTPSCollector()
        site = Site(self.collector)
        port = reactor.listenSSL(0, site, CA.server_options("reports.example.net"),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.https_port = port.getHost().port
        self.zones = {"example.com": {
            "_smtp._tls.example.com": [txt("v=TLSRPTv1; rua=mailto:tlsrpt@example.com")],
        }, "example.net": {
            "_smtp._tls.example.net": [txt(
                "v=TLSRPTv1;rua=https://reports.example.net/tlsrpt,mailto:a@example.net")],
            "reports.example.net": [a("127.0.0.1")],
        }, "example.org": {}}
        self.submitted: list = []

    async def submit(self, envelope, source):
        with source.open() as f:
            self.submitted.append((envelope, f.read()))

    def reporter(self, servfail=()) -> TLSReporter:
        dns = start_dns_server(self, self.zones, servfail=servfail)
        lookup = DNSLookup(client.Resolver(servers=[dns], reactor=reactor))
        config = Config(path="/srv/mail/etc/smtpd.ini", root="/srv/mail",
                        server=ServerConfig(hostname="mail.ours.test"),
                        tlsrpt=TLSRPTConfig(enabled=True, organization="Ours Inc."))
        agent = https_agent(reactor, lookup, CA.trust_root(), self.https_port)
        reporter = TLSReporter(config, OutcomeStore(self.folder, self.clock, deferToThread),
                               lookup, self.submit, self.clock, agent=agent, reactor=reactor)
        reporter.startService()
        self.addCleanup(lambda: reporter.stopService() if reporter.running else None)
        return reporter

    async def settle(self, reporter: TLSReporter, seconds: float) -> None:
        """Advance the clock, then let the run it started finish (real DNS, threads)."""
        self.clock.advance(seconds)
        for _ in range(200):
            if self.clock.getDelayedCalls() and not self._busy(reporter):
                return
            await deferToThread(lambda: None)
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d
        self.fail("the run did not finish")

    def _busy(self, reporter: TLSReporter) -> bool:
        return reporter._timer is None

    def parse(self, data: bytes):
        return email.message_from_bytes(data, policy=email.policy.default)

    async def test_daily_report(self):
        """
        Nothing goes before the UTC day is over; just after midnight the
        domain that publishes a mailto rua gets one report mail, with the
        RFC 8460 headers and the gzip JSON; a domain without a record gets
        nothing; the https rua gets a POST; the day's file goes.
        """
        reporter = self.reporter()
        await reporter._starting
        store = reporter.store
        fetch = TLSOutcome(STS, "", result_type="sts-policy-fetch-error", failure_reason_code="Y")
        for outcome in (success(), success(), failure("certificate-expired", reason="X"), fetch,
                        failure("starttls-not-supported", NONE, "mx.example.net"),
                        success(TLSPolicy("no-policy-found", "example.org"), "mx.example.org")):
            store.record(outcome)
        self.assertTrue(store.dirty)
        await self.settle(reporter, 11 * 3600)  # 23:00: the counts are written, no report
        self.assertFalse(store.dirty)
        await store.flush()  # waits for the write under way
        self.assertEqual(self.submitted, [])
        self.assertEqual(os.listdir(self.folder), ["2026-12-01.json"])
        await self.settle(reporter, 3600 + REPORT_DELAY)
        self.assertEqual(len(self.submitted), 2)
        by_domain = {self.parse(data)["TLS-Report-Domain"]: (env, data)
                     for env, data in self.submitted}
        envelope, data = by_domain["example.com"]
        self.assertEqual((envelope.sender, [r.address for r in envelope.recipients], envelope.id),
                         ("noreply-smtp-tls-reporting@mail.ours.test", ["tlsrpt@example.com"],
                          queue_id("2026-12-01", "example.com")))
        message = self.parse(data)
        rid = "2026-12-01T00:00:00Z.example.com@mail.ours.test"
        self.assertEqual(message["TLS-Report-Submitter"], "mail.ours.test")
        self.assertEqual(message["TLS-Required"], "No")
        self.assertEqual(" ".join(message["Subject"].split()),
                         f"Report Domain: example.com Submitter: mail.ours.test "
                         f"Report-ID: <{rid}>")
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "tlsrpt")
        text, attachment = message.iter_parts()
        self.assertEqual(text.get_content_type(), "text/plain")
        self.assertEqual(attachment.get_content_type(), "application/tlsrpt+gzip")
        start = int(DAY1)
        self.assertEqual(attachment.get_filename(),
                         f"mail.ours.test!example.com!{start}!{start + DAY - 1}.json.gz")
        report = json.loads(gzip.decompress(attachment.get_content()))
        validate_report(self, report)
        self.assertEqual(report["organization-name"], "Ours Inc.")
        self.assertEqual(report["report-id"], rid)
        self.assertEqual(report["date-range"], {"start-datetime": "2026-12-01T00:00:00Z",
                                                "end-datetime": "2026-12-01T23:59:59Z"})
        [entry] = report["policies"]
        self.assertEqual(entry["policy"], {
            "policy-type": "sts", "policy-domain": "example.com",
            "policy-string": list(STS.strings), "mx-host": ["mx1.example.com"]})
        self.assertEqual(entry["summary"], {"total-successful-session-count": 2,
                                            "total-failure-session-count": 2})
        self.assertEqual(entry["failure-details"], [{
            "result-type": "certificate-expired", "sending-mta-ip": "198.51.100.1",
            "receiving-mx-hostname": "mx1.example.com", "receiving-ip": "192.0.2.25",
            "failure-reason-code": "X", "failed-session-count": 1}, {
            "result-type": "sts-policy-fetch-error", "failure-reason-code": "Y",
            "failed-session-count": 1}])
        [(path, content_type, body)] = self.collector.posts
        self.assertEqual((path, content_type), (b"/tlsrpt", b"application/tlsrpt+gzip"))
        posted = json.loads(gzip.decompress(body))
        validate_report(self, posted)
        self.assertEqual(posted["policies"][0]["failure-details"][0]["result-type"],
                         "starttls-not-supported")
        self.assertEqual(os.listdir(self.folder), [])
        self.assertEqual(reporter.store.days, {})

    async def test_lookup_failure_retried_then_given_up(self):
        """
        A domain whose record cannot be looked up (SERVFAIL) keeps its counts
        on disk and is tried again every hour; two days after its day ended
        it is given up. The others are sent at once.
        """
        reporter = self.reporter(servfail=("example.net",))
        await reporter._starting
        reporter.store.record(success())
        reporter.store.record(success(NONE, "mx.example.net"))
        await self.settle(reporter, 12 * 3600 + REPORT_DELAY)
        self.assertEqual(len(self.submitted), 1)
        self.assertEqual(reporter.store.days["2026-12-01"].unsent(), ["example.net"])
        with open(os.path.join(self.folder, "2026-12-01.json")) as f:
            self.assertEqual(json.load(f)["sent"], ["example.com"])
        self.assertEqual(reporter._timer.getTime() - self.clock.seconds(), RETRY)
        await self.settle(reporter, GIVE_UP)
        self.assertEqual(len(self.submitted), 1)
        self.assertEqual(reporter.store.days, {})

    async def test_restart_sends_what_is_left(self):
        """
        Counts of a past day found at start (the server was down at midnight)
        are reported shortly after start.
        """
        reporter = self.reporter()
        await reporter._starting
        reporter.store.record(success())
        await reporter.stopService()
        self.clock.advance(2 * DAY)
        self.assertEqual(day_of(self.clock.seconds()), "2026-12-03")
        again = self.reporter()
        await again._starting
        await self.settle(again, START_DELAY)
        self.assertEqual(len(self.submitted), 1)
        self.assertEqual(again.store.days, {})
