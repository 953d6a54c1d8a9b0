"""Graceful stop of inbound sessions (SIGTERM): DATA may finish, then 421 4.3.2."""

from twisted.trial import unittest

from tests.inbound import connect
from tests.test_protocol import MESSAGE, SessionTestsMixin


class ShutdownTests(SessionTestsMixin, unittest.TestCase):
    """Inbound.shutdown."""

    async def start_data(self):
        client = await self.client()
        for line in (b"MAIL FROM:<a@example.com>\r\n", b"RCPT TO:<postmaster@localhost>\r\n", b"DATA\r\n"):
            await client.command(line)
        client.send(MESSAGE[:20])
        await self.settle()
        return client

    async def test_data_finishes(self):
        """A session in DATA finishes its message, then gets 421 4.3.2."""
        fixture = self.server()
        client = await self.start_data()
        idle = await self.client()
        stopped = fixture.inbound.shutdown(5.0)
        late = await connect(self, self.port)
        self.assertTrue(late.replies[0].startswith("421 4.3.2 "), late.replies)
        reply = await client.command(MESSAGE[20:] + b".\r\n")
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        self.assertFalse(stopped.called)
        fixture.clock.advance(0.1)
        await stopped
        self.assertTrue(idle.replies[-1].startswith("421 4.3.2 "), idle.replies)
        await client.lost
        await idle.lost
        self.assertTrue(client.replies[-1].startswith("421 4.3.2 "), client.replies)
        self.assertEqual(len(fixture.queued()), 1)
        self.assertEqual(fixture.inbound.sessions, {})

    async def test_grace_runs_out(self):
        """A session still in DATA after the grace period is closed; nothing queued."""
        fixture = self.server()
        client = await self.start_data()
        stopped = fixture.inbound.shutdown(5.0)
        for _ in range(52):
            fixture.clock.advance(0.1)
        await stopped
        await client.lost
        self.assertTrue(client.replies[-1].startswith("421 4.3.2 "), client.replies)
        self.assertEqual(fixture.queued(), [])
