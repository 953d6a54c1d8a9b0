"""
The whole server in one process, end to end over real sockets: a relay client
talks to smtpd's listener; the message goes through the queue and the queue
manager to destination SMTP servers on 127.0.0.2, 127.0.0.3, found through a
real twisted.names server; bounces come back into a local Maildir.
"""

from __future__ import annotations

import email
import glob
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from smtpd.config import load_config
from smtpd.tap import build
from tests import support
from tests.inbound import connect

MESSAGE = b"From: <sender@localhost>\r\nTo: <user@dest.test>\r\nSubject: relay\r\n\r\n.dot line\r\nbody\r\n"


def sleep(seconds: float) -> defer.Deferred:
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def eventually(predicate, timeout: float = 10.0):
    """Wait until C{predicate()} is true (polling the real reactor)."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await sleep(0.02)
    raise AssertionError("condition not reached in time")


class EndToEndTests(unittest.TestCase):
    """Relay client -> smtpd -> queue -> MX."""

    timeout = 30

    def start(self, dns_port: int, remote_port: int, delivery: str = "") -> str:
        """
        Write a deployment (C{delivery}: more [delivery] lines) and start the
        service tree; returns the root.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        path = os.path.join(root, "etc", "smtpd.ini")
        with open(path, "w") as f:
            f.write(
                "[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
                f"[delivery]\ndns_servers = 127.0.0.1:{dns_port}\nremote_port = {remote_port}\n"
                "outbound_tls = none\noutbound_timeout = 10s\n" + delivery +
                "[logging]\npath = activity.log\nformat = json\n"
                "[domain:localhost]\ntype = local\n"
            )
        config = load_config(path)
        top = build(config, reactor)
        top.startService()
        self.addCleanup(top.stopService)
        [listener] = top.listeners.listeners
        self.port = listener.address()[1]
        self.root = root
        self.top = top
        return root

    async def send(self, sender: bytes, rcpts: list[bytes], body: bytes = MESSAGE) -> str:
        client = await connect(self, self.port)
        await client.command(b"EHLO client.test\r\n")
        self.assertEqual(await client.command(b"MAIL FROM:<" + sender + b">\r\n"), "250 2.1.0 Ok")
        for rcpt in rcpts:
            self.assertEqual(await client.command(b"RCPT TO:<" + rcpt + b">\r\n"), "250 2.1.5 Ok")
        self.assertTrue((await client.command(b"DATA\r\n")).startswith("354 "))
        reply = await client.command(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        await client.command(b"QUIT\r\n")
        return reply.rsplit(" ", 1)[1]

    def maildir(self, user: str) -> list[bytes]:
        found = []
        for path in sorted(glob.glob(os.path.join(self.root, "mailroot", "mailbox", "localhost", user, "new", "*"))):
            with open(path, "rb") as f:
                found.append(f.read())
        return found

    def queue_empty(self) -> bool:
        return not glob.glob(os.path.join(self.root, "mailroot", "queue", "*.json"))

    async def test_relay_to_mx(self):
        """
        Mail from a relay client to user@dest.test arrives at the MX with the
        exact envelope and body (our Received: line on top, dots intact).
        """
        [sink] = support.start_smtp_sinks(self, ["127.0.0.2"])
        dns = support.start_dns_server(
            self, {"dest.test": {"dest.test": [support.mx(10, "mx1.dest.test")],
                                 "mx1.dest.test": [support.a("127.0.0.2")]}}
        )
        self.start(dns[1], sink.port)
        queue_id = await self.send(b"sender@localhost", [b"user@dest.test", b"Other@Dest.test"])
        await eventually(lambda: sink.messages and self.queue_empty())
        [message] = sink.messages
        self.assertEqual(message.sender, "sender@localhost")
        self.assertEqual(message.recipients, ["user@dest.test", "Other@dest.test"])
        self.assertTrue(message.data.startswith(b"Received: from client.test ([127.0.0.1])\r\n"))
        self.assertIn(b" id " + queue_id.encode(), message.data)
        self.assertTrue(message.data.endswith(MESSAGE), message.data)

    async def test_next_mx_when_first_refuses(self):
        """The preferred MX refusing connections: the next MX receives."""
        [sink] = support.start_smtp_sinks(self, ["127.0.0.3"])
        dns = support.start_dns_server(
            self, {"dest.test": {"dest.test": [support.mx(10, "mx1.dest.test"), support.mx(20, "mx2.dest.test")],
                                 "mx1.dest.test": [support.a("127.0.0.2")],
                                 "mx2.dest.test": [support.a("127.0.0.3")]}}
        )
        self.start(dns[1], sink.port)
        await self.send(b"sender@localhost", [b"user@dest.test"])
        await eventually(lambda: sink.messages and self.queue_empty())
        self.assertEqual(sink.messages[0].recipients, ["user@dest.test"])

    async def test_per_recipient_failure_bounces_that_one(self):
        """
        A 550 for one recipient: the others are delivered and the sender gets
        an RFC 3464 NDR naming only the failed one.
        """
        script = support.SinkScript()
        script.rcpt = {"bad@dest.test": "550 5.1.1 no such user here"}
        [sink] = support.start_smtp_sinks(self, ["127.0.0.2"], [script])
        dns = support.start_dns_server(
            self, {"dest.test": {"dest.test": [support.mx(10, "mx1.dest.test")],
                                 "mx1.dest.test": [support.a("127.0.0.2")]}}
        )
        self.start(dns[1], sink.port)
        await self.send(b"postmaster@localhost", [b"good@dest.test", b"bad@dest.test"])
        await eventually(lambda: self.maildir("postmaster") and self.queue_empty())
        self.assertEqual(sink.messages[0].recipients, ["good@dest.test"])
        [ndr] = self.maildir("postmaster")
        self.assertIn(b"Return-Path: <>\n", ndr)
        report = email.message_from_bytes(ndr)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        status = ndr.split(b"message/delivery-status", 1)[1]
        self.assertIn(b"Final-Recipient: rfc822; bad@dest.test", status)
        self.assertIn(b"Status: 5.1.1", status)
        self.assertNotIn(b"good@dest.test", status)

    async def test_null_mx_and_nxdomain(self):
        """Null MX (5.1.10) and NXDOMAIN (5.1.2): NDRs, and no connection at all."""
        [sink] = support.start_smtp_sinks(self, ["127.0.0.2"])
        dns = support.start_dns_server(
            self, {"null.test": {"null.test": [support.mx(0, "")]},
                   "gone.test": {"other.gone.test": [support.a("127.0.0.2")]}}
        )
        self.start(dns[1], sink.port)
        await self.send(b"postmaster@localhost", [b"a@null.test", b"b@nothere.gone.test"])
        await eventually(lambda: self.maildir("postmaster") and self.queue_empty())
        [ndr] = self.maildir("postmaster")
        self.assertIn(b"Status: 5.1.10", ndr)
        self.assertIn(b"Status: 5.1.2", ndr)
        self.assertEqual(sink.connections, 0)

    async def test_bracketed_smart_host_skips_dns(self):
        """A smart host in brackets: delivered there, not one DNS query."""
        [sink] = support.start_smtp_sinks(self, ["127.0.0.2"])
        dns = support.start_dns_server(self, {"dest.test": {}})
        self.start(dns[1], 1, f"smart_host = [127.0.0.2]:{sink.port}\n")
        await self.send(b"sender@localhost", [b"user@dest.test"])
        await eventually(lambda: sink.messages and self.queue_empty())
        self.assertEqual(dns.query_count(), 0)

    async def test_bounce_of_bounce_to_badmail(self):
        """A bounce (from <>) that cannot be delivered lands in badmail; nothing loops."""
        script = support.SinkScript()
        script.rcpt = {"gone@dest.test": "550 5.1.1 no such user here"}
        [sink] = support.start_smtp_sinks(self, ["127.0.0.2"], [script])
        dns = support.start_dns_server(
            self, {"dest.test": {"dest.test": [support.mx(10, "mx1.dest.test")],
                                 "mx1.dest.test": [support.a("127.0.0.2")]}}
        )
        root = self.start(dns[1], sink.port)
        queue_id = await self.send(b"", [b"gone@dest.test"])
        bad = os.path.join(root, "mailroot", "badmail")
        await eventually(lambda: os.path.exists(os.path.join(bad, queue_id + ".bdr")) and self.queue_empty())
        self.assertTrue(os.path.exists(os.path.join(bad, queue_id + ".bad")))
        self.assertEqual(len(sink.messages), 0)
        await sleep(0.2)
        self.assertTrue(self.queue_empty())
        self.assertEqual(sink.connections, 1)


class AuthPoolTests(unittest.TestCase):
    """Password checks run in the server's own auth thread pool."""

    async def test_auth_through_built_server(self):
        """AUTH PLAIN against etc/users works in the assembled server."""
        import base64

        from smtpd.directory import accounts as users

        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        users.add(os.path.join(root, "etc", "users"), "bob@localhost", "secret", rounds=4)
        path = os.path.join(root, "etc", "smtpd.ini")
        with open(path, "w") as f:
            f.write(
                "[server]\nlisten = tcp:0:interface=127.0.0.1\n"
                "[auth]\nallow_plaintext = yes\n[domain:localhost]\ntype = local\n"
            )
        top = build(load_config(path), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        [listener] = top.listeners.listeners
        client = await connect(self, listener.address()[1])
        await client.command(b"EHLO c\r\n")
        token = base64.b64encode(b"\0bob@localhost\0secret")
        self.assertEqual(
            await client.command(b"AUTH PLAIN " + token + b"\r\n"),
            "235 2.7.0 Authentication successful",
        )
