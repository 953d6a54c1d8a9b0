"""
Mail authentication in the cleanup stage: the two filters on their own, then
the whole assembled server over real sockets, with a real DNS server on
loopback, an SMTP sink as the remote MX, and dkimpy as the independent
verifier.
"""

from __future__ import annotations

import base64
import glob
import os

import dkim
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.names import client
from twisted.trial import unittest

from smtpd.cleanup.authfilters import AuthResultsFilter, DKIMSignFilter, trusted
from smtpd.cleanup.interfaces import ClientInfo, FilterResult
from smtpd.config import load_config
from smtpd.directory import accounts
from smtpd.mail.envelope import Envelope
from smtpd.mail.source import BytesSource
from smtpd.mailauth.arc import ARCSealer
from smtpd.mailauth.checks import ENFORCE, CheckModes, InboundChecks
from smtpd.mailauth.signing import DKIMSigner
from smtpd.tap import build
from tests import support
from tests.inbound import connect
from tests.test_e2e import eventually
from tests.test_mailauth_checks import RSA_KEY, txt
from tests.test_mailauth_signing import dnspython_lookup

AUTHSERV = "mx.ours.test"
PLAIN = ClientInfo("client.test", "127.0.0.1")
ZONES = {
    "example.com": {
        "s1._domainkey.example.com": [txt(RSA_KEY.record)],
        "example.com": [txt("v=spf1 ip4:192.0.2.1 -all")],
        "_dmarc.example.com": [txt("v=DMARC1; p=reject")],
    },
    "sender.test": {
        "sender.test": [txt("v=spf1 ip4:127.0.0.1 -all")],
        "_dmarc.sender.test": [txt("v=DMARC1; p=none")],
    },
    "dest.test": {
        "dest.test": [support.mx(10, "mx1.dest.test")],
        "mx1.dest.test": [support.a("127.0.0.2")],
    },
}


def message(sender: str, extra: bytes = b"") -> bytes:
    """A message from C{sender} to bob@dest.test."""
    return (extra + b"From: <" + sender.encode() + b">\r\nTo: <bob@dest.test>\r\n"
            b"Subject: auth\r\n\r\nHello.\r\n")


