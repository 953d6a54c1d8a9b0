"""
Inbound edge cases over real sockets: a dot-stuffed line of the maximum
length, a client that never reads its replies, a client that leaves while its
message is being written.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.trial import unittest

from smtpd.util.activity import ActivityLog
from smtpd.cleanup.stage import Cleanup
from smtpd.inbound.registry import Inbound
from smtpd.queue.store import Queue
from smtpd.directory.accounts import Users
from tests.inbound import SMTPServerFixture, connect, make_config


async def _until(predicate, seconds: float = 10.0) -> None:
    """Poll the real reactor until C{predicate()} is true or time runs out."""
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await deferLater(reactor, 0.02, lambda: None)


class InboundMixin:
    def server(self, **sections) -> SMTPServerFixture:
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        self.fixture = SMTPServerFixture(self, make_config(root, **sections))
        self.port = self.fixture.listen()
        return self.fixture


class DataLineTests(InboundMixin, unittest.TestCase):
    """RFC 5321 4.5.3.1.6 / SPEC 5: the 998-octet limit excludes the stuffed dot."""

    async def test_dot_stuffed_line_of_998_octets(self):
        """
        A message line of 998 octets that starts with "." goes on the wire as
        999 octets (dot-stuffed); it is a legal line and must be accepted.
        """
        fixture = self.server()
        client = await connect(self, self.port)
        await client.command(b"EHLO client.example\r\n")
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        line = b"." + b"x" * 997  # 998 octets in the message
        reply = await client.command(b"." + line + b"\r\n.\r\n")
        self.assertTrue(reply.startswith("250 "), reply)
        self.assertEqual(len(fixture.queued()), 1)


class OutputBufferTests(InboundMixin, unittest.TestCase):
    """SPEC 8: memory does not grow without bound for one session."""

    async def test_replies_to_a_client_that_never_reads(self):
        """
        A client that pipelines commands and never reads the replies must be
        held back (stop reading its input) instead of having the server queue
        every reply in memory. 256 KB of "HELP" yields ~3.7 MB of replies.
        """
        self.server()
        client = await connect(self, self.port)
        client.transport.pauseProducing()  # never read again
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        [session] = self.fixture.inbound.sessions.values()
        session.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.send(b"HELP\r\n" * (256 * 1024 // 6))

        def pending_output() -> int:
            t = session.transport
            return len(t.dataBuffer) - t.offset + t._tempDataLen

        await _until(lambda: pending_output() > 2_000_000, seconds=5)
        self.assertLess(pending_output(), 1_000_000)


class ReplyOrderTests(InboundMixin, unittest.TestCase):
    """Replies written straight into the socket and those Twisted buffers stay in order."""

    async def test_order_kept_when_the_socket_fills(self):
        """
        A client pipelines thousands of alternating NOOP and HELP commands
        and reads nothing until it has sent them all: the first replies go
        straight into the socket, the rest wait in Twisted's buffer once it
        is full; read back, every reply is there, in command order.
        """
        self.server()
        pairs = 3000
        pool = reactor.getThreadPool()

        def connect_and_greet() -> socket.socket:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            received = b""
            while not received.endswith(b"\r\n"):
                received += s.recv(4096)  # the banner
            return s

        def talk(s: socket.socket) -> list[bytes]:
            with s:
                s.sendall(b"NOOP\r\nHELP\r\n" * pairs + b"QUIT\r\n")
                replies = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    replies += chunk
            return replies.split(b"\r\n")[:-1]

        client = await deferToThreadPool(reactor, pool, connect_and_greet)
        [session] = self.fixture.inbound.sessions.values()
        # A small send buffer on the server's side: it fills soon.
        session.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        lines = await deferToThreadPool(reactor, pool, talk, client)
        codes = [line[:3] for line in lines]
        self.assertEqual(codes, [b"250", b"214"] * pairs + [b"221"])


class LogAfterDisconnectTests(unittest.TestCase):
    """SPEC 7 / common brief: no traceback, and every command gets its log line."""

    async def test_client_gone_before_queued_reply(self):
        """
        The client drops the connection after the final dot, while the queue
        write is still in progress. The message is queued; its 250 cannot be
        delivered, but the activity log must still get the DATA line and no
        error may be logged.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "mailroot", "queue"))
        config = make_config(root)
        gate = defer.Deferred()
        entered = defer.Deferred()

        def gated(f, *args):
            if not entered.called:
                entered.callback(None)
            return gate.addCallback(
                lambda _: deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
            )

        clock = Clock()
        queue = Queue(os.path.join(root, "mailroot", "queue"), clock, gated)
        stored = []
        queue.add_observer(stored.append)
        log_path = os.path.join(root, "activity.log")
        activity = ActivityLog("w3c", log_path, clock, "localhost")
        activity.open()
        self.addCleanup(activity.close)
        inbound = Inbound(config, Users.load(os.path.join(root, "none")),
                          Cleanup(config, queue, clock, gated), clock,
                          gated, None, activity)
        port = reactor.listenTCP(0, inbound.factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = await connect(self, port.getHost().port)
        client.send(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\n"
                    b"RCPT TO:<postmaster@localhost>\r\nDATA\r\n")
        await client.wait(5)
        client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        await entered
        client.transport.abortConnection()
        await client.lost
        await _until(lambda: not inbound.sessions)
        gate.callback(None)
        await _until(lambda: stored)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(stored), 1)
        activity.flush()  # lines are buffered until the flush timer
        with open(log_path) as f:
            lines = [line for line in f if not line.startswith("#")]
        self.assertTrue(any(" DATA " in line and line.rstrip().endswith(" 250")
                            for line in lines), lines)
