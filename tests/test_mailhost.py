"""
Per-user routing by the directory's host attribute (mailHost), with real
servers: two smtpd nodes built in this process that share one real OpenLDAP
slapd and find each other through a real twisted.names DNS server; a real
Dovecot for the LMTP transport; and the loops: a host that is ourselves, and
a mailbox host that sends its own users' mail back.
"""

from __future__ import annotations

import glob
import os

from twisted.internet import reactor
from twisted.trial import unittest

from smtpd.config import load_config
from smtpd.tap import build
from tests import support
from tests.dovecot import DOVECOT_MISSING, start_dovecot
from tests.inbound import connect
from tests.slapd import SLAPD_MISSING, SUFFIX, free_port, start_slapd
from tests.test_e2e import eventually

MESSAGE = (b"From: <sender@example.org>\r\nSubject: mailhost\r\n"
           b"Message-ID: <mailhost@example.org>\r\n\r\nhello\r\n.\r\n")


class MailHostTests(unittest.TestCase):
    """Mail for a mailbox held by another host goes there; for one held here, here."""

    skip = SLAPD_MISSING
    timeout = 60

    def setUp(self):
        self.slapd = start_slapd(self)
        self.dns = support.start_dns_server(self, {"example.test": {
            "a.example.test": [support.a("127.0.0.1")],
            "b.example.test": [support.a("127.0.0.1")],
        }})

    def node(self, name: str, port: int, directory: str = "", **extra: str) -> tuple[str, object]:
        """A server named C{name}.example.test listening on C{port}; its root and service."""
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        with open(os.path.join(root, "etc", "smtpd.ini"), "w") as f:
            f.write(
                f"[server]\nhostname = {name}.example.test\n"
                f"listen = tcp:{port}:interface=127.0.0.1\n"
                f"[delivery]\noutbound_tls = none\ndns_servers = 127.0.0.1:{self.dns[1]}\n"
                "retry = 1h\n"
                f"[directory]\nurl = {self.slapd.url}\nbase = {SUFFIX}\n"
                f"bind_dn = cn=smtpd,ou=services,{SUFFIX}\nbind_password = service-secret\n"
                + directory +
                "[logging]\npath = activity.log\nformat = json\n"
                "[domain:example.com]\ntype = local\n")
        top = build(load_config(os.path.join(root, "etc", "smtpd.ini")), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        return root, top

    @staticmethod
    def maildir(root: str, user: str) -> list[str]:
        """The messages in the Maildir of C{user}@example.com under C{root}."""
        return glob.glob(os.path.join(root, "mailroot", "mailbox", "example.com", user,
                                      "new", "*"))

    async def send(self, port: int, recipients: list[bytes], helo: bytes = b"client.example.org",
                   sender: bytes = b"sender@example.org") -> list[str]:
        """One message to C{recipients}; the RCPT replies and the end-of-data reply."""
        client = await connect(self, port)
        await client.command(b"EHLO " + helo + b"\r\n")
        await client.command(b"MAIL FROM:<" + sender + b">\r\n")
        replies = [await client.command(b"RCPT TO:<" + r + b">\r\n") for r in recipients]
        if any(r.startswith("250") for r in replies):
            await client.command(b"DATA\r\n")
            replies.append(await client.command(MESSAGE))
        await client.command(b"QUIT\r\n")
        return replies

    async def test_relayed_to_mail_host(self):
        """
        Node a gets mail for carol (mailHost b.example.test), dave (mailHost
        A.Example.Test.: node a itself) and the list team (carol, dave,
        alice): dave and alice get it in node a's Maildirs, once each, and
        carol's copy is relayed by SMTP to node b (found by its A record, no
        MX), which delivers it into its own Maildir because the host is its
        own name. Nothing stays queued on either node.
        """
        port_a, port_b = free_port(), free_port()
        root_b, _ = self.node("b", port_b)
        root_a, _ = self.node("a", port_a, f"host_port = {port_b}\n")
        replies = await self.send(port_a, [b"carol@example.com", b"dave@example.com",
                                           b"team@example.com"])
        self.assertEqual([r[:3] for r in replies], ["250"] * 4, replies)
        # The local copies and the relayed one are written by separate jobs:
        # wait for all three, then check that each is there once.
        await eventually(lambda: self.maildir(root_b, "carol") and self.maildir(root_a, "dave")
                         and self.maildir(root_a, "alice"))
        self.assertEqual(len(self.maildir(root_b, "carol")), 1)
        self.assertEqual(len(self.maildir(root_a, "dave")), 1)
        self.assertEqual(len(self.maildir(root_a, "alice")), 1)
        self.assertEqual(self.maildir(root_a, "carol"), [])
        self.assertEqual(self.maildir(root_b, "dave"), [])
        with open(self.maildir(root_b, "carol")[0], "rb") as f:
            copy = f.read()
        self.assertIn(b"by b.example.test", copy)
        self.assertIn(b"by a.example.test", copy)
        await eventually(lambda: not glob.glob(os.path.join(root_a, "mailroot", "queue",
                                                            "*.json")))

    async def test_loops(self):
        """
        Node a answers 451 4.4.6 when the host that holds a recipient's
        mailbox (its EHLO name is the mailHost) sends it mail for that
        mailbox, a list with such a member too, and still takes others; and
        when the mailbox host's address and port are node a's own listener,
        the relay stops with 5.4.6 ("loops back to myself"): the sender gets
        an NDR, and nothing is sent round again.
        """
        port_a = free_port()
        root_a, top = self.node("a", port_a, f"host_port = {port_a}\n")
        replies = await self.send(port_a, [b"carol@example.com", b"team@example.com",
                                           b"alice@example.com"], helo=b"B.example.test")
        self.assertTrue(replies[0].startswith("451 4.4.6"), replies)
        self.assertTrue(replies[1].startswith("451 4.4.6"), replies)
        self.assertTrue(replies[2].startswith("250"), replies)
        replies = await self.send(port_a, [b"carol@example.com"], sender=b"alice@example.com")
        self.assertTrue(replies[-1].startswith("250"), replies)
        # alice's own copy from the first message, then the NDR for carol.
        await eventually(lambda: len(self.maildir(root_a, "alice")) == 2)
        reports = []
        for path in self.maildir(root_a, "alice"):
            with open(path, "rb") as f:
                reports.append(f.read())
        [ndr] = [r for r in reports if b"report-type=delivery-status" in r]
        self.assertIn(b"5.4.6", ndr)
        self.assertIn(b"carol@example.com", ndr)
        self.assertEqual(self.maildir(root_a, "carol"), [])
        self.assertEqual(top.qmgr.counters["bounced"], 1)


class MailHostLMTPTests(unittest.TestCase):
    """host_transport = lmtp: the other host's store is reached by LMTP."""

    skip = SLAPD_MISSING or DOVECOT_MISSING
    timeout = 60

    async def test_lmtp_to_mail_host(self):
        """
        With host_transport = lmtp, mail for gina (mailHost 127.0.0.1) is
        delivered by LMTP into the Dovecot there (host_port), not into a
        Maildir of this node; alice's stays here.
        """
        slapd = start_slapd(self)
        dovecot = start_dovecot(self, {"gina@example.com": ""})
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        port = free_port()
        with open(os.path.join(root, "etc", "smtpd.ini"), "w") as f:
            f.write(
                "[server]\nhostname = a.example.test\n"
                f"listen = tcp:{port}:interface=127.0.0.1\n"
                f"[directory]\nurl = {slapd.url}\nbase = {SUFFIX}\n"
                f"bind_dn = cn=smtpd,ou=services,{SUFFIX}\nbind_password = service-secret\n"
                f"host_transport = lmtp\nhost_port = {dovecot.port}\n"
                "[domain:example.com]\ntype = local\n")
        top = build(load_config(os.path.join(root, "etc", "smtpd.ini")), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        client = await connect(self, port)
        await client.command(b"EHLO client.example.org\r\n")
        await client.command(b"MAIL FROM:<sender@example.org>\r\n")
        self.assertTrue((await client.command(b"RCPT TO:<gina@example.com>\r\n"))
                        .startswith("250"))
        self.assertTrue((await client.command(b"RCPT TO:<alice@example.com>\r\n"))
                        .startswith("250"))
        await client.command(b"DATA\r\n")
        self.assertTrue((await client.command(MESSAGE)).startswith("250"))
        await eventually(lambda: dovecot.messages("gina@example.com"))
        [stored] = dovecot.messages("gina@example.com")
        self.assertIn(b"Message-ID: <mailhost@example.org>", stored)
        self.assertEqual(len(MailHostTests.maildir(root, "alice")), 1)
        self.assertEqual(MailHostTests.maildir(root, "gina"), [])
