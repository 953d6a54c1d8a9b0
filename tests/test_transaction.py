"""
The mail transaction of the inbound session as it streams into cleanup:
recipient de-duplication, errors in the DATA path, large messages on disk,
and filters.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial import unittest

from smtpd.cleanup.interfaces import FilterResult
from tests.test_protocol import MESSAGE, SessionTestsMixin


class RecipientTests(SessionTestsMixin, unittest.TestCase):
    """Which RCPT addresses are one recipient."""

    async def test_remote_local_parts_keep_their_case(self):
        """
        C{Bob@x} and C{bob@x} are two recipients at a remote host (only the
        domain is case-insensitive); C{bob@X} is C{bob@x} again.
        """
        fixture = self.server()
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        for rcpt in (b"Bob@remote.example", b"bob@remote.example", b"bob@REMOTE.example"):
            reply = await client.command(b"RCPT TO:<" + rcpt + b">\r\n")
            self.assertEqual(reply, "250 2.1.5 Ok")
        await client.command(b"DATA\r\n")
        reply = await client.command(MESSAGE + b".\r\n")
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        [envelope] = fixture.stored
        self.assertEqual([r.address for r in envelope.recipients],
                         ["Bob@remote.example", "bob@remote.example"])

    async def test_local_accounts_ignore_case(self):
        """Our own accounts are case-insensitive: C{Postmaster@localhost} is C{postmaster@localhost}."""
        fixture = self.server()
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        for rcpt in (b"Postmaster@localhost", b"postmaster@LOCALHOST"):
            self.assertEqual(await client.command(b"RCPT TO:<" + rcpt + b">\r\n"),
                             "250 2.1.5 Ok")
        await client.command(b"DATA\r\n")
        await client.command(MESSAGE + b".\r\n")
        [envelope] = fixture.stored
        self.assertEqual([r.address for r in envelope.recipients], ["Postmaster@localhost"])


class DataErrorTests(SessionTestsMixin, unittest.TestCase):
    """An unexpected error while data streams in is answered like one in a command."""

    async def test_error_while_receiving(self):
        """
        The disk writer breaks mid-message: the rest is still read as data,
        then 451 4.3.0; nothing is queued, no temporary file stays, and the
        session goes on.
        """
        fixture = self.server()
        fixture.cleanup.threshold = 1024

        def broken(f, *args):
            raise RuntimeError("thread pool gone")

        fixture.cleanup.run_blocking = broken
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        body = b"Subject: big\r\n\r\n" + b"QUIT\r\n" * 2000
        reply = await client.command(body + b".\r\n")
        self.assertEqual(reply, "451 4.3.0 Error: internal error")
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")
        self.assertEqual(fixture.stored, [])
        self.assertEqual(os.listdir(fixture.queue_dir), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_error_in_the_intake(self):
        """The intake raises: 451, nothing queued, the session survives."""
        fixture = self.server()

        def broken(envelope, message):
            raise ValueError("intake broken")

        fixture.cleanup.accept = broken
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        reply = await client.command(MESSAGE + b".\r\n")
        self.assertEqual(reply, "451 4.3.0 Error: local error in processing")
        self.assertEqual(await client.command(b"RSET\r\n"), "250 2.0.0 Ok")
        self.assertEqual(os.listdir(fixture.queue_dir), [])
        self.flushLoggedErrors(ValueError)


class LargeMessageTests(SessionTestsMixin, unittest.TestCase):
    """A message beyond the spool threshold goes to disk while it arrives."""

    async def test_large_message_queued_from_disk(self):
        """A 3 MB message arrives whole in the queue; no temporary file remains."""
        fixture = self.server(messages={"max_message_size": 0, "max_session_size": 0})
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        line = b"0123456789" * 7 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * 40000 + b"..dot\r\n"
        reply = await client.command(body + b".\r\n")
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        [queue_id] = fixture.queued()
        data = fixture.data(queue_id)
        self.assertTrue(data.startswith(b"Received: "))
        self.assertTrue(data.endswith(b"Subject: big\r\n\r\n" + line * 40000 + b".dot\r\n"))
        self.assertEqual(sorted(os.listdir(fixture.queue_dir)),
                         [queue_id + ".eml", queue_id + ".json"])

    async def test_too_large_refused_without_keeping_it(self):
        """Over max_message_size: 552 5.3.4 at the end, nothing on disk."""
        fixture = self.server(messages={"max_message_size": 100000})
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        reply = await client.command(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 3000
                                     + b".\r\n")
        self.assertEqual(reply, "552 5.3.4 Message size exceeds fixed maximum message size")
        self.assertEqual(os.listdir(fixture.queue_dir), [])


class Tagger:
    """A filter that prepends one field, or refuses mail from one sender."""

    name = "tagger"

    def __init__(self):
        self.seen = []

    async def check(self, envelope, message, client):
        with message.open() as f:
            self.seen.append((envelope.sender, client, f.read()))
        if envelope.sender == "spam@example.com":
            return FilterResult(reply=(550, "5.7.1", "Refused by policy"))
        return FilterResult(prepend=[b"X-Tagged: yes\r\n"])


class FilterTests(SessionTestsMixin, unittest.TestCase):
    """L{smtpd.cleanup.interfaces.ICleanupFilter} hooks see the complete message."""

    async def test_prepend_and_refuse(self):
        """A filter's field goes above Received; its refusal is the DATA reply."""
        fixture = self.server()
        tagger = Tagger()
        fixture.cleanup.filters.append(tagger)
        client = await self.client()
        for sender, expect in ((b"a@example.com", "250 2.0.0"),
                               (b"spam@example.com", "550 5.7.1 Refused by policy")):
            await client.command(b"MAIL FROM:<" + sender + b">\r\n")
            await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
            await client.command(b"DATA\r\n")
            reply = await client.command(MESSAGE + b".\r\n")
            self.assertTrue(reply.startswith(expect), reply)
        [queue_id] = fixture.queued()
        data = fixture.data(queue_id)
        self.assertTrue(data.startswith(b"X-Tagged: yes\r\nReceived: from client.example"), data)
        sender, client_info, seen = tagger.seen[0]
        self.assertEqual(client_info.helo, "client.example")
        self.assertEqual(client_info.protocol, "ESMTP")
        self.assertTrue(client_info.relay_client)  # 127.0.0.1 is in [access] relay
        self.assertTrue(seen.startswith(b"Received: ") and seen.endswith(MESSAGE))
        await defer.succeed(None)


