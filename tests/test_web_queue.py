"""
The status page and the JSON API over a big queue: the listing reads only
its page's envelopes, a cursor walks the queue while entries come and go, a
search reads a bounded window, and /api/qshape counts what is in the queue,
reading each envelope once. A real [http] listener on a loopback socket, a
real queue folder, envelopes counted as the queue reads them.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

from twisted.internet import reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from smtpd.admin.api import Admin, Server
from smtpd.admin.webclient import WebAPI
from smtpd.config.model import HTTPConfig
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.queue.store import Queue
from smtpd.web import queuelist
from smtpd.web.site import WebService
from smtpd.web.views import qshape
from tests.test_qmgr import T0, QueueManagerMixin, run_now
from tests.web_support import Browser

DATA = b"From: <a@client.test>\r\nTo: <r@remote.test>\r\nSubject: listed\r\n\r\nbody\r\n"


class CountingQueue(Queue):
    """The real queue, counting the envelopes read for listings and attempts."""

    def __init__(self, *args, **kw):
        Queue.__init__(self, *args, **kw)
        self.listed = 0
        self.single = 0

    def envelopes(self, ids):
        """Read C{ids} (counted)."""
        self.listed += len(ids)
        return Queue.envelopes(self, ids)

    def read_envelope(self, queue_id):
        """Read one envelope (counted)."""
        self.single += 1
        return Queue.read_envelope(self, queue_id)


def write_entry(folder: str, n: int, arrival: float, recipients: list[Recipient],
                state: str = "deferred") -> str:
    """Entry number C{n}, written as the server writes it (no fsync); its id."""
    queue_id = f"{int(arrival):08X}{n * 7919 % 2**64:016X}"
    envelope = Envelope(id=queue_id, sender=f"s{n}@client.test", recipients=recipients,
                        arrival=arrival, next_attempt=T0 + 3600 + n, attempts=1,
                        state=state, size=len(DATA), client="client.test [127.0.0.1]")
    with open(os.path.join(folder, queue_id + ".eml"), "wb") as f:
        f.write(DATA)
    with open(os.path.join(folder, queue_id + ".json"), "wb") as f:
        f.write(envelope.to_json())
    return queue_id


class WebQueueMixin(QueueManagerMixin):
    """A queue manager over a written queue, and the [http] site on a real socket."""

    timeout = 60
    WINDOW = queuelist.SEARCH_WINDOW

    def make_queue(self) -> Queue:
        return CountingQueue(os.path.join(self.mailroot, "queue"), self.clock, run_now)

    def start_site(self) -> None:
        """Start the queue manager and listen on 127.0.0.1 (the port chosen when bound)."""
        self.qmgr.startService()
        config = replace(self.config, http=HTTPConfig(listen=("tcp:0:interface=127.0.0.1",)))
        server = Server(self.clock, self.qmgr, self.queue, _NoSessions(), maybeDeferred, config)
        self.admin = Admin(server, "tester")
        web = WebService(config, server, self.clock, maybeDeferred, None, [],
                         search_window=self.WINDOW)
        [(description, factory)] = web.listening
        port = self.successResultOf(serverFromString(reactor, description).listen(factory))
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.browser = Browser(self)

    async def api(self, path: str) -> dict:
        """GET an API path: its JSON."""
        code, _, body = await self.browser.get(self.url + path)
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def reads(self) -> int:
        """Envelopes read since the last call (listings and single reads)."""
        count = self.queue.listed + self.queue.single
        self.queue.listed = self.queue.single = 0
        return count


class _NoSessions:
    sessions: dict = {}


class ListingTests(WebQueueMixin, unittest.TestCase):
    """A queue of 2,500 entries, listed and searched over HTTP (a search window of 1,000)."""

    COUNT = 2500
    WINDOW = 1000

    def setUp(self):
        QueueManagerMixin.setUp(self)
        folder = self.queue.directory
        os.makedirs(folder, 0o700, exist_ok=True)
        self.ids = sorted(
            write_entry(folder, n, T0 - 7200 + n // 100,
                        [Recipient(f"r{n}@remote.test", last_reply="451 4.4.1 later")])
            for n in range(self.COUNT))
        self.start_site()
        self.reads()

    async def test_page_reads_only_its_envelopes(self):
        """
        /api/queue, the HTML queue page and a cursor page each read exactly
        their page's envelopes (not the 2,500 of the queue); page, pages,
        total and next say where the page stands.
        """
        page = await self.api("/api/queue?per_page=50&page=7")
        self.assertEqual(self.reads(), 50)
        self.assertEqual([e["id"] for e in page["entries"]], self.ids[300:350])
        self.assertEqual((page["page"], page["pages"], page["total"], page["next"]),
                         (7, 50, self.COUNT, self.ids[349]))
        after = await self.api(f"/api/queue?per_page=100&after={page['next']}")
        self.assertEqual(self.reads(), 100)
        self.assertEqual([e["id"] for e in after["entries"]], self.ids[350:450])
        self.assertEqual(after["page"], 4)
        code, _, html = await self.browser.get(self.url + "/queue?page=3")
        self.assertEqual(code, 200)
        self.assertEqual(self.reads(), 50)
        self.assertIn(self.ids[100].encode(), html)
        self.assertNotIn(self.ids[150].encode(), html)
        self.assertIn(f'href="/queue?after={self.ids[149]}"'.encode(), html)
        self.assertIn(b'id="page-50"', html)
        self.assertIn(b"2500 entries.", html)

    async def test_page_boundaries(self):
        """
        The last page holds the rest and has no next cursor; a page number
        past the end gives the last page; offset skips within a cursor
        page; bad numbers and a bad cursor are a 400 that says why.
        """
        last = await self.api("/api/queue?per_page=400&page=7")
        self.assertEqual([e["id"] for e in last["entries"]], self.ids[2400:])
        self.assertEqual((last["page"], last["pages"], last["next"]), (7, 7, None))
        beyond = await self.api("/api/queue?per_page=400&page=99")
        self.assertEqual(beyond["page"], 7)
        exact = await self.api(f"/api/queue?per_page=500&after={self.ids[1999]}")
        self.assertEqual((len(exact["entries"]), exact["next"], exact["page"]),
                         (500, None, 5))
        end = await self.api(f"/api/queue?per_page=500&after={self.ids[-1]}")
        self.assertEqual((end["entries"], end["next"], end["page"]), ([], None, 5))
        shifted = await self.api(f"/api/queue?per_page=3&offset=2&after={self.ids[9]}")
        self.assertEqual([e["id"] for e in shifted["entries"]], self.ids[12:15])
        self.assertEqual(shifted["next"], self.ids[14])
        for query, says in (("per_page=x", b"per_page: a number from 1"),
                            ("page=two", b"page: a number from 1"),
                            ("after=../etc", b"after: a queue id"),
                            ("offset=-", b"offset: a number from 0")):
            code, _, body = await self.browser.get(self.url + "/api/queue?" + query)
            self.assertEqual((code, body), (400, says + b"\n"))

    async def test_cursor_survives_changes(self):
        """
        Walking /api/queue with after= the last id of each page lists every
        entry that stayed exactly once, in order, while entries before and
        after the cursor are deleted and a new one arrives between pages.
        """
        seen, after, pages = [], "", 0
        gone = set(self.ids[200:2000:9])
        late = None
        while True:
            page = await self.api(f"/api/queue?per_page=400&after={after}")
            seen.extend(e["id"] for e in page["entries"])
            pages += 1
            if pages == 2:
                for queue_id in gone:
                    self.successResultOf(self.qmgr.delete(queue_id))
                late = self.store(["late@remote.example"])
            if page["next"] is None:
                break
            after = page["next"]
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(seen, sorted(seen))
        stayed = set(self.ids) - gone
        self.assertTrue(stayed <= set(seen))
        self.assertEqual([i for i in seen if i not in stayed
                          and not (i in gone and i in seen[:800])], [late])

    async def test_search_reads_a_bounded_window(self):
        """
        A search looks at its window of entries at most per request and says
        so (partial, scanned, next); with after= next it goes on and finds
        a match beyond the first window, and says when the queue ended.
        """
        window = self.WINDOW
        first = await self.api("/api/queue?q=s2400@client")
        self.assertEqual(self.reads(), window)
        self.assertEqual((first["entries"], first["total"], first["scanned"], first["partial"],
                          first["next"]), ([], 0, window, True, self.ids[window - 1]))
        more = await self.api(f"/api/queue?q=s2400@client&after={first['next']}")
        self.assertEqual(self.reads(), window)
        self.assertEqual((more["entries"], more["partial"]), ([], True))
        last = await self.api(f"/api/queue?q=s2400@client&after={more['next']}")
        self.assertEqual(self.reads(), self.COUNT - 2 * window)
        self.assertEqual([e["sender"] for e in last["entries"]], ["s2400@client.test"])
        self.assertEqual((last["partial"], last["next"], last["scanned"]),
                         (False, None, self.COUNT - 2 * window))
        code, _, html = await self.browser.get(self.url + "/queue?q=remote.test&page=2")
        self.assertIn(b"1000 matches among the 1000 entries searched (the queue goes on)",
                      html)
        self.assertIn(f'after={self.ids[window - 1]}'.encode(), html)

    async def test_smtpctl_http_pages_by_cursor(self):
        """
        smtpctl's --http client gives the page admin.queue(limit, after)
        gives, asking the API for 500 entries at a time, and so reads
        those envelopes only; with no limit it walks the whole queue.
        """
        client = WebAPI(self.url, timeout=30)
        listed = await deferToThread(client.queue_page, limit=1200, after=self.ids[10])
        self.assertEqual([e["id"] for e in listed], self.ids[11:1211])
        self.assertEqual(self.reads(), 1200)
        skipped = await deferToThread(client.queue_page, limit=5, offset=3)
        self.assertEqual([e["id"] for e in skipped], self.ids[3:8])
        everything = await deferToThread(client.call, "queue", limit=None)
        self.assertEqual([e["id"] for e in everything], self.ids)


class QShapeTests(WebQueueMixin, unittest.TestCase):
    """/api/qshape and the overview count the queue's deferred entries."""

    def setUp(self):
        QueueManagerMixin.setUp(self)
        folder = self.queue.directory
        os.makedirs(folder, 0o700, exist_ok=True)
        self.expected: dict[str, list[int]] = {}
        self.deferred = 0
        ages = (1, 7, 15, 30, 60, 120, 300, 600, 1000, 2000)  # minutes: one per column
        for n in range(600):
            column = n % 10
            domains = [f"d{n % 3}.test", f"d{n % 5}.test"]
            recipients = [Recipient(f"r{n}@{domains[0]}"), Recipient(f"x{n}@{domains[1]}")]
            if n % 7 == 0:
                recipients[1].state = "delivered"  # no longer counted for its domain
            state = "held" if n % 11 == 0 else "deferred"
            write_entry(folder, n, T0 - ages[column] * 60, recipients, state)
            if state == "deferred":
                pending = {r.address.rpartition("@")[2] for r in recipients
                           if r.state == "pending"}
                self.deferred += 1
                for domain in pending:
                    self.expected.setdefault(domain, [0] * 10)[column] += 1
        # As qshape: TOTAL sums the domains' rows (an entry counts per domain).
        self.expected["TOTAL"] = [sum(c) for c in zip(*self.expected.values())]
        self.start_site()
        self.reads()

    async def test_counts_equal_the_queue(self):
        """
        /api/qshape gives per domain and age column the deferred entries
        with pending mail there: the counts written, and the same as the
        table of the whole listing; the overview shows that table.
        """
        shape = await self.api("/api/qshape")
        rows = {row[0]: row[2:] for row in shape["rows"]}
        self.assertEqual(rows, self.expected)
        self.assertEqual(shape["rows"][0][:2], ["TOTAL", sum(self.expected["TOTAL"])])
        self.assertEqual(shape["buckets"], ["5", "10", "20", "40", "80", "160", "320", "640",
                                            "1280", "1280+"])
        everything = await self.admin.queue(limit=None)
        self.assertEqual(shape, qshape(everything, self.clock.seconds()))
        code, _, html = await self.browser.get(self.url + "/")
        self.assertIn(f"<td>TOTAL</td><td>{sum(self.expected['TOTAL'])}</td>".encode(), html)

    async def test_no_reads_after_a_restart(self):
        """
        After a restart the deferred entries' domains come with the schedule
        read at start: the first qshape reads no envelope and counts the same.
        """
        self.qmgr.stopService()
        self.qmgr = self.make_qmgr()
        server = Server(self.clock, self.qmgr, self.queue, _NoSessions(), maybeDeferred,
                        self.config)  # subscribes to the start-up read
        self.qmgr.startService()
        self.reads()
        shape = self.successResultOf(Admin(server, "tester").qshape())
        self.assertEqual(self.reads(), 0)
        self.assertEqual({row[0]: row[2:] for row in shape["rows"]}, self.expected)

    async def test_each_envelope_read_once(self):
        """
        The first qshape reads each deferred entry's envelope once; the next
        reads none; a deleted entry leaves the table without a read; an
        entry whose attempt delivered one domain is read again (only it)
        and counted under the domain still pending.
        """
        total = sum(self.expected["TOTAL"])
        await self.api("/api/qshape")
        self.assertEqual(self.reads(), self.deferred)
        await self.api("/api/qshape")
        self.assertEqual(self.reads(), 0)
        gone = self.qmgr.deferred()[0][0]
        self.successResultOf(self.qmgr.delete(gone))
        self.reads()
        shape = await self.api("/api/qshape")
        self.assertLess(shape["rows"][0][1], total)
        self.assertEqual(self.reads(), 0)
        # Entry 3 (age column 3) has r3@d0.test and x3@d3.test: the attempt
        # delivers to d0.test, d3.test stays deferred.
        [three] = [e for e in await self.admin.queue(limit=None)
                   if e["sender"] == "s3@client.test"]
        self.relay.scripts = {"r3@d0.test": [250], "x3@d3.test": [451]}
        self.reads()
        before = shape["rows"][0][1]
        self.assertEqual(self.qmgr.retry(three["id"]), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.relay.calls), 1)
        self.assertEqual(self.reads(), 1)  # the attempt's own read
        shape = await self.api("/api/qshape")
        self.assertEqual(self.reads(), 1)  # that entry only
        rows = {row[0]: row[2:] for row in shape["rows"]}
        self.assertEqual(rows["d0.test"][3], self.expected["d0.test"][3] - 1)
        self.assertEqual(rows["d3.test"][3], self.expected["d3.test"][3])
        self.assertEqual(shape["rows"][0][1], before - 1)
