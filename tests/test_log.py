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
