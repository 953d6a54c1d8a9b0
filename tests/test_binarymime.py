"""
BINARYMIME (RFC 3030 3) with exact bytes: accepted only with BDAT, stored
byte for byte in the queue, relayed byte for byte by BDAT to a host that
offers BINARYMIME and CHUNKING, and returned with 5.6.3 when the host does not.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.config import Config, ServerConfig
from smtpd.delivery.client import RelayClient
from smtpd.delivery.wire import BdatChunker, OutboundMessage, SessionError
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource, FileSource
from smtpd.queue.bounce import BounceBuilder
from smtpd.queue.notifier import Notifier
from smtpd.queue.results import Results
from tests.support import SinkScript, start_smtp_sink
from tests.inbound import SMTPServerFixture, connect, make_config
from tests.interop import SmtpdDeployment, eventually
from tests.test_bdat import ENVELOPE, bdat
from tests.test_protocol import SessionTestsMixin
from tests import test_relay

# NUL, bare CR, bare LF, a CRLF cut between two chunks, a "line" of 3000
# octets, a dot line and 8-bit octets: binary data, kept as it is.
HEADER = b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n\r\n"
PAYLOAD = b"\x00\x01\x02\rbare CR\nbare LF\r\n.\r\n" + b"\xff" * 3000 + b"\r\x00end\r"
MESSAGE = HEADER + PAYLOAD
BINARY_ENVELOPE = (b"MAIL FROM:<sender@example.com> BODY=BINARYMIME\r\n"
                   b"RCPT TO:<postmaster@localhost>\r\n")
BINARY_SINK = ("PIPELINING", "8BITMIME", "BINARYMIME")


class InboundTests(SessionTestsMixin, unittest.TestCase):
    """BODY=BINARYMIME on the inbound session."""

    def stored(self, reply: str) -> tuple[bytes, dict]:
        """The message after our Received field, and the envelope, queued as C{reply} says."""
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        queue_id = reply.rsplit(" ", 1)[1]
        data = self.fixture.data(queue_id)
        with open(os.path.join(self.fixture.queue_dir, queue_id + ".json"), "rb") as f:
            envelope = json.loads(f.read())
        return data[data.index(b"MIME-Version: "):], envelope

    async def test_data_refused(self):
        """RFC 3030 3: DATA after BODY=BINARYMIME gets 503 5.5.1; the transaction stays."""
        fixture = self.server()
        client = await self.client()
        client.send(BINARY_ENVELOPE + b"DATA\r\n" + bdat(MESSAGE, last=True))
        replies = await client.wait(6)
        self.assertEqual(replies[4], "503 5.5.1 Error: BODY=BINARYMIME requires BDAT")
        self.assertEqual(self.stored(replies[5])[0], MESSAGE)
        self.assertEqual(len(fixture.queued()), 1)

    async def test_stored_byte_exact(self):
        """
        A BINARYMIME message in three chunks (a CRLF cut between two of them)
        with NUL, bare CR and LF and a 3000-octet line is queued byte for byte
        under the default bare_newlines = reject, its envelope saying
        BINARYMIME.
        """
        self.server()
        client = await self.client()
        cut = MESSAGE.index(b"\r\n.\r\n") + 1
        client.send(BINARY_ENVELOPE + bdat(MESSAGE[:cut]) + bdat(MESSAGE[cut:cut + 1000])
                    + bdat(MESSAGE[cut + 1000:]) + b"BDAT 0 LAST\r\n")
        replies = await client.wait(8)
        self.assertEqual(replies[2:7], [
            "250 2.1.0 Ok", "250 2.1.5 Ok", f"250 2.0.0 Ok: {cut} octets received",
            "250 2.0.0 Ok: 1000 octets received",
            f"250 2.0.0 Ok: {len(MESSAGE) - cut - 1000} octets received"])
        data, envelope = self.stored(replies[7])
        self.assertEqual(data, MESSAGE)
        self.assertEqual(envelope["body"], "BINARYMIME")

    async def test_eight_bit_keeps_the_rules(self):
        """Without BINARYMIME the same chunk is refused (550 5.6.0): the rules apply to 8BITMIME."""
        fixture = self.server()
        client = await self.client()
        client.send(ENVELOPE.replace(b">\r\n", b"> BODY=8BITMIME\r\n", 1)
                    + bdat(MESSAGE, last=True))
        replies = await client.wait(5)
        self.assertEqual(replies[4], "550 5.6.0 Error: bare CR or LF in message data")
        self.assertEqual(fixture.queued(), [])

    async def test_size_limit_still_applies(self):
        """max_message_size holds for binary data too: 552 5.3.4."""
        fixture = self.server(messages={"max_message_size": 1000})
        client = await self.client()
        client.send(BINARY_ENVELOPE + bdat(MESSAGE, last=True))
        replies = await client.wait(5)
        self.assertEqual(replies[4], "552 5.3.4 Message size exceeds fixed maximum message size")
        self.assertEqual(fixture.queued(), [])


class OutboundTests(unittest.TestCase):
    """Our relay client with a BINARYMIME message."""

    async def connect(self, sink) -> RelayClient:
        client = RelayClient("relay.ours.test", f"sink.test [{sink.host}]", reactor, 30)
        await connectProtocol(TCP4ClientEndpoint(reactor, sink.host, sink.port), client)
        self.addCleanup(client.quit)
        await client.ready
        return client

    def test_chunker(self) -> None:
        """Binary chunks go as they are: no line end made CRLF, none added; BDAT 0 LAST ends."""
        chunker = BdatChunker(binary=True)
        self.assertEqual(chunker.feed(b"a\nb\r"), b"BDAT 4\r\na\nb\r")
        self.assertEqual(chunker.feed(b""), b"")
        self.assertEqual(chunker.finish(), b"BDAT 0 LAST\r\n")

    async def test_sent_byte_exact(self) -> None:
        """
        To a host offering BINARYMIME and CHUNKING the message goes with
        BODY=BINARYMIME as BDAT chunks holding exactly its octets.
        """
        sink = start_smtp_sink(self, "127.0.0.2",
                               script=SinkScript(chunking=True, extensions=BINARY_SINK))
        client = await self.connect(sink)
        message = OutboundMessage("a@ours.test", (Recipient("b@example.test"),),
                                  BytesSource(MESSAGE), binary=True)
        [status] = await client.send(message)
        self.assertEqual((status.code, status.reply), (250, "250 2.0.0 Ok: queued"))
        [got] = sink.messages
        self.assertEqual(got.mail, "MAIL FROM:<a@ours.test> BODY=BINARYMIME")
        self.assertEqual(got.data, MESSAGE)
        self.assertEqual(got.chunks, [len(MESSAGE)])  # held in memory: one BDAT LAST

    async def test_host_without_binarymime(self) -> None:
        """
        A host that offers CHUNKING but not BINARYMIME (or BINARYMIME without
        CHUNKING) gets nothing: 554 5.6.3 before MAIL, the session usable.
        """
        for extensions, chunking in ((("PIPELINING", "8BITMIME"), True), (BINARY_SINK, False)):
            sink = start_smtp_sink(self, "127.0.0.2",
                                   script=SinkScript(chunking=chunking, extensions=extensions))
            client = await self.connect(sink)
            message = OutboundMessage("a@ours.test", (Recipient("b@example.test"),),
                                      BytesSource(MESSAGE), binary=True)
            error = await self.assertFailure(client.send(message), SessionError)
            self.assertEqual((error.code, error.status, error.permanent), (554, "5.6.3", True))
            self.assertFalse(any(c.startswith("MAIL") for c in sink.commands), sink.commands)
            self.assertTrue(client.usable)


class QueueToPeerTests(unittest.TestCase):
    """From our inbound server through the queue to a peer, byte for byte."""

    # The MX hosts, DNS and relay agent of the relay tests (not their tests).
    setUp = test_relay.RelayTests.setUp
    sinks = test_relay.RelayTests.sinks
    relay = test_relay.RelayTests.relay

    async def test_queue_to_peer_byte_exact(self) -> None:
        """
        A BINARYMIME message received by BDAT is in the queue byte-exact
        (after our Received field) and the relay agent delivers that queue
        file to an MX host offering BINARYMIME byte for byte.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        fixture = SMTPServerFixture(self, make_config(root))
        client = await connect(self, fixture.listen())
        await client.command(b"EHLO client.example\r\n")
        client.send(BINARY_ENVELOPE + bdat(MESSAGE, last=True))
        reply = (await client.wait(5))[4]
        queue_id = reply.rsplit(" ", 1)[1]
        stored = fixture.data(queue_id)
        self.assertTrue(stored.startswith(b"Received: from client.example "))
        self.assertTrue(stored.endswith(b"\r\n" + MESSAGE))
        sinks = self.sinks(MX1=SinkScript(chunking=True, extensions=BINARY_SINK))
        envelope = Envelope(queue_id, "sender@example.com", [Recipient("b@example.test")],
                            0.0, body="BINARYMIME")
        source = FileSource(os.path.join(fixture.queue_dir, queue_id + ".eml"))
        [status] = await self.relay().deliver(envelope, [(envelope.recipients[0], None)],
                                              source)
        self.assertEqual(status.code, 250)
        [got] = sinks["MX1"].messages
        self.assertEqual(got.data, stored)
        self.assertEqual(got.mail, "MAIL FROM:<sender@example.com> BODY=BINARYMIME")

    async def test_ndr_563(self) -> None:
        """
        When no MX host offers BINARYMIME the recipient fails with 554 5.6.3
        (each host was tried, none got MAIL), and the NDR says Status: 5.6.3
        and returns the header only (the binary body cannot travel in a
        report), even for RET=FULL.
        """
        sinks = self.sinks(MX1=SinkScript(chunking=True), MX2=SinkScript(chunking=True))
        envelope = Envelope("0A1B2C", "a@ours.test", [Recipient("b@example.test")], 0.0,
                            body="BINARYMIME", ret="FULL")
        [status] = await self.relay().deliver(envelope, [(envelope.recipients[0], None)],
                                              BytesSource(MESSAGE))
        self.assertEqual((status.code, status.status), (554, "5.6.3"))
        self.assertEqual((sinks["MX1"].connections, sinks["MX2"].connections), (1, 1))
        self.assertFalse(any(c.startswith("MAIL") for c in sinks["MX1"].commands))
        [dsn], report = await bounce(envelope, status)
        self.assertEqual([r.address for r in dsn.recipients], ["a@ours.test"])
        self.assertIn(b"\r\nStatus: 5.6.3\r\n", report)
        self.assertIn(b"Content-Type: text/rfc822-headers\r\n", report)
        self.assertIn(HEADER[:-2], report)
        self.assertNotIn(PAYLOAD[:8], report)


