"""
L{smtpd.delivery.dnstiming}: each query through a L{TimedResolver} is reported
once to the subscribers, with its type, outcome and the time it took.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IResolver
from twisted.internet.task import Clock
from twisted.names import dns, error
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smtpd.delivery.dnstiming import DNSLookups, TimedResolver, TimedTLSALookup, outcome


class WaitingResolver:
    """A resolver whose answers the test gives: every call waits on a Deferred."""

    def __init__(self):
        self.asked: list[tuple[str, object]] = []
        self.pending: list[Deferred] = []

    def query(self, query, timeout=None):
        return self._ask("query", query)

    def lookupMailExchange(self, name, timeout=None):
        return self._ask("lookupMailExchange", name)

    def _ask(self, method, what):
        self.asked.append((method, what))
        d = Deferred()
        self.pending.append(d)
        return d


class TimedResolverTests(unittest.TestCase):
    """Reports of the queries through a L{TimedResolver}."""

    def setUp(self):
        self.clock = Clock()
        self.inner = WaitingResolver()
        self.lookups = DNSLookups()
        self.reports: list[tuple[str, str, float]] = []
        self.lookups.subscribe(lambda *report: self.reports.append(report))
        self.resolver = TimedResolver(self.inner, self.clock, self.lookups)

    def test_provides_iresolver(self):
        """The wrapper is a complete IResolver (the chain and the checks may call any method)."""
        self.assertTrue(verifyObject(IResolver, self.resolver))

    def test_answer_timed_by_clock(self):
        """
        A query answered 0.25 s later is reported once (its type, answer,
        0.25 s), and the answer passes through.
        """
        d = self.resolver.query(dns.Query("example.test", dns.TXT))
        self.clock.advance(0.25)
        self.assertEqual(self.reports, [])
        self.inner.pending[0].callback(([], [], []))
        self.assertEqual(self.successResultOf(d), ([], [], []))
        self.assertEqual(self.reports, [("TXT", "answer", 0.25)])

    def test_failures_classified(self):
        """NXDOMAIN, SERVFAIL, REFUSED and timeouts each have their outcome; the failure passes."""
        reasons = [error.DNSNameError(), error.DNSServerError(), error.DNSQueryRefusedError(),
                   error.DNSQueryTimeoutError(None), DeferredTimeout(), ValueError()]
        for reason in reasons:
            d = self.resolver.lookupMailExchange("example.test")
            self.clock.advance(1)
            self.inner.pending[-1].errback(reason)
            self.failureResultOf(d, type(reason))
        self.assertEqual([r[:2] for r in self.reports],
                         [("MX", o) for o in ("nxdomain", "servfail", "refused", "timeout",
                                              "timeout", "error")])
        self.assertEqual({r[2] for r in self.reports}, {1.0})
        self.assertEqual(self.inner.asked[0], ("lookupMailExchange", "example.test"))

    def test_unsubscribed_and_failing_observers(self):
        """
        An observer that raises is logged and the others still hear; one
        unsubscribed hears nothing.
        """
        def broken(*report):
            raise RuntimeError("observer bug")

        self.lookups.subscribe(broken)
        d = self.resolver.query(dns.Query("example.test", dns.A))
        self.inner.pending[0].callback(([], [], []))
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.reports), 1)
        self.lookups.unsubscribe(broken)
        self.lookups.observers.clear()
        self.resolver.query(dns.Query("example.test", dns.A))
        self.inner.pending[1].callback(([], [], []))
        self.assertEqual(len(self.reports), 1)

    def test_outcome_of_answer(self):
        """No failure is an answer (an empty answer too: NODATA)."""
        self.assertEqual(outcome(None), "answer")


class WaitingTLSA:
    """A TLSA lookup whose answers the test gives."""

    def __init__(self):
        self.pending: list[Deferred] = []

    def lookup(self, host, port=25):
        d = Deferred()
        self.pending.append(d)
        return d

    def secure(self, name, rdtype="MX"):
        d = Deferred()
        self.pending.append(d)
        return d


class TimedTLSATests(unittest.TestCase):
    """DANE's TLSA lookups (dnspython in a thread) are reported as TLSA queries."""

    def test_answer_and_error(self):
        """
        An answer after 2 s is reported as TLSA answer 2 s; a failure after
        1 s as TLSA error 1 s, and the failure passes through.
        """
        clock, tlsa, lookups, reports = Clock(), WaitingTLSA(), DNSLookups(), []
        lookups.subscribe(lambda *report: reports.append(report))
        timed = TimedTLSALookup(tlsa, clock, lookups)
        d = Deferred.fromCoroutine(timed.lookup("mx.example.test"))
        clock.advance(2)
        tlsa.pending[0].callback("answer")
        self.assertEqual(self.successResultOf(d), "answer")
        d = Deferred.fromCoroutine(timed.lookup("mx.example.test"))
        clock.advance(1)
        tlsa.pending[1].errback(ValueError("no server answered"))
        self.failureResultOf(d, ValueError)
        self.assertEqual(reports, [("TLSA", "answer", 2.0), ("TLSA", "error", 1.0)])

    def test_secure_reported_by_type(self):
        """
        DANE's AD-bit queries of the MX RRset and the host's A records are
        reported under their own types (MX answer 3 s, A error 1 s).
        """
        clock, tlsa, lookups, reports = Clock(), WaitingTLSA(), DNSLookups(), []
        lookups.subscribe(lambda *report: reports.append(report))
        timed = TimedTLSALookup(tlsa, clock, lookups)
        d = Deferred.fromCoroutine(timed.secure("example.test", "MX"))
        clock.advance(3)
        tlsa.pending[0].callback(True)
        self.assertIs(self.successResultOf(d), True)
        d = Deferred.fromCoroutine(timed.secure("mx.example.test", "A"))
        clock.advance(1)
        tlsa.pending[1].errback(ValueError("SERVFAIL"))
        self.failureResultOf(d, ValueError)
        self.assertEqual(reports, [("MX", "answer", 3.0), ("A", "error", 1.0)])