class FlowControlTests(SessionTestsMixin, unittest.TestCase):
    """A disk that lags pauses the client instead of filling memory."""

    async def test_client_paused_while_the_disk_lags(self):
        """
        With the spool's disk writes held back, a client sending 4 MB finds the
        server holding well under 1 MB (it stopped reading); once the disk
        catches up the message is queued whole.
        """
        fixture = self.server(messages={"max_message_size": 0})
        fixture.cleanup.threshold = 1024
        gate: defer.Deferred = defer.Deferred()
        real = fixture.cleanup.run_blocking

        def lagging(f, *args):
            return gate.addCallback(lambda _: real(f, *args))

        fixture.cleanup.run_blocking = lagging
        client = await self.client()
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        line = b"x" * 78 + b"\r\n"
        client.send(b"Subject: lag\r\n\r\n" + line * (4 * 1024 * 1024 // 80) + b".\r\n")
        await self.settle()
        await self.settle()
        [session] = fixture.inbound.sessions.values()
        held = len(session._buf) + session._message._spool._pending_size
        self.assertLess(held, 1024 * 1024)
        self.assertTrue(session._read_paused)
        gate.callback(None)
        reply = (await client.wait(6))[5]
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        [queue_id] = fixture.queued()
        data = fixture.data(queue_id)
        self.assertTrue(data.endswith(b"Subject: lag\r\n\r\n" + line * (4 * 1024 * 1024 // 80)))