async def bounce(envelope: Envelope, status, data: bytes = MESSAGE
                 ) -> tuple[list[Envelope], bytes]:
    """
    The NDR the notifier makes for C{envelope}'s first recipient failing
    with C{status}: the report envelopes and the report's data.
    """
    recipient = envelope.recipients[0]
    recipient.state, recipient.status = "failed", status.status
    recipient.last_reply, recipient.remote_mta = status.reply, status.remote_mta
    reports: list = []

    def submit(dsn, source):
        with source.open() as f:
            reports.append((dsn, f.read()))
        return succeed(None)

    clock = Clock()
    config = Config(path="/srv/etc/smtpd.ini", root="/srv", server=ServerConfig())
    notifier = Notifier(config, None, clock, BounceBuilder("smtp.ours.test", clock), Results(),
                        submit=submit)
    assert await notifier.bounce(envelope, [recipient], BytesSource(data))
    return [r[0] for r in reports], reports[0][1]


class ServerToPeerTests(unittest.TestCase):
    """The whole server (tap.build): BDAT in, queue, relay out, byte for byte."""

    async def test_through_the_server(self) -> None:
        """
        A BINARYMIME message sent by BDAT to a running server (smart host:
        a sink offering BINARYMIME and CHUNKING) reaches the sink with
        BODY=BINARYMIME and exactly the octets the server queued: our
        Received field, then the client's data.
        """
        sink = start_smtp_sink(self, "127.0.0.2",
                               script=SinkScript(chunking=True, extensions=BINARY_SINK))
        server = SmtpdDeployment(
            self, f"[delivery]\nsmart_host = [127.0.0.2]:{sink.port}\noutbound_tls = none\n")
        client = await connect(self, server.port)
        await client.command(b"EHLO client.example\r\n")
        client.send(b"MAIL FROM:<bob@smtpd.test> BODY=BINARYMIME\r\n"
                    b"RCPT TO:<carol@remote.test>\r\n" + bdat(MESSAGE, last=True))
        replies = await client.wait(5)
        self.assertEqual(replies[2:4], ["250 2.1.0 Ok", "250 2.1.5 Ok"])
        self.assertTrue(replies[4].startswith("250 2.0.0 Ok: queued as "), replies[4])
        await eventually(lambda: sink.messages, what="the relayed copy")
        [got] = sink.messages
        self.assertEqual(got.mail, "MAIL FROM:<bob@smtpd.test> BODY=BINARYMIME")
        self.assertTrue(got.data.startswith(b"Received: from client.example "), got.data[:80])
        self.assertTrue(got.data.endswith(b"\r\n" + MESSAGE))
        # Fresh from the queue the data is held in memory: one BDAT LAST.
        self.assertEqual(got.chunks, [len(got.data)])
