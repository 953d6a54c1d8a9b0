"""
Tests for L{smtpd.mailauth.signing} and L{smtpd.mailauth.keys}: signatures
checked by dkimpy's own verifier, which fetches the public keys from a real
twisted.names server on loopback.
"""

from __future__ import annotations

import dataclasses

import dkim
import dns.resolver
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.names import dns as tdns
from twisted.trial import unittest

from smtpd.mailauth.keys import (
    ED25519_SHA256,
    RSA_SHA256,
    DKIMKeyError,
    generate_key,
    key_from_pem,
    txt_strings,
    zone_entry,
)
from smtpd.mailauth.signing import DKIMSigner, sign_message
from tests.support import start_dns_server

MESSAGE = (
    b"From: Ann <ann@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: hello\r\n"
    b"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"\r\n"
    b"see you.\r\n"
)

# Keys are made once per test run: RSA generation takes a noticeable moment.
RSA_KEY = key_from_pem("rsa1", generate_key(RSA_SHA256))
ED_KEY = key_from_pem("ed1", generate_key(ED25519_SHA256))


def run_blocking(f, *args, **kwargs):
    """Run C{f} in the reactor's thread pool."""
    return deferToThread(f, *args, **kwargs)


def key_zone(domain: str, *keys) -> dict:
    """A zone publishing C{keys} under C{domain}."""
    return {
        domain: {
            f"{k.selector}._domainkey.{domain}": [tdns.Record_TXT(*txt_strings(k.record))]
            for k in keys
        }
    }


