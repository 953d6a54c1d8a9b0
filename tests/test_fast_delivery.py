"""
Tests for the fast inbound path: shared folder fsyncs (L{smtpd.queue.FolderSync}),
batched Maildir writes, delivery at once before the 250
(L{smtpd.qmgr.QueueManager.accept}) and the cheaper activity log.
"""

from __future__ import annotations

import os
import re
import resource
import threading

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThreadPool
from twisted.trial import unittest

from smtpd.queue.bounce import BounceBuilder
from smtpd.config import Config, DeliveryConfig, DomainConfig, ServerConfig
from smtpd.mail.source import read_all
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.delivery.drop import DropDelivery
from smtpd.delivery.maildir import MailboxError, MaildirDelivery
from smtpd.mail.lineends import line_ends
from smtpd.mail.source import BytesSource
from smtpd.util.activity import ActivityLog
from smtpd.queue.manager import QueueManager
from smtpd.queue.store import Queue
from smtpd.util.durable import FolderSync
from smtpd.tap import raise_file_limit
from smtpd.directory.accounts import Users
from tests.inbound import SMTPServerFixture, connect, make_config

HOST = "mx.example.net"
DATA = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
SOURCE = BytesSource(DATA)


def in_threads(f, *args):
    """The production runner: the reactor's thread pool."""
    return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)


class GatedRunner:
    """A run_blocking that holds each call until the test releases it."""

    def __init__(self):
        self.calls: list[tuple[Deferred, object, tuple]] = []

    def __call__(self, f, *args):
        d: Deferred = Deferred()
        self.calls.append((d, f, args))
        return d

    def release(self, index: int = 0) -> None:
        """Run call C{index} now and fire its Deferred with the outcome."""
        d, f, args = self.calls.pop(index)
        maybeDeferred(f, *args).chainDeferred(d)


def files(folder: str) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


class FolderSyncTests(unittest.TestCase):
    """L{FolderSync}: one folder fsync for many concurrent callers."""

    def test_concurrent_callers_share_fsyncs(self):
        """
        Callers arriving while an fsync runs share the next one: while the
        first caller's fsync is under way, 15 more callers arrive; they are
        all served by one more fsync, two in all, and every call returns.
        """
        folder = self.mktemp()
        os.makedirs(folder)
        done = []
        entered, release = threading.Event(), threading.Event()

        def blocking_fsync(path):
            if not done:
                entered.set()
                release.wait(30)
            done.append(path)

        sync = FolderSync(folder, blocking_fsync)
        first = threading.Thread(target=sync.sync)
        first.start()
        self.assertTrue(entered.wait(30))
        others = [threading.Thread(target=sync.sync) for _ in range(15)]
        for t in others:
            t.start()
        # Every caller has taken its ticket before the first fsync ends.
        while sync.requested < 16 and all(t.is_alive() for t in others):
            threading.Event().wait(0.001)
        release.set()
        for t in [first, *others]:
            t.join(30)
        self.assertTrue(all(not t.is_alive() for t in [first, *others]))
        self.assertEqual(len(done), 2)

    def test_each_call_after_a_change_fsyncs(self):
        """Calls one after the other each get an fsync of their own."""
        done = []
        sync = FolderSync("/nowhere", done.append)
        sync.sync()
        sync.sync()
        self.assertEqual(done, ["/nowhere", "/nowhere"])

    def test_failure_reaches_the_caller(self):
        """An fsync that fails raises in the caller, and the next call tries again."""
        folder = os.path.abspath(self.mktemp())
        sync = FolderSync(folder)
        self.assertRaises(FileNotFoundError, sync.sync)
        os.makedirs(folder)
        sync.sync()


class LineEndTests(unittest.TestCase):
    """L{line_ends}."""

    def test_every_kind(self):
        """CRLF, bare CR and bare LF all become the given line end; nothing else changes."""
        pattern = re.compile(rb"\r\n|\r|\n")
        for data in (b"", b"a", b"a\r\nb\rc\nd", b"\r\n\r\n", b"\n\r", b"x\r", b"\r\r\n\n"):
            for end in (b"\n", b"\r\n"):
                self.assertEqual(line_ends(data, end), pattern.sub(end, data), (data, end))


