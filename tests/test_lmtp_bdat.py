"""
The LMTP agent's BDAT (RFC 3030 CHUNKING over LMTP, RFC 2033): against a
real Dovecot (which offers CHUNKING and BINARYMIME), a BINARYMIME message
stored byte for byte and one answer per recipient after BDAT LAST; against a
small LMTP server of our own, DATA when CHUNKING is not offered (and the
BINARYMIME refusal), and BDAT chunk by chunk without PIPELINING.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.protocols.portforward import ProxyFactory, ProxyServer
from twisted.trial import unittest

from smtpd.delivery.lmtp import LMTPDelivery
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource, FileSource
from tests.dovecot import DOVECOT_MISSING, start_dovecot
from tests.lmtpserver import start_store
from tests.test_lmtp import USERS, deliveries

HEADER = b"From: sender@example.org\r\nTo: ann@example.com\r\nSubject: binary\r\n\r\n"
# NUL, a bare CR, a bare LF, a CR LF pair, a long line without any line end.
BINARY = (HEADER + b"nul\x00here\rbare cr\nbare lf\r\nall octets "
          + bytes(range(256)) + b"\r\n" + b"L" * 200_000 + b"\r\nend\x00")
EIGHT_BIT = (HEADER + "caf\u00e9\r\n.a line that starts with a dot\r\n".encode()
             + b"x" * 3000 + b"\r\n")


def envelope(*addresses: str, body: str = "BINARYMIME") -> Envelope:
    """An envelope from sender@example.org to C{addresses} with BODY=C{body}."""
    return Envelope(id="0123ABCD", sender="sender@example.org",
                    recipients=[Recipient(a) for a in addresses], arrival=0.0, body=body)


class Recorder(ProxyServer):
    """A TCP proxy that keeps what the client sent."""

    def dataReceived(self, data: bytes) -> None:
        """Record, then pass on."""
        self.factory.sent += data
        super().dataReceived(data)


class DovecotChunkingTests(unittest.TestCase):
    """BDAT into a real Dovecot LMTP store."""

    skip = DOVECOT_MISSING

    def setUp(self):
        self.dovecot = start_dovecot(self, USERS)
        self.agent = LMTPDelivery(reactor, "mx.example.com", timeout=30)
        self.addCleanup(self.agent.stop)

    async def proxy(self) -> str:
        """A recording proxy in front of Dovecot's LMTP port; its target."""
        self.recorder = ProxyFactory("127.0.0.1", self.dovecot.port)
        self.recorder.protocol = Recorder
        self.recorder.sent = b""
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.recorder)
        self.addCleanup(port.stopListening)
        return f"tcp:127.0.0.1:{port.getHost().port}"

    def deliver(self, env: Envelope, source, target: str):
        """Deliver C{source} to every recipient of C{env} at C{target}."""
        return defer.ensureDeferred(self.agent.deliver(env, deliveries(env, target), source))

    def stored(self, address: str) -> bytes:
        """The one message Dovecot stored for C{address}, as its Maildir file holds it."""
        [stored] = self.dovecot.messages(address)
        return stored

    async def test_binarymime_not_offered(self):
        """
        Debian's Dovecot (2.3) offers CHUNKING but not BINARYMIME: a
        BINARYMIME message for it is refused 554 5.6.3 (not converted), and
        no MAIL is sent.
        """
        target = await self.proxy()
        [status] = await self.deliver(envelope("ann@example.com"), BytesSource(BINARY), target)
        self.assertEqual((status.code, status.status), (554, "5.6.3"))
        [(client, _)] = self.agent._stores[target].idle
        self.assertIn("CHUNKING", client.extensions)
        self.assertNotIn("BINARYMIME", client.extensions)
        self.assertIn(b"LHLO", self.recorder.sent)
        self.assertNotIn(b"MAIL FROM", self.recorder.sent)
        self.assertEqual(self.dovecot.messages("ann@example.com"), [])

    async def test_large_message_in_chunks(self):
        """
        A 1.2 MB 8-bit message with a 200 000-octet line and lines that
        start with a dot, streamed from a file, goes to Dovecot as pipelined
        BDAT chunks and is stored whole (Dovecot's Maildir keeps LF line
        ends), after the headers Dovecot adds.
        """
        target = await self.proxy()
        path = self.mktemp()
        data = EIGHT_BIT + (b".dot\r\n" + b"L" * 200_000 + b"\r\n") * 6
        with open(path, "wb") as f:
            f.write(data)
        [status] = await self.deliver(envelope("ann@example.com", body="8BITMIME"),
                                      FileSource(path), target)
        self.assertTrue(status.delivered, status.reply)
        stored = self.stored("ann@example.com")
        self.assertTrue(stored.endswith(data.replace(b"\r\n", b"\n")), stored[:300])
        self.assertIn(b"Delivered-To: ann@example.com", stored)
        self.assertGreater(self.recorder.sent.count(b"BDAT "), 10)
        self.assertIn(b"\r\nBDAT 0 LAST\r\n", self.recorder.sent)
        self.assertNotIn(b"\r\nDATA\r\n", self.recorder.sent)

    async def test_answers_per_recipient_after_last(self):
        """
        After BDAT LAST Dovecot answers each accepted recipient: ann is
        delivered, the user over quota gets Dovecot's 552 5.2.2; the user
        Dovecot does not know was refused at RCPT (550 5.1.1) and sent no
        data. The message went by BDAT, never DATA.
        """
        target = await self.proxy()
        env = envelope("full@example.com", "nobody@example.com", "ann@example.com",
                       body="8BITMIME")
        full, nobody, ann = await self.deliver(env, BytesSource(EIGHT_BIT), target)
        self.assertEqual((full.code, full.status), (552, "5.2.2"))
        self.assertIn("Quota exceeded", full.reply)
        self.assertEqual((nobody.code, nobody.status), (550, "5.1.1"))
        self.assertTrue(ann.delivered, ann.reply)
        self.assertEqual(ann.status, "2.0.0")
        self.assertEqual(len(self.dovecot.messages("ann@example.com")), 1)
        self.assertEqual(self.dovecot.messages("full@example.com"), [])
        self.assertIn(b"\r\nBDAT %d LAST\r\n" % len(EIGHT_BIT), self.recorder.sent)
        self.assertNotIn(b"\r\nDATA\r\n", self.recorder.sent)

    async def test_eight_bit_by_bdat(self):
        """
        An 8-bit message goes to Dovecot by BDAT too (no dot-stuffing on the
        wire); a reused session carries the next message the same way.
        """
        target = await self.proxy()
        for user in ("ann@example.com", "bob@example.com"):
            [status] = await self.deliver(envelope(user, body="8BITMIME"),
                                          BytesSource(EIGHT_BIT), target)
            self.assertTrue(status.delivered, status.reply)
            stored = self.stored(user)
            self.assertIn("caf\u00e9\n.a line that starts with a dot\n".encode(), stored)
        self.assertEqual(self.recorder.sent.count(b"BDAT %d LAST\r\n" % len(EIGHT_BIT)), 2)
        self.assertNotIn(b"\r\n..a line", self.recorder.sent)
        self.assertNotIn(b"\r\nDATA\r\n", self.recorder.sent)
        self.assertIn(b"\r\nRSET\r\n", self.recorder.sent)


