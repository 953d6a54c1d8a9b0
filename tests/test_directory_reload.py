"""
Reloading [directory] without a restart, against two real OpenLDAP slapd
servers: a new URL is used at once (new connection, empty cache), an
unchanged section has its cache flushed, a section that cannot be used
leaves the old directory in place, and an empty URL goes back to etc/users.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial import unittest

from smtpd.config import load_config
from smtpd.tap import build
from tests.inbound import connect
from tests.slapd import SLAPD_MISSING, SUFFIX, TREE, start_slapd


class DirectoryReloadTests(unittest.TestCase):
    """admin.reload() with [directory] changes."""

    skip = SLAPD_MISSING
    timeout = 60

    def setUp(self):
        self.first = start_slapd(self)
        # The second directory knows zed instead of alice.
        self.second = start_slapd(self, TREE.replace("alice", "zed"))
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "etc"))
        self.path = os.path.join(self.root, "etc", "smtpd.ini")
        self.write(self.first.url)
        self.top = build(load_config(self.path), reactor)
        self.top.startService()
        self.addCleanup(self.top.stopService)
        [listener] = self.top.listeners.listeners
        self.port = listener.address()[1]

    def write(self, url: str, extra: str = "") -> None:
        """The configuration with [directory] url = C{url}."""
        with open(self.path, "w") as f:
            f.write(
                "[server]\nhostname = mx.example.com\nlisten = tcp:0:interface=127.0.0.1\n"
                f"[directory]\nurl = {url}\nbase = {SUFFIX}\n"
                f"bind_dn = cn=smtpd,ou=services,{SUFFIX}\nbind_password = service-secret\n"
                f"positive_ttl = 1h\nnegative_ttl = 1h\n{extra}"
                "[domain:example.com]\ntype = local\n")

    async def rcpt(self, *addresses: bytes) -> list[str]:
        """The reply codes and status of RCPT for each of C{addresses}."""
        client = await connect(self, self.port)
        await client.command(b"EHLO client.example.org\r\n")
        await client.command(b"MAIL FROM:<sender@example.org>\r\n")
        replies = [(await client.command(b"RCPT TO:<" + a + b">\r\n"))[:9] for a in addresses]
        await client.command(b"QUIT\r\n")
        return replies

    async def test_new_url(self):
        """
        A changed url is reported as changed (not as needing a restart) and
        the next RCPT asks the new directory: zed is known, alice is not
        (the old directory's cached answers are gone), and the old server's
        connection is closed (stopping it changes nothing).
        """
        self.assertEqual(await self.rcpt(b"alice@example.com", b"zed@example.com"),
                         ["250 2.1.5", "550 5.1.1"])
        old = self.top.inbound.directory
        self.write(self.second.url)
        report = self.top.reload()
        self.assertTrue(report["ok"], report)
        self.assertIn("directory.url", report["changed"])
        self.assertNotIn("directory.url", report["at_restart"])
        self.assertIsNot(self.top.inbound.directory, old)
        self.assertIs(self.top.pop3.directory, self.top.inbound.directory)
        self.assertIsNone(old._connection)
        self.first.stop()
        self.assertEqual(await self.rcpt(b"alice@example.com", b"zed@example.com"),
                         ["550 5.1.1", "250 2.1.5"])

    async def test_unchanged_section_cache_flushed(self):
        """
        A reload with [directory] unchanged keeps the directory but forgets
        its cached answers: with slapd stopped, alice (cached for an hour) is
        accepted before the reload and gets 451 4.4.3 after it.
        """
        directory = self.top.inbound.directory
        self.assertEqual(await self.rcpt(b"alice@example.com"), ["250 2.1.5"])
        self.first.stop()
        self.assertEqual(await self.rcpt(b"alice@example.com"), ["250 2.1.5"])
        self.assertTrue(self.top.reload()["ok"])
        self.assertIs(self.top.inbound.directory, directory)
        self.assertEqual(await self.rcpt(b"alice@example.com"), ["451 4.4.3"])

    async def test_error_keeps_old_directory(self):
        """
        A new [directory] that cannot be used (a CA file that does not exist,
        or a URL that is not ldap://) is refused with its reason and the old
        directory stays in use, its cache too.
        """
        self.assertEqual(await self.rcpt(b"zed@example.com"), ["550 5.1.1"])
        old = self.top.inbound.directory
        for url, extra in (
            (self.second.url, f"starttls = yes\nca_certificates = {self.root}/missing.pem\n"),
            ("http://127.0.0.1/", ""),
        ):
            self.write(url, extra)
            report = self.top.reload()
            self.assertFalse(report["ok"], report)
            [error] = report["errors"]
            self.assertIn("[directory]", error)
            self.assertIs(self.top.inbound.directory, old)
        self.assertEqual(await self.rcpt(b"zed@example.com", b"alice@example.com"),
                         ["550 5.1.1", "250 2.1.5"])

    async def test_turned_off(self):
        """An empty url after a reload: recipients come from etc/users again."""
        with open(os.path.join(self.root, "etc", "users"), "w") as f:
            f.write("zed@example.com:$2b$04$" + "a" * 53 + "\n")
        self.write("")
        report = self.top.reload()
        self.assertTrue(report["ok"], report)
        self.assertIsNone(self.top.inbound.directory)
        self.assertIsNone(self.top.pop3.directory)
        self.assertEqual(await self.rcpt(b"alice@example.com", b"zed@example.com"),
                         ["550 5.1.1", "250 2.1.5"])
