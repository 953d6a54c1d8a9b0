"""
POP3 logins through the [directory] against a real OpenLDAP slapd, with
Python's poplib over STLS: the mailbox a directory user logs in to, a wrong
password, a directory that is down, and the failed-login counters that POP3
and SMTP AUTH share (a guesser blocked on one is blocked on the other).
"""

from __future__ import annotations

import base64
import os
import poplib
import ssl

from twisted.internet import reactor, threads
from twisted.trial import unittest

from smtpd.config import load_config
from smtpd.tap import build
from tests.inbound import connect
from tests.slapd import SLAPD_MISSING, SUFFIX, free_port, start_slapd

MESSAGE = b"From: <sender@example.org>\r\nSubject: pop me\r\n\r\nhello\r\n.\r\n"


def unverified() -> ssl.SSLContext:
    """A client TLS context for the server's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class POP3DirectoryTests(unittest.TestCase):
    """[pop3] with [directory] on: the directory answers logins."""

    skip = SLAPD_MISSING
    timeout = 60

    def start(self, access: str = "") -> None:
        """slapd and the built server with [directory] and [pop3] listen."""
        self.slapd = start_slapd(self)
        root = self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        self.smtp_port, self.pop3_port = free_port(), free_port()
        with open(os.path.join(root, "etc", "smtpd.ini"), "w") as f:
            f.write(
                "[server]\nhostname = mx.example.com\n"
                f"listen = tcp:{self.smtp_port}:interface=127.0.0.1\n"
                "[auth]\nallow_plaintext = yes\n"
                f"[access]\nauth_failure_delay = 0\n{access}"
                f"[pop3]\nlisten = tcp:{self.pop3_port}:interface=127.0.0.1\n"
                f"[directory]\nurl = {self.slapd.url}\nbase = {SUFFIX}\n"
                f"bind_dn = cn=smtpd,ou=services,{SUFFIX}\nbind_password = service-secret\n"
                "[domain:example.com]\ntype = local\n")
        self.top = build(load_config(os.path.join(root, "etc", "smtpd.ini")), reactor)
        self.top.startService()
        self.addCleanup(self.top.stopService)

    async def deliver(self, rcpt: bytes) -> None:
        """One message to C{rcpt} over SMTP."""
        client = await connect(self, self.smtp_port)
        await client.command(b"EHLO client.example.org\r\n")
        await client.command(b"MAIL FROM:<sender@example.org>\r\n")
        self.assertTrue((await client.command(b"RCPT TO:<" + rcpt + b">\r\n")).startswith("250"))
        await client.command(b"DATA\r\n")
        self.assertTrue((await client.command(MESSAGE)).startswith("250"))
        await client.command(b"QUIT\r\n")

    def login(self, user: str, password: str) -> poplib.POP3:
        """A poplib session over STLS, logged in (raises poplib.error_proto if refused)."""
        client = poplib.POP3("127.0.0.1", self.pop3_port, timeout=10)
        try:
            client.stls(unverified())
            client.user(user)
            client.pass_(password)
        except BaseException:
            client.close()
            raise
        return client

    def refusal(self, user: str, password: str) -> bytes:
        """The -ERR a login gets."""
        try:
            self.login(user, password).quit()
        except poplib.error_proto as e:
            return e.args[0]
        raise AssertionError(f"{user} logged in with {password!r}")

    async def test_directory_login(self):
        """
        A directory user logs in with the directory password (a simple bind
        as the user) by an alternate address too, and finds the message SMTP
        delivered to the mailbox; a wrong password, an unknown user and an
        entry's password for another user's login are refused.
        """
        self.start()
        await self.deliver(b"alice@example.com")

        def pick_up():
            client = self.login("a.example@example.com", "alice-secret")
            try:
                return client.stat(), client.retr(1)
            finally:
                client.quit()

        (count, _), (_, lines, _) = await threads.deferToThread(pick_up)
        self.assertEqual(count, 1)
        self.assertIn(b"Subject: pop me", lines)
        for user, password in (("alice@example.com", "wrong"), ("nobody@example.com", "x"),
                               ("alice@example.com", "bob-secret")):
            refused = await threads.deferToThread(self.refusal, user, password)
            self.assertTrue(refused.startswith(b"-ERR [AUTH]"), refused)

    async def test_mailbox_on_another_node(self):
        """
        A user whose directory entry puts the mailbox on another node (its
        mailHost) gets C{[SYS/PERM]} naming that node after a right password,
        not an empty mailbox here; the refusal is not counted as a failed
        login, and a wrong password is still C{[AUTH]}.
        """
        self.start()
        for _ in range(3):
            refused = await threads.deferToThread(self.refusal, "carol@example.com",
                                                  "carol-secret")
            self.assertEqual(
                refused, b"-ERR [SYS/PERM] Your mailbox is on b.example.test; "
                b"pick up your mail there")
        refused = await threads.deferToThread(self.refusal, "carol@example.com", "wrong")
        self.assertTrue(refused.startswith(b"-ERR [AUTH]"), refused)
        client = await threads.deferToThread(self.login, "alice@example.com", "alice-secret")
        await threads.deferToThread(client.quit)

    async def test_directory_down(self):
        """
        With slapd stopped, a login gets -ERR [SYS/TEMP] (try later), is not
        counted as a failed password, and the address is not blocked.
        """
        self.start("auth_failure_limit = 1\n")
        self.slapd.stop()
        refused = await threads.deferToThread(self.refusal, "alice@example.com", "alice-secret")
        self.assertTrue(refused.startswith(b"-ERR [SYS/TEMP]"), refused)
        self.assertFalse(self.top.inbound.throttle.blocked("127.0.0.1"))

    async def test_failures_shared_with_smtp(self):
        """
        Failed POP3 logins count with failed SMTP AUTH from the same address:
        two wrong POP3 passwords and one wrong AUTH reach auth_failure_limit
        = 3, and then both services refuse that address at connect (SMTP 421
        4.7.0, POP3 -ERR [SYS/TEMP]), even with the right password.
        """
        self.start("auth_failure_limit = 3\nauth_failures = 10\n")
        for _ in range(2):
            refused = await threads.deferToThread(self.refusal, "alice@example.com", "wrong")
            self.assertTrue(refused.startswith(b"-ERR [AUTH]"), refused)
        client = await connect(self, self.smtp_port)
        await client.command(b"EHLO client.example.org\r\n")
        bad = base64.b64encode(b"\0alice@example.com\0wrong")
        reply = await client.command(b"AUTH PLAIN " + bad + b"\r\n")
        self.assertTrue(reply.startswith("535"), reply)
        self.assertTrue(self.top.inbound.throttle.blocked("127.0.0.1"))
        client = await connect(self, self.smtp_port)
        self.assertTrue(client.replies[0].startswith("421 4.7.0"), client.replies)

        def greeting():
            try:
                poplib.POP3("127.0.0.1", self.pop3_port, timeout=10).quit()
            except poplib.error_proto as e:
                return e.args[0]
            return b"+OK"

        refused = await threads.deferToThread(greeting)
        self.assertTrue(refused.startswith(b"-ERR [SYS/TEMP]"), refused)

    async def test_pop3_failures_block_smtp(self):
        """
        Wrong POP3 passwords alone reach the limit: the session that reached
        it is closed, and SMTP from that address then gets 421 4.7.0.
        """
        self.start("auth_failure_limit = 2\nauth_failures = 10\n")

        def guess_twice():
            client = poplib.POP3("127.0.0.1", self.pop3_port, timeout=10)
            client.stls(unverified())
            replies = []
            for _ in range(2):
                client.user("alice@example.com")
                try:
                    client.pass_("wrong")
                except poplib.error_proto as e:
                    replies.append(e.args[0])
            try:
                client.noop()
            except (poplib.error_proto, OSError) as e:
                replies.append(str(e).encode())
            client.close()
            return replies

        replies = await threads.deferToThread(guess_twice)
        self.assertEqual(replies[0], b"-ERR [AUTH] Authentication failed")
        self.assertIn(b"too many failures", replies[1])
        self.assertEqual(len(replies), 3)  # the session was closed
        client = await connect(self, self.smtp_port)
        self.assertTrue(client.replies[0].startswith("421 4.7.0"), client.replies)
