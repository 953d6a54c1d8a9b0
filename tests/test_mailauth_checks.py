"""
Tests for L{smtpd.mailauth.checks}: SPF, DKIM and DMARC against a real
twisted.names server on loopback, each verdict read back from the
Authentication-Results field the checks produce.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.names import client
from twisted.names import dns as tdns
from twisted.trial import unittest

from smtpd.mailauth.checks import ENFORCE, OFF, QUARANTINE_FIELD, TAG, CheckModes, InboundChecks
from smtpd.mailauth.keys import ED25519_SHA256, RSA_SHA256, generate_key, key_from_pem, txt_strings
from smtpd.mailauth.dkimcheck import DKIMResult
from smtpd.mailauth.results import (
    ForgedResultsFilter,
    authserv_id_of,
    build_header,
    remove_forged,
)
from smtpd.mailauth.signing import sign_message
from tests.support import a, start_dns_server, start_silent_dns_server

AUTHSERV = "mx.ours.test"
CLIENT = "127.0.0.1"
RSA_KEY = key_from_pem("rsa1", generate_key(RSA_SHA256))
ED_KEY = key_from_pem("ed1", generate_key(ED25519_SHA256))
OTHER_KEY = key_from_pem("rsa1", generate_key(RSA_SHA256))


def txt(text: str) -> tdns.Record_TXT:
    """A TXT record holding C{text} (split into 255-octet strings)."""
    return tdns.Record_TXT(*txt_strings(text))


ZONES = {
    "example.com": {
        "example.com": [txt("v=spf1 ip4:127.0.0.1 -all"), a("127.0.0.1")],
        "mail.example.com": [txt("v=spf1 a -all"), a("127.0.0.1")],
        "rsa1._domainkey.example.com": [txt(RSA_KEY.record)],
        "ed1._domainkey.example.com": [txt(ED_KEY.record)],
        "_dmarc.example.com": [txt("v=DMARC1; p=reject; sp=quarantine")],
    },
    "fail.test": {"fail.test": [txt("v=spf1 ip4:192.0.2.1 -all")]},
    "softfail.test": {"softfail.test": [txt("v=spf1 ip4:192.0.2.1 ~all")]},
    "none.test": {"none.test": [a("192.0.2.1")]},
    "quarantine.test": {"_dmarc.quarantine.test": [txt("v=DMARC1; p=quarantine")]},
    "tempfail.test": {"tempfail.test": [a("192.0.2.1")]},
}


def message(sender: str = "ann@example.com", extra: bytes = b"") -> bytes:
    """A small message from C{sender}."""
    return (
        extra
        + b"From: Ann <" + sender.encode() + b">\r\n"
        b"To: bob@ours.test\r\n"
        b"Subject: checks\r\n"
        b"\r\n"
        b"Hello.\r\n"
    )


def signed(data: bytes, domain: str = "example.com", key=RSA_KEY) -> bytes:
    """C{data} with a DKIM signature of C{domain} made with C{key}."""
    return sign_message(data, domain, [key]) + data


def results_field(data: bytes) -> str:
    """The Authentication-Results field of a stored message, unfolded."""
    for line in data.split(b"\r\n\r\n")[0].replace(b"\r\n\t", b" ").split(b"\r\n"):
        if line.startswith(b"Authentication-Results:"):
            return line.decode()
    raise AssertionError("no Authentication-Results field")


class ChecksTestCase(unittest.TestCase):
    """A DNS server with the test zones and checks that ask it."""

    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONES, servfail=("tempfail.test",))
        self.resolver = client.Resolver(servers=[self.dns], reactor=reactor)

    def checks(self, spf=TAG, dkim=TAG, dmarc=TAG) -> InboundChecks:
        modes = CheckModes(AUTHSERV, spf=spf, dkim=dkim, dmarc=dmarc)
        return InboundChecks(modes, self.resolver, reactor, deferToThread)

    def run_check(self, data: bytes, sender: str = "ann@example.com",
                  helo: str = "mail.example.com", ip: str = CLIENT, **modes):
        """The verdict and the stored message, as a Deferred."""
        checks = self.checks(**modes)
        d = defer.Deferred.fromCoroutine(checks.check(ip, helo, sender, data))
        return d.addCallback(lambda v: (v, v.rewrite(data, AUTHSERV)))


class SPFTests(ChecksTestCase):
    """SPF results for MAIL FROM and HELO."""

    @defer.inlineCallbacks
    def test_pass(self):
        """A client inside the sender domain's record passes, as does its HELO name."""
        verdict, stored = yield self.run_check(message())
        field = results_field(stored)
        self.assertIn("spf=pass smtp.mailfrom=example.com", field)
        self.assertIn("spf=pass smtp.helo=mail.example.com", field)
        self.assertTrue(field.startswith(f"Authentication-Results: {AUTHSERV};"))
        self.assertIsNone(verdict.reply)

    @defer.inlineCallbacks
    def test_fail_tag(self):
        """A client outside a -all record fails; under tag the message is still accepted."""
        verdict, stored = yield self.run_check(message(), sender="x@fail.test", dmarc=OFF)
        self.assertIn("spf=fail", results_field(stored))
        self.assertIn("smtp.mailfrom=fail.test", results_field(stored))
        self.assertIsNone(verdict.reply)

    @defer.inlineCallbacks
    def test_fail_enforce(self):
        """Under enforce an SPF fail is answered 550 5.7.1."""
        verdict, _ = yield self.run_check(message(), sender="x@fail.test", spf=ENFORCE, dmarc=OFF)
        self.assertEqual(verdict.reply[0], 550)
        self.assertTrue(verdict.reply[1].startswith("5.7.1 "))

    @defer.inlineCallbacks
    def test_softfail(self):
        """A ~all record gives softfail, which even enforce accepts."""
        verdict, stored = yield self.run_check(message(), sender="x@softfail.test", spf=ENFORCE,
                                               dmarc=OFF)
        self.assertIn("spf=softfail", results_field(stored))
        self.assertIsNone(verdict.reply)

    @defer.inlineCallbacks
    def test_none(self):
        """A domain without an SPF record gives none."""
        _, stored = yield self.run_check(message(), sender="x@none.test", dmarc=OFF)
        self.assertIn("spf=none", results_field(stored))
        self.assertIn("smtp.mailfrom=none.test", results_field(stored))

    @defer.inlineCallbacks
    def test_temperror_servfail(self):
        """SERVFAIL gives temperror; enforce answers 451 4.7.0, tag accepts."""
        verdict, stored = yield self.run_check(message(), sender="x@tempfail.test", dmarc=OFF)
        self.assertIn("spf=temperror", results_field(stored))
        self.assertIsNone(verdict.reply)
        verdict, _ = yield self.run_check(message(), sender="x@tempfail.test", spf=ENFORCE,
                                          dmarc=OFF)
        self.assertEqual(verdict.reply[0], 451)
        self.assertTrue(verdict.reply[1].startswith("4.7.0 "))
        self.assertIn(("tempfail.test", "TXT"), self.dns.queries)

    @defer.inlineCallbacks
    def test_temperror_timeout(self):
        """A DNS server that never answers gives temperror, not a hang; enforce answers 451."""
        silent = start_silent_dns_server(self)
        resolver = client.Resolver(servers=[silent], reactor=reactor)
        checks = InboundChecks(CheckModes(AUTHSERV, spf=ENFORCE, dkim=OFF, dmarc=OFF),
                               resolver, reactor, deferToThread, timeout=(1,))
        verdict = yield defer.Deferred.fromCoroutine(
            checks.check(CLIENT, "mail.example.com", "ann@example.com", message()))
        self.assertIn("spf=temperror", verdict.header.decode())
        self.assertEqual(verdict.reply[0], 451)

    @defer.inlineCallbacks
    def test_null_sender_checks_helo(self):
        """With MAIL FROM:<> only the HELO identity is checked (RFC 7208 2.4)."""
        _, stored = yield self.run_check(message(), sender="", helo="fail.test", dmarc=OFF)
        field = results_field(stored)
        self.assertIn("spf=fail", field)
        self.assertIn("smtp.helo=fail.test", field)
        self.assertNotIn("smtp.mailfrom", field)

    @defer.inlineCallbacks
    def test_literal_helo(self):
        """An address-literal HELO has no SPF identity: none."""
        _, stored = yield self.run_check(message(), helo="[127.0.0.1]", dmarc=OFF)
        self.assertIn("spf=none", results_field(stored))


