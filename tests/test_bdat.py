"""
CHUNKING / BDAT (RFC 3030) on the inbound session, over real loopback sockets
with exact bytes.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.test_protocol import SessionTestsMixin

# A dot line and a CRLF.CRLF inside: data for BDAT, a terminator for DATA.
BODY = (
    b"From: a@example.com\r\nSubject: chunks\r\n\r\n"
    b"..two dots stay two\r\n.\r\nafter the dot line\r\n"
)
ENVELOPE = b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<postmaster@localhost>\r\n"


def bdat(data: bytes, last: bool = False) -> bytes:
    """One BDAT command with its chunk."""
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


class ChunkingTests(SessionTestsMixin, unittest.TestCase):
    """BDAT chunks: exact octets, pipelined, errors that keep the stream in sync."""

    def stored_body(self, reply: str) -> tuple[bytes, bytes]:
        """The trace header and the rest of the message queued as C{reply} says."""
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        data = self.fixture.data(reply.rsplit(" ", 1)[1])
        end = data.index(b"\r\n") + 2
        while data[end : end + 1] == b"\t":
            end = data.index(b"\r\n", end) + 2
        return data[:end], data[end:]

    async def trickle(self, client, data: bytes) -> None:
        """Send C{data} one octet per write, letting the reactor run between."""
        client.transport.setTcpNoDelay(True)
        for i in range(len(data)):
            client.send(data[i : i + 1])
            await deferLater(reactor, 0, lambda: None)

    async def test_advertised(self):
        """EHLO offers CHUNKING and BINARYMIME."""
        self.server()
        client = await self.client(ehlo=False)
        reply = await client.command(b"EHLO client.example\r\n")
        self.assertIn("250-CHUNKING", reply.split("\n"))
        self.assertIn("250 BINARYMIME", reply.split("\n"))

    async def test_pipelined_chunks_in_one_octet_segments(self):
        """
        Three pipelined chunks sent one octet per TCP write (a CRLF split
        between two chunks) are stored byte-exact after our Received header:
        no dot-unstuffing, no terminator search. Each chunk gets its reply.
        """
        fixture = self.server()
        client = await self.client()
        parts = [BODY[:30], BODY[30:60], BODY[60:]]
        self.assertEqual(parts[1][-1:], b"\r")
        stream = ENVELOPE + bdat(parts[0]) + bdat(parts[1]) + bdat(parts[2], last=True)
        await self.trickle(client, stream)
        replies = await client.wait(7)
        self.assertEqual(
            replies[2:6],
            ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok: 30 octets received",
             "250 2.0.0 Ok: 30 octets received"],
        )
        header, body = self.stored_body(replies[6])
        self.assertEqual(body, BODY)
        self.assertTrue(header.startswith(b"Received: from client.example ([127.0.0.1])\r\n"))
        self.assertEqual(len(fixture.queued()), 1)
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")

    async def test_bdat_zero_last(self):
        """C{BDAT 0 LAST} ends a chunked message, or queues an empty one."""
        fixture = self.server()
        client = await self.client()
        client.send(ENVELOPE + bdat(BODY) + b"BDAT 0 LAST\r\n")
        replies = await client.wait(6)
        self.assertEqual(replies[4], f"250 2.0.0 Ok: {len(BODY)} octets received")
        self.assertEqual(self.stored_body(replies[5])[1], BODY)
        client.send(ENVELOPE + b"BDAT 0 LAST\r\n")
        replies = await client.wait(9)
        self.assertEqual(self.stored_body(replies[8])[1], b"")
        self.assertEqual(len(fixture.queued()), 2)

    async def test_chunk_after_failed_chunk(self):
        """
        The chunk that passes max_message_size gets 552 5.3.4 and ends the
        transaction; the chunk pipelined behind it is still read to its last
        octet (a command inside it is not run) and discarded with 503 5.5.1.
        """
        fixture = self.server(messages={"max_message_size": 50})
        client = await self.client()
        client.send(ENVELOPE + bdat(b"a" * 38 + b"\r\n") + bdat(b"b" * 38 + b"\r\n")
                    + bdat(b"QUIT\r\n", last=True) + b"NOOP\r\n")
        replies = await client.wait(8)
        self.assertEqual(replies[4], "250 2.0.0 Ok: 40 octets received")
        self.assertTrue(replies[5].startswith("552 5.3.4 "), replies[5])
        self.assertEqual(replies[6], "503 5.5.1 Error: need MAIL command")
        self.assertEqual(replies[7], "250 2.0.0 Ok")
        self.assertEqual(fixture.queued(), [])
        self.assertFalse(client.closed)

    async def test_bdat_without_transaction_is_read(self):
        """BDAT with no MAIL is answered 503 5.5.1 after its chunk is read."""
        self.server()
        client = await self.client()
        client.send(bdat(b"QUIT\r\n") + b"NOOP\r\n")
        replies = await client.wait(4)
        self.assertEqual(replies[2:], ["503 5.5.1 Error: need MAIL command", "250 2.0.0 Ok"])

    async def test_data_after_bdat_refused(self):
        """DATA and RCPT in a transaction begun with BDAT: 503 5.5.1; BDAT goes on."""
        fixture = self.server()
        client = await self.client()
        client.send(ENVELOPE + bdat(BODY[:20]) + b"DATA\r\nRCPT TO:<postmaster@localhost>\r\n"
                    + bdat(BODY[20:], last=True))
        replies = await client.wait(8)
        self.assertEqual(replies[4], "250 2.0.0 Ok: 20 octets received")
        self.assertEqual(replies[5], "503 5.5.1 Error: DATA in a BDAT transaction")
        self.assertEqual(replies[6], "503 5.5.1 Error: RCPT after BDAT")
        self.assertEqual(self.stored_body(replies[7])[1], BODY)
        self.assertEqual(len(fixture.queued()), 1)

    async def test_size_limit_single_chunk(self):
        """One chunk over max_message_size: 552 5.3.4, nothing queued, session goes on."""
        fixture = self.server(messages={"max_message_size": 1000})
        client = await self.client()
        client.send(ENVELOPE + bdat((b"z" * 500 + b"\r\n") * 400, last=True))
        replies = await client.wait(5)
        self.assertEqual(replies[4],
                         "552 5.3.4 Message size exceeds fixed maximum message size")
        self.assertEqual(fixture.queued(), [])
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")

    async def test_large_message_to_disk(self):
        """A 6 MB message in 1 MB chunks goes through the spool on disk, stored exact."""
        fixture = self.server(messages={"max_message_size": 8 * 1024 * 1024})
        client = await self.client()
        line = b"0123456789" * 9 + b"abcdefg\r\n"
        body = b"Subject: big\r\n\r\n" + line * (6 * 1024 * 1024 // len(line))
        step = 1024 * 1024
        pieces = [body[i : i + step] for i in range(0, len(body), step)]
        client.send(ENVELOPE + b"".join(bdat(p) for p in pieces) + b"BDAT 0 LAST\r\n")
        replies = await client.wait(5 + len(pieces))
        self.assertEqual(replies[4:-1], [f"250 2.0.0 Ok: {len(p)} octets received"
                                         for p in pieces])
        self.assertEqual(self.stored_body(replies[-1])[1], body)
        self.assertEqual(len(fixture.queued()), 1)

    async def test_bare_newline_and_long_line(self):
        """The DATA rules hold for chunks: bare LF 550 5.6.0, a 999-octet line 500 5.5.2."""
        fixture = self.server()
        client = await self.client()
        client.send(ENVELOPE + bdat(b"Subject: x\n\r\n", last=True))
        replies = await client.wait(5)
        self.assertEqual(replies[4], "550 5.6.0 Error: bare CR or LF in message data")
        client.send(ENVELOPE + bdat(b"x" * 999 + b"\r\n") + bdat(b"", last=True))
        replies = await client.wait(9)
        self.assertEqual(replies[7], "500 5.5.2 Error: line too long in message data")
        self.assertEqual(replies[8], "503 5.5.1 Error: need MAIL command")
        self.assertEqual(fixture.queued(), [])

    async def test_bad_syntax(self):
        """A BDAT count that is not a number: 501 5.5.4."""
        self.server()
        client = await self.client()
        self.assertEqual(await client.command(b"BDAT ten\r\n"),
                         "501 5.5.4 Syntax: BDAT count [LAST]")
        self.assertEqual(await client.command(b"BDAT 5 FIRST\r\n"),
                         "501 5.5.4 Syntax: BDAT count [LAST]")

