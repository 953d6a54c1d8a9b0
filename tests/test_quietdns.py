"""
DNS lookups that leave no lines in twistd's log: a real twistd relays
through MX records of a real twisted.names server, and its output has no
per-lookup or per-connection lines.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.names import dns
from twisted.trial import unittest

from smtpd.delivery.mx import make_resolver
from smtpd.delivery.quietudp import QuietDatagramReactor
from tests import support
from tests.admin_support import NOISE, eventually, short_root, write_ini
from tests.test_control import start
from tests.test_manhole import send



class QuietResolverTests(unittest.TestCase):
    """make_resolver's lookups over real UDP."""

    async def test_lookup_without_log_events(self):
        """An MX lookup answers, logs nothing, and leaves no socket open."""
        server = support.start_dns_server(
            self, {"remote.test": {"remote.test": [support.mx(10, "mx.remote.test")]}})
        readers = {r for r in reactor.getReaders() if hasattr(r, "socket")}
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        resolver = make_resolver([server], reactor)
        answers, _, _ = await resolver.lookupMailExchange("remote.test")
        globalLogPublisher.removeObserver(events.append)
        self.assertEqual([a.payload.name.name for a in answers], [b"mx.remote.test"])
        text = [formatEvent(e) for e in events]
        # Ports opened in this window announce themselves when noisy; closing
        # lines could also come from an earlier test's server going away (the
        # real twistd test below checks every kind of line).
        opening = ("starting on", "Starting protocol", "Starting factory")
        self.assertEqual([t for t in text if any(w in t for w in opening)], [], text)
        # Every socket opened for the lookup is closed again.
        self.assertEqual({r for r in reactor.getReaders() if hasattr(r, "socket")}, readers)

    def test_taken_port_is_cannot_listen(self):
        """A source port in use is CannotListenError (the resolver picks another)."""
        from twisted.internet.error import CannotListenError
        from twisted.internet.protocol import DatagramProtocol

        taken = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        self.assertRaises(CannotListenError, QuietDatagramReactor(reactor).listenUDP,
                          taken.getHost().port, dns.DNSDatagramProtocol(None), "127.0.0.1")


class TwistdLogTests(unittest.TestCase):
    """twistd's own log while relaying."""

    timeout = 60

    async def test_no_lookup_or_connection_lines(self):
        """Three relayed messages add no DNS, UDP port or factory lines to twistd's log."""
        sink = support.start_smtp_sink(self, "127.0.0.1")
        server = support.start_dns_server(self, {"remote.test": {
            "remote.test": [support.mx(10, "mx.remote.test")],
            "mx.remote.test": [support.a("127.0.0.1")]}})
        root = short_root(self)
        write_ini(root, (
            "[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
            f"[delivery]\ndns_servers = 127.0.0.1:{server[1]}\nremote_port = {sink.port}\n"
            "outbound_tls = none\n[domain:localhost]\ntype = local\n"
            f"[logging]\npath = {os.path.join(root, 'activity.log')}\n"))
        process, port = await start(self, root)
        for n in range(3):
            await send(self, port, f"user{n}@remote.test".encode())
        await eventually(lambda: len(sink.messages) == 3)
        self.assertGreaterEqual(server.query_count("MX"), 1)
        for word in NOISE:
            self.assertNotIn(word, process.output, process.output.decode())