class FilterTests(unittest.TestCase):
    """Who gets signed, who gets checked, and what a refusal looks like."""

    def setUp(self) -> None:
        self.dns = support.start_dns_server(self, ZONES)
        self.resolver = client.Resolver(servers=[self.dns], reactor=reactor)

    def auth_filter(self, sealer=None, **modes) -> AuthResultsFilter:
        checks = InboundChecks(CheckModes(AUTHSERV, **modes), self.resolver, reactor,
                               deferToThread)
        return AuthResultsFilter(checks, sealer, deferToThread)

    def envelope(self, sender: str) -> Envelope:
        return Envelope(id="1", sender=sender, recipients=[], arrival=0, next_attempt=0)

    def test_trusted(self):
        """Authenticated and relay clients, pickup files and our reports are ours; others not."""
        self.assertTrue(trusted(None))
        self.assertTrue(trusted(ClientInfo("h", "192.0.2.9", user="ann@example.com")))
        self.assertTrue(trusted(ClientInfo("h", "127.0.0.1", relay_check=lambda: True)))
        self.assertFalse(trusted(PLAIN))

    async def test_sign_only_trusted(self):
        """The signer signs for a relay client and leaves a plain client's mail alone."""
        signer = DKIMSignFilter(DKIMSigner({"example.com": [RSA_KEY]}, deferToThread),
                                deferToThread)
        source = BytesSource(message("ann@example.com"))
        relay = ClientInfo("h", "127.0.0.1", relay_check=lambda: True)
        signed = await signer.check(self.envelope("ann@example.com"), source, relay)
        self.assertTrue(signed.prepend[0].startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"))
        self.assertEqual(await signer.check(self.envelope("ann@example.com"), source, PLAIN),
                         FilterResult())

    async def test_checks_only_untrusted(self):
        """A plain client's mail gets our Authentication-Results; an authenticated one's nothing."""
        source = BytesSource(message("ann@sender.test"))
        result = await self.auth_filter().check(self.envelope("ann@sender.test"), source, PLAIN)
        [field] = result.prepend
        self.assertTrue(field.startswith(b"Authentication-Results: mx.ours.test;\r\n"))
        self.assertIn(b"spf=pass smtp.mailfrom=sender.test", field)
        user = ClientInfo("h", "127.0.0.1", user="ann@sender.test")
        self.assertEqual(await self.auth_filter().check(self.envelope("x@sender.test"), source,
                                                        user), FilterResult())

    async def test_enforce_refusal(self):
        """DMARC p=reject under enforce becomes the filter's 550 5.7.1 refusal."""
        source = BytesSource(message("ann@example.com"))
        result = await self.auth_filter(dmarc=ENFORCE).check(
            self.envelope("ann@example.com"), source, PLAIN)
        self.assertEqual(result.reply, (550, "5.7.1",
                                        "DMARC: the policy of example.com rejects this message"))

    async def test_arc_seal(self):
        """With a sealer the ARC set comes first, above our Authentication-Results."""
        sealer = ARCSealer("ours.test", RSA_KEY, AUTHSERV, deferToThread)
        source = BytesSource(message("ann@sender.test"))
        result = await self.auth_filter(sealer).check(self.envelope("ann@sender.test"), source,
                                                      PLAIN)
        self.assertTrue(result.prepend[0].startswith(b"ARC-Seal: i=1; cv=none;"))
        self.assertTrue(result.prepend[1].startswith(b"Authentication-Results: mx.ours.test;"))


class AssembledServerTests(unittest.TestCase):
    """The whole server: signing on the way out, checks on the way in."""

    timeout = 30

    def start(self, checks: str = "") -> None:
        """Write a deployment whose example.com signs with RSA_KEY, start it."""
        self.dns = support.start_dns_server(self, ZONES)
        [self.sink] = support.start_smtp_sinks(self, ["127.0.0.2"])
        root = self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc", "dkim"))
        with open(os.path.join(root, "etc", "dkim", "example.com.rsa"), "wb") as f:
            f.write(RSA_KEY.key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        users = os.path.join(root, "etc", "users")
        accounts.add(users, "ann@example.com", "secret", rounds=4)
        accounts.add(users, "bob@example.com", "secret", rounds=4)
        path = os.path.join(root, "etc", "smtpd.ini")
        with open(path, "w") as f:
            f.write(
                f"[server]\nhostname = {AUTHSERV}\nlisten = tcp:0:interface=127.0.0.1\n"
                "[auth]\nallow_plaintext = yes\n[access]\nrelay =\n"
                f"[delivery]\ndns_servers = 127.0.0.1:{self.dns[1]}\n"
                f"remote_port = {self.sink.port}\noutbound_tls = none\n"
                f"[checks]\n{checks}\n"
                "[domain:example.com]\ntype = local\ndkim = s1:etc/dkim/example.com.rsa\n"
            )
        top = build(load_config(path), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        [listener] = top.listeners.listeners
        self.port = listener.address()[1]

    async def send(self, sender: str, rcpt: str, data: bytes, login: bool = False) -> str:
        """One transaction; the reply to the end of data."""
        smtp = await connect(self, self.port)
        await smtp.command(b"EHLO client.test\r\n")
        if login:
            token = base64.b64encode(b"\0ann@example.com\0secret")
            self.assertTrue((await smtp.command(b"AUTH PLAIN " + token + b"\r\n")).startswith("235"))
        self.assertTrue((await smtp.command(f"MAIL FROM:<{sender}>\r\n".encode())).startswith("250"))
        self.assertTrue((await smtp.command(f"RCPT TO:<{rcpt}>\r\n".encode())).startswith("250"))
        self.assertTrue((await smtp.command(b"DATA\r\n")).startswith("354"))
        reply = await smtp.command(data + b".\r\n")
        await smtp.command(b"QUIT\r\n")
        return reply

    def mailbox(self, user: str) -> list[bytes]:
        found = sorted(glob.glob(os.path.join(self.root, "mailroot", "mailbox", "example.com",
                                              user, "new", "*")))
        data = []
        for path in found:
            with open(path, "rb") as f:
                data.append(f.read())
        return data

    async def test_submission_signed_and_relayed(self):
        """
        An authenticated client's message relayed to the remote MX carries a
        DKIM signature that dkimpy verifies with the key in DNS; a changed
        body does not verify.
        """
        self.start()
        reply = await self.send("ann@example.com", "bob@dest.test", message("ann@example.com"),
                                login=True)
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        await eventually(lambda: self.sink.messages)
        [received] = self.sink.messages
        self.assertTrue(received.data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"))
        self.assertNotIn(b"Authentication-Results", received.data)
        lookup = dnspython_lookup(self.dns)
        verify = lambda data: dkim.DKIM(data).verify(dnsfunc=lookup)  # noqa: E731
        self.assertTrue(await deferToThread(verify, received.data))
        changed = received.data.replace(b"Hello.", b"Hullo.")
        self.assertFalse(await deferToThread(lambda: dkim.verify(changed, dnsfunc=lookup)))

    async def test_inbound_stored_with_results(self):
        """
        An unauthenticated client's message is stored with our
        Authentication-Results, without the forged one it carried, unsigned.
        """
        self.start()
        forged = b"Authentication-Results: mx.ours.test; dmarc=pass header.from=sender.test\r\n"
        data = message("carol@sender.test", forged).replace(b"bob@dest.test", b"bob@example.com")
        reply = await self.send("carol@sender.test", "bob@example.com", data)
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        [stored] = self.mailbox("bob")
        header = stored.split(b"\n\n", 1)[0]
        self.assertEqual(header.count(b"Authentication-Results:"), 1)
        self.assertIn(b"Authentication-Results: mx.ours.test;\n\tspf=none", header)
        self.assertIn(b"spf=pass smtp.mailfrom=sender.test", header)
        self.assertIn(b"dmarc=pass header.from=sender.test", header)
        self.assertNotIn(b"DKIM-Signature", header)

    async def test_enforce_refuses_at_end_of_data(self):
        """Under dmarc = enforce a p=reject failure is answered 550 5.7.1 and nothing is kept."""
        self.start("dmarc = enforce")
        data = message("eve@example.com").replace(b"bob@dest.test", b"bob@example.com")
        reply = await self.send("eve@example.com", "bob@example.com", data)
        self.assertEqual(reply, "550 5.7.1 DMARC: the policy of example.com rejects this message")
        self.assertEqual(self.mailbox("bob"), [])
