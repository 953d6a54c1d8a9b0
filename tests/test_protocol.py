"""
The inbound ESMTP session over real loopback sockets (SPEC section 5).
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.inbound import RawClient, SMTPServerFixture, connect, make_config
from smtpd.inbound.session import SUBMISSION

MESSAGE = b"From: a@example.com\r\nSubject: test\r\n\r\nHello.\r\n"


class SessionTestsMixin:
    """A server per test with the given config changes."""

    def server(self, users=None, tls_options=None, **sections) -> SMTPServerFixture:
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        self.fixture = SMTPServerFixture(
            self, make_config(root, **sections), users, tls_options
        )
        self.port = self.fixture.listen()
        return self.fixture

    async def client(self, ehlo: bool = True) -> RawClient:
        client = await connect(self, self.port)
        if ehlo:
            reply = await client.command(b"EHLO client.example\r\n")
            self.assertTrue(reply.startswith("250-"), reply)
        return client

    async def settle(self):
        """Let a queue write in the thread pool complete."""
        d = defer.Deferred()
        reactor.callLater(0.05, d.callback, None)
        await d


class GreetingTests(SessionTestsMixin, unittest.TestCase):
    """Banner, EHLO, HELO and the simple commands."""

    async def test_banner(self):
        """The 220 line is '<hostname> <banner>', no version."""
        self.server()
        client = await connect(self, self.port)
        self.assertEqual(client.replies[0], "220 localhost ESMTP")

    async def test_ehlo_keywords(self):
        """
        EHLO advertises PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, DSN,
        SMTPUTF8, ETRN, CHUNKING, BINARYMIME.
        """
        self.server(messages={"max_message_size": 1000})
        client = await connect(self, self.port)
        reply = await client.command(b"EHLO client.example\r\n")
        self.assertEqual(
            reply.split("\n"),
            [
                "250-localhost",
                "250-PIPELINING",
                "250-SIZE 1000",
                "250-8BITMIME",
                "250-ENHANCEDSTATUSCODES",
                "250-DSN",
                "250-SMTPUTF8",
                "250-ETRN",
                "250-CHUNKING",
                "250 BINARYMIME",
            ],
        )

    async def test_helo(self):
        """HELO answers with the hostname."""
        self.server()
        client = await connect(self, self.port)
        self.assertEqual(await client.command(b"HELO client\r\n"), "250 localhost")

    async def test_ehlo_without_argument(self):
        """EHLO with no domain is a syntax error 501 5.5.4."""
        self.server()
        client = await connect(self, self.port)
        self.assertEqual(
            await client.command(b"EHLO\r\n"), "501 5.5.4 Syntax: EHLO hostname"
        )

    async def test_simple_commands(self):
        """NOOP, RSET, VRFY, HELP, unknown, QUIT carry enhanced codes."""
        self.server()
        client = await self.client()
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")
        self.assertEqual(await client.command(b"NOOP anything\r\n"), "250 2.0.0 Ok")
        self.assertEqual(await client.command(b"RSET\r\n"), "250 2.0.0 Ok")
        self.assertTrue((await client.command(b"VRFY bob\r\n")).startswith("252 2.5.2 "))
        self.assertTrue((await client.command(b"HELP\r\n")).startswith("214 2.0.0 "))
        self.assertTrue((await client.command(b"FROB\r\n")).startswith("500 5.5.1 "))
        self.assertEqual(await client.command(b"QUIT\r\n"), "221 2.0.0 Bye")
        await client.lost

    async def test_out_of_sequence(self):
        """MAIL before EHLO, RCPT before MAIL, DATA before RCPT: 503/554 5.5.1."""
        self.server()
        client = await connect(self, self.port)
        reply = await client.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertTrue(reply.startswith("503 5.5.1 "), reply)
        await client.command(b"EHLO c\r\n")
        reply = await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        self.assertTrue(reply.startswith("503 5.5.1 "), reply)
        reply = await client.command(b"DATA\r\n")
        self.assertTrue(reply.startswith("503 5.5.1 "), reply)
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        reply = await client.command(b"DATA\r\n")
        self.assertTrue(reply.startswith("554 5.5.1 "), reply)
        reply = await client.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertTrue(reply.startswith("503 5.5.1 "), reply)

    async def test_long_command_line(self):
        """A command line over 512 octets gets 500 5.5.2; the session goes on."""
        self.server()
        client = await self.client()
        reply = await client.command(b"NOOP " + b"x" * 600 + b"\r\n")
        self.assertTrue(reply.startswith("500 5.5.2 "), reply)
        reply = await client.command(b"HELP " + b"x" * 5000 + b"\r\n")
        self.assertTrue(reply.startswith("500 5.5.2 "), reply)
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")


class TransactionTests(SessionTestsMixin, unittest.TestCase):
    """MAIL, RCPT, DATA and what gets queued."""

    async def send_message(self, client, rcpts=(b"postmaster@localhost",), body=MESSAGE):
        await client.command(b"MAIL FROM:<sender@example.com>\r\n")
        for rcpt in rcpts:
            await client.command(b"RCPT TO:<" + rcpt + b">\r\n")
        reply = await client.command(b"DATA\r\n")
        self.assertTrue(reply.startswith("354 "), reply)
        return await client.command(body + b".\r\n")

    async def test_queued_after_durable(self):
        """The 250 names a queue id whose data and envelope are already on disk."""
        fixture = self.server()
        client = await self.client()
        reply = await self.send_message(client)
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        queue_id = reply.rsplit(" ", 1)[1]
        self.assertEqual(fixture.queued(), [queue_id])
        data = fixture.data(queue_id)
        self.assertTrue(data.startswith(b"Received: from client.example ([127.0.0.1])\r\n"))
        self.assertIn(b"with ESMTP id " + queue_id.encode(), data)
        self.assertTrue(data.endswith(MESSAGE), data)
        self.assertEqual(fixture.stored[0].sender, "sender@example.com")
        self.assertEqual(
            [r.address for r in fixture.stored[0].recipients], ["postmaster@localhost"]
        )

    async def test_dot_unstuffing(self):
        """Leading dots are removed once; the empty message is accepted."""
        fixture = self.server()
        client = await self.client()
        reply = await self.send_message(client, body=b"..hidden\r\n.x\r\nend\r\n")
        self.assertTrue(reply.startswith("250 "), reply)
        self.assertTrue(fixture.data(reply.rsplit(" ", 1)[1]).endswith(b"\r\n.hidden\r\nx\r\nend\r\n"))
        reply = await self.send_message(client, body=b"")
        self.assertTrue(reply.startswith("250 "), reply)

    async def test_pipelining_order(self):
        """
        A whole pipelined group, message and all, gets its replies in command
        order although the queue write is asynchronous.
        """
        fixture = self.server()
        client = await self.client()
        client.send(
            b"MAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<postmaster@localhost>\r\n"
            b"RCPT TO:<nobody@localhost>\r\n"
            b"RCPT TO:<postmaster@alias.test>\r\n"
            b"DATA\r\n" + MESSAGE + b".\r\n"
            b"MAIL FROM:<b@example.com>\r\n"
            b"RCPT TO:<PostMaster@LOCALHOST>\r\n"
            b"DATA\r\n" + MESSAGE + b".\r\n"
            b"NOOP\r\n"
            b"QUIT\r\n"
        )
        replies = await client.wait(14)
        codes = [r[:3] for r in replies[2:]]
        self.assertEqual(
            codes,
            ["250", "250", "550", "250", "354", "250", "250", "250", "354", "250", "250", "221"],
        )
        self.assertEqual(len(fixture.queued()), 2)

    async def test_bad_characters_in_recipient(self):
        """A recipient with CR, LF or NUL inside gets 501."""
        fixture = self.server()
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        for bad in (b"a\rb@localhost", b"a\x00b@localhost", b"a\nb@localhost", b"a@local\x7fhost"):
            n = len(client.replies)
            client.send(b"RCPT TO:<" + bad + b">\r\n")
            replies = await client.wait(n + 1 + bad.count(b"\n"))
            self.assertTrue(replies[n].startswith("501 5.5.4 "), (bad, replies[n:]))
        # Whatever remains of the line split at the bare LF is no command either.
        self.assertEqual(fixture.queued(), [])

    async def test_path_traversal_recipient(self):
        """C{../x@localhost} and its quoted form never reach a mailbox."""
        self.server()
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        reply = await client.command(b"RCPT TO:<../x@localhost>\r\n")
        self.assertTrue(reply.startswith("501 5.5.4 "), reply)
        reply = await client.command(b'RCPT TO:<"../x"@localhost>\r\n')
        self.assertTrue(reply.startswith("550 5.1.1 "), reply)

    async def test_unknown_local_user(self):
        """Unknown users of a local or alias domain get 550 5.1.1 at RCPT."""
        self.server()
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        for rcpt in (b"nobody@localhost", b"nobody@alias.test"):
            reply = await client.command(b"RCPT TO:<" + rcpt + b">\r\n")
            self.assertTrue(reply.startswith("550 5.1.1 "), reply)

    async def test_postmaster_everywhere(self):
        """postmaster, in any case, at every local or alias domain, and bare."""
        self.server()
        client = await self.client()
        await client.command(b"MAIL FROM:<>\r\n")
        for rcpt in (b"postmaster@localhost", b"POSTMASTER@alias.test", b"Postmaster"):
            reply = await client.command(b"RCPT TO:<" + rcpt + b">\r\n")
            self.assertEqual(reply, "250 2.1.5 Ok", rcpt)

    async def test_relay_denied(self):
        """A non-local recipient from a client outside [access] relay: 554 5.7.1."""
        fixture = self.server(access={"relay": ()})
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        tricks = (
            b"user@remote.example",
            b"user%remote.example@localhost",
            b"remote.example!user@localhost",
            b'"user@remote.example"@localhost',
            b"@localhost:user@remote.example",
        )
        replies = [await client.command(b"RCPT TO:<" + t + b">\r\n") for t in tricks]
        self.assertEqual(replies[0], "554 5.7.1 Relay access denied")
        self.assertEqual(replies[4], "554 5.7.1 Relay access denied")
        for reply in replies[1:4]:
            self.assertTrue(reply.startswith("550 5.1.1 "), reply)
        self.assertEqual(fixture.queued(), [])

    async def test_relay_allowed(self):
        """A relay client's remote recipient is queued; so is a backup-MX domain's."""
        fixture = self.server()
        client = await self.client()
        reply = await self.send_message(client, rcpts=[b"user@remote.example"])
        self.assertTrue(reply.startswith("250 2.0.0 "), reply)
        self.assertEqual(len(fixture.queued()), 1)

    async def test_backup_mx_domain(self):
        """type = remote with relay = yes accepts mail from anyone."""
        fixture = self.server(access={"relay": ()})
        client = await self.client()
        reply = await self.send_message(client, rcpts=[b"user@backup.test"])
        self.assertTrue(reply.startswith("250 2.0.0 "), reply)

    async def test_max_recipients(self):
        """Recipients past max_recipients get 452 4.5.3."""
        self.server(messages={"max_recipients": 2})
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"RCPT TO:<postmaster@alias.test>\r\n")
        reply = await client.command(b"RCPT TO:<x@drop.test>\r\n")
        self.assertTrue(reply.startswith("452 4.5.3 "), reply)

    async def test_size_at_mail(self):
        """SIZE= over max_message_size: 552 5.3.4 at MAIL."""
        self.server(messages={"max_message_size": 100})
        client = await self.client()
        reply = await client.command(b"MAIL FROM:<a@example.com> SIZE=101\r\n")
        self.assertTrue(reply.startswith("552 5.3.4 "), reply)
        reply = await client.command(b"MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\n")
        self.assertEqual(reply, "250 2.1.0 Ok")

    async def test_size_in_data(self):
        """Data over max_message_size: 552 5.3.4 at the end, nothing queued."""
        fixture = self.server(messages={"max_message_size": 1000})
        client = await self.client()
        reply = await self.send_message(client, body=b"x" * 900 + b"\r\n" + b"y" * 900 + b"\r\n")
        self.assertTrue(reply.startswith("552 5.3.4 "), reply)
        big = (b"z" * 500 + b"\r\n") * 2000
        reply = await self.send_message(client, body=big)
        self.assertTrue(reply.startswith("552 5.3.4 "), reply)
        self.assertEqual(fixture.queued(), [])
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")

    async def test_session_size(self):
        """The message that would pass max_session_size gets 552 5.3.4."""
        fixture = self.server(messages={"max_session_size": 80})
        client = await self.client()
        reply = await self.send_message(client)
        self.assertTrue(reply.startswith("250 "), reply)
        reply = await self.send_message(client)
        self.assertTrue(reply.startswith("552 5.3.4 "), reply)
        reply = await client.command(b"MAIL FROM:<a@example.com> SIZE=40\r\n")
        self.assertTrue(reply.startswith("552 5.3.4 "), reply)
        self.assertEqual(len(fixture.queued()), 1)

    async def test_unknown_parameter(self):
        """An unknown MAIL parameter: 555 5.5.4; a bad one: 501 5.5.4."""
        self.server()
        client = await self.client()
        reply = await client.command(b"MAIL FROM:<a@example.com> FOO=bar\r\n")
        self.assertTrue(reply.startswith("555 5.5.4 "), reply)
        reply = await client.command(b"MAIL FROM:<a@example.com> SIZE=big\r\n")
        self.assertTrue(reply.startswith("501 5.5.4 "), reply)

    async def test_dsn_parameters_kept(self):
        """RET, ENVID, NOTIFY and ORCPT land in the envelope."""
        fixture = self.server()
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com> RET=HDRS ENVID=abc+2Bd\r\n")
        reply = await client.command(
            b"RCPT TO:<postmaster@localhost> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;pm+40localhost\r\n"
        )
        self.assertEqual(reply, "250 2.1.5 Ok")
        await client.command(b"DATA\r\n")
        await client.command(MESSAGE + b".\r\n")
        envelope = fixture.stored[0]
        self.assertEqual((envelope.ret, envelope.envid), ("HDRS", "abc+d"))
        rcpt = envelope.recipients[0]
        self.assertEqual(rcpt.notify, ("SUCCESS", "FAILURE"))
        self.assertEqual(rcpt.orcpt, "rfc822;pm@localhost")

    async def test_hop_count(self):
        """More Received headers than max_hop_count: 554 5.4.6, nothing queued."""
        fixture = self.server(messages={"max_hop_count": 3})
        client = await self.client()
        hops = b"Received: from a by b; date\r\n" * 4
        reply = await self.send_message(client, body=hops + MESSAGE)
        self.assertTrue(reply.startswith("554 5.4.6 "), reply)
        reply = await self.send_message(client, body=hops[:-29] + MESSAGE)
        self.assertTrue(reply.startswith("250 "), reply)
        self.assertEqual(len(fixture.queued()), 1)

    async def test_helo_sanitised_in_received(self):
        """A HELO name that is no domain is made safe before it reaches Received:."""
        fixture = self.server()
        client = await connect(self, self.port)
        await client.command(b"EHLO x(y)<z>;\r\n")
        reply = await self.send_message(client)
        data = fixture.data(reply.rsplit(" ", 1)[1])
        self.assertTrue(data.startswith(b"Received: from x_y__z__ ([127.0.0.1])"), data[:80])
        reply = await client.command(b"EHLO bad\x01name\r\n")
        self.assertTrue(reply.startswith("501 5.5.4 "), reply)


class SmugglingTests(SessionTestsMixin, unittest.TestCase):
    """SMTP smuggling and over-long data lines (SPEC 5, DATA)."""

    VARIANTS = (b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n")

    def smuggle(self, ending: bytes) -> bytes:
        return (
            MESSAGE[:-2] + ending
            + b"MAIL FROM:<evil@example.com>\r\n"
            b"RCPT TO:<postmaster@localhost>\r\n"
            b"DATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n"
            b".\r\n"
        )

    async def test_reject_variants(self):
        """
        With bare_newlines = reject, each of the five bare CR/LF end-of-data
        variants is refused with 550 5.6.0 and nothing at all is queued.
        """
        fixture = self.server()
        client = await self.client()
        for ending in self.VARIANTS:
            await client.command(b"MAIL FROM:<a@example.com>\r\n")
            await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
            await client.command(b"DATA\r\n")
            reply = await client.command(self.smuggle(ending))
            self.assertEqual(reply, "550 5.6.0 Error: bare CR or LF in message data", ending)
            self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")
        self.assertEqual(fixture.queued(), [])

    async def test_normalize_variants(self):
        """
        With bare_newlines = normalize, each variant makes exactly one message,
        and the smuggled commands are part of its body, never a second message.
        """
        fixture = self.server(messages={"bare_newlines": "normalize"})
        client = await self.client()
        for ending in self.VARIANTS:
            await client.command(b"MAIL FROM:<a@example.com>\r\n")
            await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
            await client.command(b"DATA\r\n")
            reply = await client.command(self.smuggle(ending))
            self.assertTrue(reply.startswith("250 2.0.0 "), reply)
            data = fixture.data(reply.rsplit(" ", 1)[1])
            self.assertIn(b"MAIL FROM:<evil@example.com>\r\n", data)
            self.assertNotIn(b"\n", data.replace(b"\r\n", b""))
            self.assertNotIn(b"\r", data.replace(b"\r\n", b""))
            self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")
        self.assertEqual(len(fixture.queued()), len(self.VARIANTS))
        self.assertEqual({e.sender for e in fixture.stored}, {"a@example.com"})

    async def test_long_data_line(self):
        """
        A 20 KB data line followed by command-looking lines: all of it is read
        as data, then 500 5.5.2, nothing queued, and the session goes on.
        """
        fixture = self.server()
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        reply = await client.command(
            b"x" * 20000 + b"\r\n"
            b"QUIT\r\n"
            b"MAIL FROM:<evil@example.com>\r\n"
            b"RCPT TO:<postmaster@localhost>\r\n"
            b"DATA\r\n"
            b"smuggled\r\n"
            b".\r\n"
        )
        self.assertTrue(reply.startswith("500 5.5.2 "), reply)
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")
        self.assertEqual(fixture.queued(), [])

    async def test_line_of_998_octets(self):
        """A data line of exactly 998 octets is fine."""
        fixture = self.server()
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        reply = await client.command(b"x" * 998 + b"\r\n.\r\n")
        self.assertTrue(reply.startswith("250 "), reply)
        self.assertEqual(len(fixture.queued()), 1)


class LimitTests(SessionTestsMixin, unittest.TestCase):
    """Connection limits, errors, timeouts and access control."""

    async def test_idle_timeout(self):
        """After connection_timeout of silence: 421 4.4.2 and the close."""
        fixture = self.server(server={"connection_timeout": 60.0})
        client = await self.client()
        fixture.clock.advance(59)
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")
        fixture.clock.advance(61)
        await client.lost
        self.assertTrue(client.replies[-1].startswith("421 4.4.2 "), client.replies)

    async def test_max_connections(self):
        """Connections past max_connections get 421 4.7.0."""
        self.server(server={"max_connections": 2})
        await connect(self, self.port)
        await connect(self, self.port)
        third = await connect(self, self.port)
        self.assertTrue(third.replies[0].startswith("421 4.7.0 "), third.replies)
        await third.lost

    async def test_max_connections_per_ip(self):
        """Connections from one address past max_connections_per_ip: 421 4.7.0."""
        self.server(server={"max_connections_per_ip": 1})
        await connect(self, self.port)
        second = await connect(self, self.port)
        self.assertTrue(second.replies[0].startswith("421 4.7.0 "), second.replies)

    async def test_slots_released(self):
        """A closed session gives its place back."""
        fixture = self.server(server={"max_connections": 1})
        first = await connect(self, self.port)
        await first.command(b"QUIT\r\n")
        await first.lost
        second = await connect(self, self.port)
        self.assertTrue(second.replies[0].startswith("220 "), second.replies)
        self.assertEqual(len(fixture.inbound.sessions), 1)

    async def test_max_errors(self):
        """After max_errors protocol errors: 421 4.7.0 and the close."""
        self.server(access={"max_errors": 3})
        client = await self.client()
        client.send(b"BAD1\r\nBAD2\r\nBAD3\r\nNOOP\r\n")
        await client.lost
        self.assertEqual([r[:3] for r in client.replies[2:]], ["500", "500", "500", "421"])
        self.assertTrue(client.replies[-1].startswith("421 4.7.0 "))

    async def test_denied_peer(self):
        """A denied peer gets a 554 5.7.1 greeting, then 503 to all but QUIT."""
        self.server(access={"deny": (__import__("ipaddress").ip_network("127.0.0.0/8"),)})
        client = await connect(self, self.port)
        self.assertTrue(client.replies[0].startswith("554 5.7.1 "), client.replies)
        reply = await client.command(b"EHLO c\r\n")
        self.assertTrue(reply.startswith("503 "), reply)
        self.assertEqual(await client.command(b"QUIT\r\n"), "221 2.0.0 Bye")

    async def test_submission_requires_auth(self):
        """On a submission endpoint MAIL before AUTH gets 530 5.7.0."""
        fixture = self.server()
        self.port = fixture.listen(SUBMISSION)
        client = await self.client()
        reply = await client.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertEqual(reply, "530 5.7.0 Authentication required")

    async def test_anonymous_off(self):
        """anonymous = no: MAIL without AUTH gets 530 5.7.0 on listen endpoints too."""
        self.server(auth={"anonymous": False})
        client = await self.client()
        reply = await client.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertEqual(reply, "530 5.7.0 Authentication required")

    async def test_tls_required(self):
        """[tls] require = yes: MAIL before STARTTLS gets 530 5.7.0."""
        self.server(tls={"require": True})
        client = await self.client()
        reply = await client.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertTrue(reply.startswith("530 5.7.0 "), reply)

    async def test_disk_full(self):
        """A queue write that fails for lack of space: 452 4.3.1, no 250, nothing left."""
        fixture = self.server()

        def full(envelope, data):
            return defer.fail(OSError(28, "No space left on device"))

        fixture.queue.store = full
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        reply = await client.command(MESSAGE + b".\r\n")
        self.assertEqual(reply, "452 4.3.1 Insufficient system storage")
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")
