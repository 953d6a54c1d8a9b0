"""
Start-up recovery of the queue folder (L{smtpd.queue.recovery}): what a
crash leaves gets one log line and a defined outcome, and the start neither
fails nor loops.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

from smtpd.mail.envelope import Envelope, Recipient
from smtpd.queue.store import Queue
from tests.test_tap import deployment, send, start_server

DATA = b"Subject: x\r\n\r\nbody\r\n"


class RecoveryTests(unittest.TestCase):
    """The scan at start, one case at a time."""

    def setUp(self) -> None:
        self.folder = os.path.join(os.path.abspath(self.mktemp()), "queue")
        os.makedirs(self.folder)
        clock = Clock()
        clock.advance(1_700_000_000)
        self.queue = Queue(self.folder, clock, defer.maybeDeferred)
        self.good = Envelope(self.queue.new_id(), "a@example.com",
                             [Recipient("b@example.net")], 1.0)
        self.successResultOf(self.queue.store(self.good, DATA))

    def write(self, name: str, content: bytes) -> None:
        with open(os.path.join(self.folder, name), "wb") as f:
            f.write(content)

    def scan(self) -> list[str]:
        """Run the start-up scan; the log lines it wrote. The good entry survives."""
        with capturedLogs() as events:
            self.assertEqual([e.id for e in self.queue.scan()], [self.good.id])
        self.assertTrue(os.path.exists(self.queue.data_path(self.good.id)))
        return [formatEvent(e) for e in events]

    def corrupt(self) -> list[str]:
        folder = os.path.join(self.folder, "corrupt")
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []

    def test_temporary_files(self) -> None:
        """Temporary files (a spool, a half-written envelope) are removed, each logged."""
        self.write(".spool.1234abcd.tmp", b"half a message")
        self.write(".0ABC.json.1234abcd.tmp", b"{")
        lines = self.scan()
        self.assertFalse([n for n in os.listdir(self.folder) if n.endswith(".tmp")])
        self.assertEqual(len([x for x in lines if "removed temporary file" in x]), 2, lines)

    def test_data_without_envelope(self) -> None:
        """A data file without its envelope is an incomplete store: removed, logged."""
        self.write("0123ABCD.eml", DATA)
        lines = self.scan()
        self.assertFalse(os.path.exists(os.path.join(self.folder, "0123ABCD.eml")))
        self.assertTrue(any("data file without envelope 0123ABCD.eml" in x for x in lines),
                        lines)

    def test_envelope_without_data(self) -> None:
        """An envelope without data goes to queue/corrupt/, logged with the reason."""
        lonely = Envelope("0AAA", "a@example.com", [Recipient("b@example.net")], 1.0)
        self.write("0AAA.json", lonely.to_json())
        lines = self.scan()
        self.assertEqual(self.corrupt(), ["0AAA.json"])
        self.assertTrue(any("0AAA moved to" in x and "data file missing" in x
                            for x in lines), lines)

    def test_truncated_envelope(self) -> None:
        """A truncated envelope and its data go to queue/corrupt/, logged."""
        whole = Envelope("0BBB", "a@example.com", [Recipient("b@example.net")], 1.0).to_json()
        self.write("0BBB.json", whole[: len(whole) // 2])
        self.write("0BBB.eml", DATA)
        lines = self.scan()
        self.assertEqual(self.corrupt(), ["0BBB.eml", "0BBB.json"])
        self.assertTrue(any("0BBB moved to" in x and "unreadable envelope" in x
                            for x in lines), lines)

    def test_corrupt_envelope(self) -> None:
        """Binary garbage as an envelope goes to queue/corrupt/ with its data, logged."""
        self.write("0CCC.json", b"\xff\x00garbage")
        self.write("0CCC.eml", DATA)
        lines = self.scan()
        self.assertEqual(self.corrupt(), ["0CCC.eml", "0CCC.json"])
        self.assertTrue(any("0CCC moved to" in x for x in lines), lines)

    def test_second_start_is_quiet(self) -> None:
        """After one recovery, the next start finds nothing to do (no loop)."""
        self.write("0CCC.json", b"{")
        self.write("0123ABCD.eml", DATA)
        self.scan()
        self.assertEqual([x for x in self.scan() if "recovery" in x], [])


class RecoveredStartTests(unittest.TestCase):
    """A real C{twistd} over a damaged queue."""

    timeout = 30

    async def test_twistd_starts_and_serves(self):
        """Every kind of damage at once: the server starts, logs each once, and serves."""
        config = deployment(self)
        queue = os.path.join(os.path.dirname(os.path.dirname(config)), "mailroot", "queue")
        os.makedirs(queue)
        for name, content in ((".spool.1234abcd.tmp", b"x"), ("0123ABCD.eml", DATA),
                              ("0AAA.json", b'{"id": "0AAA"'), ("0BBB.json", b"\xff"),
                              ("0BBB.eml", DATA)):
            with open(os.path.join(queue, name), "wb") as f:
                f.write(content)
        process, port = await start_server(self, config)
        self.assertGreater(port, 0)
        await process.wait_for(rb"(?s)(queue recovery:.*){4}")
        await send(self, port, b"postmaster@localhost")
        self.assertEqual(process.output.count(b"queue recovery:"), 4, process.output)
        self.assertEqual(sorted(os.listdir(os.path.join(queue, "corrupt"))),
                         ["0AAA.json", "0BBB.eml", "0BBB.json"])
