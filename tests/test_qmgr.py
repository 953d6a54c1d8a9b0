# -*- test-case-name: tests.test_qmgr -*-
"""
Tests for L{smtpd.queue.manager.QueueManager} and its parts: scheduling, retries, delay warnings,
expiry, NDRs and the admin surface, driven by a L{Clock} over the real queue,
the real Maildir and drop agents and an in-memory relay.
"""

from __future__ import annotations

import email
import errno
import json
import os

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.queue.bounce import BounceBuilder
from smtpd.config import (
    Config,
    DeliveryConfig,
    DomainConfig,
    MessagesConfig,
    ServerConfig,
)
from smtpd.mail.envelope import DeliveryStatus, Envelope, Recipient
from smtpd.mail.source import BytesSource, read_all
from smtpd.delivery.drop import DropDelivery
from smtpd.delivery.maildir import MaildirDelivery
from smtpd.util.activity import ActivityLog
from smtpd.util.logfiles import FLUSH_DELAY
from smtpd.queue.manager import QueueManager
from smtpd.queue.results import reply_line
from smtpd.queue.store import Queue
from smtpd.directory.accounts import Users

T0 = 1_700_000_000.0
HOST = "mx.example.net"
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0

MESSAGE = (
    b"Received: from client ([192.0.2.9]) by mx.example.net\r\n"
    b"From: alice@example.org\r\n"
    b"Subject: status report\r\n"
    b"\r\n"
    b"The body.\r\n"
)

_REPLIES = {
    250: ("2.0.0", "Ok: queued as 1234"),
    451: ("4.4.1", "451 4.4.1 Try again later"),
    550: ("5.1.1", "550 5.1.1 <{address}>: User unknown"),
}


def run_now(f, *args, **kwargs):
    """A synchronous run_blocking."""
    return maybeDeferred(f, *args, **kwargs)


class RelayCall:
    """What one L{FakeRelay.deliver} call was given."""

    def __init__(self, when, envelope, recipients, data):
        self.when = when
        self.id = envelope.id
        self.sender = envelope.sender
        self.addresses = [r.address for r in recipients]
        self.data = data


class FakeRelay:
    """
    An in-memory RelayManager: answers each recipient from a script of reply
    codes (the last one repeats; 250 when unscripted), or leaves the call
    hanging when C{hang} is set.
    """

    def __init__(self, clock):
        self.clock = clock
        self.scripts: dict[str, list[int]] = {}
        self.calls: list[RelayCall] = []
        self.hang = False
        self.hanging: list[tuple[Deferred, list[DeliveryStatus]]] = []
        self.error: Exception | None = None

    name = "relay"

    def deliver(self, envelope, deliveries, message):
        recipients = [r for r, _ in deliveries]
        self.calls.append(RelayCall(self.clock.seconds(), envelope, recipients,
                                    read_all(message)))
        if self.error is not None:
            raise self.error
        statuses = [self._answer(r.address) for r in recipients]
        if self.hang:
            d = Deferred()
            self.hanging.append((d, statuses))
            return d
        return succeed(statuses)

    def _answer(self, address):
        script = self.scripts.get(address, [250])
        code = script.pop(0) if len(script) > 1 else script[0]
        status, text = _REPLIES[code]
        return DeliveryStatus(address, code, status, text.format(address=address),
                              "mx.remote.example [192.0.2.1]")

    def release(self, count=None):
        """Answer the hanging calls (the first C{count} of them)."""
        count = len(self.hanging) if count is None else count
        answered, self.hanging = self.hanging[:count], self.hanging[count:]
        for d, statuses in answered:
            d.callback(statuses)

    def stop(self):
        """Nothing to close."""

    def for_entry(self, queue_id):
        return [c for c in self.calls if c.id == queue_id]

    def reports(self, action=None):
        """The DSNs relayed so far (parsed), optionally of one Action."""
        found = []
        for call in self.calls:
            if call.sender != "":
                continue
            message = email.message_from_bytes(call.data)
            if action is None or report_field(message, "Action") == action:
                found.append(message)
        return found


def failing_disk(error):
    """A C{run_blocking} whose disk work always fails with C{error}."""

    def run(f, *args, **kwargs):
        return fail(error)

    return run


def report_blocks(message):
    """The delivery-status blocks of a parsed DSN, as dicts."""
    status = message.get_payload(1)
    return [{k: " ".join(v.split()) for k, v in b.items()} for b in status.get_payload()]


def report_field(message, name):
    """One per-recipient field of the first recipient of a parsed DSN."""
    return report_blocks(message)[1].get(name)


def final_recipients(message):
    return [b["Final-Recipient"] for b in report_blocks(message)[1:]]


