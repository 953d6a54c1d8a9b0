# -*- test-case-name: tests.test_scheduler -*-
"""
Tests for the parts of the queue manager on their own: the scheduler reads
envelopes only when due, attempts in flight hold message sources rather than
data, the notifier hands its reports to the injected submit, and the admin
listing pages through entries read from disk.
"""

from __future__ import annotations

import tracemalloc

from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from smtpd.mail.envelope import DeliveryStatus, Envelope, Recipient
from smtpd.mail.source import read_all
from smtpd.queue.operations import EntrySummary
from tests.test_qmgr import MESSAGE, MINUTE, QueueManagerMixin


class CountingQueue:
    """The real queue, counting the envelopes read from it."""

    def __init__(self, queue):
        self.queue = queue
        self.reads: list[str] = []

    def __getattr__(self, name):
        return getattr(self.queue, name)

    def read_envelope(self, queue_id):
        self.reads.append(queue_id)
        return self.queue.read_envelope(queue_id)


class SchedulerTests(QueueManagerMixin, unittest.TestCase):
    """L{smtpd.queue.scheduler.Scheduler} through the queue manager."""

    def test_schedule_triples(self) -> None:
        """The store gives the schedule as (next attempt, id, state) triples only."""
        [queue_id] = self.store_waiting(1, 60)
        self.assertEqual(self.queue.schedule(cleanup=False),
                         [(self.clock.seconds() + 60, queue_id, "deferred")])

    def test_start_loads_in_batches(self) -> None:
        """
        The start returns before any envelope is read for the schedule; the
        envelopes are then read a batch at a time, and what is due in a
        batch already read is attempted while later batches wait.
        """
        import smtpd.queue.scheduler as scheduler_module

        self.patch(scheduler_module, "LOAD_BATCH", 2)
        ids = self.store_waiting(5, 0, spacing=0)
        batches: list[tuple[list[str], Deferred]] = []

        class GatedQueue(CountingQueue):
            def read_schedule(self, some):
                d = Deferred()
                batches.append((list(some), d))
                return d

        gated = GatedQueue(self.queue)
        self.queue = gated
        self.qmgr = self.make_qmgr()
        self.qmgr.startService()
        self.assertEqual([sorted(b) for b, _ in batches], [sorted(batches[0][0])])
        self.assertEqual(self.relay.calls, [])
        first, d = batches[0]
        d.callback(self.queue.queue._read_schedule_blocking(first))
        self.clock.advance(0)
        self.assertEqual(sorted(gated.reads), sorted(first))
        self.assertEqual(len(batches), 2)
        while len(batches) < 3 or not batches[-1][1].called:
            some, d = batches[-1]
            d.callback(self.queue.queue._read_schedule_blocking(some))
            self.clock.advance(0)
        self.assertEqual(sorted(gated.reads), sorted(ids))

    def test_envelopes_read_when_due(self) -> None:
        """
        At start no envelope is read through the queue; each is read when
        its entry is due, one minute apart here.
        """
        ids = self.store_waiting(5, MINUTE, spacing=MINUTE)
        counting = CountingQueue(self.queue)
        self.queue = counting
        self.qmgr = self.make_qmgr()
        self.qmgr.startService()
        self.assertEqual(counting.reads, [])
        self.clock.advance(MINUTE)
        self.assertEqual(counting.reads, ids[:1])
        self.clock.advance(2 * MINUTE)
        self.assertEqual(counting.reads, ids[:3])


    def test_ages_by_state(self) -> None:
        """
        The queue's shape by age counts each entry in its state's column for
        the first bound not below its age, from the arrival read at start or
        stored since; a held entry moves state, a deleted one is gone.
        """
        old = self.store_waiting(2, 3600)
        self.clock.advance(1000)
        self.qmgr = self.make_qmgr()
        self.qmgr.startService()
        self.addCleanup(self.stop)
        fresh = self.store(["bob@remote.example"], state="held")
        self.clock.advance(200)
        self.assertEqual(self.qmgr.ages((600.0, 1200.0)),
                         {"queued": [0, 0, 0], "deferred": [0, 2, 0], "held": [1, 0, 0]})
        self.assertEqual(self.qmgr.ages((1199.0,)),
                         {"queued": [0, 0], "deferred": [0, 2], "held": [1, 0]})
        self.successResultOf(self.qmgr.hold(old[0]))
        self.successResultOf(self.qmgr.delete(fresh))
        self.assertEqual(self.qmgr.ages((600.0,)),
                         {"queued": [0, 0], "deferred": [0, 1], "held": [0, 1]})

