"""
Access control and hostile clients over real loopback sockets: AUTH through
twisted.cred (Python's smtplib as the client), per-address throttling across
sessions, slow-client deadlines, reverse DNS against a real twisted.names
server, and the submission sender rules.
"""

from __future__ import annotations

import base64
import os
import smtplib
import ssl as stdlib_ssl
import time

from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.names import client as dns_client
from twisted.trial import unittest

from smtpd.config import TLSConfig
from smtpd.directory import accounts
from smtpd.util import tls
from smtpd.inbound.session import SUBMISSION
from tests.inbound import RawClient, SMTPServerFixture, connect, make_config
from tests.support import a, start_dns_server, start_silent_dns_server
from tests.test_protocol import MESSAGE
from tests.test_protocol_tls import server_options
from tests.test_rdns import ptr


def plain(login: str, password: str, authzid: str = "") -> bytes:
    """An AUTH PLAIN initial response."""
    return base64.b64encode(f"{authzid}\0{login}\0{password}".encode())


async def connect_from(testcase, port: int, source: str) -> RawClient:
    """A L{RawClient} connected from the loopback address C{source}."""
    client = RawClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    await connectProtocol(endpoint, client)

    def close():
        if not client.closed:
            client.transport.abortConnection()
            return client.lost

    testcase.addCleanup(close)
    await client.wait(1)
    return client


class AccessTestsMixin:
    """A server with TLS and the accounts bob@localhost and ann@localhost."""

    def server(self, resolver=None, **sections) -> SMTPServerFixture:
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        path = os.path.join(root, "users")
        accounts.add(path, "bob@localhost", "secret", rounds=4)
        accounts.add(path, "ann@localhost", "other", rounds=4)
        self.fixture = SMTPServerFixture(
            self,
            make_config(root, **sections),
            accounts.Users.load(path),
            server_options(self),
            resolver=resolver,
        )
        self.port = self.fixture.listen()
        return self.fixture

    async def tls_client(self, port: int | None = None) -> RawClient:
        """A client after STARTTLS and a new EHLO."""
        client = await connect(self, port or self.port)
        await client.command(b"EHLO client.example\r\n")
        self.assertEqual(await client.command(b"STARTTLS\r\n"), "220 2.0.0 Ready to start TLS")
        client.transport.startTLS(ssl.CertificateOptions())
        reply = await client.command(b"EHLO client.example\r\n")
        self.assertIn("AUTH PLAIN LOGIN", reply)
        return client


class SmtplibAuthTests(AccessTestsMixin, unittest.TestCase):
    """RFC 4954 AUTH with Python's smtplib as the client."""

    def smtplib_session(self, mechanism: str) -> tuple[list, str]:
        """In a thread: STARTTLS, AUTH with C{mechanism}, send a message as bob."""
        context = stdlib_ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = stdlib_ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            smtp.ehlo("client.example")
            in_clear = smtp.has_extn("auth")
            smtp.starttls(context=context)
            smtp.ehlo("client.example")
            smtp.user, smtp.password = "bob@localhost", "secret"
            auth_method = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
            code, text = smtp.auth(mechanism, auth_method, initial_response_ok=mechanism == "PLAIN")
            refused = smtp.sendmail("bob@localhost", ["someone@remote.example"], MESSAGE)
        return [in_clear, code, text, refused], mechanism

    async def test_plain_and_login_after_starttls(self):
        """
        smtplib sees no AUTH in clear, then logs in with PLAIN and with LOGIN
        after STARTTLS and relays as the authenticated user.
        """
        fixture = self.server(access={"relay": ()})
        for mechanism in ("PLAIN", "LOGIN"):
            (in_clear, code, text, refused), _ = await deferToThread(
                self.smtplib_session, mechanism
            )
            self.assertFalse(in_clear)
            self.assertEqual((code, text), (235, b"2.7.0 Authentication successful"))
            self.assertEqual(refused, {})
        queued = fixture.queued()
        self.assertEqual(len(queued), 2)
        self.assertIn(b"with ESMTPSA id", fixture.data(queued[0]))


