"""
The whole server with [directory] on a real OpenLDAP slapd: RCPT and AUTH
answered by the directory, lists expanded before the queue, and a directory
that is down refusing only for now (451 4.4.3, 454 4.7.0).
"""

from __future__ import annotations

import base64
import glob
import json
import os

from twisted.internet import reactor
from twisted.trial import unittest

from smtpd.config import load_config
from smtpd.tap import build
from tests import support
from tests.inbound import connect
from tests.slapd import SLAPD_MISSING, SUFFIX, start_slapd
from tests.test_e2e import eventually

MESSAGE = b"From: <sender@example.org>\r\nSubject: directory\r\n\r\nhello\r\n.\r\n"


class DirectoryServerTests(unittest.TestCase):
    """SMTP in, recipients and logins from LDAP."""

    skip = SLAPD_MISSING
    timeout = 60

    def start(self) -> None:
        """slapd, a smart-host sink, and the built server with [directory] on them."""
        self.slapd = start_slapd(self)
        self.sink = support.start_smtp_sink(self, "127.0.0.1")
        root = self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        with open(os.path.join(root, "etc", "smtpd.ini"), "w") as f:
            f.write(
                "[server]\nhostname = mx.example.com\nlisten = tcp:0:interface=127.0.0.1\n"
                "[auth]\nallow_plaintext = yes\n"
                f"[delivery]\nsmart_host = [127.0.0.1]:{self.sink.port}\noutbound_tls = none\n"
                f"[directory]\nurl = {self.slapd.url}\nbase = {SUFFIX}\n"
                f"bind_dn = cn=smtpd,ou=services,{SUFFIX}\nbind_password = service-secret\n"
                "positive_ttl = 0\nnegative_ttl = 0\n"
                "[logging]\npath = activity.log\nformat = json\n"
                "[domain:example.com]\ntype = local\n")
        top = build(load_config(os.path.join(root, "etc", "smtpd.ini")), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        [listener] = top.listeners.listeners
        self.port = listener.address()[1]

    def maildir(self, user: str) -> list[str]:
        """The new messages in the Maildir of C{user}@example.com."""
        return glob.glob(os.path.join(self.root, "mailroot", "mailbox", "example.com", user,
                                      "new", "*"))

    async def test_rcpt_and_lists(self):
        """
        A directory user is accepted (by an alternate address too), an unknown
        one refused with 550 5.1.1, and a list expands: its local member gets
        the message in its Maildir, the others (a routed user, a remote
        address) leave by the smart host with the list as ORCPT.
        """
        self.start()
        client = await connect(self, self.port)
        await client.command(b"EHLO client.example.org\r\n")
        await client.command(b"MAIL FROM:<sender@example.org>\r\n")
        self.assertEqual(await client.command(b"RCPT TO:<a.example@example.com>\r\n"),
                         "250 2.1.5 Ok")
        self.assertTrue((await client.command(b"RCPT TO:<nobody@example.com>\r\n"))
                        .startswith("550 5.1.1"))
        self.assertEqual(await client.command(b"RCPT TO:<sales@example.com>\r\n"),
                         "250 2.1.5 Ok")
        await client.command(b"DATA\r\n")
        self.assertTrue((await client.command(MESSAGE)).startswith("250 2.0.0"))
        await eventually(lambda: self.maildir("alice") and self.sink.messages)
        self.assertEqual(len(self.maildir("alice")), 1)  # once, though named twice
        [relayed] = self.sink.messages
        self.assertEqual(sorted(relayed.recipients),
                         ["bob@branch.example.net", "partner@elsewhere.example.org"])

    async def test_auth(self):
        """AUTH PLAIN is a bind as the user: the right password 235, a wrong one 535."""
        self.start()
        client = await connect(self, self.port)
        await client.command(b"EHLO client.example.org\r\n")
        good = base64.b64encode(b"\0alice@example.com\0alice-secret")
        bad = base64.b64encode(b"\0alice@example.com\0wrong")
        self.assertTrue((await client.command(b"AUTH PLAIN " + bad + b"\r\n")).startswith("535"))
        self.assertTrue((await client.command(b"AUTH PLAIN " + good + b"\r\n")).startswith("235"))

    async def test_directory_down(self):
        """
        With slapd stopped, RCPT to a local address gets 451 4.4.3 and AUTH
        454 4.7.0, never a 5xx; mail accepted before is delivered all the same.
        """
        self.start()
        client = await connect(self, self.port)
        await client.command(b"EHLO client.example.org\r\n")
        await client.command(b"MAIL FROM:<sender@example.org>\r\n")
        await client.command(b"RCPT TO:<alice@example.com>\r\n")
        self.slapd.stop()
        await client.command(b"DATA\r\n")
        self.assertTrue((await client.command(MESSAGE)).startswith("250 2.0.0"))
        await client.command(b"MAIL FROM:<sender@example.org>\r\n")
        reply = await client.command(b"RCPT TO:<alice@example.com>\r\n")
        self.assertTrue(reply.startswith("451 4.4.3"), reply)
        reply = await client.command(b"RCPT TO:<nobody@example.com>\r\n")
        self.assertTrue(reply.startswith("451 4.4.3"), reply)
        await client.command(b"RSET\r\n")
        reply = await client.command(
            b"AUTH PLAIN " + base64.b64encode(b"\0alice@example.com\0alice-secret") + b"\r\n")
        self.assertTrue(reply.startswith("454 4.7.0"), reply)
        await eventually(lambda: self.maildir("alice"))
        self.assertEqual(glob.glob(os.path.join(self.root, "mailroot", "queue", "*.json")), [])
        lines = [json.loads(line) for line in open(os.path.join(self.root, "activity.log"))]
        self.assertIn(451, [line.get("status") for line in lines])