class DKIMTests(ChecksTestCase):
    """DKIM results, one per signature."""

    @defer.inlineCallbacks
    def test_pass(self):
        """A valid signature passes, with its domain, selector and algorithm named."""
        _, stored = yield self.run_check(signed(message()))
        field = results_field(stored)
        self.assertIn("dkim=pass header.d=example.com header.s=rsa1 header.a=rsa-sha256", field)

    @defer.inlineCallbacks
    def test_every_signature(self):
        """Each of two signatures gets its own result."""
        data = signed(signed(message()), key=ED_KEY)
        _, stored = yield self.run_check(data)
        field = results_field(stored)
        self.assertIn("dkim=pass header.d=example.com header.s=ed1 header.a=ed25519-sha256", field)
        self.assertIn("header.s=rsa1 header.a=rsa-sha256", field)

    @defer.inlineCallbacks
    def test_fail(self):
        """A body changed after signing fails; under enforce the message gets 550 5.7.1."""
        data = signed(message()).replace(b"Hello.", b"Goodbye.")
        verdict, stored = yield self.run_check(data, dmarc=OFF)
        self.assertIn("dkim=fail", results_field(stored))
        self.assertIsNone(verdict.reply)
        verdict, _ = yield self.run_check(data, dkim=ENFORCE, dmarc=OFF)
        self.assertEqual(verdict.reply[0], 550)

    @defer.inlineCallbacks
    def test_wrong_key(self):
        """A signature made with another key than the published one fails."""
        _, stored = yield self.run_check(signed(message(), key=OTHER_KEY), dmarc=OFF)
        self.assertIn("dkim=fail", results_field(stored))

    @defer.inlineCallbacks
    def test_unsigned(self):
        """An unsigned message is reported dkim=none."""
        _, stored = yield self.run_check(message(), dmarc=OFF)
        self.assertIn("dkim=none", results_field(stored))