class OwnStoreTests(unittest.TestCase):
    """Against a small LMTP server of our own, offering what each test says."""

    def setUp(self):
        self.agent = LMTPDelivery(reactor, "mx.example.com", timeout=30)
        self.addCleanup(self.agent.stop)

    def deliver(self, env: Envelope, source, target: str):
        """Deliver C{source} to every recipient of C{env} at C{target}."""
        return defer.ensureDeferred(self.agent.deliver(env, deliveries(env, target), source))

    async def test_no_chunking_data_for_eight_bit(self):
        """A store without CHUNKING gets 8-bit mail by DATA, dot-stuffed; one answer each."""
        store, target = await start_store(self, [b"PIPELINING", b"8BITMIME"])
        env = envelope("ann@example.com", "bob@example.com", body="8BITMIME")
        ann, bob = await self.deliver(env, BytesSource(EIGHT_BIT), target)
        self.assertEqual(ann.reply, "250 2.0.0 saved for recipient 1")
        self.assertEqual(bob.reply, "250 2.0.0 saved for recipient 2")
        self.assertIn(b"DATA", store.commands)
        self.assertFalse([c for c in store.commands if c.startswith(b"BDAT")])
        self.assertIn(b"MAIL FROM:<sender@example.org> BODY=8BITMIME", store.commands)
        self.assertEqual(store.messages, [EIGHT_BIT])

    async def test_no_chunking_binarymime_refused(self):
        """Without CHUNKING a BINARYMIME message is refused 554 5.6.3 (no conversion), no MAIL."""
        store, target = await start_store(self, [b"PIPELINING", b"8BITMIME", b"BINARYMIME"])
        env = envelope("ann@example.com", "bob@example.com")
        statuses = await self.deliver(env, BytesSource(BINARY), target)
        self.assertEqual([(s.code, s.status) for s in statuses], [(554, "5.6.3")] * 2)
        self.assertTrue(all(s.permanent for s in statuses))
        self.assertEqual([c for c in store.commands if c.startswith(b"MAIL")], [])
        self.assertEqual(store.messages, [])

    async def test_binarymime_byte_exact_pipelined(self):
        """
        A store with PIPELINING, CHUNKING and BINARYMIME gets a BINARYMIME
        message (NUL, bare CR and LF, a 200 000-octet line) as BDAT chunks
        byte for byte, and answers each recipient after BDAT LAST.
        """
        store, target = await start_store(self, [b"PIPELINING", b"CHUNKING", b"BINARYMIME"])
        env = envelope("ann@example.com", "bob@example.com")
        ann, bob = await self.deliver(env, BytesSource(BINARY), target)
        self.assertEqual(ann.reply, "250 2.0.0 saved for recipient 1")
        self.assertEqual(bob.reply, "250 2.0.0 saved for recipient 2")
        self.assertIn(b"MAIL FROM:<sender@example.org> BODY=BINARYMIME", store.commands)
        self.assertIn(b"BDAT %d LAST" % len(BINARY), store.commands)
        self.assertEqual(store.messages, [BINARY])

    async def test_chunks_in_step_without_pipelining(self):
        """
        A store with CHUNKING and BINARYMIME but no PIPELINING gets a large
        message chunk by chunk, each answered before the next, and after
        BDAT LAST one answer per recipient; the octets arrive exactly.
        """
        store, target = await start_store(self, [b"CHUNKING", b"BINARYMIME"])
        path = self.mktemp()
        data = BINARY * 6
        with open(path, "wb") as f:
            f.write(data)
        env = envelope("ann@example.com", "bob@example.com")
        ann, bob = await self.deliver(env, FileSource(path), target)
        self.assertEqual(ann.reply, "250 2.0.0 saved for recipient 1")
        self.assertEqual(bob.reply, "250 2.0.0 saved for recipient 2")
        bdats = [c for c in store.commands if c.startswith(b"BDAT")]
        self.assertGreater(len(bdats), 2)
        self.assertEqual(bdats[-1], b"BDAT 0 LAST")
        self.assertNotIn(b"DATA", store.commands)
        self.assertEqual(store.messages, [data])

    async def test_refused_chunk(self):
        """
        A refused chunk (pipelined) is every accepted recipient's answer, the
        message is not stored, and the connection is not reused (how many
        replies BDAT LAST still gets is unknown): the next message goes on a
        new connection and is delivered.
        """
        store, target = await start_store(self, [b"PIPELINING", b"CHUNKING"],
                                          refuse_chunk=b"452 4.3.1 out of disk space")
        env = envelope("ann@example.com", "bob@example.com", body="8BITMIME")
        big = EIGHT_BIT + b"y" * 76 * 20000 + b"\r\n"
        statuses = await self.deliver(env, BytesSource(big), target)
        self.assertEqual([(s.code, s.status) for s in statuses], [(452, "4.3.1")] * 2)
        self.assertEqual(self.agent._stores[target].idle, [])
        store.refuse_chunk = b""
        statuses = await self.deliver(env, BytesSource(EIGHT_BIT), target)
        self.assertEqual([s.delivered for s in statuses], [True, True])
        self.assertEqual(store.messages, [EIGHT_BIT])
        self.assertEqual(store.connections, 2)
