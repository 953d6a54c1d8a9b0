"""
The LMTP agent with internationalized and binary mail, against scripted
stores: UTF-8 addresses only with SMTPUTF8 (5.6.7 otherwise), BINARYMIME
never by DATA (5.6.3).
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial import unittest

from smtpd.delivery.lmtp import LMTPDelivery
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource
from tests import test_lmtp

RCPT = "ren\u00e9@example.com"


def envelope(**kw) -> Envelope:
    return Envelope(id="0123ABCD", sender="jos\u00e9@example.org",
                    recipients=[Recipient(RCPT)], arrival=0.0, **kw)


class LMTPInternationalTests(unittest.TestCase):
    """What the LMTP agent sends for SMTPUTF8 and BINARYMIME messages."""

    server = test_lmtp.ScriptedTests.server

    async def deliver(self, env: Envelope, lhlo: bytes) -> list:
        target = await self.server(b"220 store ready\r\n", [
            (b"LHLO", lhlo),
            (b"MAIL FROM", b"250 2.1.0 ok\r\n"),
            (b"RCPT TO", b"250 2.1.5 ok\r\n"),
            (b"DATA", b"354 go\r\n"),
            (b"\r\n.\r\n", b"250 2.0.0 saved\r\n"),
        ])
        agent = LMTPDelivery(reactor, "mx.example.com", timeout=30)
        self.addCleanup(agent.stop)
        return await defer.ensureDeferred(agent.deliver(
            env, test_lmtp.deliveries(env, target), BytesSource(test_lmtp.MESSAGE)))

    async def test_utf8_to_store_with_smtputf8(self):
        """A UTF-8 sender and recipient go with SMTPUTF8 to a store that offers it."""
        [status] = await self.deliver(envelope(smtputf8=True),
                                      b"250-store\r\n250 SMTPUTF8\r\n")
        self.assertEqual(status.code, 250)
        self.assertIn(f"MAIL FROM:<jos\u00e9@example.org> SMTPUTF8\r\n"
                      f"RCPT TO:<{RCPT}>\r\n".encode("utf-8"), self.factory.received)

    async def test_utf8_to_store_without(self):
        """A store without SMTPUTF8 gets no MAIL: 550 5.6.7."""
        [status] = await self.deliver(envelope(smtputf8=True), b"250 store\r\n")
        self.assertEqual((status.code, status.status), (550, "5.6.7"))
        self.assertNotIn(b"MAIL", self.factory.received)

    async def test_binarymime_refused(self):
        """BINARYMIME to a store with CHUNKING but not BINARYMIME: 554 5.6.3, no MAIL."""
        env = Envelope(id="0123ABCD", sender="a@example.org",
                       recipients=[Recipient("ann@example.com")], arrival=0.0,
                       body="BINARYMIME")
        [status] = await self.deliver(env, b"250-store\r\n250 CHUNKING\r\n")
        self.assertEqual((status.code, status.status), (554, "5.6.3"))
        self.assertNotIn(b"MAIL", self.factory.received)
