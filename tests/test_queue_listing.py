"""
Listing a big queue a page at a time: C{admin.queue(limit, offset, after)}
(the manhole, the control socket) and C{smtpctl queue list}, which streams
every page, with the server running and stopped.
"""

from __future__ import annotations

import json
import os
import time

from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from smtpd.admin.api import Admin, AdminError, Server
from smtpd.admin.listing import DEFAULT_PAGE
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.queue.index import QueueIndex
from tests.admin_support import short_root, write_ini
from tests.test_control import Ctl, ini, start
from tests.test_qmgr import QueueManagerMixin, T0
from tests import support

DATA = b"From: <a@client.test>\r\nTo: <r@remote.test>\r\nSubject: listed\r\n\r\nbody\r\n"


def write_entries(folder: str, count: int, now: float, first: int = 0) -> list[str]:
    """
    C{count} deferred entries written straight into the queue folder (as
    the server writes them, without fsync), due in an hour; their ids, sorted.
    """
    os.makedirs(folder, 0o700, exist_ok=True)
    ids = []
    for n in range(first, first + count):
        # Ids as Queue.new_id makes them: the arrival second, then 64 bits.
        queue_id = f"{int(now) - 7200 + n // 100:08X}{n * 7919 % 2**64:016X}"
        envelope = Envelope(
            id=queue_id, sender=f"s{n}@client.test",
            recipients=[Recipient(f"r{n}@remote.test", last_reply="451 4.4.1 later")],
            arrival=now - 7200 + n // 100, next_attempt=now + 3600, attempts=1,
            state="deferred", size=len(DATA), client="client.test [127.0.0.1]")
        with open(os.path.join(folder, queue_id + ".eml"), "wb") as f:
            f.write(DATA)
        with open(os.path.join(folder, queue_id + ".json"), "wb") as f:
            f.write(envelope.to_json())
        ids.append(queue_id)
    return sorted(ids)


class QueueIndexTests(unittest.TestCase):
    """The sorted ids behind a page."""

    def test_pages_by_bisection(self):
        """Ids stay sorted and unique as they come and go; pages start after a cursor."""
        index = QueueIndex(["C", "A", "E"])
        for queue_id in ("B", "F", "A"):
            index.add(queue_id)
        index.discard("E")
        index.discard("Z")
        self.assertEqual(index.all(), ["A", "B", "C", "F"])
        self.assertEqual(index.page(2), ["A", "B"])
        self.assertEqual(index.page(2, after="B"), ["C", "F"])
        self.assertEqual(index.page(2, after="BB"), ["C", "F"])
        self.assertEqual(index.page(None, offset=1, after="A"), ["C", "F"])
        self.assertEqual(index.page(5, after="F"), [])
        self.assertEqual(len(index), 4)


class _NoSessions:
    sessions: dict = {}


