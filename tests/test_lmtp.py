"""
The LMTP delivery agent against a real Dovecot (dovecot-lmtpd, a private
instance on a loopback port and a UNIX socket, quota plugin): per-recipient
outcomes after the data, connection reuse, streaming; and against scripted
servers for what Dovecot does not do on demand (silence, a lost session).
"""

from __future__ import annotations

import glob
import os

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.config import DomainConfig, load_config
from smtpd.delivery.interfaces import IDeliveryAgent
from smtpd.delivery.lmtp import LMTPDelivery
from smtpd.directory.accounts import add
from smtpd.directory.routing import Destination
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource
from smtpd.tap import build
from tests.dovecot import DOVECOT_MISSING, start_dovecot
from tests.inbound import connect
from tests.test_e2e import eventually

USERS = {
    "ann@example.com": "",
    "bob@example.com": "",
    "full@example.com": "userdb_quota_rule=*:storage=1K",
}
MESSAGE = (b"From: sender@example.org\r\nTo: ann@example.com\r\nSubject: test\r\n\r\n"
           + b"A line.\r\n.A line that starts with a dot.\r\n" + b"x" * 3000 + b"\r\n")


def envelope(*addresses: str) -> Envelope:
    """An envelope from sender@example.org to C{addresses}."""
    return Envelope(id="0123ABCD", sender="sender@example.org",
                    recipients=[Recipient(a) for a in addresses], arrival=0.0)


def deliveries(env: Envelope, target: str) -> list[tuple[Recipient, Destination]]:
    """Every recipient of C{env} routed to the LMTP store C{target}."""
    section = DomainConfig(name="example.com", type="lmtp", lmtp=target)
    return [(r, Destination("lmtp", "example.com", r.address, section))
            for r in env.recipients]