class NotifierSubmitTests(QueueManagerMixin, unittest.TestCase):
    """The notifier's reports go to the injected submit."""

    def test_ndr_submitted(self) -> None:
        """An NDR is handed to submit (envelope from <>, source of the report), not stored."""
        submitted = []

        def submit(envelope, source):
            submitted.append((envelope, read_all(source)))
            return succeed(None)

        self.qmgr = self.make_qmgr(submit=submit)
        self.relay.scripts["bob@remote.example"] = [550]
        self.qmgr.startService()
        self.store(["bob@remote.example"])
        self.clock.advance(0)
        [(envelope, report)] = submitted
        self.assertEqual((envelope.sender, [r.address for r in envelope.recipients]),
                         ("", ["alice@example.org"]))
        self.assertIn(b"Undelivered Mail Returned to Sender", report)
        self.assertEqual(self.entries(), {})


class ListingTests(QueueManagerMixin, unittest.TestCase):
    """The admin listing: pages of entry summaries read from disk."""

    def test_pages(self) -> None:
        """list(offset, limit) gives that page, oldest first, with what each entry holds."""
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        ids = []
        for _ in range(5):
            ids.append(self.store(["bob@remote.example", "carol@example.net"]))
            self.clock.advance(1)
        first = self.successResultOf(self.qmgr.list(0, 2))
        rest = self.successResultOf(self.qmgr.list(2, 10))
        self.assertEqual([e.id for e in first + rest], sorted(ids))
        entry = first[0]
        self.assertIsInstance(entry, EntrySummary)
        self.assertEqual((entry.sender, entry.recipients, entry.pending, entry.state,
                          entry.attempts, entry.size),
                         ("alice@example.org", ("bob@remote.example", "carol@example.net"),
                          1, "deferred", 1, len(MESSAGE)))
        self.assertEqual(self.successResultOf(self.qmgr.list(10, 5)), [])


class HoldingRelay:
    """A relay agent keeping each message source it is given, unread, until released."""

    name = "relay"

    def __init__(self):
        self.waiting: list[tuple[Deferred, list]] = []

    def deliver(self, envelope, deliveries, message):
        d: Deferred = Deferred()
        statuses = [DeliveryStatus(r.address, 250, "2.0.0", "250 Ok") for r, _ in deliveries]
        self.waiting.append((d, statuses, message))
        return d

    def stop(self):
        """Nothing to close."""

    def release(self):
        waiting, self.waiting = self.waiting, []
        for d, statuses, _ in waiting:
            d.callback(statuses)


class AttemptMemoryTests(QueueManagerMixin, unittest.TestCase):
    """Attempts in flight hold message sources, not message data."""

    def test_many_attempts_hold_no_data(self) -> None:
        """
        Forty 1 MB entries attempted at once raise traced memory by less than
        4 MB: the queue manager hands each agent a source on the queue file
        and reads none of the data itself.
        """
        body = b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n"
        body *= (1 << 20) // len(body)
        now = self.clock.seconds()
        for n in range(40):
            envelope = Envelope(id=self.queue.new_id(), sender="alice@example.org",
                                recipients=[Recipient(f"r{n}@remote.example")],
                                arrival=now, next_attempt=now, size=len(body))
            self.successResultOf(self.queue.store(envelope, body))
        del body
        relay = HoldingRelay()
        self.qmgr = self.make_qmgr(agents={"relay": relay})
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        self.qmgr.startService()
        self.clock.advance(0)
        peak = tracemalloc.get_traced_memory()[1]
        self.assertEqual(len(relay.waiting), 40)
        self.assertTrue(all(m.size > 1_000_000 for _, _, m in relay.waiting))
        self.assertLess(peak - baseline, 4 * 1024 * 1024)
        relay.release()
        self.assertEqual(self.entries(), {})
