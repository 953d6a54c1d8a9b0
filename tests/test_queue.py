"""
Tests for L{smtpd.queue}: the durable on-disk queue.
"""

from __future__ import annotations

import errno
import os
import resource
import signal

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThreadPool
from twisted.trial import unittest

from smtpd.mail.envelope import DEFERRED, FAILED, Envelope, Recipient
from smtpd.mail.envelope import valid_queue_id
from smtpd.queue.store import FRESH_DATA_BUDGET, Queue
from smtpd.mail.source import held_data, read_all

DATA = b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


def envelope(queue: Queue, clock: Clock, *recipients: str) -> Envelope:
    """A fresh envelope from a@example.com with a new id."""
    return Envelope(
        id=queue.new_id(),
        sender="a@example.com",
        recipients=[Recipient(r) for r in recipients or ("b@example.org",)],
        arrival=clock.seconds(),
        size=len(DATA),
    )


class QueueTestCase(unittest.TestCase):
    """A queue under a fresh mailroot with a synchronous blocking runner."""

    def setUp(self) -> None:
        self.mailroot = self.mktemp()
        os.makedirs(self.mailroot)
        self.folder = os.path.join(self.mailroot, "queue")
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.queue = Queue(self.folder, self.clock, defer.maybeDeferred)

    def store(self, *recipients: str, data: bytes = DATA) -> Envelope:
        """Store a message and return its envelope, asserting success."""
        e = envelope(self.queue, self.clock, *recipients)
        self.successResultOf(self.queue.store(e, data))
        return e

    def listing(self, folder: str | None = None) -> list[str]:
        """The sorted names in C{folder} (the queue folder by default)."""
        return sorted(os.listdir(folder or self.folder))


class StoreTests(QueueTestCase):
    """L{Queue.store}, L{Queue.scan} and reading back."""

    def test_roundtrip(self) -> None:
        """A stored message is found by scan with the same envelope and data."""
        e = self.store("b@example.org", "c@example.net")
        self.assertEqual(self.queue.scan(), [e])
        self.assertEqual(read_all(self.queue.source(e.id)), DATA)
        self.assertEqual(self.successResultOf(self.queue.read_envelope(e.id)), e)
        self.assertEqual(self.listing(), [e.id + ".eml", e.id + ".json"])
        with open(self.queue.data_path(e.id), "rb") as f:
            self.assertEqual(f.read(), DATA)

    def test_creates_folder(self) -> None:
        """Store creates the queue folder when it is missing."""
        self.assertFalse(os.path.exists(self.folder))
        e = self.store()
        self.assertEqual(self.queue.scan(), [e])

    def test_scan_order(self) -> None:
        """Scan lists entries oldest first."""
        first = self.store()
        self.clock.advance(10)
        second = self.store()
        self.clock.advance(10)
        third = self.store()
        self.assertEqual(self.queue.scan(), [first, second, third])

    def test_observers(self) -> None:
        """Every observer is called with the envelope after a successful store."""
        seen: list[Envelope] = []
        self.queue.add_observer(seen.append)
        self.queue.add_observer(lambda e: seen.append(e.id))
        e = self.store()
        self.assertEqual(seen, [e, e.id])

    def test_failing_observer(self) -> None:
        """An observer that raises neither fails the store nor stops the others."""
        seen: list[Envelope] = []
        self.queue.add_observer(lambda e: 1 / 0)
        self.queue.add_observer(seen.append)
        e = self.store()
        self.assertEqual(seen, [e])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def store_limited(self, e: Envelope, data: bytes) -> defer.Deferred[None]:
        """
        Store under a 64 KiB file size limit: a bigger write fails part way
        with EFBIG, as a full disk fails with ENOSPC.
        """
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, limits[1]))
        try:
            return self.queue.store(e, data)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, previous)

    def test_data_write_fails(self) -> None:
        """A data write that fails part way fails the store; no file stays."""
        os.makedirs(self.folder)
        seen: list[Envelope] = []
        self.queue.add_observer(seen.append)
        e = envelope(self.queue, self.clock)
        failure = self.failureResultOf(self.store_limited(e, b"x" * 1_000_000), OSError)
        self.assertEqual(failure.value.errno, errno.EFBIG)
        self.assertEqual(self.listing(), [])
        self.assertEqual(seen, [])

    def test_envelope_write_fails(self) -> None:
        """
        When the envelope (written last) cannot be written, the data file
        already in place is removed again: nothing stays.
        """
        os.makedirs(self.folder)
        many = [f"recipient{i}@example.org" for i in range(2000)]
        e = envelope(self.queue, self.clock, *many)
        self.assertGreater(len(e.to_json()), 65536)
        failure = self.failureResultOf(self.store_limited(e, DATA), OSError)
        self.assertEqual(failure.value.errno, errno.EFBIG)
        self.assertEqual(self.listing(), [])

    def test_envelope_name_taken(self) -> None:
        """
        When the envelope name is taken (here by a folder), the store fails and
        the data file is removed again.
        """
        e = envelope(self.queue, self.clock)
        os.makedirs(os.path.join(self.folder, e.id + ".json"))
        failure = self.failureResultOf(self.queue.store(e, DATA), OSError)
        self.assertEqual(failure.value.errno, errno.EEXIST)
        self.assertEqual(self.listing(), [e.id + ".json"])

    def test_folder_unusable(self) -> None:
        """When the queue folder is a file, the store fails and creates nothing."""
        with open(self.folder, "wb") as f:
            f.write(b"not a folder")
        e = envelope(self.queue, self.clock)
        self.failureResultOf(self.queue.store(e, DATA), OSError)
        self.assertEqual(self.listing(self.mailroot), ["queue"])

    def test_existing_entry(self) -> None:
        """Storing under an id already in the queue fails and keeps the old entry."""
        e = self.store()
        again = Envelope(e.id, "x@example.com", [Recipient("y@example.com")], 1.0)
        failure = self.failureResultOf(self.queue.store(again, b"other"), OSError)
        self.assertEqual(failure.value.errno, errno.EEXIST)
        self.assertEqual(self.queue.scan(), [e])
        self.assertEqual(read_all(self.queue.source(e.id)), DATA)

    def test_thread_pool(self) -> None:
        """
        Concurrent stores through the reactor's thread pool (sharing folder
        fsyncs) all become durable entries.
        """
        queue = Queue(self.folder, self.clock,
                      lambda f, *a: deferToThreadPool(reactor, reactor.getThreadPool(), f, *a))
        envelopes = [envelope(queue, self.clock) for _ in range(40)]
        d = defer.gatherResults([queue.store(e, DATA) for e in envelopes])

        def check(_: object) -> None:
            found = queue.scan()
            self.assertEqual(sorted(e.id for e in found), sorted(e.id for e in envelopes))
            self.assertEqual(len(self.listing()), 80)

        return d.addCallback(check)