class DovecotTests(unittest.TestCase):
    """Delivery into a real Dovecot mail store."""

    skip = DOVECOT_MISSING

    def setUp(self):
        self.dovecot = start_dovecot(self, USERS)
        self.target = f"tcp:127.0.0.1:{self.dovecot.port}"
        self.agent = LMTPDelivery(reactor, "mx.example.com", timeout=30)
        self.addCleanup(self.agent.stop)

    def deliver(self, env: Envelope, data: bytes = MESSAGE, target: str = ""):
        """Deliver C{data} to every recipient of C{env}."""
        return self.agent.deliver(env, deliveries(env, target or self.target),
                                  BytesSource(data))

    @defer.inlineCallbacks
    def test_two_users(self):
        """Mail for two users arrives in both mailboxes; both are delivered."""
        self.assertTrue(IDeliveryAgent.providedBy(self.agent))
        statuses = yield self.deliver(envelope("ann@example.com", "bob@example.com"))
        self.assertEqual([s.delivered for s in statuses], [True, True])
        self.assertEqual([s.address for s in statuses], ["ann@example.com", "bob@example.com"])
        self.assertEqual(statuses[0].status, "2.0.0")
        self.assertEqual(statuses[0].remote_mta, self.target)
        for user in ("ann@example.com", "bob@example.com"):
            [stored] = self.dovecot.messages(user)
            self.assertIn(b"\n.A line that starts with a dot.\n", stored)
            self.assertIn(b"Subject: test", stored)

    @defer.inlineCallbacks
    def test_over_quota(self):
        """
        The user over quota gets the store's own answer after the data (552
        5.2.2, a bounce) while the other recipient of the same message is
        delivered.
        """
        statuses = yield self.deliver(envelope("full@example.com", "ann@example.com"))
        full, ann = statuses
        self.assertEqual((full.code, full.status), (552, "5.2.2"))
        self.assertTrue(full.permanent)
        self.assertIn("Quota exceeded", full.reply)
        self.assertTrue(ann.delivered)
        self.assertEqual(len(self.dovecot.messages("ann@example.com")), 1)
        self.assertEqual(self.dovecot.messages("full@example.com"), [])

    @defer.inlineCallbacks
    def test_unknown_user(self):
        """An unknown user is refused at RCPT (550 5.1.1); the others still get the message."""
        statuses = yield self.deliver(envelope("nobody@example.com", "bob@example.com"))
        self.assertEqual((statuses[0].code, statuses[0].status), (550, "5.1.1"))
        self.assertTrue(statuses[1].delivered)

    @defer.inlineCallbacks
    def test_unix_socket(self):
        """A unix:/path target reaches the store over its UNIX socket."""
        statuses = yield self.deliver(envelope("ann@example.com"),
                                      target=f"unix:{self.dovecot.socket_path}")
        self.assertTrue(statuses[0].delivered)
        self.assertEqual(len(self.dovecot.messages("ann@example.com")), 1)

    @defer.inlineCallbacks
    def test_connection_reuse(self):
        """Consecutive messages to one store share one connection (RSET between them)."""
        yield self.deliver(envelope("ann@example.com"))
        [(client, _)] = self.agent._stores[self.target].idle
        statuses = yield self.deliver(envelope("bob@example.com", "ann@example.com"))
        self.assertEqual([s.delivered for s in statuses], [True, True])
        [(again, _)] = self.agent._stores[self.target].idle
        self.assertIs(again, client)
        self.assertEqual(client.transactions, 2)
        self.assertIn("PIPELINING", client.extensions)
        self.assertEqual(len(self.dovecot.messages("ann@example.com")), 2)

    @defer.inlineCallbacks
    def test_idle_connection_closed_by_store(self):
        """When the store has closed the idle connection, the next message takes a new one."""
        yield self.deliver(envelope("ann@example.com"))
        [(client, _)] = self.agent._stores[self.target].idle
        self.dovecot.stop()
        self.dovecot.start()
        statuses = yield self.deliver(envelope("bob@example.com"))
        self.assertTrue(statuses[0].delivered, statuses[0].reply)
        [(again, _)] = self.agent._stores[self.target].idle
        self.assertIsNot(again, client)

    @defer.inlineCallbacks
    def test_large_message_streamed(self):
        """
        A 4 MiB message full of dot-leading lines, sent in chunks, arrives
        byte for byte (line ends aside).
        """
        lines = [b".%07d a line that starts with a dot" % i for i in range(100000)]
        body = b"\r\n".join(lines) + b"\r\n"
        data = b"Subject: big\r\n\r\n" + body
        statuses = yield self.deliver(envelope("bob@example.com"), data)
        self.assertTrue(statuses[0].delivered, statuses[0].reply)
        [stored] = self.dovecot.messages("bob@example.com")
        self.assertTrue(stored.replace(b"\r\n", b"\n").endswith(body.replace(b"\r\n", b"\n")))

    @defer.inlineCallbacks
    def test_store_down(self):
        """With Dovecot stopped, every recipient is deferred (451 4.4.1), none bounced."""
        self.dovecot.stop()
        statuses = yield self.deliver(envelope("ann@example.com", "bob@example.com"))
        self.assertEqual([(s.code, s.status) for s in statuses], [(451, "4.4.1")] * 2)
        self.assertFalse(any(s.permanent for s in statuses))


class DovecotTempfailTests(unittest.TestCase):
    """A store that makes over quota a temporary failure."""

    skip = DOVECOT_MISSING

    @defer.inlineCallbacks
    def test_over_quota_deferred(self):
        """With quota_full_tempfail, the full mailbox is deferred (452 4.2.2), the other delivered."""
        dovecot = start_dovecot(self, USERS, tempfail=True)
        agent = LMTPDelivery(reactor, "mx.example.com", timeout=30)
        self.addCleanup(agent.stop)
        env = envelope("full@example.com", "bob@example.com")
        full, bob = yield agent.deliver(
            env, deliveries(env, f"tcp:127.0.0.1:{dovecot.port}"), BytesSource(MESSAGE))
        self.assertEqual((full.code, full.status), (452, "4.2.2"))
        self.assertFalse(full.permanent or full.delivered)
        self.assertTrue(bob.delivered)


