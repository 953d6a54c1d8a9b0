"""
The PROXY protocol on listeners: the header parser (v1, v2), and a real
inbound server behind a real HAProxy (send-proxy-v2 and send-proxy): the
client's own address is the one access control, the log and Received see;
peers that are not proxies are disconnected.
"""

from __future__ import annotations

import ipaddress
import os
import struct

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.inbound.proxy import (
    V2_SIGNATURE,
    ProxyHeaderEndpoint,
    ProxyHeaderError,
    parse_header,
    server_endpoint,
)
from smtpd.inbound.session import LISTEN
from smtpd.service.listeners import Listener
from smtpd.util.activity import ActivityLog
from tests.haproxy import HAPROXY_MISSING, start_haproxy
from tests.inbound import RawClient, SMTPServerFixture, make_config

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


def v2(command: int, family: int, body: bytes) -> bytes:
    """A v2 header."""
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


class HeaderTests(unittest.TestCase):
    """PROXY headers as HAProxy writes them."""

    def test_v1(self):
        """A v1 TCP4 or TCP6 line gives both addresses and its length."""
        source, destination, length = parse_header(
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n")
        self.assertEqual((source.host, source.port), ("192.0.2.7", 40000))
        self.assertEqual((destination.host, destination.port), ("198.51.100.1", 25))
        self.assertEqual(length, 44)
        source, _, _ = parse_header(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n")
        self.assertEqual((source.type, source.host), ("TCP", "2001:db8::7"))

    def test_v2(self):
        """A v2 PROXY header over IPv4 or IPv6 gives both addresses; TLVs are skipped."""
        body = struct.pack("!4s4sHH", bytes([192, 0, 2, 7]), bytes([198, 51, 100, 1]),
                           40000, 25) + b"\x04\x00\x01x"
        source, destination, length = parse_header(v2(1, 0x11, body) + b"EHLO")
        self.assertEqual((source.host, source.port, destination.port), ("192.0.2.7", 40000, 25))
        self.assertEqual(length, 16 + len(body))
        six = ipaddress.ip_address("2001:db8::7").packed
        source, _, _ = parse_header(v2(1, 0x21, six + six + struct.pack("!HH", 1, 2)))
        self.assertEqual(source.host, "2001:db8::7")

    def test_local_and_unknown(self):
        """v2 LOCAL and v1 UNKNOWN (the proxy's own checks) carry no client address."""
        self.assertEqual(parse_header(v2(0, 0, b"")), (None, None, 16))
        self.assertEqual(parse_header(b"PROXY UNKNOWN\r\n"), (None, None, 15))

    def test_partial(self):
        """A header cut short asks for more bytes."""
        for data in (b"PRO", b"PROXY TCP4 192.0.2.7", V2_SIGNATURE[:5], V2_SIGNATURE + b"\x21"):
            self.assertIsNone(parse_header(data), data)

    def test_bad(self):
        """Anything else is refused: no header, bad addresses, a line too long."""
        for data in (b"EHLO client\r\n", b"PROXY TCP4 192.0.2.7 nothing 1 2\r\n",
                     b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
                     b"PROXY TCP4 192.0.2.7 192.0.2.1 99999 25\r\n",
                     b"PROXY " + b"x" * 200, v2(5, 0x11, b"")):
            self.assertRaises(ProxyHeaderError, parse_header, data)


class ServerTestCase(unittest.TestCase):
    """A live inbound server on a haproxy: listener, with a W3C command log."""

    def start(self, **access) -> int:
        """The inbound server on a haproxy: listener; a Deferred of its port."""
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        access.setdefault("proxy_from", LOOPBACK)
        self.server = SMTPServerFixture(self, make_config(root, access=access))
        self.log_path = os.path.join(root, "activity.log")
        log = ActivityLog("w3c", self.log_path, self.server.clock, "mx.example.com")
        log.open()
        self.addCleanup(log.close)
        self.activity = log
        self.server.inbound.command_log = log
        self.assertIsInstance(
            server_endpoint(reactor, "haproxy:tcp:0:interface=127.0.0.1", access["proxy_from"]),
            ProxyHeaderEndpoint)
        # The server's own listener, as tap.py builds it.
        listener = Listener(reactor, "haproxy:tcp:0:interface=127.0.0.1",
                            self.server.inbound.factory(LISTEN), access["proxy_from"])
        listener.bind()
        return defer.succeed(listener.port)

    async def client(self, port: int, source: str) -> RawClient:
        """A client connecting from C{source} (a loopback address) to C{port}."""
        client = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
        await connectProtocol(endpoint, client)

        def close():
            if not client.closed:
                client.transport.abortConnection()
                return client.lost

        self.addCleanup(close)
        return client

    def logged(self) -> str:
        """The W3C command log so far (what the log still buffers written out first)."""
        self.activity.flush()
        with open(self.log_path) as f:
            return f.read()


class HAProxyTests(ServerTestCase):
    """Through a real HAProxy."""

    skip = HAPROXY_MISSING

    @defer.inlineCallbacks
    def listening(self, version: int = 2, **access):
        """The server behind a real HAProxy speaking PROXY v2 (or v1)."""
        port = yield self.start(**access)
        self.addCleanup(port.stopListening)
        return start_haproxy(self, port.getHost().port, version)

    @defer.inlineCallbacks
    def test_client_address_logged_and_in_received(self):
        """
        Behind send-proxy-v2, the client's address (127.0.0.2, not HAProxy's
        127.0.0.1) is in the command log and in the Received header.
        """
        proxy = yield self.listening()
        client = yield defer.Deferred.fromCoroutine(self.client(proxy.port, "127.0.0.2"))
        [greeting] = yield client.wait(1)
        self.assertTrue(greeting.startswith("220 "), greeting)
        for line in (b"EHLO client.example\r\n", b"MAIL FROM:<a@example.org>\r\n",
                     b"RCPT TO:<postmaster@localhost>\r\n", b"DATA\r\n"):
            reply = yield defer.Deferred.fromCoroutine(client.command(line))
            self.assertIn(reply[:3], ("250", "354"), reply)
        reply = yield defer.Deferred.fromCoroutine(
            client.command(b"Subject: hi\r\n\r\nhello\r\n.\r\n"))
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        [queue_id] = self.server.queued()
        received = self.server.data(queue_id).split(b"\r\n\r\n")[0]
        self.assertIn(b"[127.0.0.2]", received)
        self.assertNotIn(b"127.0.0.1", received)
        lines = [line for line in self.logged().splitlines() if " EHLO " in line]
        self.assertEqual(len(lines), 1)
        self.assertIn(" 127.0.0.2 ", lines[0])

    @defer.inlineCallbacks
    def test_deny_applies_to_client(self):
        """[access] deny of the client's address refuses it through the proxy (554 5.7.1)."""
        proxy = yield self.listening(deny=(ipaddress.ip_network("127.0.0.2/32"),))
        denied = yield defer.Deferred.fromCoroutine(self.client(proxy.port, "127.0.0.2"))
        [greeting] = yield denied.wait(1)
        self.assertTrue(greeting.startswith("554 5.7.1"), greeting)
        other = yield defer.Deferred.fromCoroutine(self.client(proxy.port, "127.0.0.3"))
        [greeting] = yield other.wait(1)
        self.assertTrue(greeting.startswith("220 "), greeting)

    @defer.inlineCallbacks
    def test_v1(self):
        """send-proxy (v1, text) works the same way."""
        proxy = yield self.listening(version=1)
        client = yield defer.Deferred.fromCoroutine(self.client(proxy.port, "127.0.0.4"))
        yield client.wait(1)
        reply = yield defer.Deferred.fromCoroutine(client.command(b"EHLO v1.example\r\n"))
        self.assertTrue(reply.startswith("250"), reply)
        self.assertIn(" 127.0.0.4 ", self.logged())


class DirectTests(ServerTestCase):
    """Connections that do not come through an allowed proxy."""

    @defer.inlineCallbacks
    def test_not_a_proxy(self):
        """A peer outside proxy_from is disconnected before any greeting."""
        port = yield self.start(proxy_from=(ipaddress.ip_network("127.0.0.9/32"),))
        self.addCleanup(port.stopListening)
        client = yield defer.Deferred.fromCoroutine(
            self.client(port.getHost().port, "127.0.0.2"))
        yield client.lost
        self.assertEqual(client.replies, [])

    @defer.inlineCallbacks
    def test_forged_header_from_outside(self):
        """A client outside proxy_from cannot claim an address with its own header."""
        port = yield self.start(proxy_from=(ipaddress.ip_network("127.0.0.9/32"),))
        self.addCleanup(port.stopListening)
        client = yield defer.Deferred.fromCoroutine(
            self.client(port.getHost().port, "127.0.0.2"))
        client.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 25\r\n")
        yield client.lost
        self.assertEqual(client.replies, [])
        # Nothing but the W3C header: no command was taken from it.
        lines = self.logged().splitlines() if os.path.exists(self.log_path) else []
        self.assertEqual([line for line in lines if not line.startswith("#")], [])

    @defer.inlineCallbacks
    def test_no_header(self):
        """A proxy that sends no header within the timeout is disconnected (on the clock)."""
        clock = Clock()
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        server = SMTPServerFixture(self, make_config(root, access={"proxy_from": LOOPBACK}))
        endpoint = ProxyHeaderEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), LOOPBACK, clock)
        port = yield endpoint.listen(server.inbound.factory(LISTEN))
        self.addCleanup(port.stopListening)
        client = yield defer.Deferred.fromCoroutine(
            self.client(port.getHost().port, "127.0.0.1"))
        while not clock.getDelayedCalls():
            yield _turn()
        clock.advance(10)
        yield client.lost
        self.assertEqual(client.replies, [])

    @defer.inlineCallbacks
    def test_garbage_instead_of_header(self):
        """A proxy peer that sends SMTP instead of a header is disconnected."""
        port = yield self.start()
        self.addCleanup(port.stopListening)
        client = yield defer.Deferred.fromCoroutine(
            self.client(port.getHost().port, "127.0.0.1"))
        client.send(b"EHLO x\r\n")
        yield client.lost
        self.assertEqual(client.replies, [])


def _turn() -> defer.Deferred:
    """A Deferred that fires on the next reactor turn."""
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(0, d.callback, None)
    return d
