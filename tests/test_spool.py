"""L{smtpd.queue.spool.Spool}: a message in memory, or in a temporary file once large."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.trial import unittest

from smtpd.mail.source import read_all
from smtpd.queue import spool as spool_module
from smtpd.queue.spool import Spool


def run_blocking(f, *args):
    return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)


class SpoolTests(unittest.TestCase):
    """Where the data is kept, and what is left behind."""

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)

    def files(self) -> list[str]:
        return sorted(os.listdir(self.folder))

    async def test_small_stays_in_memory(self):
        """Below the threshold no file is made; the data reads back whole."""
        spool = Spool(self.folder, run_blocking, threshold=100)
        spool.write(b"a" * 60)
        spool.write(b"b" * 40)
        await spool.finish()
        self.assertFalse(spool.on_disk)
        self.assertEqual(self.files(), [])
        self.assertEqual(read_all(spool), b"a" * 60 + b"b" * 40)
        self.assertEqual(spool.size, 100)

    async def test_large_spills_and_commits_by_rename(self):
        """
        Beyond the threshold the data goes to a hidden temporary file; commit
        renames that very file (same inode) into place.
        """
        spool = Spool(self.folder, run_blocking, threshold=100)
        for _ in range(50):
            spool.write(b"x" * 99 + b"\n")
        await spool.finish()
        self.assertTrue(spool.on_disk)
        [temp] = self.files()
        self.assertTrue(temp.startswith(".") and temp.endswith(".tmp"), temp)
        inode = os.stat(os.path.join(self.folder, temp)).st_ino
        target = os.path.join(self.folder, "ID.eml")
        await run_blocking(spool.commit_blocking, target)
        spool.discard()
        self.assertEqual(self.files(), ["ID.eml"])
        self.assertEqual(os.stat(target).st_ino, inode)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), (b"x" * 99 + b"\n") * 50)

    async def test_discard_removes_the_temporary_file(self):
        """A spool given up leaves nothing in the folder."""
        spool = Spool(self.folder, run_blocking, threshold=10)
        spool.write(b"y" * 1000)
        spool.discard()
        await spool.finish()
        for _ in range(100):
            if not self.files():
                break
            await deferLater(0.01)
        self.assertEqual(self.files(), [])

    async def test_prepend_on_disk(self):
        """Fields prepended to a spilled spool come first; the commit copies."""
        spool = Spool(self.folder, run_blocking, threshold=10)
        spool.write(b"Subject: s\r\n\r\n" + b"z" * 100)
        await spool.finish()
        spool.prepend(b"X-A: 1\r\n")
        self.assertEqual(read_all(spool)[:22], b"X-A: 1\r\nSubject: s\r\n\r\n")
        target = os.path.join(self.folder, "ID.eml")
        await run_blocking(spool.commit_blocking, target)
        spool.discard()
        self.assertEqual(self.files(), ["ID.eml"])
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"X-A: 1\r\nSubject: s\r\n\r\n" + b"z" * 100)

    async def test_writer_paused_while_the_disk_lags(self):
        """Past HIGH_WATER octets waiting, write says stop; drained fires once written."""
        gate: Deferred = Deferred()

        def slow(f, *args):
            return gate.addCallback(lambda _: run_blocking(f, *args))

        spool = Spool(self.folder, slow, threshold=10)
        chunk = b"w" * 65536
        results = [spool.write(chunk) for _ in range(6)]
        self.assertIn(False, results)
        drained = spool.drained()
        self.assertFalse(drained.called)
        gate.callback(None)
        await drained
        await spool.finish()
        self.assertEqual(spool.size, 6 * 65536)
        self.assertEqual(len(read_all(spool)), 6 * 65536)
        spool.discard()
        self.assertTrue(spool_module.HIGH_WATER < 6 * 65536)


def deferLater(delay: float):
    from twisted.internet.task import deferLater as later

    return later(reactor, delay, lambda: None)
