"""
The POP3 session driven through a StringTransport, time through a Clock: the
real L{POP3Server} with real accounts (bcrypt) and a real Maildir on disk.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from dataclasses import replace

import bcrypt
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from smtpd.config import AccessConfig, AuthConfig, Config, DomainConfig, ServerConfig
from smtpd.directory.accounts import Users
from smtpd.inbound.policy import may_connect
from smtpd.pop3.server import POP3Server
from smtpd.pop3.session import POP3Session
from smtpd.util.activity import ActivityLog

USER = "alice@example.test"
MESSAGES = {
    "1000.M1P1Q1.mx": b"Subject: one\n\nfirst line\nsecond line\n",
    "1000.M2P1Q2.mx": b"Subject: two\n\n.dotted\n",
}


def run_now(f, *args):
    """Blocking work done at once, in this thread (the same functions, no pool)."""
    return maybeDeferred(f, *args)


class SessionTests(unittest.TestCase):
    """One session at a time over a StringTransport."""

    def setUp(self):
        root = os.path.abspath(self.mktemp())
        self.maildir = os.path.join(root, "mailroot", "mailbox", "example.test", "alice")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.maildir, sub))
        for name, data in MESSAGES.items():
            with open(os.path.join(self.maildir, "new", name), "wb") as f:
                f.write(data)
        config = Config(
            path=os.path.join(root, "etc", "smtpd.ini"), root=root,
            server=ServerConfig(hostname="mx.example.test",
                                mailroot=os.path.join(root, "mailroot")),
            auth=AuthConfig(allow_plaintext=True),
            domains=(DomainConfig("example.test"),),
        )
        users = Users({USER: bcrypt.hashpw(b"secret", bcrypt.gensalt(4))})
        self.clock = Clock()
        self.log_path = os.path.join(root, "activity.log")
        activity = ActivityLog("w3c", self.log_path, self.clock, "mx.example.test")
        activity.open()
        self.addCleanup(activity.close)
        self.server = POP3Server(config, users, self.clock, run_now, run_now, None, activity,
                                 login_delay=10, failure_delay=1.0)

    def connect(self, implicit_tls: bool = False):
        """A new session and its transport; the greeting is read off."""
        session = POP3Session(self.server, implicit_tls)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        session.makeConnection(transport)
        self.assertEqual(self.take(transport), [b"+OK mx.example.test POP3 ready"])
        return session, transport

    def take(self, transport) -> list[bytes]:
        """The lines written since the last call (a file being sent is sent first)."""
        while transport.producer is not None:
            transport.producer.resumeProducing()
        lines = transport.value().split(b"\r\n")[:-1]
        transport.clear()
        return lines

    def login(self, session, transport):
        session.dataReceived(b"USER alice@example.test\r\nPASS secret\r\n")
        self.assertEqual(self.take(transport)[-1], b"+OK Logged in, 2 messages")

    def test_pipelined_commands_answered_in_order(self):
        """Commands pipelined behind PASS wait for the login, then run in order."""
        session, transport = self.connect()
        session.dataReceived(b"USER alice@example.test\r\nPASS secret\r\nSTAT\r\nUIDL 2\r\nQUIT\r\n")
        self.assertEqual(self.take(transport), [
            b"+OK Send PASS", b"+OK Logged in, 2 messages", b"+OK 2 66",
            b"+OK 2 1000.M2P1Q2.mx", b"+OK Bye, 0 messages removed"])
        self.assertTrue(transport.disconnecting)

    def test_auth_plain(self):
        """AUTH PLAIN with an initial response, and with a continuation; * cancels."""
        token = base64.b64encode(b"\0alice@example.test\0secret")
        session, transport = self.connect()
        session.dataReceived(b"AUTH PLAIN " + token + b"\r\n")
        self.assertEqual(self.take(transport), [b"+OK Logged in, 2 messages"])
        session.connectionLost()
        self.clock.advance(10)
        session, transport = self.connect()
        session.dataReceived(b"AUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n" + token + b"\r\n")
        self.assertEqual(self.take(transport), [
            b"+ ", b"-ERR Authentication cancelled", b"+ ", b"+OK Logged in, 2 messages"])

    def test_auth_plain_as_another_user_refused(self):
        """An authorization identity other than the login is refused."""
        session, transport = self.connect()
        token = base64.b64encode(b"bob@example.test\0alice@example.test\0secret")
        session.dataReceived(b"AUTH PLAIN " + token + b"\r\nAUTH PLAIN !!\r\n")
        self.assertEqual(self.take(transport), [
            b"-ERR [AUTH] Cannot log in as another user", b"-ERR Cannot decode the response"])

    def test_failures_are_delayed_then_end_the_session(self):
        """A wrong password is answered a second later; the third closes the session."""
        session, transport = self.connect()
        for attempt in range(3):
            session.dataReceived(b"USER alice@example.test\r\nPASS wrong\r\n")
            self.assertEqual(self.take(transport), [b"+OK Send PASS"])
            self.clock.advance(0.9)
            self.assertEqual(self.take(transport), [])
            self.clock.advance(0.1)
            [reply] = self.take(transport)
            self.assertTrue(reply.startswith(b"-ERR [AUTH] Authentication failed"), reply)
            self.assertEqual(transport.disconnecting, attempt == 2)

    def test_unknown_account_refused_like_a_wrong_password(self):
        """An unknown login gets the same reply as a wrong password."""
        session, transport = self.connect()
        session.dataReceived(b"USER bob@example.test\r\nPASS secret\r\n")
        self.clock.advance(1)
        self.assertEqual(self.take(transport)[-1], b"-ERR [AUTH] Authentication failed")

    def test_login_delay(self):
        """CAPA announces LOGIN-DELAY 10; a login 5 s after the last is refused."""
        session, transport = self.connect()
        session.dataReceived(b"CAPA\r\n")
        self.assertIn(b"LOGIN-DELAY 10", self.take(transport))
        self.login(session, transport)
        session.dataReceived(b"QUIT\r\n")
        session.connectionLost()
        self.clock.advance(5)
        session, transport = self.connect()
        session.dataReceived(b"USER alice@example.test\r\nPASS secret\r\n")
        self.assertTrue(self.take(transport)[-1].startswith(b"-ERR [LOGIN-DELAY]"))
        self.clock.advance(5)
        self.login(session, transport)

    def test_idle_timeout(self):
        """After 10 idle minutes the session closes, deletes nothing, frees the mailbox."""
        session, transport = self.connect()
        self.login(session, transport)
        session.dataReceived(b"DELE 1\r\n")
        self.take(transport)
        self.clock.advance(599)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.take(transport), [b"-ERR Disconnected for inactivity"])
        self.assertTrue(transport.disconnecting)
        session.connectionLost()
        self.assertEqual(len(os.listdir(os.path.join(self.maildir, "cur"))), 2)
        self.clock.advance(10)
        self.login(*self.connect())

    def test_deleted_messages_are_not_listed(self):
        """After DELE 1, STAT, LIST and UIDL leave it out and RETR 1 fails; RSET undoes."""
        session, transport = self.connect()
        self.login(session, transport)
        session.dataReceived(b"DELE 1\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nDELE 1\r\n")
        self.assertEqual(self.take(transport), [
            b"+OK Message 1 deleted", b"+OK 1 25", b"+OK 1 messages", b"2 25", b".",
            b"+OK ", b"2 1000.M2P1Q2.mx", b".", b"-ERR No such message",
            b"-ERR No such message"])
        session.dataReceived(b"RSET\r\nSTAT\r\n")
        self.assertEqual(self.take(transport), [b"+OK ", b"+OK 2 66"])

    def test_retr_and_top(self):
        """RETR sends CRLF lines, dot-stuffed; TOP 1 1 the header and one body line."""
        session, transport = self.connect()
        self.login(session, transport)
        session.dataReceived(b"RETR 2\r\n")
        self.assertEqual(self.take(transport),
                         [b"+OK 25", b"Subject: two", b"", b"..dotted", b"."])
        session.dataReceived(b"TOP 1 1\r\n")
        self.assertEqual(self.take(transport),
                         [b"+OK Top of message follows", b"Subject: one", b"", b"first line", b"."])
        session.dataReceived(b"TOP 1 x\r\n")
        self.assertEqual(self.take(transport), [b"-ERR Bad line count"])

    def test_dot_stuffing_across_chunks(self):
        """A line starting with "." is stuffed at the start of a message and of a chunk."""
        session, _ = self.connect()
        session.line_start = True
        self.assertEqual(session.transformChunk(b".a\nb"), b"..a\r\nb")
        self.assertEqual(session.transformChunk(b"c\n"), b"c\r\n")
        self.assertEqual(session.transformChunk(b".\n"), b"..\r\n")

    def test_wrong_commands(self):
        """Unknown, out-of-state and wrongly-argued commands get -ERR; the session goes on."""
        session, transport = self.connect()
        session.dataReceived(b"FOO\r\nSTAT\r\nAPOP a b\r\n\r\nLIST 1 2\r\n")
        self.assertEqual(self.take(transport), [
            b"-ERR Unknown command", b"-ERR Log in first", b"-ERR APOP not supported",
            b"-ERR Unknown command", b"-ERR Log in first"])
        self.login(session, transport)
        session.dataReceived(b"USER x\r\nLIST 1 2\r\nDELE x\r\nRETR 9\r\nNOOP\r\n")
        self.assertEqual(self.take(transport), [
            b"-ERR Already logged in", b"-ERR Wrong arguments for LIST",
            b"-ERR No such message", b"-ERR No such message", b"+OK "])

    def test_overlong_line(self):
        """A line over 2048 octets gets -ERR and is skipped whole."""
        session, transport = self.connect()
        session.dataReceived(b"USER " + b"x" * 3000)
        session.dataReceived(b"yyy\r\nCAPA\r\n")
        lines = self.take(transport)
        self.assertEqual(lines[0], b"-ERR Line too long")
        self.assertTrue(lines[1].startswith(b"+OK"))

    def test_connection_limit(self):
        """Past [server] max_connections sessions, a new one gets -ERR [SYS/TEMP] and is closed."""
        self.server.config = replace(self.server.config, server=replace(
            self.server.config.server, max_connections=1))
        self.connect()
        session = POP3Session(self.server)
        transport = StringTransport()
        session.makeConnection(transport)
        self.assertTrue(self.take(transport)[0].startswith(b"-ERR [SYS/TEMP] Too many"))
        self.assertTrue(transport.disconnecting)
        session.connectionLost()
        self.assertEqual(len(self.server.sessions), 1)

    def test_access_denied(self):
        """A client that [access] denies gets -ERR [SYS/PERM] and is closed."""
        self.server.may_connect = may_connect
        self.server.config = replace(self.server.config, access=AccessConfig(
            deny=(ipaddress.ip_network("192.0.2.0/24"),)))
        session = POP3Session(self.server)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 4000))
        session.makeConnection(transport)
        self.assertEqual(self.take(transport), [b"-ERR [SYS/PERM] Access denied"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.server.sessions, {})
        self.connect()

    def test_capabilities(self):
        """CAPA lists USER and SASL PLAIN before login, not after; no STLS without TLS."""
        session, transport = self.connect(implicit_tls=True)
        session.dataReceived(b"CAPA\r\n")
        before = self.take(transport)
        for cap in (b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING", b"USER", b"SASL PLAIN"):
            self.assertIn(cap, before)
        self.assertNotIn(b"STLS", before)
        self.login(session, transport)
        session.dataReceived(b"CAPA\r\n")
        after = self.take(transport)
        self.assertNotIn(b"USER", after)
        self.assertIn(b"UIDL", after)
