"""
admin.reload() rebuilds the mail authentication filters of the cleanup
stage: after a domain's dkim key and [checks] spf change, the next message
is signed with the new selector (verified by dkimpy against the real DNS
server) and checked under the new mode; a reload refused for a bad key
keeps the filters in force.
"""

from __future__ import annotations

import base64
import os

import dkim
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from smtpd.admin.api import Admin
from smtpd.config import load_config
from smtpd.directory import accounts
from smtpd.mailauth.keys import RSA_SHA256, generate_key, key_from_pem
from smtpd.tap import build
from tests import support
from tests.inbound import connect
from tests.test_cleanup_mailauth import AUTHSERV, ZONES, message
from tests.test_e2e import eventually
from tests.test_mailauth_checks import RSA_KEY, txt
from tests.test_mailauth_signing import dnspython_lookup

NEW_KEY = key_from_pem("s2", generate_key(RSA_SHA256))


def pem(key) -> bytes:
    """The private key of a DKIMKey as PKCS#8 PEM."""
    return key.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


class ReloadFiltersTests(unittest.TestCase):
    """The filters after admin.reload()."""

    timeout = 30

    def setUp(self) -> None:
        zones = {name: dict(records) for name, records in ZONES.items()}
        zones["example.com"]["s2._domainkey.example.com"] = [txt(NEW_KEY.record)]
        self.dns = support.start_dns_server(self, zones)
        [self.sink] = support.start_smtp_sinks(self, ["127.0.0.2"])
        root = self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc", "dkim"))
        for name, key in (("s1", RSA_KEY), ("s2", NEW_KEY)):
            with open(os.path.join(root, "etc", "dkim", name), "wb") as f:
                f.write(pem(key))
        users = os.path.join(root, "etc", "users")
        accounts.add(users, "ann@example.com", "secret", rounds=4)
        self.write("s1", "tag")
        top = build(load_config(os.path.join(root, "etc", "smtpd.ini")), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        [listener] = top.listeners.listeners
        self.port = listener.address()[1]
        self.admin = Admin(top.admin.server, "tester")

    def write(self, selector: str, spf: str) -> None:
        """The config, example.com signing with C{selector}, [checks] spf = C{spf}."""
        with open(os.path.join(self.root, "etc", "smtpd.ini"), "w") as f:
            f.write(
                f"[server]\nhostname = {AUTHSERV}\nlisten = tcp:0:interface=127.0.0.1\n"
                "[auth]\nallow_plaintext = yes\n[access]\nrelay =\n"
                f"[delivery]\ndns_servers = 127.0.0.1:{self.dns[1]}\n"
                f"remote_port = {self.sink.port}\noutbound_tls = none\n"
                f"[checks]\nspf = {spf}\n"
                f"[domain:example.com]\ntype = local\ndkim = {selector}:etc/dkim/{selector}\n"
            )

    async def send(self, sender: str, rcpt: str, login: bool) -> str:
        """One transaction; the reply to the end of data."""
        smtp = await connect(self, self.port)
        await smtp.command(b"EHLO client.test\r\n")
        if login:
            token = base64.b64encode(b"\0ann@example.com\0secret")
            self.assertTrue((await smtp.command(b"AUTH PLAIN " + token + b"\r\n")).startswith("235"))
        self.assertTrue((await smtp.command(f"MAIL FROM:<{sender}>\r\n".encode())).startswith("250"))
        self.assertTrue((await smtp.command(f"RCPT TO:<{rcpt}>\r\n".encode())).startswith("250"))
        self.assertTrue((await smtp.command(b"DATA\r\n")).startswith("354"))
        reply = await smtp.command(message(sender).replace(b"bob@dest.test", rcpt.encode())
                                   + b".\r\n")
        await smtp.command(b"QUIT\r\n")
        return reply

    async def relayed_selector(self) -> str:
        """Submit one message to bob@dest.test; the s= of its verified signature at the sink."""
        count = len(self.sink.messages)
        reply = await self.send("ann@example.com", "bob@dest.test", login=True)
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        await eventually(lambda: len(self.sink.messages) > count)
        data = self.sink.messages[-1].data
        lookup = dnspython_lookup(self.dns)
        self.assertTrue(await deferToThread(lambda: dkim.verify(data, dnsfunc=lookup)))
        header = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
        [field] = [line for line in header.split(b"\r\n") if line.startswith(b"DKIM-Signature:")]
        return dict(p.strip().split(b"=", 1) for p in field[15:].split(b";"))[b"s"].decode()

    async def test_new_key_and_mode_after_reload(self):
        """
        After reload the next message is signed with selector s2 and an SPF
        fail is refused under enforce (before: s1, and only tagged); the
        report lists the rebuilt filters.
        """
        self.assertEqual(await self.relayed_selector(), "s1")
        reply = await self.send("eve@example.com", "ann@example.com", login=False)
        self.assertTrue(reply.startswith("250 2.0.0"), reply)

        self.write("s2", "enforce")
        report = self.admin.reload()
        self.assertTrue(report["ok"], report)
        self.assertEqual(report["filters"], ["auth-results", "dkim-sign"])
        self.assertEqual(sorted(report["changed"]), ["checks.spf", "domains"])

        self.assertEqual(await self.relayed_selector(), "s2")
        reply = await self.send("eve@example.com", "ann@example.com", login=False)
        self.assertTrue(reply.startswith("550 5.7.1"), reply)

    async def test_refused_reload_keeps_filters(self):
        """A reload refused for a key that is no key keeps signing with the key in force."""
        with open(os.path.join(self.root, "etc", "dkim", "s3"), "w") as f:
            f.write("not a key\n")
        self.write("s3", "enforce")
        report = self.admin.reload()
        self.assertFalse(report["ok"])
        self.assertIn("not a PEM private key", " ".join(report["errors"]))
        self.assertEqual(await self.relayed_selector(), "s1")
        reply = await self.send("eve@example.com", "ann@example.com", login=False)
        self.assertTrue(reply.startswith("250 2.0.0"), reply)


class InstallTests(unittest.TestCase):
    """L{MailAuthFilters.install} replaces only the mail authentication filters."""

    def test_other_filters_stay_in_place(self):
        """A filter of another kind keeps its place; the new ones take the old ones' place."""
        from smtpd.cleanup.authfilters import DKIMSignFilter, MailAuthFilters
        from smtpd.mailauth.signing import DKIMSigner

        class Stage:
            filters: list = []

        other, last = object(), object()
        old = DKIMSignFilter(DKIMSigner({}, deferToThread), deferToThread)
        new = DKIMSignFilter(DKIMSigner({}, deferToThread), deferToThread)
        stage = Stage()
        stage.filters = [other, old, last]
        MailAuthFilters.install(stage, [new])
        self.assertEqual(stage.filters, [other, new, last])
        MailAuthFilters.install(stage, [])
        self.assertEqual(stage.filters, [other, last])
        MailAuthFilters.install(stage, [old])
        self.assertEqual(stage.filters, [other, last, old])