class MaildirBatchTests(unittest.TestCase):
    """L{MaildirDelivery} batches, cached checks and take-backs."""

    def setUp(self):
        self.mailroot = os.path.abspath(self.mktemp())
        os.makedirs(self.mailroot)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.envelope = Envelope("0ABC", "a@example.org", [Recipient("bob@example.net")], 1.0)

    def new(self, local: str) -> str:
        return os.path.join(self.mailroot, "mailbox", "example.net", local, "new")

    def test_waiting_deliveries_share_one_batch(self):
        """
        Deliveries requested while a batch is being written wait, then go to
        disk together in one call; each lands in its own Maildir.
        """
        runner = GatedRunner()
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, runner)
        first = agent.write(self.envelope, "bob@example.net", SOURCE)
        others = [agent.write(self.envelope, f"{n}@example.net", SOURCE)
                  for n in ("carol", "dave", "erin")]
        self.assertEqual(len(runner.calls), 1)
        runner.release()
        self.assertTrue(self.successResultOf(first).startswith(self.new("bob")))
        self.assertEqual(len(runner.calls), 1)
        self.assertEqual(len(runner.calls[0][2][0]), 3)
        runner.release()
        for d, local in zip(others, ("carol", "dave", "erin")):
            path = self.successResultOf(d)
            self.assertEqual(files(self.new(local)), [os.path.basename(path)])

    def test_write_many_one_batch(self):
        """
        The copies of one message for several mailboxes (write_many) go to
        disk in one batch, one thread job, each into its own Maildir.
        """
        runner = GatedRunner()
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, runner)
        locals_ = ["bob", "carol", "dave", "erin"]
        writes = agent.write_many(self.envelope, [f"{n}@example.net" for n in locals_], SOURCE)
        self.assertEqual(len(runner.calls), 1)
        self.assertEqual(len(runner.calls[0][2][0]), 4)
        runner.release()
        self.assertEqual(runner.calls, [])
        for d, local in zip(writes, locals_):
            path = self.successResultOf(d)
            self.assertEqual(files(self.new(local)), [os.path.basename(path)])
            with open(path, "rb") as f:
                self.assertIn(f"Delivered-To: {local}@example.net\n".encode(), f.read())

    def test_one_failure_in_a_batch(self):
        """A delivery that fails in a batch fails alone; the others land."""
        runner = GatedRunner()
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, runner)
        broken = os.path.join(self.mailroot, "mailbox", "example.net", "carol")
        os.makedirs(os.path.join(broken, "tmp"))
        with open(os.path.join(broken, "new"), "wb") as f:
            f.write(b"a file where new/ should be")
        blocker = agent.write(self.envelope, "bob@example.net", SOURCE)
        good = agent.write(self.envelope, "dave@example.net", SOURCE)
        bad = agent.write(self.envelope, "carol@example.net", SOURCE)
        runner.release()
        runner.release()
        self.successResultOf(blocker)
        self.successResultOf(good)
        self.failureResultOf(bad, NotADirectoryError)
        self.assertEqual(len(files(self.new("dave"))), 1)
        self.assertEqual(files(os.path.join(broken, "tmp")), [])

    def test_slow_disk_spreads_batches(self):
        """
        Once messages take longer than C{slow_disk} each, waiting deliveries
        are written in several batches at once, up to C{max_batches}.
        """
        runner = GatedRunner()
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, runner,
                                max_batches=3, slow_disk=0.002)
        for _ in range(9):  # the moving average needs a few slow batches
            d = agent.write(self.envelope, "bob@example.net", SOURCE)
            self.clock.advance(0.05)
            runner.release()
            self.successResultOf(d)
        blocker = agent.write(self.envelope, "bob@example.net", SOURCE)
        waiting = [agent.write(self.envelope, "bob@example.net", SOURCE) for _ in range(5)]
        self.assertEqual([len(args[0]) for _, _, args in runner.calls], [1, 1, 1])
        runner.release()
        self.assertEqual([len(args[0]) for _, _, args in runner.calls], [1, 1, 3])
        while runner.calls:
            runner.release()
        for d in [blocker, *waiting]:
            self.successResultOf(d)
        self.assertEqual(len(files(self.new("bob"))), 15)

    def test_fast_disk_one_batch_at_a_time(self):
        """While the disk keeps up, one batch runs at a time, whatever waits."""
        runner = GatedRunner()
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, runner, max_batches=3)
        for _ in range(6):
            agent.write(self.envelope, "bob@example.net", SOURCE)
        self.assertEqual(len(runner.calls), 1)
        runner.release()
        self.assertEqual(len(runner.calls), 1)
        self.assertEqual(len(runner.calls[0][2][0]), 5)
        runner.release()

    def test_removed_maildir_is_made_again(self):
        """A Maildir removed after its first delivery is created again for the next."""
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, defer.maybeDeferred)
        self.successResultOf(agent.write(self.envelope, "bob@example.net", SOURCE))
        maildir = os.path.dirname(self.new("bob"))
        for sub in ("tmp", "new", "cur"):
            for name in files(os.path.join(maildir, sub)):
                os.unlink(os.path.join(maildir, sub, name))
            os.rmdir(os.path.join(maildir, sub))
        os.rmdir(maildir)
        path = self.successResultOf(agent.write(self.envelope, "bob@example.net", SOURCE))
        self.assertEqual(files(self.new("bob")), [os.path.basename(path)])
        self.assertEqual(sorted(os.listdir(maildir)), ["cur", "new", "tmp"])

    def test_symlink_inside_mailroot_allowed(self):
        """A domain folder that is a symlink to another one inside mailbox/ is used."""
        mailbox = os.path.join(self.mailroot, "mailbox")
        os.makedirs(os.path.join(mailbox, "real.example"))
        os.symlink(os.path.join(mailbox, "real.example"), os.path.join(mailbox, "example.net"))
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, defer.maybeDeferred)
        self.successResultOf(agent.write(self.envelope, "bob@example.net", SOURCE))
        self.assertEqual(len(files(os.path.join(mailbox, "real.example", "bob", "new"))), 1)

    def test_symlinked_maildir_refused_in_a_batch(self):
        """A Maildir symlinked outside is refused even when it waits in a batch."""
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        domain = os.path.join(self.mailroot, "mailbox", "example.net")
        os.makedirs(domain)
        os.symlink(outside, os.path.join(domain, "evil"))
        runner = GatedRunner()
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, runner)
        first = agent.write(self.envelope, "bob@example.net", SOURCE)
        evil = agent.write(self.envelope, "evil@example.net", SOURCE)
        runner.release()
        runner.release()
        self.successResultOf(first)
        self.failureResultOf(evil, MailboxError)
        self.assertEqual(os.listdir(outside), [])

    def test_remove(self):
        """
        remove() takes back a delivered message; a missing one is fine; a
        path outside the mailboxes is refused.
        """
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, defer.maybeDeferred)
        path = self.successResultOf(agent.write(self.envelope, "bob@example.net", SOURCE))
        self.successResultOf(agent.remove(path))
        self.assertEqual(files(self.new("bob")), [])
        self.successResultOf(agent.remove(path))
        for outside in (os.path.join(self.mailroot, "queue", "x"),
                        os.path.join(self.mailroot, "mailbox", "..", "queue", "x")):
            self.failureResultOf(agent.remove(outside), MailboxError)

    def test_real_threads(self):
        """Many concurrent deliveries through the real thread pool all land."""
        agent = MaildirDelivery(self.mailroot, HOST, self.clock, in_threads)
        ds = [agent.write(self.envelope, f"u{n % 3}@example.net", SOURCE) for n in range(30)]

        def check(paths):
            self.assertEqual(len(set(paths)), 30)
            self.assertEqual(sum(len(files(self.new(f"u{n}"))) for n in range(3)), 30)

        return defer.gatherResults(ds).addCallback(check)


