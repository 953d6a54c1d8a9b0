"""
STARTTLS, implicit TLS and AUTH over real loopback sockets (SPEC 5; RFC 3207,
RFC 4954).
"""

from __future__ import annotations

import base64
import os

from twisted.internet import reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from smtpd.util import tls
from smtpd.directory import accounts as users
from smtpd.inbound.session import SMTPS, SUBMISSION
from tests.inbound import RawClient, SMTPServerFixture
from tests.test_protocol import MESSAGE, SessionTestsMixin


def server_options(testcase):
    folder = os.path.abspath(testcase.mktemp())
    cert, key = os.path.join(folder, "c.pem"), os.path.join(folder, "c.key")
    tls.ensure_certificate(cert, key, "localhost", 1.7e9)
    return tls.server_tls_options(cert, key)


def plain(login: str, password: str) -> bytes:
    return base64.b64encode(f"\0{login}\0{password}".encode())


class TLSTestsMixin(SessionTestsMixin):
    """A server with TLS options and one account: bob@localhost / secret."""

    def tls_server(self, **sections) -> SMTPServerFixture:
        path = os.path.abspath(self.mktemp())
        users.add(path, "bob@localhost", "secret", rounds=4)
        return self.server(users.Users.load(path), server_options(self), **sections)

    async def starttls(self, client: RawClient) -> None:
        reply = await client.command(b"STARTTLS\r\n")
        self.assertEqual(reply, "220 2.0.0 Ready to start TLS")
        client.transport.startTLS(ssl.CertificateOptions())