class FreshDataTests(QueueTestCase):
    """The data of an entry stored from memory is read from memory once, for its first attempt."""

    def test_first_read_from_memory(self) -> None:
        """
        The first L{Queue.source} after a store from memory holds the data
        (the same octets as the data file); later ones read the file.
        """
        e = self.store(data=DATA)
        first = self.queue.source(e.id)
        self.assertEqual(held_data(first), DATA)
        with open(self.queue.data_path(e.id), "rb") as f:
            self.assertEqual(f.read(), DATA)
        second = self.queue.source(e.id)
        self.assertIsNone(held_data(second))
        self.assertEqual(read_all(second), DATA)

    def test_budget(self) -> None:
        """Beyond the budget (L{FRESH_DATA_BUDGET} by default) entries are read from their files."""
        self.queue = Queue(self.folder, self.clock, defer.maybeDeferred, fresh_budget=10_000)
        data = b"x" * 5_000 + b"\r\n"
        kept, over = self.store(data=data), self.store(data=data)
        self.assertEqual(held_data(self.queue.source(kept.id)), data)
        self.assertIsNone(held_data(self.queue.source(over.id)))
        self.assertEqual(read_all(self.queue.source(over.id)), data)
        third = self.store(data=data)  # the first one's share came back
        self.assertEqual(held_data(self.queue.source(third.id)), data)

    def test_removed_and_badmail(self) -> None:
        """A removed entry, or one moved to badmail, holds no data in memory."""
        removed, bad = self.store(), self.store()
        self.successResultOf(self.queue.remove(removed.id))
        self.successResultOf(self.queue.move_to_badmail(bad, "test"))
        self.assertRaises(FileNotFoundError, self.queue.source, removed.id)
        self.assertRaises(FileNotFoundError, self.queue.source, bad.id)
        with open(os.path.join(self.mailroot, "badmail", bad.id + ".bad"), "rb") as f:
            self.assertEqual(f.read(), DATA)


class IdTests(QueueTestCase):
    """L{Queue.new_id}."""

    def test_unique(self) -> None:
        """Ids made at the same instant, and by another queue object, never repeat."""
        other = Queue(self.folder, self.clock, defer.maybeDeferred)
        ids = {self.queue.new_id() for _ in range(5000)} | {other.new_id() for _ in range(5000)}
        self.assertEqual(len(ids), 10000)

    def test_shape(self) -> None:
        """An id is upper-case hex starting with the clock time, safe as a file name."""
        queue_id = self.queue.new_id()
        self.assertRegex(queue_id, r"\A[0-9A-F]{24}\Z")
        self.assertTrue(queue_id.startswith(f"{1_700_000_000:X}"))
        self.assertTrue(valid_queue_id(queue_id))

    def test_unsafe_ids(self) -> None:
        """Ids that could name another file are refused."""
        for bad in ("../x", "a/b", "", ".hidden", "x\0", "a b"):
            self.assertFalse(valid_queue_id(bad), bad)
            self.assertRaises(ValueError, self.queue.data_path, bad)
            self.failureResultOf(self.queue.remove(bad), ValueError)


