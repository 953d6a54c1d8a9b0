"""
Reports posted to an https C{rua} (RFC 8460 5.4) by
L{smtpd.mailauth.tlsrpt.post.ReportPoster}: a real HTTPS server on
127.0.0.1 with a certificate from a test CA, found through a real DNS
server; the retries run on a L{Clock}.
"""

from __future__ import annotations

import treq
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.names import client
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from smtpd.mailauth.https import https_agent
from smtpd.mailauth.lookup import DNSLookup
from smtpd.mailauth.tlsrpt.post import RETRY_DELAYS, ReportPoster
from tests.support import CertificateAuthority, a, start_dns_server

CA = CertificateAuthority()
URL = "https://reports.example.net/tlsrpt"
REPORT = b"\x1f\x8b\x08\x00 a gzip report"


class FlakyCollector(Resource):
    """Answers the first L{failures} POSTs 503, then takes them (200)."""

    isLeaf = True

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0
        self.taken: list[tuple[bytes, bytes]] = []

    def render_POST(self, request) -> bytes:
        self.attempts += 1
        if self.attempts <= self.failures:
            request.setResponseCode(503)
            return b"busy"
        self.taken.append((request.getHeader(b"content-type"), request.content.read()))
        return b"thanks"


class ReportPosterTests(unittest.TestCase):
    """A failed POST is tried again with backoff, a bounded number of times."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict] = []
        observer = self.events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def poster(self, failures: int) -> tuple[ReportPoster, FlakyCollector]:
        collector = FlakyCollector(failures)
        port = reactor.listenSSL(0, Site(collector), CA.server_options("reports.example.net"),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        dns = start_dns_server(self, {"example.net": {"reports.example.net": [a("127.0.0.1")]}})
        lookup = DNSLookup(client.Resolver(servers=[dns], reactor=reactor))
        agent = https_agent(reactor, lookup, CA.trust_root(), port.getHost().port)
        poster = ReportPoster(treq.client.HTTPClient(agent), self.clock, reactor)
        self.addCleanup(poster.stop)
        return poster, collector

    def lines(self) -> list[str]:
        """What the poster logged so far."""
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace") == "smtpd.mailauth.tlsrpt.post"]

    async def retry(self, seconds: float) -> None:
        """Advance the clock to the next try; wait (real time) until it logged its outcome."""
        before = len(self.lines())
        self.clock.advance(seconds)
        for _ in range(500):
            if len(self.lines()) > before:
                return
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d
        self.fail("the retry did not finish")

    async def test_failed_post_retried(self) -> None:
        """
        A POST answered 503 is tried again after RETRY_DELAYS[0] seconds, then
        after the longer RETRY_DELAYS[1]; the third try is taken, and nothing
        more is scheduled.
        """
        poster, collector = self.poster(failures=2)
        self.assertFalse(await poster.post(URL, REPORT, "example.net", "2026-12-01"))
        self.assertEqual((collector.attempts, poster.pending), (1, 1))
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()],
                         [RETRY_DELAYS[0]])
        self.assertIn("HTTP 503; trying again in 600 s", self.lines()[-1])
        self.clock.advance(RETRY_DELAYS[0] - 1)  # not yet
        self.assertEqual((collector.attempts, poster.pending), (1, 1))
        await self.retry(1)
        self.assertEqual((collector.attempts, poster.pending), (2, 1))
        self.assertGreater(RETRY_DELAYS[1], RETRY_DELAYS[0])
        await self.retry(RETRY_DELAYS[1])
        self.assertEqual((collector.attempts, poster.pending), (3, 0))
        self.assertEqual(collector.taken, [(b"application/tlsrpt+gzip", REPORT)])
        self.assertEqual(self.lines()[-1], "TLS-RPT report of example.net for 2026-12-01 "
                         f"posted to {URL}")

    async def test_given_up(self) -> None:
        """
        A POST that keeps failing is tried 1 + len(RETRY_DELAYS) times, each
        wait longer than the one before and all within the day, then given up
        with a log line; nothing stays scheduled.
        """
        poster, collector = self.poster(failures=100)
        self.assertFalse(await poster.post(URL, REPORT, "example.net", "2026-12-01"))
        self.assertEqual(list(RETRY_DELAYS), sorted(set(RETRY_DELAYS)))
        self.assertLess(sum(RETRY_DELAYS), 86400)
        for delay in RETRY_DELAYS:
            await self.retry(delay)
        self.assertEqual(collector.attempts, 1 + len(RETRY_DELAYS))
        self.assertEqual((poster.pending, self.clock.getDelayedCalls()), (0, []))
        self.assertEqual(self.lines()[-1], "TLS-RPT report of example.net for 2026-12-01 "
                         f"not posted to {URL}, given up after 5 tries: HTTP 503")
        self.assertEqual(collector.taken, [])

    async def test_stop_drops_retries(self) -> None:
        """Stopping the poster (the reporter's stop) cancels the retries that wait."""
        poster, collector = self.poster(failures=1)
        await poster.post(URL, REPORT, "example.net", "2026-12-01")
        poster.stop()
        self.assertEqual((poster.pending, self.clock.getDelayedCalls()), (0, []))