class StartTLSTests(TLSTestsMixin, unittest.TestCase):
    """RFC 3207."""

    async def test_advertised(self):
        """STARTTLS is offered before TLS, AUTH is not (allow_plaintext = no)."""
        self.tls_server()
        client = await self.client(ehlo=False)
        reply = await client.command(b"EHLO c\r\n")
        keywords = [line[4:] for line in reply.split("\n")]
        self.assertIn("STARTTLS", keywords)
        self.assertNotIn("AUTH", reply)

    async def test_no_command_injection(self):
        """
        Commands pipelined behind STARTTLS in the same write are discarded, not
        answered inside TLS; after TLS the session has forgotten EHLO.
        """
        self.tls_server()
        client = await self.client()
        n = len(client.replies)
        client.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<x@example.com>\r\n")
        replies = await client.wait(n + 1)
        self.assertEqual(replies[-1], "220 2.0.0 Ready to start TLS")
        client.transport.startTLS(ssl.CertificateOptions())
        reply = await client.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertTrue(reply.startswith("503 5.5.1 "), reply)
        reply = await client.command(b"EHLO c\r\n")
        self.assertTrue(reply.startswith("250-localhost"), reply)
        self.assertNotIn("STARTTLS", reply)
        self.assertIn("250-AUTH PLAIN LOGIN", reply.split("\n"))
        self.assertEqual(len(client.replies), n + 3)

    async def test_esmtps_received(self):
        """A message under TLS is stamped ESMTPS; authenticated, ESMTPSA."""
        fixture = self.tls_server()
        client = await self.client()
        await self.starttls(client)
        await client.command(b"EHLO c\r\n")
        for expected in (b"with ESMTPS id", b"with ESMTPSA id"):
            if expected == b"with ESMTPSA id":
                reply = await client.command(b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n")
                self.assertEqual(reply, "235 2.7.0 Authentication successful")
            await client.command(b"MAIL FROM:<a@example.com>\r\n")
            await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
            await client.command(b"DATA\r\n")
            reply = await client.command(MESSAGE + b".\r\n")
            self.assertIn(expected, fixture.data(reply.rsplit(" ", 1)[1]))

    async def test_tls_required_satisfied(self):
        """[tls] require = yes: after STARTTLS, MAIL is accepted."""
        self.tls_server(tls={"require": True})
        client = await self.client()
        await self.starttls(client)
        await client.command(b"EHLO c\r\n")
        self.assertEqual(await client.command(b"MAIL FROM:<a@example.com>\r\n"), "250 2.1.0 Ok")

    async def test_implicit_tls(self):
        """An smtps endpoint speaks TLS from the first byte; no STARTTLS offered."""
        fixture = self.tls_server()
        port = fixture.listen(SMTPS)
        client = RawClient()
        factory_options = ssl.CertificateOptions()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        from twisted.internet.endpoints import wrapClientTLS

        await connectProtocol(wrapClientTLS(factory_options, endpoint), client)
        self.addCleanup(lambda: None if client.closed else (client.transport.abortConnection(), client.lost)[1])
        replies = await client.wait(1)
        self.assertEqual(replies[0], "220 localhost ESMTP")
        reply = await client.command(b"EHLO c\r\n")
        self.assertNotIn("STARTTLS", reply)
        self.assertIn("AUTH PLAIN LOGIN", reply)


class AuthTests(TLSTestsMixin, unittest.TestCase):
    """RFC 4954 AUTH PLAIN and LOGIN."""

    async def authed_client(self, **sections):
        fixture = self.tls_server(**sections)
        client = await self.client()
        await self.starttls(client)
        await client.command(b"EHLO c\r\n")
        return fixture, client

    async def test_plain(self):
        """AUTH PLAIN with an initial response, and with a 334 round."""
        _, client = await self.authed_client()
        reply = await client.command(b"AUTH PLAIN\r\n")
        self.assertEqual(reply, "334 ")
        reply = await client.command(plain("Bob@localhost", "secret") + b"\r\n")
        self.assertEqual(reply, "235 2.7.0 Authentication successful")
        reply = await client.command(b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n")
        self.assertTrue(reply.startswith("503 5.5.1 "), reply)

    async def test_login(self):
        """AUTH LOGIN asks Username: then Password:."""
        _, client = await self.authed_client()
        self.assertEqual(await client.command(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6")
        self.assertEqual(await client.command(base64.b64encode(b"bob@localhost") + b"\r\n"), "334 UGFzc3dvcmQ6")
        reply = await client.command(base64.b64encode(b"secret") + b"\r\n")
        self.assertEqual(reply, "235 2.7.0 Authentication successful")

    async def test_failures_close(self):
        """Bad credentials: 535 5.7.8; after auth_failures of them, 421 4.7.0."""
        _, client = await self.authed_client(access={"auth_failures": 2, "auth_failure_delay": 0.0})
        reply = await client.command(b"AUTH PLAIN " + plain("bob@localhost", "wrong") + b"\r\n")
        self.assertEqual(reply, "535 5.7.8 Authentication credentials invalid")
        reply = await client.command(b"AUTH PLAIN " + plain("nobody@localhost", "x") + b"\r\n")
        self.assertEqual(reply, "535 5.7.8 Authentication credentials invalid")
        await client.lost
        self.assertTrue(client.replies[-1].startswith("421 4.7.0 "), client.replies)

    async def test_garbage_and_abort(self):
        """Undecodable responses get 501 5.5.2; '*' aborts with 501 5.7.0."""
        _, client = await self.authed_client()
        reply = await client.command(b"AUTH PLAIN !!!notbase64\r\n")
        self.assertTrue(reply.startswith("501 5.5.2 "), reply)
        await client.command(b"AUTH LOGIN\r\n")
        reply = await client.command(b"*\r\n")
        self.assertTrue(reply.startswith("501 5.7.0 "), reply)
        self.assertEqual(await client.command(b"NOOP\r\n"), "250 2.0.0 Ok")

    async def test_pipelined_after_auth(self):
        """Commands pipelined behind AUTH wait for the (threaded) password check."""
        fixture, client = await self.authed_client()
        n = len(client.replies)
        client.send(
            b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n"
            b"MAIL FROM:<bob@localhost>\r\nRCPT TO:<someone@remote.example>\r\nDATA\r\n"
        )
        replies = await client.wait(n + 4)
        self.assertEqual([r[:3] for r in replies[n:]], ["235", "250", "250", "354"])

    async def test_submission_relay_after_auth(self):
        """On a submission endpoint an authenticated client may relay."""
        fixture = self.tls_server(access={"relay": ()})
        self.port = fixture.listen(SUBMISSION)
        client = await self.client()
        await self.starttls(client)
        await client.command(b"EHLO c\r\n")
        await client.command(b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n")
        await client.command(b"MAIL FROM:<bob@localhost>\r\n")
        reply = await client.command(b"RCPT TO:<someone@remote.example>\r\n")
        self.assertEqual(reply, "250 2.1.5 Ok")

    async def test_no_auth_without_tls(self):
        """AUTH before TLS with allow_plaintext = no: 538 5.7.11."""
        self.tls_server()
        client = await self.client()
        reply = await client.command(b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n")
        self.assertTrue(reply.startswith("538 5.7.11 "), reply)
