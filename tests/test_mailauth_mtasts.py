"""
Tests for L{smtpd.mailauth.mtasts}: policies served by a real HTTPS server on
loopback with a certificate from a test CA, found through a real DNS server,
cached on disk.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.names import client
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from smtpd.mailauth.https import https_agent
from smtpd.mailauth.lookup import DNSLookup
from smtpd.mailauth.mtasts import (
    FETCH_ERROR,
    MTASTS,
    POLICY_INVALID,
    WEBPKI_INVALID,
    PolicyCache,
    PolicyError,
    parse_policy,
    parse_txt,
)
from tests.support import CertificateAuthority, a, start_dns_server
from tests.test_mailauth_checks import txt

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.mx.example.com\r\nmax_age: 86400\r\n"
CA = CertificateAuthority()


class PolicyPage(Resource):
    """C{/.well-known/mta-sts.txt} with a body, status and type the test sets."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.body = POLICY.encode()
        self.code = 200
        self.content_type = b"text/plain"
        self.location = b""
        self.requests: list[bytes] = []

    def render_GET(self, request):
        self.requests.append(request.path)
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", self.content_type)
        if self.location:
            request.setHeader(b"location", self.location)
        return self.body if request.path == b"/.well-known/mta-sts.txt" else b"no"


class MTASTSTests(unittest.TestCase):
    """Policy lookup, fetch and cache."""

    def setUp(self) -> None:
        self.page = PolicyPage()
        self.zone = {
            "mta-sts.example.com": [a("127.0.0.1")],
            "mta-sts.redirect.example.com": [a("127.0.0.1")],
        }
        self.publish()
        self.https = self.serve(CA)
        self.https_port = self.https.getHost().port
        self.folder = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1_000_000)

    def publish(self, policy_id: str = "20261201") -> None:
        """Serve the zone, with C{policy_id} in the TXT record, from a new DNS server."""
        self.zone["_mta-sts.example.com"] = [txt(f"v=STSv1; id={policy_id}")]
        self.dns = start_dns_server(self, {"example.com": self.zone})
        self.lookup = DNSLookup(client.Resolver(servers=[self.dns], reactor=reactor))

    def serve(self, authority: CertificateAuthority):
        """An HTTPS server for mta-sts.example.com with a certificate of C{authority}."""
        site = Site(self.page)
        port = reactor.listenSSL(0, site, authority.server_options("mta-sts.example.com"),
                                 interface="127.0.0.1")
        self.addCleanup(lambda: port.stopListening() if port.connected else None)
        return port

    def sts(self, trust=CA) -> MTASTS:
        """A fresh MTASTS (as after a restart) trusting C{trust}, on the test cache folder."""
        agent = https_agent(reactor, self.lookup, trust.trust_root(), self.https_port)
        return MTASTS(self.lookup, agent, PolicyCache(self.folder, deferToThread), self.clock,
                      reactor)

    def policy(self, sts: MTASTS, domain: str = "example.com"):
        return defer.Deferred.fromCoroutine(sts.policy(domain))

    @defer.inlineCallbacks
    def test_fetch_enforce_policy(self):
        """The policy is fetched over verified HTTPS; matching and non-matching MX hosts are told apart."""
        policy = yield self.policy(self.sts())
        self.assertEqual(policy.mode, "enforce")
        self.assertEqual(policy.id, "20261201")
        self.assertTrue(policy.allows("mx1.example.com"))
        self.assertTrue(policy.allows("a.mx.example.com."))
        self.assertFalse(policy.allows("b.a.mx.example.com"))
        self.assertFalse(policy.allows("mx2.example.com"))
        self.assertEqual(self.page.requests, [b"/.well-known/mta-sts.txt"])

    @defer.inlineCallbacks
    def test_cache_survives_restart(self):
        """A second MTASTS on the same folder uses the stored policy without fetching while the id holds."""
        yield self.policy(self.sts())
        yield self.https.stopListening()
        policy = yield self.policy(self.sts())
        self.assertEqual(policy.mode, "enforce")
        self.assertEqual(len(self.page.requests), 1)
        self.assertTrue(os.path.exists(os.path.join(self.folder, "example.com.json")))

    @defer.inlineCallbacks
    def test_new_id_refetches(self):
        """A changed id in the TXT record fetches the policy again."""
        yield self.policy(self.sts())
        self.publish("20261202")
        self.page.body = POLICY.replace("mode: enforce", "mode: testing").encode()
        policy = yield self.policy(self.sts())
        self.assertEqual((policy.id, policy.mode), ("20261202", "testing"))
        self.assertEqual(len(self.page.requests), 2)

    @defer.inlineCallbacks
    def test_expired_cache_not_used(self):
        """After max_age a cached policy whose fetch now fails is no longer applied."""
        yield self.policy(self.sts())
        self.publish("20261203")
        self.page.code = 500
        self.assertIsNotNone((yield self.policy(self.sts())))
        self.clock.advance(86400)
        self.assertIsNone((yield self.policy(self.sts())))

    @defer.inlineCallbacks
    def test_untrusted_certificate(self):
        """A certificate from a CA the client does not trust: no policy."""
        policy = yield self.policy(self.sts(trust=CertificateAuthority()))
        self.assertIsNone(policy)
        self.assertEqual(self.page.requests, [])

    @defer.inlineCallbacks
    def test_failure_kinds(self):
        """
        Why an announced policy was not had, as RFC 8460 result types: an
        untrusted certificate, a body that is no policy, an HTTP error.
        """
        sts = self.sts(trust=CertificateAuthority())
        _, failure = yield defer.Deferred.fromCoroutine(sts.find("example.com"))
        self.assertEqual(failure.kind, WEBPKI_INVALID)
        self.page.body = b"version: STSv1\r\nmode: sometimes\r\n"
        _, failure = yield defer.Deferred.fromCoroutine(self.sts().find("example.com"))
        self.assertEqual(failure.kind, POLICY_INVALID)
        self.page.code = 500
        _, failure = yield defer.Deferred.fromCoroutine(self.sts().find("example.com"))
        self.assertEqual((failure.kind, failure.detail), (FETCH_ERROR, "HTTP 500"))

    @defer.inlineCallbacks
    def test_redirect_not_followed(self):
        """RFC 8461 3.3: a redirect is a failed fetch."""
        self.page.code = 301
        self.page.location = b"https://mta-sts.example.com/other"
        self.assertIsNone((yield self.policy(self.sts())))
        self.assertEqual(len(self.page.requests), 1)

    @defer.inlineCallbacks
    def test_wrong_type_or_oversize(self):
        """A policy not served as text/plain, or over 64 KiB, is refused."""
        self.page.content_type = b"text/html"
        self.assertIsNone((yield self.policy(self.sts())))
        self.page.content_type = b"text/plain"
        self.page.body = POLICY.encode() + b"#" * 70000
        self.assertIsNone((yield self.policy(self.sts())))

    @defer.inlineCallbacks
    def test_no_record(self):
        """A domain without an _mta-sts record has no policy and nothing is fetched."""
        self.assertIsNone((yield self.policy(self.sts(), "other.example.com")))
        self.assertEqual(self.page.requests, [])


class ParseTests(unittest.TestCase):
    """The record and policy syntax of RFC 8461 3.1 and 3.2."""

    def test_txt(self):
        """Exactly one v=STSv1 record with an id of 1 to 32 letters and digits."""
        self.assertEqual(parse_txt([b"v=STSv1; id=abc123"]), "abc123")
        self.assertIsNone(parse_txt([b"v=STSv1; id=a", b"v=STSv1; id=b"]))
        self.assertIsNone(parse_txt([b"v=STSv1; id=bad-id"]))
        self.assertIsNone(parse_txt([b"v=spf1 -all"]))

    def test_policy_errors(self):
        """A bad version, mode or max_age, or enforce without mx, is refused."""
        for text in ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
                     "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                     "version: STSv1\nmode: enforce\nmx: a\nmax_age: forever\n",
                     "version: STSv1\nmode: enforce\nmax_age: 1\n"):
            self.assertRaises(PolicyError, parse_policy, "example.com", "1", text, 0)
        none = parse_policy("example.com", "1", "version: STSv1\nmode: none\nmax_age: 1\n", 0)
        self.assertEqual(none.mode, "none")
