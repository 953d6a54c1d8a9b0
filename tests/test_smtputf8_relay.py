"""
SMTPUTF8 outbound (RFC 6531 3.2, 3.4): an internationalized message goes
only to hosts that offer SMTPUTF8, with the parameter, and is returned with
5.6.7 in an RFC 6533 global report otherwise; what needs no SMTPUTF8 (an IDN
domain with an ASCII local part) goes in A-labels without it.
"""

from __future__ import annotations

import email
import email.policy

from twisted.trial import unittest

from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource
from tests import test_relay
from tests.support import SinkScript, mx, start_dns_server
from tests.test_binarymime import bounce

SENDER = "jos\u00e9@ours.test"
RCPT = "ren\u00e9@\u4f8b\u5b50.test"  # 例子.test = xn--fsqu00a.test
UTF8_HEADER = "From: Jos\u00e9 <jos\u00e9@ours.test>\r\nSubject: \u00bfQu\u00e9?\r\n\r\nhi\r\n"
ASCII_MESSAGE = b"From: a@ours.test\r\nSubject: plain\r\n\r\nhi\r\n"
UTF8_SINK = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8")
ZONES = {"test": {**test_relay.ZONES["test"],
                  "xn--fsqu00a.test": [mx(10, "mx1.example.test")]}}


class RelaySMTPUTF8Tests(unittest.TestCase):
    """The relay agent and SMTPUTF8."""

    sinks = test_relay.RelayTests.sinks
    relay = test_relay.RelayTests.relay

    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONES)

    async def send(self, sender: str, rcpt: str, data: bytes, **env):
        envelope = Envelope("0A1B2C", sender, [Recipient(rcpt)], 0.0, **env)
        [status] = await self.relay().deliver(envelope, [(envelope.recipients[0], None)],
                                              BytesSource(data))
        return envelope, status

    async def test_to_host_with_smtputf8(self) -> None:
        """
        A UTF-8 sender and recipient (the domain's MX found through its
        A-label) go with SMTPUTF8, the addresses and the UTF-8 header as
        they are.
        """
        sinks = self.sinks(MX1=SinkScript(extensions=UTF8_SINK))
        data = UTF8_HEADER.encode("utf-8")
        _, status = await self.send(SENDER, RCPT, data, smtputf8=True)
        self.assertEqual(status.code, 250)
        [got] = sinks["MX1"].messages
        self.assertEqual(got.mail, f"MAIL FROM:<{SENDER}> BODY=8BITMIME SMTPUTF8")
        self.assertEqual(got.rcpt, [f"RCPT TO:<{RCPT}>"])
        self.assertEqual(got.data, data)

    async def test_no_downgrade(self) -> None:
        """
        Toward a host without SMTPUTF8 nothing is sent (no MAIL): the
        recipient fails 550 5.6.7, and the NDR is an RFC 6533 global report
        (multipart/report; report-type=global-delivery-status, the status in
        message/global-delivery-status with a utf-8 Final-Recipient, the
        header returned as message/global-headers), queued with SMTPUTF8.
        """
        sinks = self.sinks(MX1=SinkScript())
        envelope, status = await self.send(SENDER, RCPT, UTF8_HEADER.encode("utf-8"),
                                           smtputf8=True)
        self.assertEqual((status.code, status.status), (550, "5.6.7"))
        self.assertFalse(any(c.startswith("MAIL") for c in sinks["MX1"].commands))
        [dsn], report = await bounce(envelope, status, UTF8_HEADER.encode("utf-8"))
        self.assertEqual(([r.address for r in dsn.recipients], dsn.smtputf8), ([SENDER], True))
        message = email.message_from_bytes(report, policy=email.policy.compat32)
        self.assertEqual(message.get_param("report-type"), "global-delivery-status")
        self.assertEqual([p.get_content_type() for p in message.get_payload()],
                         ["text/plain", "message/global-delivery-status",
                          "message/global-headers"])
        self.assertIn(f"\r\nFinal-Recipient: utf-8; {RCPT}\r\nAction: failed\r\n"
                      "Status: 5.6.7\r\n".encode("utf-8"), report)
        self.assertIn(f"To: {SENDER}\r\n".encode("utf-8"), report)
        self.assertIn("Subject: \u00bfQu\u00e9?\r\n".encode("utf-8"), report)

    async def test_utf8_header_alone_needs_smtputf8(self) -> None:
        """ASCII addresses with a UTF-8 header (sent with SMTPUTF8) need it too: 5.6.7."""
        self.sinks(MX1=SinkScript())
        _, status = await self.send("a@ours.test", "b@same.test",
                                    UTF8_HEADER.encode("utf-8"), smtputf8=True)
        self.assertEqual((status.code, status.status), (550, "5.6.7"))

    async def test_idn_domain_needs_no_smtputf8(self) -> None:
        """
        An ASCII local part at an IDN domain, ASCII header: the recipient
        goes as A-labels, without SMTPUTF8, to a host that does not offer it.
        """
        sinks = self.sinks(MX1=SinkScript())
        _, status = await self.send("a@ours.test", "bob@\u4f8b\u5b50.test", ASCII_MESSAGE,
                                    smtputf8=True)
        self.assertEqual(status.code, 250)
        [got] = sinks["MX1"].messages
        self.assertEqual((got.mail, got.rcpt),
                         ("MAIL FROM:<a@ours.test>", ["RCPT TO:<bob@xn--fsqu00a.test>"]))

    async def test_utf8_orcpt(self) -> None:
        """
        A utf-8 ORCPT is passed on as unitext with SMTPUTF8 (RFC 6533 3) and
        as its 7-bit xtext form without.
        """
        sinks = self.sinks(MX1=SinkScript(extensions=UTF8_SINK, dsn=True))
        envelope = Envelope("0A1B2C", SENDER, [Recipient(RCPT, orcpt=f"utf-8;{RCPT}")], 0.0,
                            smtputf8=True)
        await self.relay().deliver(envelope, [(envelope.recipients[0], None)],
                                   BytesSource(ASCII_MESSAGE))
        self.assertEqual(sinks["MX1"].messages[0].rcpt,
                         [f"RCPT TO:<{RCPT}> ORCPT=utf-8;{RCPT}"])
        envelope = Envelope("0A1B2D", "a@ours.test",
                            [Recipient("b@example.test", orcpt=f"utf-8;{RCPT}")], 0.0)
        await self.relay().deliver(envelope, [(envelope.recipients[0], None)],
                                   BytesSource(ASCII_MESSAGE))
        self.assertEqual(sinks["MX1"].messages[1].rcpt,
                         ["RCPT TO:<b@example.test> ORCPT=utf-8;ren\\x{E9}@\\x{4F8B}\\x{5B50}.test"])
