"""
Outbound CHUNKING (RFC 3030): our relay client sends BDAT chunks to hosts that
offer it, against the recording sink on 127.0.0.2 and against our own
inbound server.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from smtpd.delivery.client import RelayClient
from smtpd.delivery.wire import BdatChunker, OutboundMessage
from smtpd.mail.envelope import Recipient
from smtpd.mail.source import CHUNK_SIZE, BytesSource, FileSource, IMessageSource
from tests.inbound import SMTPServerFixture, make_config
from tests.support import SinkScript, SinkSession, SmtpSink, start_smtp_sink

HOLD = 0.05  # seconds the lock-step sink holds each BDAT reply

MESSAGE = b"Subject: chunks\r\n\r\n.a dot line\r\n.\r\nbare\nend\r\n"


class HoldingSession(SinkSession):
    """
    A sink session that answers each non-last BDAT chunk only after L{HOLD}
    seconds, and records in C{sink.early} whether the client sent anything
    (the next chunk) before that answer went out.
    """

    held = False
    _bdat_answer = False

    def dataReceived(self, data: bytes) -> None:
        if self.held:
            self.sink.early.append(data[:20])
        super().dataReceived(data)

    def reply(self, line: str) -> None:
        if not (self._bdat_answer and line.startswith(("2", "4", "5"))):
            return super().reply(line)
        self._bdat_answer = False
        self.held = True

        def answer() -> None:
            self.held = False
            if self.transport.connected:
                super(HoldingSession, self).reply(line)

        self.sink.timers.append(reactor.callLater(HOLD, answer))

    def _chunk_done(self, chunk: bytes) -> None:
        self._bdat_answer = not self._bdat[1]
        super()._chunk_done(chunk)


def start_holding_sink(testcase: unittest.TestCase, script: SinkScript) -> SmtpSink:
    """A recording sink on 127.0.0.2 of L{HoldingSession}s."""
    sink = start_smtp_sink(testcase, "127.0.0.2", script=script, session=HoldingSession)
    sink.early, sink.timers = [], []
    testcase.addCleanup(lambda: [t.cancel() for t in sink.timers if t.active()])
    return sink


class BdatChunkerTests(unittest.TestCase):
    """L{BdatChunker}: exact BDAT commands, no dot-stuffing."""

    def test_chunks(self) -> None:
        """Each piece gets its exact size; the last is BDAT 0 LAST; bare LF becomes CRLF."""
        chunker = BdatChunker()
        self.assertEqual(chunker.feed(b".x\r\n"), b"BDAT 4\r\n.x\r\n")
        self.assertEqual(chunker.feed(b"a\nb\r"), b"BDAT 4\r\na\r\nb")
        self.assertEqual(chunker.feed(b""), b"")
        self.assertEqual(chunker.finish(), b"BDAT 2 LAST\r\n\r\n")

    def test_final_newline(self) -> None:
        """A message without a final CRLF gets one in the LAST chunk; none is doubled."""
        chunker = BdatChunker()
        chunker.feed(b"no newline")
        self.assertEqual(chunker.finish(), b"BDAT 2 LAST\r\n\r\n")
        chunker = BdatChunker()
        chunker.feed(b"line\r\n")
        self.assertEqual(chunker.finish(), b"BDAT 0 LAST\r\n")


class ClientBdatTests(unittest.TestCase):
    """L{RelayClient} with BDAT toward a host that offers CHUNKING."""

    async def connect(self, host: str, port: int) -> RelayClient:
        client = RelayClient("relay.ours.test", f"sink.test [{host}]", reactor, 30)
        await connectProtocol(TCP4ClientEndpoint(reactor, host, port), client)
        self.addCleanup(client.quit)
        await client.ready
        return client

    def message(self, data: bytes, *addresses: str, on_disk: bool = False) -> OutboundMessage:
        recipients = tuple(Recipient(a) for a in addresses or ("b@example.test",))
        source: IMessageSource = BytesSource(data)
        if on_disk:
            path = self.mktemp()
            with open(path, "wb") as f:
                f.write(data)
            source = FileSource(path)
        return OutboundMessage("a@ours.test", recipients, source)

    async def test_streamed_chunks(self) -> None:
        """
        A message on disk of two and a bit source chunks goes as BDAT chunks
        of those sizes, then BDAT 0 LAST: stored exactly (no dot-stuffing,
        the bare LF made CRLF), MAIL and RCPTs pipelined, no DATA.
        """
        sink = start_smtp_sink(self, "127.0.0.2", script=SinkScript(chunking=True))
        client = await self.connect(sink.host, sink.port)
        data = b"x" * (CHUNK_SIZE - 2) + b"\r\n" + b"y" * (CHUNK_SIZE - 2) + b"\r\n" + MESSAGE
        statuses = await client.send(self.message(data, "b@example.test", "c@example.test",
                                                  on_disk=True))
        self.assertEqual([(s.code, s.reply) for s in statuses],
                         [(250, "250 2.0.0 Ok: queued")] * 2)
        [got] = sink.messages
        self.assertEqual(got.data, data.replace(b"bare\n", b"bare\r\n"))
        self.assertEqual(got.chunks, [CHUNK_SIZE, CHUNK_SIZE, len(MESSAGE) + 1, 0])
        self.assertNotIn("DATA", sink.commands)
        self.assertIn(["MAIL FROM:<a@ours.test>", "RCPT TO:<b@example.test>",
                       "RCPT TO:<c@example.test>"], sink.batches)

    async def test_held_message_one_chunk(self) -> None:
        """
        A message held in memory goes as one chunk, C{BDAT <n> LAST}, with
        the same octets as the streamed chunks would carry (line ends made
        CRLF, a missing final CRLF added), larger than a source chunk too.
        """
        sink = start_smtp_sink(self, "127.0.0.2", script=SinkScript(chunking=True))
        client = await self.connect(sink.host, sink.port)
        data = b"x" * (CHUNK_SIZE + 10) + b"\r\n" + MESSAGE + b"no final line end"
        [status] = await client.send(self.message(data))
        self.assertEqual(status.code, 250)
        [got] = sink.messages
        expected = (data.replace(b"bare\n", b"bare\r\n")) + b"\r\n"
        self.assertEqual(got.data, expected)
        self.assertEqual(got.chunks, [len(expected)])

    async def test_refused_chunk(self) -> None:
        """
        A refused chunk decides the recipients' status; the session stays in
        sync and carries the next message.
        """
        script = SinkScript(chunking=True, bdat_ok="552 5.3.4 message too big")
        sink = start_smtp_sink(self, "127.0.0.2", script=script)
        client = await self.connect(sink.host, sink.port)
        data = b"z" * (CHUNK_SIZE - 2) + b"\r\n" + MESSAGE
        [status] = await client.send(self.message(data, on_disk=True))
        self.assertEqual((status.code, status.status), (552, "5.3.4"))
        script.bdat_ok = "250 2.0.0 {count} octets received"
        [status] = await client.send(self.message(MESSAGE))
        self.assertEqual(status.code, 250)
        self.assertEqual(sink.messages[-1].data, MESSAGE.replace(b"bare\n", b"bare\r\n"))

    async def test_held_message_without_pipelining(self) -> None:
        """
        Without PIPELINING a message held in memory is one chunk, C{BDAT <n>
        LAST}, and its reply decides.
        """
        script = SinkScript(chunking=True, extensions=("8BITMIME", "ENHANCEDSTATUSCODES"))
        sink = start_holding_sink(self, script)
        client = await self.connect(sink.host, sink.port)
        [status] = await client.send(self.message(MESSAGE))
        self.assertEqual(status.code, 250)
        [got] = sink.messages
        self.assertEqual(got.data, MESSAGE.replace(b"bare\n", b"bare\r\n"))
        self.assertEqual(got.chunks, [len(got.data)])

    async def test_lock_step_without_pipelining(self) -> None:
        """
        Toward a host that offers CHUNKING but not PIPELINING, each BDAT chunk
        waits for the reply to the one before (RFC 3030 2): the recording host
        holds every reply and sees nothing from the client meanwhile; the
        message arrives whole.
        """
        script = SinkScript(chunking=True, extensions=("8BITMIME", "ENHANCEDSTATUSCODES"))
        sink = start_holding_sink(self, script)
        client = await self.connect(sink.host, sink.port)
        self.assertNotIn("PIPELINING", client.extensions)
        data = (b"x" * (CHUNK_SIZE - 2) + b"\r\n") * 3 + MESSAGE
        [status] = await client.send(self.message(data, on_disk=True))
        self.assertEqual(status.code, 250)
        [got] = sink.messages
        self.assertEqual(got.chunks, [CHUNK_SIZE] * 3 + [len(MESSAGE) + 1, 0])
        self.assertEqual(got.data, data.replace(b"bare\n", b"bare\r\n"))
        self.assertEqual(sink.early, [])

    async def test_streams_with_pipelining(self) -> None:
        """
        With PIPELINING offered the chunks stream: the same holding host sees
        the next chunk arrive before it answered the one before.
        """
        sink = start_holding_sink(self, SinkScript(chunking=True))
        client = await self.connect(sink.host, sink.port)
        data = (b"x" * (CHUNK_SIZE - 2) + b"\r\n") * 3 + MESSAGE
        [status] = await client.send(self.message(data, on_disk=True))
        self.assertEqual(status.code, 250)
        self.assertEqual(sink.messages[0].chunks, [CHUNK_SIZE] * 3 + [len(MESSAGE) + 1, 0])
        self.assertNotEqual(sink.early, [])

    async def test_refused_chunk_stops_without_pipelining(self) -> None:
        """
        Without PIPELINING a refused chunk ends the message: no further BDAT
        (not even LAST) is sent, the recipient gets the refusal, and the next
        transaction on the session starts with RSET and is delivered.
        """
        script = SinkScript(chunking=True, extensions=("ENHANCEDSTATUSCODES",),
                            bdat_ok="452 4.3.1 insufficient system storage")
        sink = start_holding_sink(self, script)
        client = await self.connect(sink.host, sink.port)
        data = (b"z" * (CHUNK_SIZE - 2) + b"\r\n") * 3 + MESSAGE
        [status] = await client.send(self.message(data, on_disk=True))
        self.assertEqual((status.code, status.status), (452, "4.3.1"))
        self.assertEqual([c for c in sink.commands if c.startswith("BDAT")],
                         [f"BDAT {CHUNK_SIZE}"])
        self.assertEqual(sink.early, [])
        self.assertEqual(sink.messages, [])
        script.bdat_ok = "250 2.0.0 {count} octets received"
        [status] = await client.send(self.message(MESSAGE))
        self.assertEqual(status.code, 250)
        self.assertEqual(sink.commands[sink.commands.index(f"BDAT {CHUNK_SIZE}") + 1], "RSET")
        self.assertEqual(sink.messages[-1].data, MESSAGE.replace(b"bare\n", b"bare\r\n"))

    async def test_into_our_inbound_server(self) -> None:
        """Our client and our inbound server speak BDAT: the message is queued byte-exact."""
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        fixture = SMTPServerFixture(self, make_config(root))
        port = fixture.listen()
        client = await self.connect("127.0.0.1", port)
        self.assertIn("CHUNKING", client.extensions)
        data = (b"w" * 98 + b"\r\n") * 700 + MESSAGE.replace(b"bare\n", b"bare\r\n")
        [status] = await client.send(self.message(data, "postmaster@localhost"))
        self.assertTrue(status.reply.startswith("250 2.0.0 Ok: queued as "), status.reply)
        stored = fixture.data(status.reply.rsplit(" ", 1)[1])
        self.assertTrue(stored.startswith(b"Received: "))
        self.assertTrue(stored.endswith(data))
