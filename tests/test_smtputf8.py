"""
SMTPUTF8 (RFC 6531, 6532) on the inbound session over real loopback sockets,
with exact bytes: the parameter, UTF-8 paths, IDNA equivalence of domains,
UTF-8 header fields stored as sent, and the trace header's protocol.
"""

from __future__ import annotations

import json
import os

from twisted.trial import unittest

from smtpd.config import DomainConfig
from smtpd.directory import accounts as users
from tests.test_protocol_tls import TLSTestsMixin, plain, server_options

# The account is written with U-labels, the local domain configured with
# A-labels: each must find the other.
ACCOUNT = "ren\u00e9@b\u00fccher.example"
DOMAINS = (DomainConfig("localhost"), DomainConfig("xn--bcher-kva.example"))
MESSAGE = ("From: Jos\u00e9 <jos\u00e9@\u4f8b\u5b50.test>\r\n"
           "To: Ren\u00e9 <ren\u00e9@b\u00fccher.example>\r\n"
           "Subject: \u00bfQu\u00e9 tal? \u2603\r\n\r\nCuerpo \u00f1\r\n").encode("utf-8")


class SMTPUTF8Tests(TLSTestsMixin, unittest.TestCase):
    """The SMTPUTF8 parameter and what it allows."""

    def utf8_server(self, **sections):
        """A server with the local domain bücher.example (as xn--) and its account."""
        path = os.path.abspath(self.mktemp())
        users.add(path, ACCOUNT, "secret", rounds=4)
        users.add(path, "bob@localhost", "secret", rounds=4)
        return self.server(users.Users.load(path), server_options(self), domains=DOMAINS,
                           auth={"allow_plaintext": True}, **sections)

    def envelope(self, queue_id: str) -> dict:
        with open(os.path.join(self.fixture.queue_dir, queue_id + ".json"), "rb") as f:
            return json.loads(f.read())

    async def test_advertised(self):
        """EHLO offers SMTPUTF8 (with 8BITMIME, which RFC 6531 requires)."""
        self.utf8_server()
        client = await self.client(ehlo=False)
        lines = (await client.command(b"EHLO client.example\r\n")).split("\n")
        self.assertIn("250-SMTPUTF8", lines)
        self.assertIn("250-8BITMIME", lines)

    async def test_utf8_path_needs_parameter(self):
        """
        RFC 6531 3.5: a UTF-8 sender without SMTPUTF8 gets 550 5.6.7, a UTF-8
        recipient 553 5.6.7; an A-label domain needs no parameter.
        """
        fixture = self.utf8_server()
        client = await self.client()
        client.send("MAIL FROM:<jos\u00e9@\u4f8b\u5b50.test>\r\n"
                    "MAIL FROM:<a@example.test>\r\n"
                    "RCPT TO:<ren\u00e9@xn--bcher-kva.example>\r\n"
                    "RCPT TO:<postmaster@b\u00fccher.example>\r\n"
                    "RCPT TO:<postmaster@xn--bcher-kva.example>\r\n".encode("utf-8"))
        replies = await client.wait(7)
        self.assertEqual(replies[2:], [
            "550 5.6.7 Non-ASCII addresses not permitted for that sender",
            "250 2.1.0 Ok",
            "553 5.6.7 Non-ASCII addresses not permitted for that recipient",
            "553 5.6.7 Non-ASCII addresses not permitted for that recipient",
            "250 2.1.5 Ok",
        ])
        self.assertEqual(fixture.queued(), [])

    async def test_utf8_message(self):
        """
        With SMTPUTF8 a UTF-8 sender and recipient are accepted (the
        recipient in NFD with an upper-case U-label domain finds the account
        written in NFC under the A-label domain); UTF-8 header fields are
        stored as sent, under a Received field saying UTF8SMTP; the envelope
        keeps SMTPUTF8 and the addresses as given.
        """
        fixture = self.utf8_server()
        client = await self.client()
        rcpt = "RENE\u0301@B\u00dcCHER.example"
        client.send(("MAIL FROM:<jos\u00e9@\u4f8b\u5b50.test> SMTPUTF8 BODY=8BITMIME\r\n"
                     f"RCPT TO:<{rcpt}>\r\nDATA\r\n").encode("utf-8"))
        replies = await client.wait(5)
        self.assertEqual(replies[2:], ["250 2.1.0 Ok", "250 2.1.5 Ok",
                                       "354 End data with <CR><LF>.<CR><LF>"])
        client.send(MESSAGE + b".\r\n")
        [reply] = (await client.wait(6))[5:]
        queue_id = reply.rsplit(" ", 1)[1]
        data = fixture.data(queue_id)
        self.assertTrue(data.endswith(b"\r\n\r\n" + MESSAGE.split(b"\r\n\r\n", 1)[1]))
        self.assertIn(MESSAGE.split(b"\r\n\r\n")[0], data)
        received = data[: data.index(b"From: ")]
        self.assertIn(b"(smtpd) with UTF8SMTP id " + queue_id.encode(), received)
        self.assertIn(f"for <RENE\u0301@b\u00fccher.example>".encode("utf-8"), received)
        envelope = self.envelope(queue_id)
        self.assertEqual((envelope["sender"], envelope["smtputf8"], envelope["body"]),
                         ("jos\u00e9@\u4f8b\u5b50.test", True, "8BITMIME"))
        self.assertEqual([r["address"] for r in envelope["recipients"]],
                         ["RENE\u0301@b\u00fccher.example"])

    async def test_same_recipient_any_spelling(self):
        """
        RCPT of one account in three spellings (NFC, NFD, A-label domain)
        queues it once; an unknown UTF-8 local part is 550 5.1.1.
        """
        fixture = self.utf8_server()
        client = await self.client()
        client.send(("MAIL FROM:<> SMTPUTF8\r\n"
                     f"RCPT TO:<{ACCOUNT}>\r\n"
                     "RCPT TO:<rene\u0301@B\u00fccher.example>\r\n"
                     "RCPT TO:<ren\u00e9@xn--bcher-kva.example>\r\n"
                     "RCPT TO:<ren\u00e8@b\u00fccher.example>\r\n"
                     "DATA\r\n").encode("utf-8") + MESSAGE + b".\r\n")
        replies = await client.wait(9)
        self.assertEqual(replies[3:7], ["250 2.1.5 Ok"] * 3 + [
            "550 5.1.1 <ren\u00e8@b\u00fccher.example>: User unknown"])
        envelope = self.envelope(replies[8].rsplit(" ", 1)[1])
        self.assertEqual([r["address"] for r in envelope["recipients"]], [ACCOUNT])
        self.assertEqual(len(fixture.queued()), 1)

    async def test_bad_utf8(self):
        """
        Invalid UTF-8 on the line, a bidi override in a local part and an
        invalid U-label: 501 with an enhanced code, the session goes on.
        """
        self.utf8_server()
        client = await self.client()
        client.send(b"MAIL FROM:<\xc3\x28@x.test> SMTPUTF8\r\n"
                    + "MAIL FROM:<a\u202eb@x.test> SMTPUTF8\r\n".encode("utf-8")
                    + "MAIL FROM:<a@b_\u00e9.test> SMTPUTF8\r\n".encode("utf-8")
                    + b"MAIL FROM:<a@x.test> SMTPUTF8=yes\r\n"
                    + b"NOOP\r\n")
        replies = await client.wait(7)
        self.assertEqual(replies[2], "501 5.5.4 Error: bad characters in command")
        self.assertEqual(replies[3], "501 5.5.4 Error: bad characters in command")
        self.assertEqual(replies[4], "501 5.5.4 Bad sender address syntax: "
                                     "bad internationalized domain")
        self.assertEqual(replies[5], "501 5.5.4 Error: SMTPUTF8 takes no value")
        self.assertEqual(replies[6], "250 2.0.0 Ok")

    async def test_received_protocols(self):
        """
        RFC 6531 3.7.3: the Received field says UTF8SMTPS over TLS and
        UTF8SMTPSA once authenticated (as an account with a UTF-8 address);
        a transaction without the parameter keeps ESMTPSA.
        """
        fixture = self.utf8_server()
        client = await self.client()
        await self.starttls(client)
        await client.command(b"EHLO client.example\r\n")
        transaction = b"\r\nRCPT TO:<bob@localhost>\r\nBDAT 12 LAST\r\nSubject: x\r\n"
        queue_ids = []

        async def send(mail: bytes) -> None:
            seen = len(client.replies)
            client.send(mail + transaction)
            replies = await client.wait(seen + 3)
            self.assertEqual(replies[seen:seen + 2], ["250 2.1.0 Ok", "250 2.1.5 Ok"])
            queue_ids.append(replies[seen + 2].rsplit(" ", 1)[1])

        await send(b"MAIL FROM:<a@example.test> SMTPUTF8")
        reply = await client.command(b"AUTH PLAIN " + plain(ACCOUNT, "secret") + b"\r\n")
        self.assertEqual(reply, "235 2.7.0 Authentication successful")
        await send(b"MAIL FROM:<a@example.test> SMTPUTF8")
        await send(b"MAIL FROM:<a@example.test>")
        withs = [fixture.data(q).split(b" with ", 1)[1].split(b" ", 1)[0] for q in queue_ids]
        self.assertEqual(withs, [b"UTF8SMTPS", b"UTF8SMTPSA", b"ESMTPSA"])