class ScriptedServer(Protocol):
    """An LMTP server that says what the test tells it, line by line."""

    def connectionMade(self):
        self.factory.connections.append(self)
        if self.factory.greeting:
            self.transport.write(self.factory.greeting)

    def dataReceived(self, data):
        self.factory.received += data
        for trigger, answer in list(self.factory.script):
            if trigger in self.factory.received:
                self.factory.script.remove((trigger, answer))
                if answer is None:
                    self.transport.loseConnection()
                else:
                    self.transport.write(answer)


class ScriptedTests(unittest.TestCase):
    """Sessions that go wrong in ways a real store rarely shows on demand."""

    @defer.inlineCallbacks
    def server(self, greeting: bytes, script: list) -> defer.Deferred:
        """A scripted server on a loopback port; its LMTP target."""
        factory = Factory.forProtocol(ScriptedServer)
        factory.greeting, factory.script, factory.received = greeting, script, b""
        factory.connections = []
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.factory = factory
        return f"tcp:127.0.0.1:{port.getHost().port}"

    @defer.inlineCallbacks
    def test_silent_server_times_out(self):
        """A store that never greets is dropped after the timeout (on the clock): 451 4.4.2."""
        target = yield self.server(b"", [])
        clock = Clock()
        agent = LMTPDelivery(reactor, "mx.example.com", timeout=30, clock=clock)
        env = envelope("ann@example.com")
        d = agent.deliver(env, deliveries(env, target), BytesSource(MESSAGE))
        while not clock.getDelayedCalls():
            yield _turn()
        clock.advance(30)
        [status] = yield d
        self.assertEqual((status.code, status.status), (451, "4.4.2"))
        self.assertIn("no answer in 30s", status.reply)

    @defer.inlineCallbacks
    def test_lost_after_data(self):
        """
        A session lost after the first recipient's answer: that one stays
        delivered, the one not answered is deferred (4.4.2).
        """
        target = yield self.server(b"220 store ready\r\n", [
            (b"LHLO", b"250-store\r\n250 PIPELINING\r\n"),
            (b"RCPT TO:<bob@example.com>",
             b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n"),
            (b"DATA\r\n", b"354 go\r\n"),
            (b"\r\n.\r\n", b"250 2.0.0 <ann@example.com> saved\r\n"),
            (b"\r\n.\r\n", None),
        ])
        agent = LMTPDelivery(reactor, "mx.example.com", timeout=30)
        env = envelope("ann@example.com", "bob@example.com")
        ann, bob = yield agent.deliver(env, deliveries(env, target), BytesSource(MESSAGE))
        self.assertTrue(ann.delivered)
        self.assertEqual((bob.code, bob.status), (451, "4.4.2"))
        self.assertIn(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<ann@example.com>\r\n"
                      b"RCPT TO:<bob@example.com>\r\n", self.factory.received)

    @defer.inlineCallbacks
    def test_mail_refused(self):
        """A 5xx to MAIL bounces every recipient with that reply; 4xx defers them."""
        target = yield self.server(b"220 store ready\r\n", [
            (b"LHLO", b"250 store\r\n"),
            (b"MAIL FROM", b"550 5.7.1 sender refused\r\n"),
        ])
        agent = LMTPDelivery(reactor, "mx.example.com", timeout=30)
        self.addCleanup(agent.stop)
        env = envelope("ann@example.com", "bob@example.com")
        statuses = yield agent.deliver(env, deliveries(env, target), BytesSource(MESSAGE))
        self.assertEqual([(s.code, s.status) for s in statuses], [(550, "5.7.1")] * 2)
        self.assertNotIn(b"RCPT", self.factory.received)

    @defer.inlineCallbacks
    def test_data_refused(self):
        """
        The accepted recipients get DATA's refusal; a recipient refused at
        RCPT keeps its own reply.
        """
        target = yield self.server(b"220 store ready\r\n", [
            (b"LHLO", b"250 store\r\n"),
            (b"MAIL FROM", b"250 2.1.0 ok\r\n"),
            (b"RCPT TO:<ann@example.com>", b"550 5.1.1 no such user\r\n"),
            (b"RCPT TO:<bob@example.com>", b"250 2.1.5 ok\r\n"),
            (b"DATA", b"452 4.3.1 out of disk space\r\n"),
        ])
        agent = LMTPDelivery(reactor, "mx.example.com", timeout=30)
        self.addCleanup(agent.stop)
        env = envelope("ann@example.com", "bob@example.com")
        ann, bob = yield agent.deliver(env, deliveries(env, target), BytesSource(MESSAGE))
        self.assertEqual((ann.code, ann.status), (550, "5.1.1"))
        self.assertEqual((bob.code, bob.status), (452, "4.3.1"))


def _turn() -> defer.Deferred:
    """A Deferred that fires on the next reactor turn."""
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(0, d.callback, None)
    return d




class EndToEndTests(unittest.TestCase):
    """The whole server: SMTP in, the queue, the lmtp agent, Dovecot."""

    skip = DOVECOT_MISSING
    timeout = 60

    async def test_lmtp_domain(self):
        """
        Mail for a type = lmtp domain goes through the queue into Dovecot: each
        user's mail store gets it, the user over quota is bounced alone (an
        NDR to the sender's local Maildir), and the queue ends empty.
        """

        dovecot = start_dovecot(self, USERS)
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        for user in ("ann@example.com", "full@example.com", "sender@localhost"):
            add(os.path.join(root, "etc", "users"), user, "secret-password", rounds=4)
        with open(os.path.join(root, "etc", "smtpd.ini"), "w") as f:
            f.write("[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
                    "[logging]\npath = activity.log\nformat = json\n"
                    "[domain:localhost]\ntype = local\n"
                    f"[domain:example.com]\ntype = lmtp\nlmtp = tcp:127.0.0.1:{dovecot.port}\n")
        top = build(load_config(os.path.join(root, "etc", "smtpd.ini")), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        [listener] = top.listeners.listeners
        client = await connect(self, listener.address()[1])
        await client.command(b"EHLO client.test\r\n")
        await client.command(b"MAIL FROM:<sender@localhost>\r\n")
        for rcpt in (b"ann@example.com", b"full@example.com"):
            self.assertEqual(await client.command(b"RCPT TO:<" + rcpt + b">\r\n"), "250 2.1.5 Ok")
        self.assertTrue(
            (await client.command(b"RCPT TO:<nobody@example.com>\r\n")).startswith("550 5.1.1"))
        await client.command(b"DATA\r\n")
        message = MESSAGE.replace(b"x" * 3000, b"x" * 900 + b"\r\n" + b"y" * 900)
        reply = await client.command(message.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        self.assertTrue(reply.startswith("250 2.0.0"), reply)

        def bounced() -> list[str]:
            return glob.glob(os.path.join(root, "mailroot", "mailbox", "localhost", "sender",
                                          "new", "*"))

        await eventually(lambda: dovecot.messages("ann@example.com") and bounced()
                         and not glob.glob(os.path.join(root, "mailroot", "queue", "*.json")))
        [stored] = dovecot.messages("ann@example.com")
        self.assertIn(b"Received: from client.test", stored)
        self.assertIn(b"\n.A line that starts with a dot.\n", stored)
        self.assertEqual(dovecot.messages("full@example.com"), [])
        [ndr_path] = bounced()
        with open(ndr_path, "rb") as f:
            ndr = f.read()
        self.assertIn(b"full@example.com", ndr)
        self.assertIn(b"5.2.2", ndr)
        self.assertNotIn(b"Final-Recipient: rfc822; ann@example.com", ndr)
