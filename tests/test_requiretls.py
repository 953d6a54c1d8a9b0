"""
REQUIRETLS (RFC 8689): inbound over real loopback sockets (offered and
accepted only under TLS, kept in the queued envelope), and the NDR of such a
message.
"""

from __future__ import annotations

import os

from twisted.trial import unittest

from smtpd.mail.envelope import Envelope
from tests.test_protocol import MESSAGE
from tests.test_protocol_tls import TLSTestsMixin
from tests.test_qmgr import QueueManagerMixin


class RequireTLSTests(TLSTestsMixin, unittest.TestCase):
    """MAIL FROM:<...> REQUIRETLS."""

    def envelope(self, fixture, queue_id: str) -> Envelope:
        with open(os.path.join(fixture.queue_dir, queue_id + ".json"), "rb") as f:
            return Envelope.from_json(f.read())

    async def test_refused_without_tls(self):
        """
        Before STARTTLS, REQUIRETLS is not offered and MAIL with it is refused
        with 530 5.7.10; MAIL without it still works.
        """
        self.tls_server()
        client = await self.client(ehlo=False)
        self.assertNotIn("REQUIRETLS", await client.command(b"EHLO c\r\n"))
        reply = await client.command(b"MAIL FROM:<a@example.com> REQUIRETLS\r\n")
        self.assertEqual(reply, "530 5.7.10 REQUIRETLS needs a TLS session")
        self.assertEqual(await client.command(b"MAIL FROM:<a@example.com>\r\n"), "250 2.1.0 Ok")

    async def test_accepted_under_tls(self):
        """After STARTTLS, REQUIRETLS is offered and the flag is kept in the envelope."""
        fixture = self.tls_server()
        client = await self.client()
        await self.starttls(client)
        keywords = [line[4:] for line in (await client.command(b"EHLO c\r\n")).split("\n")]
        self.assertIn("REQUIRETLS", keywords)
        for requiretls in (True, False):
            mail = b"MAIL FROM:<a@example.com>" + (b" REQUIRETLS" if requiretls else b"")
            self.assertEqual(await client.command(mail + b"\r\n"), "250 2.1.0 Ok")
            await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
            await client.command(b"DATA\r\n")
            reply = await client.command(MESSAGE + b".\r\n")
            queue_id = reply.rsplit(" ", 1)[1]
            self.assertEqual(self.envelope(fixture, queue_id).requiretls, requiretls)

    async def test_value_refused(self):
        """REQUIRETLS takes no value: 501 5.5.4."""
        self.tls_server()
        client = await self.client()
        await self.starttls(client)
        await client.command(b"EHLO c\r\n")
        reply = await client.command(b"MAIL FROM:<a@example.com> REQUIRETLS=yes\r\n")
        self.assertTrue(reply.startswith("501 5.5.4"), reply)


class RequireTLSReportTests(QueueManagerMixin, unittest.TestCase):
    """The NDR of a REQUIRETLS message (RFC 8689 5)."""

    def test_ndr_headers_only_with_requiretls(self):
        """
        A REQUIRETLS message that bounces is returned as its header only, even
        with RET=FULL, and the NDR itself is sent with REQUIRETLS.
        """
        self.relay.scripts["y@remote.example"] = [550]
        envelopes = []
        deliver = self.relay.deliver
        self.relay.deliver = lambda envelope, *rest: (envelopes.append(envelope),
                                                      deliver(envelope, *rest))[1]
        self.qmgr.startService()
        self.store(["y@remote.example"], ret="FULL", requiretls=True)
        self.clock.advance(0)
        [report] = self.relay.reports()
        self.assertEqual(report.get_payload(2).get_content_type(), "text/rfc822-headers")
        [call] = [c for c in self.relay.calls if c.sender == ""]
        self.assertNotIn(b"The body.", call.data)
        self.assertEqual([(e.sender, e.requiretls) for e in envelopes],
                         [("alice@example.org", True), ("", True)])
