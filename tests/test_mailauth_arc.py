"""
Tests for L{smtpd.mailauth.arc}: chains sealed by L{ARCSealer} at forwarding
hosts, validated by the inbound checks against keys served by a real DNS
server on loopback.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.names import client
from twisted.trial import unittest

from smtpd.mailauth.arc import ARCSealer
from smtpd.mailauth.checks import CheckModes, InboundChecks
from smtpd.mailauth.keys import ED25519_SHA256, RSA_SHA256, generate_key, key_from_pem
from tests.support import start_dns_server
from tests.test_mailauth_checks import (
    AUTHSERV,
    ZONES,
    message,
    results_field,
    signed,
    txt,
)

FWD_KEY = key_from_pem("arc1", generate_key(RSA_SHA256))
LIST_KEY = key_from_pem("arc2", generate_key(RSA_SHA256))
ARC_ZONES = dict(ZONES, **{
    "fwd.test": {"arc1._domainkey.fwd.test": [txt(FWD_KEY.record)]},
    "list.test": {"arc2._domainkey.list.test": [txt(LIST_KEY.record)]},
})


class ARCTests(unittest.TestCase):
    """Sealing at forwarders and validation at the final receiver."""

    def setUp(self) -> None:
        self.dns = start_dns_server(self, ARC_ZONES)
        self.resolver = client.Resolver(servers=[self.dns], reactor=reactor)

    async def forward(self, data: bytes, authserv: str, domain: str, key) -> bytes:
        """What a forwarding host passes on: its checks' results, then its ARC set."""
        checks = InboundChecks(CheckModes(authserv), self.resolver, reactor, deferToThread)
        verdict = await checks.check("127.0.0.1", "mail.example.com", "ann@example.com", data)
        stored = verdict.rewrite(data, authserv)
        sealer = ARCSealer(domain, key, authserv, deferToThread)
        return await sealer.seal(stored) + stored

    async def receive(self, data: bytes) -> str:
        """Our Authentication-Results for C{data}."""
        checks = InboundChecks(CheckModes(AUTHSERV), self.resolver, reactor, deferToThread)
        verdict = await checks.check("192.0.2.7", "fwd.test", "ann@example.com", data)
        return results_field(verdict.rewrite(data, AUTHSERV))

    @defer.inlineCallbacks
    def test_sealed_chain_passes(self):
        """One ARC set from a forwarder validates: arc=pass (i=1)."""
        forwarded = yield defer.Deferred.fromCoroutine(
            self.forward(signed(message()), "fwd.test", "fwd.test", FWD_KEY))
        self.assertTrue(forwarded.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=fwd.test;"))
        self.assertIn(b"ARC-Authentication-Results: i=1; fwd.test;", forwarded)
        field = yield defer.Deferred.fromCoroutine(self.receive(forwarded))
        self.assertIn("arc=pass (i=1)", field)

    @defer.inlineCallbacks
    def test_two_hops(self):
        """A forwarder then a list: two sets, the second with cv=pass, and the chain passes."""
        once = yield defer.Deferred.fromCoroutine(
            self.forward(signed(message()), "fwd.test", "fwd.test", FWD_KEY))
        twice = yield defer.Deferred.fromCoroutine(
            self.forward(once, "list.test", "list.test", LIST_KEY))
        self.assertTrue(twice.startswith(b"ARC-Seal: i=2; cv=pass; a=rsa-sha256; d=list.test;"))
        field = yield defer.Deferred.fromCoroutine(self.receive(twice))
        self.assertIn("arc=pass (i=2)", field)

    @defer.inlineCallbacks
    def test_changed_after_sealing_fails(self):
        """A body changed after the seal: arc=fail."""
        forwarded = yield defer.Deferred.fromCoroutine(
            self.forward(signed(message()), "fwd.test", "fwd.test", FWD_KEY))
        field = yield defer.Deferred.fromCoroutine(
            self.receive(forwarded.replace(b"Hello.", b"Hullo.")))
        self.assertIn("arc=fail", field)

    @defer.inlineCallbacks
    def test_unsealed(self):
        """A message without ARC sets: arc=none."""
        field = yield defer.Deferred.fromCoroutine(self.receive(message()))
        self.assertIn("arc=none", field)

    @defer.inlineCallbacks
    def test_no_results_no_seal(self):
        """Without Authentication-Results of its own the sealer adds nothing."""
        sealer = ARCSealer("fwd.test", FWD_KEY, "fwd.test", deferToThread)
        result = yield defer.Deferred.fromCoroutine(sealer.seal(message()))
        self.assertEqual(result, b"")

    def test_rsa_only(self):
        """An Ed25519 key cannot seal (RFC 8617 allows rsa-sha256 only)."""
        key = key_from_pem("e", generate_key(ED25519_SHA256))
        self.assertRaises(ValueError, ARCSealer, "fwd.test", key, "fwd.test", deferToThread)
