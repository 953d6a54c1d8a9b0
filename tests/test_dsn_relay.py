"""
RFC 3461 5.2.2 when relaying a recipient that asked for NOTIFY=SUCCESS: a
next hop that offers DSN gets the request (NOTIFY, ORCPT, RET, ENVID) and
sends the success report itself, so we send none; toward a next hop without
DSN we send the "relayed" report. The whole server in this process, relaying
to the recording test sink.
"""

from __future__ import annotations

from twisted.trial import unittest

from tests.interop import USER, SmtpdDeployment, dsn_fields, eventually, sleep
from tests.support import SinkScript, start_smtp_sink

BODY = (b"From: <bob@smtpd.test>\r\nTo: <carol@remote.test>\r\nSubject: notify me\r\n"
        b"Message-ID: <dsn-1@smtpd.test>\r\n\r\nbody\r\n")
MAIL = b"MAIL FROM:<bob@smtpd.test> RET=HDRS ENVID=env+2B1"
RCPT = b"RCPT TO:<carol@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Carol@remote.test"


class SuccessNotifyTests(unittest.TestCase):
    """NOTIFY=SUCCESS for a recipient relayed to the smart host (the sink)."""

    timeout = 30

    async def relay(self, dsn: bool):
        """Send the message through smtpd to a sink offering DSN or not; the sink."""
        sink = start_smtp_sink(self, "127.0.0.2", script=SinkScript(dsn=dsn))
        smtpd = SmtpdDeployment(self, f"[delivery]\nsmart_host = [127.0.0.2]:{sink.port}\n")
        await smtpd.send(MAIL, [RCPT], BODY)
        await eventually(lambda: sink.messages and smtpd.queue_empty(), what="relay")
        return smtpd, sink

    async def test_passed_to_dsn_host(self) -> None:
        """
        Toward a host that offers DSN, NOTIFY and ORCPT go with the RCPT,
        RET and ENVID with MAIL (ENVID as xtext), and no "relayed" report
        reaches the sender: the next hop reports the success.
        """
        smtpd, sink = await self.relay(dsn=True)
        [message] = sink.messages
        self.assertIn(" RET=HDRS", message.mail)
        self.assertIn(" ENVID=env+2B1", message.mail)
        self.assertEqual(message.rcpt, ["RCPT TO:<carol@remote.test> NOTIFY=SUCCESS,FAILURE "
                                        "ORCPT=rfc822;Carol@remote.test"])
        await sleep(0.3)
        self.assertTrue(smtpd.queue_empty())
        self.assertEqual(smtpd.maildir(USER), [])

    async def test_relayed_report_without_dsn(self) -> None:
        """
        Toward a host without DSN, the RCPT carries no DSN parameter and the
        sender gets a success report with Action: relayed, its Original-
        Recipient, the Original-Envelope-Id and the Remote-MTA.
        """
        smtpd, sink = await self.relay(dsn=False)
        [message] = sink.messages
        self.assertEqual(message.rcpt, ["RCPT TO:<carol@remote.test>"])
        self.assertNotIn("RET=", message.mail)
        await eventually(lambda: smtpd.maildir(USER), what="the relayed report")
        [report] = smtpd.maildir(USER)
        self.assertIn(b"Subject: Successful Mail Delivery Report", report)
        fields = dsn_fields(report)
        self.assertEqual(fields["Action"], "relayed")
        self.assertEqual(fields["Status"], "2.0.0")
        self.assertEqual(fields["Final-Recipient"], "rfc822; carol@remote.test")
        self.assertEqual(fields["Original-Recipient"], "rfc822; Carol@remote.test")
        self.assertEqual(fields["Original-Envelope-Id"], "env+1")
        self.assertTrue(fields["Remote-MTA"].startswith("dns; "), fields)