class AdminPagingTests(QueueManagerMixin, unittest.TestCase):
    """admin.queue() pages through a queue of a few thousand entries."""

    COUNT = 2500

    def setUp(self):
        QueueManagerMixin.setUp(self)
        self.ids = write_entries(self.queue.directory, self.COUNT, T0)
        self.qmgr.startService()

    def admin(self, run_blocking=None) -> Admin:
        from twisted.internet.defer import maybeDeferred

        server = Server(self.clock, self.qmgr, self.queue, _NoSessions(),
                        run_blocking or maybeDeferred, self.config)
        return Admin(server, "tester")

    def page(self, admin: Admin, **kw) -> list[dict]:
        return self.successResultOf(admin.queue(**kw))

    def test_default_page(self):
        """
        Without arguments admin.queue() gives the first page of 100 entries,
        oldest first, each with the keys of the administration API.
        """
        listed = self.page(self.admin())
        self.assertEqual(len(listed), DEFAULT_PAGE)
        self.assertEqual([e["id"] for e in listed], self.ids[:DEFAULT_PAGE])
        self.assertEqual(set(listed[0]), {"id", "sender", "state", "attempts", "next_attempt",
                                          "arrival", "size", "recipients"})
        self.assertEqual(listed[0]["recipients"],
                         [{"address": "r0@remote.test", "state": "pending",
                           "last_reply": "451 4.4.1 later"}])
        arrivals = [e["arrival"] for e in listed]
        self.assertEqual(arrivals, sorted(arrivals))

    def test_cursor_pages_cover_the_queue_once(self):
        """
        Pages fetched with after= the last id of the previous page list every
        entry exactly once in a stable order, also when entries leave and
        arrive between pages (those that stayed are all there, none twice).
        """
        admin = self.admin()
        seen, after, pages, late = [], None, 0, None
        gone = set(self.ids[300:2000:7])
        while True:
            listed = self.page(admin, limit=333, after=after)
            seen.extend(e["id"] for e in listed)
            pages += 1
            if pages == 2:
                for queue_id in gone:
                    self.successResultOf(self.qmgr.delete(queue_id))
                late = self.store(["late@remote.example"])
            if len(listed) < 333:
                break
            after = listed[-1]["id"]
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(seen, sorted(seen))
        stayed = set(self.ids) - gone
        self.assertTrue(stayed <= set(seen))
        listed_before = set(seen[:666])
        self.assertEqual([i for i in seen if i not in stayed
                          and not (i in gone and i in listed_before)], [late])

    def test_offset_pages_and_everything(self):
        """offset/limit pages join up to the whole queue; limit=None lists it all."""
        admin = self.admin()
        joined = []
        for offset in range(0, self.COUNT, 1000):
            joined.extend(e["id"] for e in self.page(admin, limit=1000, offset=offset))
        self.assertEqual(joined, self.ids)
        self.assertEqual([e["id"] for e in self.page(admin, limit=None)], self.ids)
        self.assertEqual(self.page(admin, limit=10, offset=self.COUNT), [])

    def test_bad_arguments(self):
        """Paging arguments of the wrong kind are an AdminError that names them."""
        admin = self.admin()
        for kw in ({"limit": -1}, {"limit": "10"}, {"offset": -5}, {"after": 7}):
            e = self.assertRaises(AdminError, admin.queue, **kw)
            self.assertIn(next(iter(kw)), str(e))

    async def test_reactor_keeps_turning(self):
        """
        While the whole queue is listed page by page (envelopes read in a
        thread), the reactor keeps serving timers: no gap of half a second
        (generous: the listing of 2,500 entries itself takes a fraction).
        """
        admin = self.admin(deferToThread)
        gaps, last = [0.0], [time.monotonic()]

        def tick():
            now = time.monotonic()
            gaps.append(now - last[0])
            last[0] = now

        ticker = LoopingCall(tick)
        ticker.clock = reactor
        ticker.start(0.01)
        try:
            seen, after = [], None
            while True:
                listed = await admin.queue(limit=500, after=after)
                seen.extend(e["id"] for e in listed)
                if len(listed) < 500:
                    break
                after = listed[-1]["id"]
            everything = await admin.queue(limit=None)
        finally:
            ticker.stop()
        self.assertEqual(seen, self.ids)
        self.assertEqual(len(everything), self.COUNT)
        self.assertLess(max(gaps), 0.5, f"longest reactor gap {max(gaps):.3f} s")


class SmtpctlListingTests(unittest.TestCase):
    """smtpctl queue list streams every page, running and stopped."""

    timeout = 120
    COUNT = 2300

    async def test_stream_running_and_stopped(self):
        """
        With 2,300 entries (three pages of smtpctl's 1,000), the running
        server's listing in JSON has each entry once, in id order; --limit
        gives the first N; stopped, the table lists them all with one header
        and the total.
        """
        sink = support.start_smtp_sink(self, "127.0.0.1")
        root = short_root(self)
        config = write_ini(root, ini(sink.port))
        ids = write_entries(os.path.join(root, "mailroot", "queue"), self.COUNT, time.time())
        process, _ = await start(self, root)
        ctl = Ctl(self, config)
        code, out = await ctl("queue", "list", "--json")
        self.assertEqual(code, 0, out[-2000:])
        self.assertEqual([e["id"] for e in json.loads(out)], ids)
        code, out = await ctl("queue", "list", "--json", "--limit", "1001")
        self.assertEqual([e["id"] for e in json.loads(out)], ids[:1001])
        process.transport.signalProcess("TERM")
        await process.ended
        code, out = await ctl("queue", "list")
        self.assertEqual(code, 0, out[-2000:])
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "SIZE", "AGE", "STATE", "TRIES", "NEXT",
                                            "SENDER"])
        self.assertEqual([line.split()[0] for line in lines[1:-1:2]], ids)
        self.assertEqual(lines[-1], f"-- 155K in {self.COUNT} messages")
        code, out = await ctl("queue", "list", "--limit", "3")
        self.assertEqual(len(out.splitlines()), 1 + 3 * 2 + 1)