class DMARCTests(ChecksTestCase):
    """DMARC alignment and the policy of the From: domain."""

    @defer.inlineCallbacks
    def test_pass_by_spf(self):
        """An SPF pass for the From: domain is aligned: dmarc=pass."""
        _, stored = yield self.run_check(message())
        self.assertIn("dmarc=pass header.from=example.com", results_field(stored))

    @defer.inlineCallbacks
    def test_pass_by_dkim(self):
        """An aligned DKIM pass is enough even when SPF fails for another domain."""
        verdict, stored = yield self.run_check(signed(message()), sender="x@fail.test",
                                               dmarc=ENFORCE)
        self.assertIn("dmarc=pass", results_field(stored))
        self.assertIsNone(verdict.reply)

    @defer.inlineCallbacks
    def test_fail_reject_under_tag(self):
        """p=reject with no aligned pass: dmarc=fail recorded, message accepted under tag."""
        verdict, stored = yield self.run_check(message(), sender="x@softfail.test")
        self.assertIn("dmarc=fail (p=reject) header.from=example.com", results_field(stored))
        self.assertIsNone(verdict.reply)

    @defer.inlineCallbacks
    def test_fail_reject_under_enforce(self):
        """p=reject with no aligned pass under enforce: 550 5.7.1."""
        verdict, stored = yield self.run_check(message(), sender="x@softfail.test",
                                               dmarc=ENFORCE)
        self.assertIn("dmarc=fail (p=reject)", results_field(stored))
        self.assertEqual(verdict.reply, (
            550, "5.7.1 DMARC: the policy of example.com rejects this message"))

    @defer.inlineCallbacks
    def test_subdomain_policy(self):
        """A subdomain without a record gets its organizational domain's sp= (quarantine)."""
        verdict, stored = yield self.run_check(message("ann@news.example.com"),
                                               sender="x@softfail.test", dmarc=ENFORCE)
        self.assertIn("dmarc=fail (p=quarantine) header.from=news.example.com",
                      results_field(stored))
        self.assertIsNone(verdict.reply)
        self.assertIn(QUARANTINE_FIELD, stored)

    @defer.inlineCallbacks
    def test_quarantine_only_under_enforce(self):
        """p=quarantine adds X-Spam-Flag under enforce and nothing under tag."""
        data = message("ann@quarantine.test")
        _, stored = yield self.run_check(data, sender="x@softfail.test", dmarc=ENFORCE)
        self.assertTrue(stored.startswith(b"Authentication-Results:"))
        self.assertIn(b"\r\nX-Spam-Flag: YES\r\n", stored)
        _, stored = yield self.run_check(data, sender="x@softfail.test")
        self.assertNotIn(b"X-Spam-Flag", stored)

    @defer.inlineCallbacks
    def test_no_policy(self):
        """A From: domain without a DMARC record: dmarc=none."""
        _, stored = yield self.run_check(message("ann@none.test"), sender="x@none.test")
        self.assertIn("dmarc=none header.from=none.test", results_field(stored))


