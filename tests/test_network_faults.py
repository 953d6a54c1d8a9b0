"""
Network faults toward the next hop: whatever the peer or the DNS does, each
recipient is deferred (a 4xx status, retried), never lost, and a recipient
that got the message is not sent it again. Faults already covered elsewhere:
a drop mid-DATA and a stall past the timeout (tests.test_client
test_connection_lost_in_data, test_timeout), endless or over-long replies
(test_endless_multiline_reply, test_reply_line_too_long), a failed TLS
handshake (test_client.test_tls_handshake_failure, test_relay
test_tls_may_plaintext_fallback and test_tls_required_no_fallback), DNS
timeout and SERVFAIL (test_mx test_timeout, test_servfail; test_relay
test_dns_failures).
"""

from __future__ import annotations

import os

from twisted.trial import unittest

from smtpd.delivery.mx import MXResolver, make_resolver
from tests import support
from tests.support import SinkScript, a, mx, start_dns_server
from tests import test_e2e, test_relay
from tests.test_e2e import eventually

# The harnesses of those modules are borrowed method by method: a test class
# bound here would be run twice by trial.
ZONES = test_relay.ZONES
E2E_MESSAGE = test_e2e.MESSAGE

TRUNCATED = {"test": {**ZONES["test"], "big.test": [mx(10, "mx.big.test")],
                      "mx.big.test": [a("127.0.0.2")]}}


class PeerFaultTests(unittest.TestCase):
    """The relay agent against misbehaving peers (both MX hosts of example.test)."""

    sinks = test_relay.RelayTests.sinks
    relay = test_relay.RelayTests.relay
    send = test_relay.RelayTests.send
    codes = test_relay.RelayTests.codes

    def setUp(self) -> None:
        self.dns = start_dns_server(self, TRUNCATED, truncate=("big.test",))

    async def both(self, script: SinkScript):
        """Every MX of example.test runs C{script}; the statuses of one message to two."""
        sinks = self.sinks(MX1=script, MX2=script)
        statuses = await self.send(self.relay(), "u@example.test", "v@example.test")
        return sinks, statuses

    def assertDeferred(self, statuses) -> None:
        for s in statuses:
            self.assertEqual(str(s.code)[0], "4", s)
            self.assertFalse(s.delivered)

    async def test_421_at_greeting(self):
        """Both hosts answer 421 at greeting: deferred, nothing sent."""
        sinks, statuses = await self.both(SinkScript(greeting="421 4.3.2 busy"))
        self.assertDeferred(statuses)
        self.assertEqual([s.messages for s in sinks.values()], [[], []])

    async def test_garbage_greeting(self):
        """A peer that is not an SMTP server (an HTTP reply): deferred."""
        sinks, statuses = await self.both(SinkScript(greeting="HTTP/1.1 400 Bad Request"))
        self.assertDeferred(statuses)
        self.assertEqual([s.messages for s in sinks.values()], [[], []])

    async def test_garbage_reply_to_rcpt(self):
        """A reply without a code to RCPT: deferred, no message data sent."""
        sinks, statuses = await self.both(SinkScript(rcpt_ok="what?"))
        self.assertDeferred(statuses)
        self.assertEqual([s.messages for s in sinks.values()], [[], []])

    async def test_reset_after_final_dot(self):
        """
        The connection is reset after the final dot, before the reply: the
        message is deferred (it may have arrived: SMTP's known duplicate
        window, RFC 1047), not taken as delivered.
        """
        sinks, statuses = await self.both(SinkScript(reset_after_data=True))
        self.assertDeferred(statuses)

    async def test_truncated_udp_answer(self):
        """
        A DNS answer truncated over UDP (TC) is asked again over TCP, and
        the message goes to the MX found there.
        """
        sinks = self.sinks(MX1=None)
        statuses = await self.send(self.relay(), "u@big.test")
        self.assertEqual(self.codes(statuses), [(250, "2.0.0")])
        self.assertEqual(len(sinks["MX1"].messages), 1)
        asked = list(zip(self.dns.queries, self.dns.transports))
        self.assertIn((("big.test", "MX"), "udp"), asked)
        self.assertIn((("big.test", "MX"), "tcp"), asked)


class QueuedFaultTests(unittest.TestCase):
    """The assembled server: faults of the next hop seen from the queue."""

    timeout = 30
    start = test_e2e.EndToEndTests.start
    send = test_e2e.EndToEndTests.send
    queue_empty = test_e2e.EndToEndTests.queue_empty

    async def test_retry_after_reset_and_partial_acceptance(self):
        """
        First attempt: the peer takes one recipient, defers the other, then
        resets after the final dot (nobody is done). Second: it takes the
        first, defers the second with 450. Third: all is well. Every
        recipient ends up with the message; the one accepted in the second
        attempt is not sent it again in the third.
        """
        script = SinkScript(reset_after_data=True, rcpt={"b@dest.test": "450 4.2.1 later"})
        [sink] = support.start_smtp_sinks(self, ["127.0.0.2"], [script])
        dns = start_dns_server(self, {"test": {"dest.test": [mx(10, "mx.dest.test")],
                                               "mx.dest.test": [a("127.0.0.2")]}})
        self.start(dns[1], sink.port)
        top = self.top  # retried by hand: the retry interval is 15 minutes
        await self.send(b"s@client.test", [b"a@dest.test", b"b@dest.test"], E2E_MESSAGE)
        await eventually(lambda: len(sink.messages) == 1 and not sink.sessions)
        await eventually(lambda: self.entry_has(b"pending"))
        script.reset_after_data = False
        # Asked again while polling: a retry asked while the attempt is being
        # written back is superseded by the schedule it writes.
        await eventually(lambda: top.qmgr.retry() >= 0 and len(sink.messages) == 2)
        await eventually(lambda: self.entry_has(b"delivered"))
        script.rcpt = {}
        await eventually(lambda: top.qmgr.retry() >= 0 and len(sink.messages) == 3
                         and self.queue_empty())
        self.assertEqual([m.recipients for m in sink.messages],
                         [["a@dest.test"], ["a@dest.test"], ["b@dest.test"]])

    def entry_has(self, text: bytes) -> bool:
        """Whether the only queue envelope mentions C{text} (written back after an attempt)."""
        queue = os.path.join(self.root, "mailroot", "queue")
        names = [n for n in os.listdir(queue) if n.endswith(".json")]
        if len(names) != 1:
            return False
        with open(os.path.join(queue, names[0]), "rb") as f:
            data = f.read()
        return text in data and b'"attempts":0' not in data.replace(b" ", b"")