class AcceptTests(unittest.TestCase):
    """L{QueueManager.accept}: local mail delivered before the 250."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.mailroot = os.path.abspath(self.mktemp())
        os.makedirs(self.mailroot)
        self.config = Config(
            path=os.path.join(self.mailroot, "smtpd.ini"),
            root=self.mailroot,
            server=ServerConfig(hostname=HOST, mailroot=self.mailroot),
            delivery=DeliveryConfig(),
            domains=(DomainConfig("example.net"),),
        )
        self.queue = Queue(os.path.join(self.mailroot, "queue"), self.clock, defer.maybeDeferred)
        self.stored = []
        self.queue.add_observer(self.stored.append)
        self.local = MaildirDelivery(self.mailroot, HOST, self.clock, defer.maybeDeferred)
        self.relayed = []
        self.records = []
        self.qmgr = QueueManager(
            self.config, self.queue, self.clock,
            users=Users({"carol@example.net": b"x", "dave@example.net": b"x"}),
            agents={"local": self.local,
                    "drop": DropDelivery(self.mailroot, self.clock, defer.maybeDeferred),
                    "relay": self},
            bounces=BounceBuilder(HOST, self.clock),
            log=self.records.append,
        )
        self.qmgr.startService()
        self.addCleanup(self.qmgr.stopService)

    name = "relay"

    def deliver(self, envelope, deliveries, message):
        """The relay: records the call, never answers (the entry stays queued)."""
        self.relayed.append(envelope.id)
        return Deferred()

    def envelope(self, *recipients: Recipient) -> Envelope:
        now = self.clock.seconds()
        return Envelope(self.queue.new_id(), "alice@example.org", list(recipients), now, now,
                        client="client [192.0.2.9]")

    def new(self, local: str) -> list[str]:
        return files(os.path.join(self.mailroot, "mailbox", "example.net", local, "new"))

    def queued(self) -> list[str]:
        return [e.id for e in self.queue.scan(cleanup=False)]

    def test_local_at_once(self):
        """
        A message for local mailboxes only is in their Maildirs when accept
        fires, never queued; counted and logged like a queue delivery.
        """
        e = self.envelope(Recipient("carol@example.net"), Recipient("postmaster@example.net"))
        self.successResultOf(self.qmgr.accept(e, BytesSource(DATA)))
        self.assertEqual((len(self.new("carol")), len(self.new("postmaster"))), (1, 1))
        self.assertEqual((self.queued(), self.stored), ([], []))
        self.assertEqual(self.qmgr.counters["received"], 1)
        self.assertEqual(self.qmgr.counters["delivered"], 2)
        self.assertEqual([(r["recipient"], r["relay"], r["code"]) for r in self.records],
                         [("carol@example.net", "local", 250),
                          ("postmaster@example.net", "local", 250)])

    def test_remote_recipient_queued(self):
        """A message with any remote recipient goes to the queue, local copy and all."""
        e = self.envelope(Recipient("carol@example.net"), Recipient("bob@remote.example"))
        self.successResultOf(self.qmgr.accept(e, BytesSource(DATA)))
        self.assertEqual(self.queued(), [e.id])
        self.assertEqual([s.id for s in self.stored], [e.id])

    def test_success_notification_queued(self):
        """NOTIFY=SUCCESS needs a DSN: such a message takes the queue."""
        e = self.envelope(Recipient("carol@example.net", notify=("SUCCESS",)))
        self.successResultOf(self.qmgr.accept(e, BytesSource(DATA)))
        self.assertEqual([s.id for s in self.stored], [e.id])

    def test_failure_takes_back_and_queues(self):
        """
        When one Maildir cannot be written, the copy already written to the
        other is taken back and the message is queued: no duplicate later.
        """
        broken = os.path.join(self.mailroot, "mailbox", "example.net", "dave")
        os.makedirs(os.path.join(broken, "tmp"))
        with open(os.path.join(broken, "new"), "wb") as f:
            f.write(b"a file where new/ should be")
        e = self.envelope(Recipient("carol@example.net"), Recipient("dave@example.net"))
        self.successResultOf(self.qmgr.accept(e, BytesSource(DATA)))
        self.assertEqual(self.new("carol"), [])
        self.assertEqual(self.queued(), [e.id])
        self.assertEqual(self.qmgr.counters["delivered"], 0)

    def test_not_running_queues(self):
        """A stopped queue manager delivers nothing itself: the message is queued."""
        self.qmgr.stopService()
        e = self.envelope(Recipient("carol@example.net"))
        self.successResultOf(self.qmgr.accept(e, BytesSource(DATA)))
        self.assertEqual(self.queued(), [e.id])
        self.assertEqual(self.new("carol"), [])

    def test_queue_failure_fails(self):
        """When delivery at once fails and the queue write fails too, accept fails."""
        broken = os.path.join(self.mailroot, "mailbox", "example.net", "carol")
        os.makedirs(os.path.join(broken, "tmp"))
        with open(os.path.join(broken, "new"), "wb") as f:
            f.write(b"x")
        os.rmdir(self.queue.directory)
        with open(self.queue.directory, "wb") as f:
            f.write(b"a file where the queue should be")
        e = self.envelope(Recipient("carol@example.net"))
        self.failureResultOf(self.qmgr.accept(e, BytesSource(DATA)), OSError)


class SessionAcceptTests(unittest.TestCase):
    """The inbound session hands its message to C{Inbound.accept} when set."""

    async def test_accept_hook(self):
        """
        The hook gets the envelope and the data with its Received header, and
        the 250 comes only when it fires; a failing hook gets 451.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        fixture = SMTPServerFixture(self, make_config(root))
        port = fixture.listen()
        calls = []

        def accept(envelope, message):
            d: Deferred = Deferred()
            calls.append((envelope, read_all(message), d))
            return d

        fixture.inbound.cleanup.accept = accept
        client = await connect(self, port)
        for line in (b"EHLO c.example\r\n", b"MAIL FROM:<a@example.org>\r\n",
                     b"RCPT TO:<postmaster@localhost>\r\n", b"DATA\r\n"):
            await client.command(line)
        client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        while not calls:
            await deferLater(0.01)
        envelope, data, d = calls[0]
        self.assertEqual(len(client.replies), 5)
        self.assertTrue(data.startswith(b"Received: from c.example ([127.0.0.1])\r\n"), data)
        self.assertTrue(data.endswith(b"Subject: x\r\n\r\nbody\r\n"))
        d.callback(None)
        self.assertEqual((await client.wait(6))[5], f"250 2.0.0 Ok: queued as {envelope.id}")
        self.assertEqual(fixture.stored, [])
        client.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<postmaster@localhost>\r\n"
                    b"DATA\r\nSubject: y\r\n\r\n.\r\n")
        while len(calls) < 2:
            await deferLater(0.01)
        calls[1][2].errback(OSError(5, "I/O error"))
        self.assertEqual((await client.wait(10))[9], "451 4.3.0 Error: local error in processing")
        self.flushLoggedErrors(OSError)