class HeaderTests(ChecksTestCase):
    """The Authentication-Results field itself."""

    @defer.inlineCallbacks
    def test_forged_results_removed(self):
        """An incoming field claiming our authserv-id is removed; others' are kept."""
        forged = (
            b"Authentication-Results: (comment) MX.ours.test; spf=pass smtp.mailfrom=x\r\n"
            b"Authentication-Results: other.test;\r\n\tdkim=pass header.d=x\r\n"
        )
        _, stored = yield self.run_check(message(extra=forged))
        header = stored.split(b"\r\n\r\n")[0]
        self.assertEqual(header.count(b"Authentication-Results:"), 2)
        self.assertNotIn(b"MX.ours.test", header)
        self.assertIn(b"Authentication-Results: other.test;\r\n\tdkim=pass header.d=x\r\n", header)
        self.assertTrue(stored.endswith(b"\r\n\r\nHello.\r\n"))

    def test_property_values(self):
        """Domains and addresses stay bare; a b= prefix with / or = is quoted (RFC 8601 2.2)."""
        field = build_header(AUTHSERV, [], [DKIMResult("pass", "example.com", "s1", "rsa-sha256",
                                                        "Ab+/cd=E")], None).decode()
        self.assertIn('header.d=example.com header.s=s1 header.a=rsa-sha256 header.b="Ab+/cd=E"',
                      field)

    def test_authserv_id_parsing(self):
        """The authserv-id is the first token after comments, compared without case."""
        self.assertEqual(authserv_id_of(b" (c) Mx.Ours.Test (v=1); none"), "mx.ours.test")
        self.assertEqual(authserv_id_of(b" mx.ours.test 1; none"), "mx.ours.test")
        kept, removed = remove_forged(b"Authentication-Results: mx.ours.test.evil; none\r\n",
                                      AUTHSERV)
        self.assertEqual(removed, 0)

    @defer.inlineCallbacks
    def test_all_off(self):
        """With every check off nothing is looked up and no field is added."""
        verdict, stored = yield self.run_check(message(), spf=OFF, dkim=OFF, dmarc=OFF)
        self.assertEqual(verdict.header, b"")
        self.assertEqual(self.dns.queries, [])


class StreamingRemovalTests(unittest.TestCase):
    """L{ForgedResultsFilter}: forged fields dropped from data that arrives in pieces."""

    MESSAGE = (
        b"Authentication-Results: mx.ours.test;\r\n\tspf=pass smtp.mailfrom=x\r\n"
        b"Subject: hi\r\n"
        b"Authentication-Results: other.test; dkim=pass\r\n"
        b"X-Long: a\r\n b\r\n"
        b"authentication-results:   (c) MX.OURS.TEST 1; none\r\n"
        b"\r\n"
        b"Authentication-Results: mx.ours.test; body lines are not fields\r\n"
    )
    EXPECTED = (
        b"Subject: hi\r\n"
        b"Authentication-Results: other.test; dkim=pass\r\n"
        b"X-Long: a\r\n b\r\n"
        b"\r\n"
        b"Authentication-Results: mx.ours.test; body lines are not fields\r\n"
    )

    def stream(self, size: int) -> tuple[bytes, int]:
        remover = ForgedResultsFilter(AUTHSERV)
        out = b"".join(remover.feed(self.MESSAGE[i : i + size])
                       for i in range(0, len(self.MESSAGE), size))
        return out + remover.finish(), remover.removed

    def test_any_chunk_size(self):
        """Whatever the chunk size, the same two forged fields go and the rest is intact."""
        for size in (1, 2, 3, 7, 16, 64, 1000):
            self.assertEqual(self.stream(size), (self.EXPECTED, 2), size)

    def test_same_as_whole_message_removal(self):
        """The streaming filter agrees with the whole-header removal."""
        header, body = self.MESSAGE.split(b"\r\n\r\n", 1)
        kept, removed = remove_forged(header + b"\r\n", AUTHSERV)
        self.assertEqual(kept + b"\r\n" + body, self.EXPECTED)
        self.assertEqual(removed, 2)

    def test_huge_field_passes(self):
        """A field too long to hold is passed on whole, continuation lines included."""
        field = b"X-Big: a\r\n" + b" " + b"b" * 70000 + b"\r\n" + b" c\r\n"
        data = field + b"Subject: s\r\n\r\nbody\r\n"
        remover = ForgedResultsFilter(AUTHSERV)
        out = b"".join(remover.feed(data[i : i + 4096]) for i in range(0, len(data), 4096))
        self.assertEqual(out + remover.finish(), data)

    def test_unterminated(self):
        """Data without an end of header is given back by finish()."""
        remover = ForgedResultsFilter(AUTHSERV)
        out = remover.feed(b"Subject: s\r\nX-Partial: y")
        self.assertEqual(out + remover.finish(), b"Subject: s\r\nX-Partial: y")