class UpdateRemoveTests(QueueTestCase):
    """L{Queue.update} and L{Queue.remove}."""

    def test_update(self) -> None:
        """An update replaces the envelope atomically; no temporary file stays."""
        e = self.store("b@example.org", "c@example.org")
        e.attempts = 3
        e.state = DEFERRED
        e.next_attempt = self.clock.seconds() + 900
        e.recipients[0].state = FAILED
        e.recipients[0].last_reply = "550 5.1.1 no such user"
        self.successResultOf(self.queue.update(e))
        self.assertEqual(self.successResultOf(self.queue.read_envelope(e.id)), e)
        self.assertEqual(self.queue.scan(), [e])
        self.assertEqual(self.listing(), [e.id + ".eml", e.id + ".json"])

    def test_update_removed(self) -> None:
        """Updating a removed entry fails and does not bring its envelope back."""
        e = self.store()
        self.successResultOf(self.queue.remove(e.id))
        self.failureResultOf(self.queue.update(e), FileNotFoundError)
        self.assertEqual(self.listing(), [])

    def test_remove(self) -> None:
        """Remove deletes both files; removing again is not an error."""
        e = self.store()
        kept = self.store()
        self.successResultOf(self.queue.remove(e.id))
        self.assertEqual(self.queue.scan(), [kept])
        self.successResultOf(self.queue.remove(e.id))
        self.assertEqual(self.listing(), [kept.id + ".eml", kept.id + ".json"])


class RemoveBatchTests(QueueTestCase):
    """Removals asked for while one is being written go together in the next batch."""

    def test_removals_batched(self) -> None:
        """
        While a removal runs in the pool, the next ones wait and then go in one
        thread job with one folder fsync; each fires only when its batch is done.
        """
        entries = [self.store() for _ in range(4)]
        jobs: list[tuple[defer.Deferred, object, tuple]] = []

        def run_later(f, *args):
            d = defer.Deferred()
            jobs.append((d, f, args))
            return d

        queue = Queue(self.folder, self.clock, run_later)
        synced: list[str] = []
        queue._folder_sync._fsync = synced.append
        first = queue.remove(entries[0].id)
        rest = [queue.remove(e.id) for e in entries[1:]]
        self.assertEqual(len(jobs), 1)
        d, f, args = jobs.pop()
        d.callback(f(*args))
        self.successResultOf(first)
        self.assertEqual(len(jobs), 1)  # the other three, together
        self.assertEqual(jobs[0][2], ([e.id for e in entries[1:]],))
        self.assertNoResult(rest[0])
        d, f, args = jobs.pop()
        d.callback(f(*args))
        for removal in rest:
            self.successResultOf(removal)
        self.assertEqual(synced, [queue.directory, queue.directory])
        self.assertEqual(self.listing(), [])

    def test_one_failure_in_batch(self) -> None:
        """An entry that cannot be removed fails alone; the others of its batch are removed."""
        e = self.store()
        self.assertIsInstance(self.failureResultOf(self.queue.remove("../x")).value,
                              ValueError)
        self.successResultOf(self.queue.remove(e.id))
        self.assertEqual(self.listing(), [])