def deferLater(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class ActivityLogTests(unittest.TestCase):
    """The W3C command lines, with the fields fixed for a session made once."""

    def test_session_fields_and_user(self):
        """
        Lines of one session repeat its client and server fields; a login
        made during the session shows from the next line on.
        """

        class Session:
            peer_ip = "192.0.2.7"
            user = None
            session_id = 9
            server_address = ("192.0.2.1", 25)
            transport = None

        path = self.mktemp()
        clock = Clock()
        clock.advance(1796000000)
        log = ActivityLog("w3c", path, clock, "mx.test")
        log.open()
        session = Session()
        log.command(session, "EHLO", "c.test", 250)
        session.user = "bob@mx.test"
        clock.advance(1.5)
        log.command(session, "MAIL", "FROM:<a b>", 250)
        log.close()
        with open(path) as f:
            lines = f.read().splitlines()[4:]
        self.assertEqual(
            [line.split(" ") for line in lines],
            [["2026-11-30", "00:53:20", "192.0.2.7", "-", "mx.test", "192.0.2.1", "25", "9",
              "EHLO", "c.test", "250"],
             ["2026-11-30", "00:53:21", "192.0.2.7", "bob@mx.test", "mx.test", "192.0.2.1",
              "25", "9", "MAIL", "FROM:<a+b>", "250"]],
        )


    def test_hostname_change(self):
        """A new host name (reload) shows in the next line of a running session."""

        class Session:
            peer_ip = "192.0.2.7"
            user = None
            session_id = 9
            server_address = ("192.0.2.1", 25)

        path = self.mktemp()
        log = ActivityLog("w3c", path, Clock(), "mx.test")
        log.open()
        session = Session()
        log.command(session, "NOOP", "", 250)
        log.hostname = "mx2.test"
        log.command(session, "NOOP", "", 250)
        log.close()
        with open(path) as f:
            lines = f.read().splitlines()[4:]
        self.assertEqual([line.split(" ")[4] for line in lines], ["mx.test", "mx2.test"])


class FileLimitTests(unittest.TestCase):
    """L{raise_file_limit}."""

    def test_raised_to_hard_limit(self):
        """The soft open-files limit becomes the hard one (enough for many sessions)."""
        before = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, before)
        limit = raise_file_limit()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertEqual(limit, soft)
        if hard != resource.RLIM_INFINITY:
            self.assertEqual(soft, hard)
        self.assertGreaterEqual(soft, before[0])
