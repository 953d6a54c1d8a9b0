"""The activity log: W3C extended and JSON lines."""

import json

from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.util.activity import ActivityLog


class FakeSession:
    """The few attributes of a session the log reads."""

    peer_ip = "192.0.2.7"
    user = None
    session_id = 4
    transport = None


class ActivityLogTests(unittest.TestCase):
    """ActivityLog.command and .delivery."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1796000000)
        self.path = self.mktemp()

    def lines(self):
        with open(self.path) as f:
            return f.read().splitlines()

    def test_w3c(self):
        """A W3C file starts with its #Fields header; spaces become '+', controls '?'."""
        log = ActivityLog("w3c", self.path, self.clock, "mx.test")
        log.open()
        log.command(FakeSession(), "MAIL", "FROM:<a@b.test> SIZE=10\x01", 250)
        log.close()
        lines = self.lines()
        self.assertTrue(lines[3].startswith("#Fields: date time c-ip"), lines)
        self.assertEqual(
            lines[4].split(" ")[2:],
            ["192.0.2.7", "-", "mx.test", "-", "-", "4", "MAIL", "FROM:<a@b.test>+SIZE=10?", "250"],
        )

    def test_header_once(self):
        """Reopening an existing file does not repeat the header."""
        for _ in range(2):
            log = ActivityLog("w3c", self.path, self.clock, "mx.test")
            log.open()
            log.delivery("ABC", "a@b.test", "mx.b.test [192.0.2.1]", 250, "2.0.0", 1.5)
            log.close()
        self.assertEqual(sum(l.startswith("#Fields") for l in self.lines()), 1)
        self.assertEqual(len(self.lines()), 6)

    def test_json(self):
        """JSON lines carry the queue id, recipient, relay, status and delay."""
        log = ActivityLog("json", self.path, self.clock, "mx.test")
        log.open()
        log.delivery("ABC", "a@b.test", "mx.b.test [192.0.2.1]", 451, "4.4.1", 90.0, tls=True)
        log.close()
        record = json.loads(self.lines()[0])
        self.assertEqual(
            {k: record[k] for k in ("event", "queue_id", "user", "client", "status", "dsn", "delay", "tls")},
            {"event": "delivery", "queue_id": "ABC", "user": "a@b.test",
             "client": "mx.b.test [192.0.2.1]", "status": 451, "dsn": "4.4.1", "delay": 90.0, "tls": True},
        )
        self.assertEqual(record["time"], 1796000000)


class TwistdLogTests(unittest.TestCase):
    """ActivityLog with path "-": lines go to twistd's log, gathered per reactor turn."""

    def setUp(self):
        from twisted.logger import globalLogPublisher

        self.clock = Clock()
        self.clock.advance(1796000000)
        self.events = []

        def observe(event):
            if event.get("log_namespace") == "smtpd.activity":
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.log = ActivityLog("w3c", "-", self.clock, "mx.test")
        self.log.open()

    def texts(self):
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]

    def test_one_event_per_turn(self):
        """The lines of one reactor turn become one event, a line each, at the next turn."""
        self.log.command(FakeSession(), "MAIL", "FROM:<a@b.test>", 250)
        self.log.delivery("ABC", "a@b.test", "local", 250, "2.0.0", 0.5)
        self.assertEqual(self.events, [])
        self.clock.advance(0)
        [text] = self.texts()
        lines = text.split("\n")
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[0].split(" ")[8:], ["MAIL", "FROM:<a@b.test>", "250"])
        self.assertEqual(lines[1].split(" ")[2:4], ["local", "a@b.test"])
        self.clock.advance(0)
        self.assertEqual(len(self.events), 1)

    def test_full_batch_at_once(self):
        """A full batch is emitted without waiting for the turn to end."""
        from smtpd.util.activity import BATCH_LINES

        for i in range(BATCH_LINES + 1):
            self.log.command(FakeSession(), "RCPT", f"TO:<u{i}@b.test>", 250)
        self.assertEqual(len(self.events), 1)
        self.assertEqual(len(self.texts()[0].split("\n")), BATCH_LINES)
        self.clock.advance(0)
        self.assertEqual(len(self.events), 2)
        self.assertIn("TO:<u64@b.test>", self.texts()[1])

    def test_close_flushes(self):
        """Closing the log emits the lines still gathered, and cancels the pending turn."""
        self.log.command(FakeSession(), "QUIT", "", 221)
        self.log.close()
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