def dnspython_lookup(server: tuple[str, int]):
    """A dkimpy C{dnsfunc} asking the test DNS server through dnspython."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server[0]]
    resolver.port = server[1]

    def get_txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)

    return get_txt


class SignerTests(unittest.TestCase):
    """DKIMSigner against dkimpy's verifier and a real DNS server."""

    def setUp(self) -> None:
        self.server = start_dns_server(self, key_zone("example.com", RSA_KEY, ED_KEY))
        self.lookup = dnspython_lookup(self.server)

    def verify(self, message: bytes, index: int = 0) -> defer.Deferred:
        """dkimpy's verdict on signature C{index}, run in a thread (the DNS server is on the reactor)."""

        def check() -> bool:
            try:
                return dkim.DKIM(message).verify(idx=index, dnsfunc=self.lookup)
            except dkim.DKIMException:
                return False

        return deferToThread(check)

    async def signed(self, keys, message: bytes = MESSAGE) -> bytes:
        signer = DKIMSigner({"example.com": keys}, run_blocking)
        return await signer.signature(message, trusted=True) + message

    @defer.inlineCallbacks
    def test_rsa_signature_verifies(self):
        """An rsa-sha256 signature verifies with the key published in DNS."""
        message = yield defer.Deferred.fromCoroutine(self.signed([RSA_KEY]))
        self.assertIn(b"a=rsa-sha256", message)
        self.assertTrue((yield self.verify(message)))
        self.assertIn(("rsa1._domainkey.example.com", "TXT"), self.server.queries)

    @defer.inlineCallbacks
    def test_ed25519_signature_verifies(self):
        """An ed25519-sha256 signature (RFC 8463) verifies with the key published in DNS."""
        message = yield defer.Deferred.fromCoroutine(self.signed([ED_KEY]))
        self.assertIn(b"a=ed25519-sha256", message)
        self.assertTrue((yield self.verify(message)))

    @defer.inlineCallbacks
    def test_dual_signing(self):
        """With two keys the message carries two signatures, and both verify."""
        message = yield defer.Deferred.fromCoroutine(self.signed([RSA_KEY, ED_KEY]))
        self.assertEqual(message.count(b"DKIM-Signature:"), 2)
        self.assertTrue((yield self.verify(message, 0)))
        self.assertTrue((yield self.verify(message, 1)))

    @defer.inlineCallbacks
    def test_body_change_breaks_signature(self):
        """A changed body fails verification for both algorithms."""
        message = yield defer.Deferred.fromCoroutine(self.signed([RSA_KEY, ED_KEY]))
        tampered = message.replace(b"see you.", b"send money.")
        self.assertFalse((yield self.verify(tampered, 0)))
        self.assertFalse((yield self.verify(tampered, 1)))

    @defer.inlineCallbacks
    def test_oversigned_fields(self):
        """From, To and Subject are signed once more than they occur: an added Subject fails."""
        message = yield defer.Deferred.fromCoroutine(self.signed([RSA_KEY]))
        self.assertIn(b"c=relaxed/relaxed", message)
        tags = dkim.util.parse_tag_value(dkim.DKIM(message).headers[0][1])
        names = [n.strip() for n in tags[b"h"].split(b":")]
        for name in (b"from", b"to", b"subject"):
            self.assertEqual(names.count(name), 2, name)
        added = b"Subject: other\r\n" + message
        self.assertFalse((yield self.verify(added)))

    @defer.inlineCallbacks
    def test_untrusted_client_not_signed(self):
        """Mail from a client neither authenticated nor relaying gets no signature."""
        signer = DKIMSigner({"example.com": [RSA_KEY]}, run_blocking)
        result = yield defer.Deferred.fromCoroutine(signer.signature(MESSAGE, trusted=False))
        self.assertEqual(result, b"")

    @defer.inlineCallbacks
    def test_other_from_domain_not_signed(self):
        """Mail whose From: domain has no key gets no signature."""
        signer = DKIMSigner({"example.com": [RSA_KEY]}, run_blocking)
        other = MESSAGE.replace(b"ann@example.com", b"ann@example.org")
        result = yield defer.Deferred.fromCoroutine(signer.signature(other, trusted=True))
        self.assertEqual(result, b"")

    @defer.inlineCallbacks
    def test_rsa_signed_by_openssl(self):
        """RSA signatures come from the loaded key (OpenSSL), not from dkimpy's own arithmetic."""
        other = key_from_pem("rsa1", generate_key(RSA_SHA256))
        mixed = dataclasses.replace(RSA_KEY, private=other.private)
        message = sign_message(MESSAGE, "example.com", [mixed]) + MESSAGE
        self.assertTrue((yield self.verify(message)))

    def test_multiline_message_lf_free(self):
        """The signature fields end in CRLF and contain no bare LF."""
        field = sign_message(MESSAGE, "example.com", [ED_KEY])
        self.assertTrue(field.endswith(b"\r\n"))
        self.assertNotIn(b"\n", field.replace(b"\r\n", b""))


class KeyTests(unittest.TestCase):
    """Key files and the published record."""

    def test_algorithm_follows_key_type(self):
        """An RSA PEM key signs rsa-sha256, an Ed25519 one ed25519-sha256."""
        self.assertEqual(RSA_KEY.algorithm, RSA_SHA256)
        self.assertEqual(ED_KEY.algorithm, ED25519_SHA256)
        self.assertTrue(RSA_KEY.record.startswith("v=DKIM1; k=rsa; p="))
        self.assertTrue(ED_KEY.record.startswith("v=DKIM1; k=ed25519; p="))

    def test_not_a_key(self):
        """A file that is no PEM private key is refused with the reason."""
        error = self.assertRaises(DKIMKeyError, key_from_pem, "s", b"hello")
        self.assertIn("not a PEM private key", str(error))

    def test_zone_entry_splits_long_records(self):
        """The printed zone entry cuts an RSA record into strings of at most 255 octets."""
        entry = zone_entry("rsa1", "example.com", RSA_KEY.record)
        self.assertTrue(entry.startswith("rsa1._domainkey.example.com. IN TXT ( \""))
        strings = entry.split('"')[1::2]
        self.assertGreater(len(strings), 1)
        self.assertTrue(all(len(s) <= 255 for s in strings))
        self.assertEqual("".join(strings), RSA_KEY.record)