class QueueManagerMixin:
    """A queue manager over a temporary mailroot, a Clock and a fake relay."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.mailroot = os.path.abspath(self.mktemp())
        os.makedirs(self.mailroot)
        self.relay = FakeRelay(self.clock)
        self.records: list[dict] = []
        self.local = MaildirDelivery(self.mailroot, HOST, self.clock, run_now)
        self.users = Users({"carol@example.net": b"x", "dave@example.net": b"x"})
        self.config = self.make_config()
        self.queue = self.make_queue()
        self.qmgr = self.make_qmgr()
        self.addCleanup(self.stop)

    def make_config(self, **messages) -> Config:
        return Config(
            path=os.path.join(self.mailroot, "smtpd.ini"),
            root=self.mailroot,
            server=ServerConfig(hostname=HOST, mailroot=self.mailroot),
            messages=MessagesConfig(**messages),
            delivery=DeliveryConfig(),
            domains=(
                DomainConfig("example.net"),
                DomainConfig("alias.example", type="alias", alias_of="example.net"),
                DomainConfig("drop.example", type="drop"),
            ),
        )

    def make_queue(self) -> Queue:
        return Queue(os.path.join(self.mailroot, "queue"), self.clock, run_now)

    def make_qmgr(self, **kw) -> QueueManager:
        agents = {"local": self.local,
                  "drop": DropDelivery(self.mailroot, self.clock, run_now),
                  "relay": self.relay}
        agents.update(kw.pop("agents", {}))
        options = dict(
            users=self.users,
            agents=agents,
            bounces=BounceBuilder(HOST, self.clock),
            log=self.records.append,
        )
        options.update(kw)
        return QueueManager(self.config, self.queue, self.clock, **options)

    def stop(self):
        if self.qmgr.running:
            self.relay.release()
            return self.qmgr.stopService()

    def store(self, recipients, sender="alice@example.org", **kw) -> str:
        """Queue a message as the inbound session would."""
        rcpts = [r if isinstance(r, Recipient) else Recipient(r) for r in recipients]
        now = self.clock.seconds()
        envelope = Envelope(id=self.queue.new_id(), sender=sender, recipients=rcpts,
                            arrival=now, next_attempt=now, size=len(MESSAGE),
                            client="client [192.0.2.9]", **kw)
        d = self.queue.store(envelope, BytesSource(MESSAGE))
        self.assertIsNone(self.successResultOf(d))
        return envelope.id

    def store_waiting(self, count: int, delay: float, spacing: float = 1.0) -> list[str]:
        """
        Entries written before the manager starts, due C{delay} from now and
        C{spacing} seconds apart.
        """
        ids = []
        for n in range(count):
            envelope = Envelope(id=self.queue.new_id(), sender="alice@example.org",
                                recipients=[Recipient(f"r{n}@remote.example")],
                                arrival=self.clock.seconds(), attempts=1, state="deferred",
                                next_attempt=self.clock.seconds() + delay + n * spacing)
            self.successResultOf(self.queue.store(envelope, MESSAGE))
            ids.append(envelope.id)
        return ids

    def entries(self) -> dict[str, Envelope]:
        return {e.id: e for e in self.queue.scan(cleanup=False)}

    def run_until(self, limit: float) -> None:
        """Advance the clock from timer to timer up to C{limit} (absolute)."""
        self.clock.advance(0)
        while True:
            calls = self.clock.getDelayedCalls()
            if not calls:
                break
            when = min(c.getTime() for c in calls)
            if when > limit:
                break
            self.clock.advance(max(0.0, when - self.clock.seconds()))
        self.clock.advance(max(0.0, limit - self.clock.seconds()))

    def maildir(self, local, domain="example.net") -> list[bytes]:
        folder = os.path.join(self.mailroot, "mailbox", domain, local, "new")
        if not os.path.isdir(folder):
            return []
        result = []
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                result.append(f.read())
        return result


class DeliveryTests(QueueManagerMixin, unittest.TestCase):
    """One attempt: routing to the agents and recording the results."""

    def test_new_message_attempted_at_once(self) -> None:
        """A stored message is tried at once, delivered, and leaves the queue."""
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.clock.advance(0)
        [call] = self.relay.calls
        self.assertEqual((call.id, call.addresses, call.data), (queue_id, ["bob@remote.example"],
                                                                MESSAGE))
        self.assertEqual(self.entries(), {})
        self.assertEqual(self.qmgr.counters,
                         {"received": 1, "delivered": 1, "deferred": 0, "bounced": 0})

    def test_local_alias_drop_and_remote(self) -> None:
        """Each recipient goes to its agent; an alias of the same account is delivered once."""
        self.qmgr.startService()
        self.store(["carol@example.net", "CAROL@alias.example", "x@drop.example",
                    "y@drop.example", "bob@remote.example", "eve@remote.example"])
        self.clock.advance(0)
        [mail] = self.maildir("carol")
        self.assertTrue(mail.startswith(b"Return-Path: <alice@example.org>\nDelivered-To: "
                                        b"carol@example.net\n"))
        [dropped] = os.listdir(os.path.join(self.mailroot, "drop"))
        with open(os.path.join(self.mailroot, "drop", dropped), "rb") as f:
            self.assertTrue(f.read().startswith(
                b"x-sender: alice@example.org\r\nx-receiver: x@drop.example\r\n"
                b"x-receiver: y@drop.example\r\n"))
        [call] = self.relay.calls
        self.assertEqual(call.addresses, ["bob@remote.example", "eve@remote.example"])
        self.assertEqual(self.entries(), {})
        self.assertEqual(self.qmgr.counters["delivered"], 6)

    def test_postmaster_without_account(self) -> None:
        """postmaster@ a local domain without an account lands in its postmaster Maildir."""
        self.qmgr.startService()
        self.store(["PostMaster@example.net"])
        self.clock.advance(0)
        self.assertEqual(len(self.maildir("postmaster")), 1)

    def test_unknown_local_user(self) -> None:
        """A local recipient without an account any more fails 5.1.1: NDR to the sender."""
        self.qmgr.startService()
        self.store(["nobody@example.net"])
        self.clock.advance(0)
        [report] = self.relay.reports("failed")
        self.assertEqual(report_field(report, "Status"), "5.1.1")
        self.assertEqual(self.entries(), {})

    def test_one_failure_among_several(self) -> None:
        """A 550 for one of three recipients: one NDR naming only that one."""
        self.relay.scripts["y@remote.example"] = [550]
        self.qmgr.startService()
        self.store(["x@remote.example", "y@remote.example", "z@remote.example"])
        self.clock.advance(0)
        [report] = self.relay.reports()
        self.assertEqual(report["To"], "alice@example.org")
        self.assertEqual(report["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(final_recipients(report), ["rfc822; y@remote.example"])
        self.assertEqual(report_field(report, "Action"), "failed")
        self.assertEqual(report_field(report, "Diagnostic-Code"),
                         "smtp; 550 5.1.1 <y@remote.example>: User unknown")
        text = report.get_payload(0).get_payload()
        self.assertNotIn("x@remote.example", text)
        self.assertNotIn("z@remote.example", text)
        ndr_call = [c for c in self.relay.calls if c.sender == ""][0]
        self.assertEqual(ndr_call.addresses, ["alice@example.org"])
        self.assertEqual(self.entries(), {})
        self.assertEqual(self.qmgr.counters["bounced"], 1)

    def test_ndr_envelope(self) -> None:
        """The NDR is a new queue entry from <> to the sender, not counted as received."""
        self.relay.scripts["y@remote.example"] = [550]
        self.relay.hang = True
        self.qmgr.startService()
        self.store(["y@remote.example"])
        self.clock.advance(0)
        self.relay.release()
        [entry] = self.entries().values()
        self.assertEqual(entry.sender, "")
        self.assertEqual([r.address for r in entry.recipients], ["alice@example.org"])
        self.assertEqual(entry.client, "local")
        self.assertEqual(self.qmgr.counters["received"], 1)

    def test_temporary_failure_recorded(self) -> None:
        """A 451 keeps the recipient pending with its reply; the entry is deferred."""
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example", "carol@example.net"])
        self.clock.advance(0)
        entry = self.entries()[queue_id]
        self.assertEqual(entry.state, "deferred")
        self.assertEqual(entry.attempts, 1)
        self.assertEqual(entry.next_attempt, T0 + 15 * MINUTE)
        bob, carol = entry.recipients
        self.assertEqual((bob.state, bob.status, bob.last_reply, bob.remote_mta),
                         ("pending", "4.4.1", "451 4.4.1 Try again later",
                          "mx.remote.example [192.0.2.1]"))
        self.assertEqual((carol.state, carol.last_reply),
                         ("delivered", "250 2.0.0 delivered to maildir of carol@example.net"))
        self.assertEqual(self.qmgr.summary(), {"queued": 0, "deferred": 1, "held": 0})

    def test_log_line_per_result(self) -> None:
        """One log record per recipient result: queue id, recipient, relay, status, delay."""
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example", "carol@example.net"])
        self.clock.advance(0)
        self.clock.advance(15 * MINUTE)
        mine = [r for r in self.records if r["queue_id"] == queue_id]
        self.assertEqual(
            [(r["recipient"], r["relay"], r["code"], r["status"], r["delay"]) for r in mine],
            [("bob@remote.example", "mx.remote.example [192.0.2.1]", 451, "4.4.1", 0.0),
             ("carol@example.net", "local", 250, "2.0.0", 0.0),
             ("bob@remote.example", "mx.remote.example [192.0.2.1]", 451, "4.4.1", 900.0)])

    def test_activity_log(self) -> None:
        """With the real activity log, each result becomes one JSON delivery line."""
        path = os.path.join(self.mailroot, "activity.log")
        activity = ActivityLog("json", path, self.clock, HOST)
        activity.open()
        self.addCleanup(activity.close)
        self.qmgr = self.make_qmgr(log=activity)
        self.qmgr.startService()
        queue_id = self.store(["carol@example.net"])
        self.clock.advance(0)
        with open(path) as f:
            self.assertEqual(f.read(), "")  # buffered until the flush timer
        self.clock.advance(FLUSH_DELAY)
        with open(path) as f:
            [line] = [json.loads(x) for x in f]
        self.assertEqual((line["event"], line["queue_id"], line["user"], line["client"],
                          line["status"], line["dsn"], line["outcome"], line["attempt"]),
                         ("delivery", queue_id, "carol@example.net", "local", 250, "2.0.0",
                          "sent", 1))

    def test_relay_exception(self) -> None:
        """An exception from the relay is logged and becomes 451 4.3.0; local mail still goes."""
        self.relay.error = RuntimeError("relay bug")
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example", "carol@example.net"])
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        bob, carol = self.entries()[queue_id].recipients
        self.assertEqual((bob.state, bob.last_reply), ("pending", "451 4.3.0 relay error"))
        self.assertEqual(carol.state, "delivered")
        self.relay.error = None
        self.clock.advance(15 * MINUTE)
        self.assertEqual(self.entries(), {})

    def test_disk_full_local(self) -> None:
        """ENOSPC from the Maildir agent: 452 4.3.1, retried."""
        disk_full = failing_disk(OSError(errno.ENOSPC, "No space"))
        self.qmgr = self.make_qmgr(
            agents={"local": MaildirDelivery(self.mailroot, HOST, self.clock, disk_full)})
        self.qmgr.startService()
        queue_id = self.store(["carol@example.net"])
        self.clock.advance(0)
        [carol] = self.entries()[queue_id].recipients
        self.assertEqual((carol.state, carol.last_reply),
                         ("pending", "452 4.3.1 insufficient system storage"))

    def test_other_disk_error_local(self) -> None:
        """A Maildir that cannot be created (a file in the way): 451 4.3.0, retried."""
        folder = os.path.join(self.mailroot, "mailbox", "example.net")
        os.makedirs(folder)
        with open(os.path.join(folder, "carol"), "w") as f:
            f.write("in the way")
        self.qmgr.startService()
        queue_id = self.store(["carol@example.net"])
        self.clock.advance(0)
        [carol] = self.entries()[queue_id].recipients
        self.assertEqual((carol.state, carol.status), ("pending", "4.3.0"))

    def test_bounce_of_bounce_goes_to_badmail(self) -> None:
        """Mail from <> that fails is put in badmail; nothing new is queued."""
        self.relay.scripts["alice@example.org"] = [550]
        self.qmgr.startService()
        queue_id = self.store(["alice@example.org"], sender="")
        self.clock.advance(0)
        badmail = os.path.join(self.mailroot, "badmail")
        self.assertEqual(sorted(os.listdir(badmail)), [f"{queue_id}.bad", f"{queue_id}.bdr"])
        with open(os.path.join(badmail, f"{queue_id}.bdr"), "rb") as f:
            reason = f.read()
        self.assertIn(b"550 5.1.1", reason)
        self.assertIn(b"alice@example.org", reason)
        self.assertEqual(self.entries(), {})
        self.assertEqual(len(self.relay.calls), 1)
        self.run_until(T0 + 3 * DAY)
        self.assertEqual(len(self.relay.calls), 1)

    def test_bounce_of_bounce_partly_delivered(self) -> None:
        """Mail from <> with one failed and one pending recipient waits; then badmail."""
        self.relay.scripts["alice@example.org"] = [550]
        self.relay.scripts["bob@remote.example"] = [451, 250]
        self.qmgr.startService()
        queue_id = self.store(["alice@example.org", "bob@remote.example"], sender="")
        self.clock.advance(0)
        self.assertIn(queue_id, self.entries())
        self.clock.advance(15 * MINUTE)
        self.assertEqual(self.entries(), {})
        self.assertTrue(os.path.exists(os.path.join(self.mailroot, "badmail", queue_id + ".bdr")))
        self.assertEqual({c.id for c in self.relay.calls}, {queue_id})

    def test_notify_never(self) -> None:
        """NOTIFY=NEVER: no NDR for that recipient."""
        self.relay.scripts["y@remote.example"] = [550]
        self.qmgr.startService()
        self.store([Recipient("y@remote.example", notify=("NEVER",))])
        self.clock.advance(0)
        self.assertEqual(self.relay.reports(), [])
        self.assertEqual(self.entries(), {})

    def test_notify_success_only(self) -> None:
        """NOTIFY=SUCCESS without FAILURE: a failure is not reported."""
        self.relay.scripts["y@remote.example"] = [550]
        self.qmgr.startService()
        self.store([Recipient("y@remote.example", notify=("SUCCESS",))])
        self.clock.advance(0)
        self.assertEqual(self.relay.reports(), [])

    def test_notify_success(self) -> None:
        """NOTIFY=SUCCESS: "delivered" for a local mailbox, "relayed" for a remote host."""
        self.qmgr.startService()
        self.store([Recipient("carol@example.net", notify=("SUCCESS", "FAILURE")),
                    Recipient("bob@remote.example", notify=("SUCCESS",)),
                    Recipient("eve@remote.example")])
        self.clock.advance(0)
        [delivered] = self.relay.reports("delivered")
        self.assertEqual(delivered["Subject"], "Successful Mail Delivery Report")
        self.assertEqual(final_recipients(delivered), ["rfc822; carol@example.net"])
        [relayed] = self.relay.reports("relayed")
        self.assertEqual(final_recipients(relayed), ["rfc822; bob@remote.example"])
        self.assertEqual(report_field(relayed, "Remote-MTA"), "dns; mx.remote.example")
        self.assertEqual(len(self.relay.reports()), 2)

    def test_ndr_copy_to(self) -> None:
        """ndr_copy_to gets a copy of each NDR (an extra recipient), not of other DSNs."""
        self.config = self.make_config(ndr_copy_to="postmaster@example.net")
        self.qmgr = self.make_qmgr()
        self.relay.scripts["y@remote.example"] = [550]
        self.qmgr.startService()
        self.store(["y@remote.example", Recipient("z@remote.example", notify=("SUCCESS",))])
        self.clock.advance(0)
        [copy] = self.maildir("postmaster")
        self.assertIn(b"Subject: Undelivered Mail Returned to Sender", copy)
        self.assertIn(b"Final-Recipient: rfc822; y@remote.example", copy)
        self.assertEqual(len(self.relay.reports("failed")), 1)
        self.assertEqual(len(self.relay.reports("relayed")), 1)

    def test_ret_full_and_envid_passed(self) -> None:
        """The NDR honours RET=FULL and ENVID of the original message."""
        self.relay.scripts["y@remote.example"] = [550]
        self.qmgr.startService()
        self.store([Recipient("y@remote.example", orcpt="rfc822;Y@remote.example")],
                   ret="FULL", envid="ENV42")
        self.clock.advance(0)
        [report] = self.relay.reports()
        self.assertEqual(report.get_payload(2).get_content_type(), "message/rfc822")
        self.assertIn(b"The body.", [c for c in self.relay.calls if c.sender == ""][0].data)
        blocks = report_blocks(report)
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "ENV42")
        self.assertEqual(blocks[1]["Original-Recipient"], "rfc822; Y@remote.example")


class RetryTests(QueueManagerMixin, unittest.TestCase):
    """The retry schedule, the delay warning and expiry."""

    def test_schedule_warning_and_expiry(self) -> None:
        """
        451 forever: attempts at 0, 15m, 45m, 1h45m, 5h45m, 9h45m, then every 4h,
        one delay DSN at 12h (brought forward), an NDR with 4.4.7 at 2d, then
        the entry is gone.
        """
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.run_until(T0 + 3 * DAY)
        times = [c.when - T0 for c in self.relay.for_entry(queue_id)]
        expected = [0, 15 * MINUTE, 45 * MINUTE, 105 * MINUTE, 345 * MINUTE, 585 * MINUTE,
                    12 * HOUR]
        expected += [12 * HOUR + n * 4 * HOUR for n in range(1, 10)]
        self.assertEqual(times, expected)
        self.assertEqual(times[-1], 2 * DAY)
        [delayed] = self.relay.reports("delayed")
        call = [c for c in self.relay.calls if c.sender == "" and b"Action: delayed" in c.data]
        self.assertEqual(call[0].when - T0, 12 * HOUR)
        self.assertEqual(call[0].addresses, ["alice@example.org"])
        self.assertEqual(delayed["Subject"], "Delayed Mail (still being retried)")
        self.assertEqual(report_field(delayed, "Status"), "4.4.1")
        self.assertEqual(report_field(delayed, "Will-Retry-Until"),
                         "Thu, 16 Nov 2023 22:13:20 +0000")
        [failed] = self.relay.reports("failed")
        self.assertEqual(report_field(failed, "Status"), "4.4.7")
        self.assertEqual(report_field(failed, "Diagnostic-Code"),
                         "smtp; 451 4.4.1 Try again later")
        self.assertEqual(len(self.relay.reports()), 2)
        self.assertEqual(self.entries(), {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_delay_warning_without_notify_delay(self) -> None:
        """NOTIFY=FAILURE: no delay warning, still the NDR at expiry."""
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        self.store([Recipient("bob@remote.example", notify=("FAILURE",))])
        self.run_until(T0 + 3 * DAY)
        self.assertEqual(self.relay.reports("delayed"), [])
        self.assertEqual(len(self.relay.reports("failed")), 1)

    def test_delay_warning_off(self) -> None:
        """delay_notification = 0: never a delay warning."""
        self.config = Config(path=self.config.path, root=self.mailroot, server=self.config.server,
                             domains=self.config.domains,
                             delivery=DeliveryConfig(delay_notification=0.0))
        self.qmgr = self.make_qmgr()
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        self.store(["bob@remote.example"])
        self.run_until(T0 + 3 * DAY)
        self.assertEqual(self.relay.reports("delayed"), [])
        self.assertEqual(len(self.relay.reports("failed")), 1)

    def test_bounce_expires_to_badmail(self) -> None:
        """Mail from <> that keeps failing temporarily goes to badmail at expiry, no DSN."""
        self.relay.scripts["alice@example.org"] = [451]
        self.qmgr.startService()
        queue_id = self.store(["alice@example.org"], sender="")
        self.run_until(T0 + 3 * DAY)
        self.assertEqual(self.entries(), {})
        self.assertTrue(os.path.exists(os.path.join(self.mailroot, "badmail", queue_id + ".bad")))
        self.assertEqual({c.id for c in self.relay.calls}, {queue_id})
        self.assertEqual(len(self.relay.calls), 16)

    def test_restart_keeps_state(self) -> None:
        """
        A restart between attempts repeats no delivered recipient and forgets
        no failure: each gets exactly one delivery or one NDR.
        """
        self.relay.scripts["dave@remote.example"] = [550]
        self.relay.scripts["bob@remote.example"] = [451, 250]
        self.qmgr.startService()
        queue_id = self.store(["carol@example.net", "dave@remote.example",
                               "bob@remote.example"])
        self.clock.advance(0)
        self.assertEqual(len(self.relay.reports("failed")), 1)
        self.successResultOf(maybeDeferred(self.qmgr.stopService))

        self.clock.advance(20 * MINUTE)
        self.queue = self.make_queue()
        self.qmgr = self.make_qmgr()
        self.qmgr.startService()
        self.clock.advance(0)
        calls = self.relay.for_entry(queue_id)
        self.assertEqual([c.addresses for c in calls],
                         [["dave@remote.example", "bob@remote.example"],
                          ["bob@remote.example"]])
        self.assertEqual(len(self.maildir("carol")), 1)
        self.assertEqual(len(self.relay.reports("failed")), 1)
        self.assertEqual(self.entries(), {})

    def test_restart_keeps_schedule(self) -> None:
        """After a restart an entry is tried at its recorded next attempt, not before."""
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.clock.advance(0)
        self.successResultOf(maybeDeferred(self.qmgr.stopService))
        self.qmgr = self.make_qmgr()
        self.clock.advance(5 * MINUTE)
        self.qmgr.startService()
        self.clock.advance(9 * MINUTE)
        self.assertEqual(len(self.relay.for_entry(queue_id)), 1)
        self.clock.advance(1 * MINUTE)
        self.assertEqual(len(self.relay.for_entry(queue_id)), 2)
        self.assertEqual(self.entries()[queue_id].attempts, 2)

    def test_delay_warning_once_across_restart(self) -> None:
        """The delay warning is recorded per recipient and not repeated after a restart."""
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.run_until(T0 + 13 * HOUR)
        self.assertEqual(len(self.relay.reports("delayed")), 1)
        self.assertTrue(self.entries()[queue_id].recipients[0].notified_delay)
        self.successResultOf(maybeDeferred(self.qmgr.stopService))
        self.qmgr = self.make_qmgr()
        self.qmgr.startService()
        self.run_until(T0 + 24 * HOUR)
        self.assertEqual(len(self.relay.reports("delayed")), 1)


class SchedulingTests(QueueManagerMixin, unittest.TestCase):
    """One timer, bounded concurrency, orderly stop."""

    def test_one_timer_for_many(self) -> None:
        """100 waiting entries are served by one DelayedCall, at the earliest time."""
        self.store_waiting(100, 10 * MINUTE)
        self.qmgr.startService()
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), T0 + 10 * MINUTE)
        self.assertEqual(self.qmgr.summary(), {"queued": 0, "deferred": 100, "held": 0})
        self.clock.advance(10 * MINUTE + 49)
        self.assertEqual(len(self.relay.calls), 50)
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), T0 + 10 * MINUTE + 50)
        self.run_until(T0 + HOUR)
        self.assertEqual(len(self.relay.calls), 100)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_timer_for_new_messages(self) -> None:
        """Many messages stored at once still share one timer."""
        self.relay.hang = True
        self.qmgr.startService()
        for n in range(100):
            self.store([f"r{n}@remote.example"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(len(self.relay.calls), 100)

    def test_bounded_in_flight(self) -> None:
        """At most max_in_flight attempts run at once; the rest start as they finish."""
        self.qmgr = self.make_qmgr(max_in_flight=10)
        self.relay.hang = True
        self.store_waiting(25, 0)
        self.qmgr.startService()
        self.assertEqual(len(self.relay.calls), 1)
        self.clock.advance(30)
        self.assertEqual(len(self.relay.calls), 10)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.relay.release(3)
        self.assertEqual(len(self.relay.calls), 13)
        self.relay.release()
        self.relay.release()
        self.relay.release()
        self.assertEqual(len(self.relay.calls), 25)
        self.assertEqual(self.entries(), {})

    def test_stop_waits_for_attempts(self) -> None:
        """stopService waits for attempts in flight, then no new ones start."""
        self.relay.hang = True
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.clock.advance(0)
        d = self.qmgr.stopService()
        self.assertNoResult(d)
        self.store(["eve@remote.example"])
        self.relay.release()
        self.successResultOf(d)
        self.clock.advance(DAY)
        self.assertEqual([c.id for c in self.relay.calls], [queue_id])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_bounded(self) -> None:
        """stopService gives up waiting after shutdown_timeout; the entry stays queued."""
        self.relay.hang = True
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.clock.advance(0)
        d = self.qmgr.stopService()
        self.clock.advance(30)
        self.successResultOf(d)
        self.assertIn(queue_id, self.entries())
        self.relay.release()

    def test_one_error_does_not_stop_the_loop(self) -> None:
        """An entry whose envelope cannot be read is logged; the others are delivered."""
        ids = self.store_waiting(3, 60)
        self.qmgr.startService()
        with open(self.queue.envelope_path(ids[1]), "wb") as f:
            f.write(b"{not json")
        self.clock.advance(70)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(sorted(c.id for c in self.relay.calls), sorted([ids[0], ids[2]]))
        self.assertEqual(list(self.entries()), [])


class AdminTests(QueueManagerMixin, unittest.TestCase):
    """retry, hold, release, delete, summary."""

    def deferred_entry(self) -> str:
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.clock.advance(0)
        return queue_id

    def test_retry_one(self) -> None:
        """retry(id) attempts that entry at once."""
        queue_id = self.deferred_entry()
        self.assertEqual(self.qmgr.retry(queue_id), 1)
        self.assertEqual(len(self.relay.for_entry(queue_id)), 2)

    def test_retry_all(self) -> None:
        """retry() attempts every entry that is not held."""
        first = self.deferred_entry()
        second = self.store(["bob@remote.example"])
        third = self.store(["bob@remote.example"])
        self.clock.advance(0)
        self.successResultOf(self.qmgr.hold(third))
        self.assertEqual(self.qmgr.retry(), 2)
        self.assertEqual([len(self.relay.for_entry(i)) for i in (first, second, third)],
                         [2, 2, 1])
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), self.clock.seconds() + 30 * MINUTE)

    def test_flush_domain(self) -> None:
        """
        flush_domain (ETRN) attempts at once the entries with a pending
        recipient at the domain (with subdomains: under it too), never a held
        one nor one for another domain.
        """
        for address in ("bob@remote.example", "eve@sub.remote.example", "joe@other.example",
                        "ann@Remote.Example"):
            self.relay.scripts[address] = [451]
        self.qmgr.startService()
        exact = self.store(["bob@remote.example"])
        sub = self.store(["eve@sub.remote.example"])
        other = self.store(["joe@other.example"])
        held = self.store(["ann@Remote.Example"])
        self.clock.advance(0)
        self.successResultOf(self.qmgr.hold(held))
        self.assertEqual(self.successResultOf(self.qmgr.flush_domain("REMOTE.example")), 1)
        self.assertEqual([len(self.relay.for_entry(i)) for i in (exact, sub, other, held)],
                         [2, 1, 1, 1])
        self.assertEqual(self.successResultOf(self.qmgr.flush_domain("remote.example", True)),
                         2)
        self.assertEqual([len(self.relay.for_entry(i)) for i in (exact, sub, other, held)],
                         [3, 2, 1, 1])
        self.assertEqual(self.successResultOf(self.qmgr.flush_domain("none.example")), 0)

    def test_hold_and_release(self) -> None:
        """A held entry is not tried, even across a restart, until released."""
        queue_id = self.deferred_entry()
        self.successResultOf(self.qmgr.hold(queue_id))
        self.assertEqual(self.entries()[queue_id].state, "held")
        self.assertEqual(self.qmgr.summary(), {"queued": 0, "deferred": 0, "held": 1})
        self.clock.advance(HOUR)
        self.assertEqual(self.qmgr.retry(queue_id), 0)
        self.assertEqual(len(self.relay.for_entry(queue_id)), 1)

        self.successResultOf(maybeDeferred(self.qmgr.stopService))
        self.qmgr = self.make_qmgr()
        self.qmgr.startService()
        self.clock.advance(HOUR)
        self.assertEqual(self.qmgr.summary(), {"queued": 0, "deferred": 0, "held": 1})
        self.assertEqual(len(self.relay.for_entry(queue_id)), 1)

        self.relay.scripts["bob@remote.example"] = [250]
        self.successResultOf(self.qmgr.release(queue_id))
        self.assertEqual(len(self.relay.for_entry(queue_id)), 2)
        self.assertEqual(self.entries(), {})
        self.assertEqual(self.qmgr.summary(), {"queued": 0, "deferred": 0, "held": 0})

    def test_hold_during_attempt(self) -> None:
        """hold() while an attempt is in flight takes effect when it ends."""
        self.relay.hang = True
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.clock.advance(0)
        d = self.qmgr.hold(queue_id)
        self.assertNoResult(d)
        self.relay.release()
        self.successResultOf(d)
        self.assertEqual(self.entries()[queue_id].state, "held")
        self.clock.advance(DAY)
        self.assertEqual(len(self.relay.for_entry(queue_id)), 1)

    def test_delete(self) -> None:
        """delete(id) removes the entry without a report."""
        queue_id = self.deferred_entry()
        self.successResultOf(self.qmgr.delete(queue_id))
        self.assertEqual(self.entries(), {})
        self.clock.advance(DAY)
        self.assertEqual(len(self.relay.calls), 1)
        self.assertEqual(self.qmgr.summary(), {"queued": 0, "deferred": 0, "held": 0})

    def test_delete_with_bounce(self) -> None:
        """delete(id, bounce=True) returns an NDR for the pending recipients."""
        queue_id = self.deferred_entry()
        self.successResultOf(self.qmgr.delete(queue_id, bounce=True))
        self.assertNotIn(queue_id, self.entries())
        self.clock.advance(0)
        [report] = self.relay.reports("failed")
        self.assertEqual(report_field(report, "Status"), "5.0.0")
        self.assertEqual(self.entries(), {})

    def test_delete_with_bounce_failing(self) -> None:
        """When the NDR cannot be queued, delete() fails and the entry stays scheduled."""
        from twisted.internet.defer import fail

        queue_id = self.deferred_entry()
        self.patch(self.queue, "store", lambda *a: fail(OSError(28, "No space left on device")))
        self.failureResultOf(self.qmgr.delete(queue_id, bounce=True), RuntimeError)
        self.assertIn(queue_id, self.entries())
        self.clock.advance(DAY)
        self.assertGreater(len(self.relay.for_entry(queue_id)), 1)
        self.assertTrue(self.flushLoggedErrors(OSError))

    def test_unknown_id(self) -> None:
        """Admin calls name an unknown id with KeyError."""
        self.qmgr.startService()
        for call in (self.qmgr.retry, self.qmgr.hold, self.qmgr.release, self.qmgr.delete):
            self.assertRaises(KeyError, call, "0123ABCD")

    def test_summary_and_counters(self) -> None:
        """summary() counts entries per state; counters count results per recipient."""
        self.relay.hang = True
        self.store(["a@remote.example"])
        self.qmgr.startService()
        self.assertEqual(self.qmgr.summary(), {"queued": 1, "deferred": 0, "held": 0})
        self.relay.scripts["b@remote.example"] = [451]
        self.relay.scripts["c@remote.example"] = [550]
        self.store(["b@remote.example", "c@remote.example", "carol@example.net"])
        self.clock.advance(0)
        self.relay.release()
        self.relay.release()
        self.assertEqual(self.qmgr.summary(), {"queued": 0, "deferred": 1, "held": 0})
        self.assertEqual(self.qmgr.counters,
                         {"received": 1, "delivered": 3, "deferred": 1, "bounced": 1})


class ReplyLineTests(unittest.TestCase):
    """L{reply_line}: one reply line whatever form the agent reported."""

    def test_forms(self) -> None:
        """Code and enhanced status are added only when missing; whitespace collapses."""
        cases = [
            (DeliveryStatus("a@b", 550, "5.1.1", "550 5.1.1 no\r\n such user"),
             "550 5.1.1 no such user"),
            (DeliveryStatus("a@b", 550, "5.1.1", "5.1.1 no such user"), "550 5.1.1 no such user"),
            (DeliveryStatus("a@b", 451, "4.3.0", "relay error"), "451 4.3.0 relay error"),
            (DeliveryStatus("a@b", 250, "2.0.0", ""), "250 2.0.0"),
        ]
        for status, expected in cases:
            self.assertEqual(reply_line(status), expected)