class ScanTests(QueueTestCase):
    """L{Queue.scan} after a crash or damage."""

    def write(self, name: str, content: bytes, folder: str | None = None) -> None:
        """Write C{content} to C{name} in the queue folder."""
        folder = folder or self.folder
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)

    def badmail(self) -> str:
        """The badmail folder."""
        return os.path.join(self.mailroot, "badmail")

    def corrupt(self) -> str:
        """The queue's corrupt/ folder."""
        return os.path.join(self.folder, "corrupt")

    def read_badmail(self, name: str) -> bytes:
        """The content of C{name} in badmail."""
        with open(os.path.join(self.badmail(), name), "rb") as f:
            return f.read()

    def test_incomplete_stores(self) -> None:
        """Temporary files and data files without an envelope are removed."""
        e = self.store()
        self.write(".ABC.eml.1234abcd.tmp", b"partial")
        self.write(".ABC.json.1234abcd.tmp", b"{")
        self.write("0123ABCD.eml", DATA)
        self.write("README", b"not ours")
        self.assertEqual(self.queue.scan(), [e])
        self.assertEqual(self.listing(), [e.id + ".eml", e.id + ".json", "README"])

    def test_no_cleanup(self) -> None:
        """With cleanup off, scan touches nothing and skips what it cannot read."""
        e = self.store()
        self.write(".ABC.eml.1234abcd.tmp", b"partial")
        self.write("0123ABCD.eml", DATA)
        self.write("BAD.json", b"{not json")
        self.write("BAD.eml", DATA)
        self.write("LONELY.json", Envelope("LONELY", "", [], 1.0).to_json())
        before = self.listing()
        self.assertEqual(self.queue.scan(cleanup=False), [e])
        self.assertEqual(self.listing(), before)
        self.assertFalse(os.path.exists(self.badmail()))

    def test_missing_folder(self) -> None:
        """Scan creates a missing folder; without cleanup it only reports none."""
        self.assertEqual(self.queue.scan(cleanup=False), [])
        self.assertFalse(os.path.exists(self.folder))
        self.assertEqual(self.queue.scan(), [])
        self.assertTrue(os.path.isdir(self.folder))

    def test_corrupt_envelope(self) -> None:
        """
        An envelope that does not parse goes to queue/corrupt/ with its
        message data; the start does not fail and the rest is kept.
        """
        good = self.store()
        self.write("0BAD.json", b"{not json")
        self.write("0BAD.eml", DATA)
        self.assertEqual(self.queue.scan(), [good])
        self.assertEqual(self.listing(), [good.id + ".eml", good.id + ".json", "corrupt"])
        self.assertEqual(self.listing(self.corrupt()), ["0BAD.eml", "0BAD.json"])
        self.assertFalse(os.path.exists(self.badmail()))

    def test_wrong_types(self) -> None:
        """An envelope with fields of the wrong type is treated as unreadable."""
        e = self.store()
        raw = e.to_json().replace(b'"attempts":0', b'"attempts":"many"')
        self.write(e.id + ".json", raw)
        self.assertEqual(self.queue.scan(), [])
        self.assertEqual(self.listing(self.corrupt()), [e.id + ".eml", e.id + ".json"])

    def test_id_mismatch(self) -> None:
        """An envelope whose id is not its file name is treated as unreadable."""
        e = self.store()
        os.rename(os.path.join(self.folder, e.id + ".json"),
                  os.path.join(self.folder, "0OTHER.json"))
        os.rename(self.queue.data_path(e.id), os.path.join(self.folder, "0OTHER.eml"))
        self.assertEqual(self.queue.scan(), [])
        self.assertEqual(self.listing(self.corrupt()), ["0OTHER.eml", "0OTHER.json"])

    def test_envelope_without_data(self) -> None:
        """An envelope without its data file goes to queue/corrupt/."""
        e = self.store()
        os.unlink(self.queue.data_path(e.id))
        self.assertEqual(self.queue.scan(), [])
        self.assertEqual(self.listing(), ["corrupt"])
        self.assertEqual(self.listing(self.corrupt()), [e.id + ".json"])


class BadmailTests(QueueTestCase):
    """L{Queue.move_to_badmail}."""

    def test_move(self) -> None:
        """
        The message goes to badmail as <id>.bad, with <id>.bdr giving the
        reason, sender and recipients, and leaves the queue.
        """
        e = self.store("b@example.org", "c@example.org")
        e.recipients[0].last_reply = "550 5.1.1 unknown"
        self.successResultOf(self.queue.move_to_badmail(e, "bounce\r\nundeliverable"))
        self.assertEqual(self.queue.scan(), [])
        badmail = os.path.join(self.mailroot, "badmail")
        self.assertEqual(sorted(os.listdir(badmail)), [e.id + ".bad", e.id + ".bdr"])
        with open(os.path.join(badmail, e.id + ".bad"), "rb") as f:
            self.assertEqual(f.read(), DATA)
        with open(os.path.join(badmail, e.id + ".bdr"), "rb") as f:
            report = f.read().decode("utf-8").splitlines()
        self.assertEqual(report[0], "Reason: bounce??undeliverable")
        self.assertIn("Sender: <a@example.com>", report)
        self.assertIn("Recipient: <b@example.org> pending 550 5.1.1 unknown", report)
        self.assertIn("Recipient: <c@example.org> pending", report)

    def test_move_missing(self) -> None:
        """Moving an entry whose data is gone fails and writes no badmail."""
        e = self.store()
        self.successResultOf(self.queue.remove(e.id))
        self.failureResultOf(self.queue.move_to_badmail(e, "x"), FileNotFoundError)
        self.assertFalse(os.path.exists(os.path.join(self.mailroot, "badmail")))