class AuthTests(AccessTestsMixin, unittest.TestCase):
    """AUTH rules over raw sockets."""

    async def test_not_offered_in_clear(self):
        """Before STARTTLS AUTH is not advertised and answers 538 5.7.11."""
        self.server()
        client = await connect(self, self.port)
        self.assertNotIn("AUTH", await client.command(b"EHLO client.example\r\n"))
        reply = await client.command(b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n")
        self.assertTrue(reply.startswith("538 5.7.11 "), reply)

    async def test_authzid(self):
        """A PLAIN authzid other than the login gets 535 5.7.8; the login itself works."""
        self.server()
        client = await self.tls_client()
        reply = await client.command(
            b"AUTH PLAIN " + plain("bob@localhost", "secret", "ann@localhost") + b"\r\n"
        )
        self.assertEqual(reply, "535 5.7.8 Authentication credentials invalid")
        reply = await client.command(
            b"AUTH PLAIN " + plain("bob@localhost", "secret", "Bob@localhost") + b"\r\n"
        )
        self.assertEqual(reply, "235 2.7.0 Authentication successful")
        reply = await client.command(b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n")
        self.assertTrue(reply.startswith("503 5.5.1 "), reply)

    async def send_octets(self, client: RawClient, line: bytes) -> str:
        """Send C{line} one octet per write, each in its own reactor turn."""
        n = len(client.replies) + 1
        for i in range(len(line)):
            client.send(line[i : i + 1])
            await deferLater(reactor, 0, lambda: None)
        return (await client.wait(n))[-1]

    async def test_one_octet_segments(self):
        """The same AUTH split into 1-octet segments works."""
        self.server()
        client = await self.tls_client()
        line = b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n"
        self.assertEqual(await self.send_octets(client, line), "235 2.7.0 Authentication successful")

    async def test_long_auth_line_any_segmentation(self):
        """
        An AUTH line over 1012 octets gets the same answer in one segment and
        in 1-octet segments (here: a wrong password), not "line too long".
        """
        self.server(access={"auth_failure_delay": 0.0})
        line = b"AUTH PLAIN " + plain("bob@localhost", "x" * 1500) + b"\r\n"
        self.assertGreater(len(line), 2000)
        whole = await (await self.tls_client()).command(line)
        split = await self.send_octets(await self.tls_client(), line)
        self.assertEqual(whole, "535 5.7.8 Authentication credentials invalid")
        self.assertEqual(split, whole)
        too_long = b"AUTH PLAIN " + b"A" * 12300 + b"\r\n"
        client = await self.tls_client()
        self.assertTrue((await client.command(too_long)).startswith("500 5.5.2 "))

    async def test_password_pool_full(self):
        """When every password check is taken, AUTH gets 454 4.7.0 at once."""
        self.server()
        self.fixture.inbound.password_pool.limit = 0
        client = await self.tls_client()
        reply = await client.command(b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n")
        self.assertEqual(reply, "454 4.7.0 Temporary authentication failure")


class ThrottleTests(AccessTestsMixin, unittest.TestCase):
    """Limits kept per client address across sessions."""

    async def test_guesser_blocked_other_address_served(self):
        """
        A client failing AUTH once per connection from 127.0.0.1 is refused
        with 421 4.7.0 at connect after auth_failure_limit failures, while
        127.0.0.2 logs in at the same time.
        """
        self.server(
            auth={"allow_plaintext": True},
            access={"auth_failure_limit": 3, "auth_failure_delay": 0.0},
        )
        wrong = b"AUTH PLAIN " + plain("bob@localhost", "guess") + b"\r\n"
        for attempt in range(3):
            guesser = await connect_from(self, self.port, "127.0.0.1")
            self.assertEqual(guesser.replies[0], "220 localhost ESMTP")
            await guesser.command(b"EHLO guesser\r\n")
            self.assertTrue((await guesser.command(wrong)).startswith("535 5.7.8 "))
            guesser.transport.loseConnection()
            await guesser.lost
        guesser = await connect_from(self, self.port, "127.0.0.1")
        self.assertTrue(guesser.replies[0].startswith("421 4.7.0 "), guesser.replies)
        await guesser.lost
        other = await connect_from(self, self.port, "127.0.0.2")
        self.assertEqual(other.replies[0], "220 localhost ESMTP")
        await other.command(b"EHLO other\r\n")
        reply = await other.command(b"AUTH PLAIN " + plain("ann@localhost", "other") + b"\r\n")
        self.assertEqual(reply, "235 2.7.0 Authentication successful")
        blocked = self.fixture.inbound.throttle.snapshot()
        self.assertEqual([e["address"] for e in blocked if e["blocked_until"]], ["127.0.0.1"])

    async def test_failure_delay(self):
        """A second failure from the same address is answered only after auth_failure_delay."""
        fixture = self.server(auth={"allow_plaintext": True}, access={"auth_failure_delay": 5.0})
        client = await connect(self, self.port)
        await client.command(b"EHLO c\r\n")
        wrong = b"AUTH PLAIN " + plain("bob@localhost", "guess") + b"\r\n"
        self.assertTrue((await client.command(wrong)).startswith("535 "))
        n = len(client.replies)
        client.send(wrong)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(client.replies), n)
        fixture.clock.advance(5)
        self.assertTrue((await client.wait(n + 1))[-1].startswith("535 5.7.8 "))

    async def test_connection_and_message_rates(self):
        """Over connection_rate: 421 4.7.0 at connect; over message_rate: 451 4.7.1 at MAIL."""
        self.server(access={"relay": (), "connection_rate": 2, "message_rate": 1})
        first = await connect(self, self.port)
        await first.command(b"EHLO c\r\n")
        self.assertEqual(await first.command(b"MAIL FROM:<a@example.com>\r\n"), "250 2.1.0 Ok")
        await first.command(b"RSET\r\n")
        reply = await first.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertTrue(reply.startswith("451 4.7.1 "), reply)
        await connect(self, self.port)
        third = await connect(self, self.port)
        self.assertTrue(third.replies[0].startswith("421 4.7.0 "), third.replies)


class SlowClientTests(AccessTestsMixin, unittest.TestCase):
    """Deadlines cut clients that trickle, whatever they send."""

    async def test_slow_clients_cut_normal_client_served(self):
        """
        200 clients sending one byte every 3 seconds (100 in a command line,
        100 in DATA) are cut with 421 4.4.2 by the deadlines, while a normal
        client sends a message within a second.
        """
        fixture = self.server(server={"max_connections_per_ip": 1000})
        slow = []
        for n in range(200):
            client = await connect(self, self.port)
            if n % 2:
                await client.command(b"EHLO slow\r\n")
                await client.command(b"MAIL FROM:<a@example.com>\r\n")
                await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
                await client.command(b"DATA\r\n")
            slow.append(client)
        started = time.monotonic()
        normal = await connect(self, self.port)
        await normal.command(b"EHLO normal\r\n")
        await normal.command(b"MAIL FROM:<a@example.com>\r\n")
        await normal.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await normal.command(b"DATA\r\n")
        self.assertTrue((await normal.command(MESSAGE + b".\r\n")).startswith("250 2.0.0 "))
        self.assertLess(time.monotonic() - started, 1.0)
        for second in range(0, 330, 3):
            for client in slow:
                if not client.closed:
                    client.send(b"X")
            await deferLater(reactor, 0, lambda: None)
            fixture.clock.advance(3)
            # Let the 421s just written reach the clients before the next
            # trickle byte: a byte sent into a connection the server has
            # closed draws a TCP reset, which can discard an unread reply.
            await deferLater(reactor, 0.01, lambda: None)
        await defer.gatherResults([c.lost for c in slow])
        for n, client in enumerate(slow):
            self.assertEqual(client.replies[-1], "421 4.4.2 Error: timeout exceeded")
        self.assertEqual(len(fixture.inbound.sessions), 1)


class ReverseDNSTests(AccessTestsMixin, unittest.TestCase):
    """[access] reverse_dns against a real twisted.names server on loopback."""

    def dns(self):
        zones = {
            "in-addr.arpa": {"1.0.0.127.in-addr.arpa": [ptr("mail.example.test")]},
            "example.test": {"mail.example.test": [a("127.0.0.1")]},
        }
        return dns_client.Resolver(servers=[start_dns_server(self, zones)], reactor=reactor)

    async def send(self, client: RawClient) -> str:
        await client.command(b"EHLO client.example\r\n")
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        await client.command(b"RCPT TO:<postmaster@localhost>\r\n")
        await client.command(b"DATA\r\n")
        return await client.command(MESSAGE + b".\r\n")

    async def test_name_in_received(self):
        """A forward-confirmed name shows as (name [ip]); no name as (unknown [ip])."""
        fixture = self.server(resolver=self.dns(), access={"reverse_dns": True})
        reply = await self.send(await connect_from(self, self.port, "127.0.0.1"))
        data = fixture.data(reply.rsplit(" ", 1)[1])
        self.assertTrue(data.startswith(
            b"Received: from client.example (mail.example.test [127.0.0.1])\r\n"
        ), data[:100])
        reply = await self.send(await connect_from(self, self.port, "127.0.0.3"))
        data = fixture.data(reply.rsplit(" ", 1)[1])
        self.assertTrue(data.startswith(b"Received: from client.example (unknown [127.0.0.3])\r\n"))

    async def test_reject_unknown_client(self):
        """reject_unknown_client = yes: MAIL from a client without a confirmed name gets 450 4.7.25."""
        self.server(
            resolver=self.dns(), access={"reverse_dns": True, "reject_unknown_client": True}
        )
        client = await connect_from(self, self.port, "127.0.0.3")
        await client.command(b"EHLO c\r\n")
        reply = await client.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertTrue(reply.startswith("450 4.7.25 "), reply)
        known = await connect_from(self, self.port, "127.0.0.1")
        await known.command(b"EHLO c\r\n")
        self.assertEqual(await known.command(b"MAIL FROM:<a@example.com>\r\n"), "250 2.1.0 Ok")

    async def test_silent_server(self):
        """
        A DNS server that never answers: the greeting comes at once, MAIL
        waits at most reverse_dns_timeout, and Received says unknown.
        """
        resolver = dns_client.Resolver(servers=[start_silent_dns_server(self)], reactor=reactor)
        fixture = self.server(
            resolver=resolver, access={"reverse_dns": True, "reverse_dns_timeout": 0.5}
        )
        started = time.monotonic()
        client = await connect(self, self.port)
        self.assertLess(time.monotonic() - started, 0.3)
        reply = await self.send(client)
        self.assertLess(time.monotonic() - started, 1.5)
        data = fixture.data(reply.rsplit(" ", 1)[1])
        self.assertTrue(data.startswith(b"Received: from client.example (unknown [127.0.0.1])\r\n"))


class SubmissionTests(AccessTestsMixin, unittest.TestCase):
    """sender_login_match on the submission endpoint."""

    async def test_sender_must_be_owned(self):
        """Another user's address and <> get 553 5.7.1; the login and its alias pass."""
        fixture = self.server()
        client = await self.tls_client(fixture.listen(SUBMISSION))
        await client.command(b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n")
        reply = await client.command(b"MAIL FROM:<ann@localhost>\r\n")
        self.assertTrue(reply.startswith("553 5.7.1 "), reply)
        reply = await client.command(b"MAIL FROM:<>\r\n")
        self.assertTrue(reply.startswith("553 5.7.1 "), reply)
        self.assertEqual(await client.command(b"MAIL FROM:<bob@alias.test>\r\n"), "250 2.1.0 Ok")

    async def test_listen_endpoint_unaffected(self):
        """On the ordinary listen endpoint an authenticated user may still use any sender."""
        self.server()
        client = await self.tls_client()
        await client.command(b"AUTH PLAIN " + plain("bob@localhost", "secret") + b"\r\n")
        self.assertEqual(await client.command(b"MAIL FROM:<ann@localhost>\r\n"), "250 2.1.0 Ok")


class TLSReloadTests(AccessTestsMixin, unittest.TestCase):
    """Inbound.reload_tls: a renewed certificate is used by the next STARTTLS."""

    async def serial(self) -> int:
        client = await connect(self, self.port)
        await client.command(b"EHLO c\r\n")
        await client.command(b"STARTTLS\r\n")
        client.transport.startTLS(ssl.CertificateOptions())
        await client.command(b"NOOP\r\n")
        return client.transport.getPeerCertificate().get_serial_number()

    async def test_renewed_certificate(self):
        """After reload_tls the new certificate is served; a broken one is refused, the old kept."""
        root = os.path.abspath(self.mktemp())
        section = TLSConfig(
            certificate=os.path.join(root, "c.pem"), key=os.path.join(root, "c.key")
        )
        tls.ensure_certificate(section.certificate, section.key, "localhost", 1.7e9)
        options = tls.ReloadableTLS(tls.options_for(section))
        os.makedirs(os.path.join(root, "srv"))
        self.fixture = SMTPServerFixture(
            self, make_config(os.path.join(root, "srv"), tls=vars(section)), None, options
        )
        self.port = self.fixture.listen()
        first = await self.serial()
        os.remove(section.certificate)
        tls.ensure_certificate(section.certificate, section.key, "localhost", 1.8e9)
        self.assertEqual(self.fixture.inbound.reload_tls(self.fixture.config), [])
        second = await self.serial()
        self.assertNotEqual(first, second)
        with open(section.certificate, "w") as f:
            f.write("garbage\n")
        problems = self.fixture.inbound.reload_tls(self.fixture.config)
        self.assertEqual(len(problems), 1, problems)
        self.assertEqual(await self.serial(), second)
