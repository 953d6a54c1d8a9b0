"""The activity log: W3C extended and JSON lines."""

import json
import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.mail.envelope import DeliveryStatus, Envelope, Recipient
from smtpd.queue.results import Results
from smtpd.util.activity import ActivityLog
from smtpd.util.logfiles import FLUSH_DELAY


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

    def test_w3c_fields(self):
        """Each field: '-' when empty or None, numbers as text, spaces '+', controls '?'."""
        from smtpd.util.activity import _w3c

        cases = [("", "-"), (None, "-"), (0, "0"), (250, "250"), (False, "False"),
                 (1.5, "1.5"), ("MAIL", "MAIL"), ("a b", "a+b"), ("a\tb c", "a?b+c"),
                 ("caf\u00e9", "caf\u00e9"), ("\x00", "?"), (" ", "+")]
        self.assertEqual([_w3c(value) for value, _ in cases], [want for _, want in cases])

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


    def test_tls_policy_shown(self):
        """
        The recipient-side TLS policy of a relay status (MTA-STS enforce here)
        reaches the delivery line through the queue's results: C{policy=} in
        the W3C argument, C{tls_policy} in JSON.
        """
        for fmt in ("json", "w3c"):
            path = self.path + "." + fmt
            log = ActivityLog(fmt, path, self.clock, "mx.test")
            log.open()
            recipient = Recipient("a@b.test")
            envelope = Envelope(id="ABC", sender="s@x.test", recipients=[recipient], arrival=0.0)
            status = DeliveryStatus("a@b.test", 250, "2.0.0", "250 2.0.0 Ok",
                                    "mx.b.test [192.0.2.1]", tls=True, tls_policy="sts-enforce")
            Results(log).record(envelope, recipient, status, "relay", 1796000000)
            log.close()
            with open(path) as f:
                text = f.read()
            if fmt == "json":
                record = json.loads(text.splitlines()[0])
                self.assertEqual((record["tls"], record["tls_policy"]), (True, "sts-enforce"))
                self.assertIn(" tls policy=sts-enforce", record["argument"])
            else:
                self.assertIn("+tls+policy=sts-enforce", text)


def parse_w3c(path: str) -> tuple[list[str], list[dict]]:
    """The header lines and the records (by #Fields) of a W3C extended log file."""
    header, records, fields = [], [], []
    with open(path) as f:
        for line in f.read().splitlines():
            if line.startswith("#"):
                header.append(line)
                if line.startswith("#Fields: "):
                    fields = line[len("#Fields: "):].split(" ")
                continue
            records.append(dict(zip(fields, line.split(" "))))
    return header, records


class LogFileTests(unittest.TestCase):
    """Buffering, rotation and reopening of the activity log file."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1796000000)  # 2026-11-29 ...
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, "smtpd.log")

    def test_buffered_until_timer_or_close(self):
        """Lines wait in memory until the flush timer fires (or the log closes)."""
        log = ActivityLog("json", self.path, self.clock, "mx.test")
        log.open()
        log.command(FakeSession(), "NOOP", "", 250)
        self.assertEqual(os.path.getsize(self.path), 0)
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual(len(open(self.path).readlines()), 1)
        log.command(FakeSession(), "QUIT", "", 221)
        log.close()
        self.assertEqual(len(open(self.path).readlines()), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_size_rotation_starts_with_header(self):
        """With rotate = size, every new file starts with #Software and #Fields."""
        log = ActivityLog("w3c", self.path, self.clock, "mx.test", rotate="size",
                          rotate_size=300)
        log.open()
        for n in range(6):
            log.command(FakeSession(), "RCPT", f"TO:<user{n}@example.com>", 250)
            log.flush()
        log.close()
        rotated = sorted(n for n in os.listdir(self.folder) if n.startswith("smtpd.log."))
        self.assertTrue(rotated, os.listdir(self.folder))
        seen = []
        for name in ["smtpd.log", *rotated]:
            header, records = parse_w3c(os.path.join(self.folder, name))
            self.assertEqual(header[0], "#Software: smtpd")
            self.assertTrue(header[3].startswith("#Fields: date time c-ip"), header)
            seen += [r["cs-uri-query"] for r in records]
        self.assertEqual(sorted(seen), sorted(f"TO:<user{n}@example.com>" for n in range(6)))

    def test_daily_rotation_by_the_clock(self):
        """With rotate = daily, the first line after UTC midnight goes to a new file."""
        open(self.path, "wb").close()
        # The date of an existing file is its modification time's.
        os.utime(self.path, (self.clock.seconds(), self.clock.seconds()))
        log = ActivityLog("w3c", self.path, self.clock, "mx.test", rotate="daily")
        log.open()
        log.command(FakeSession(), "HELO", "a", 250)
        log.flush()
        self.clock.advance(86400)
        log.command(FakeSession(), "HELO", "b", 250)
        log.close()
        [old] = [n for n in os.listdir(self.folder) if n != "smtpd.log"]
        self.assertEqual([r["cs-uri-query"] for r in parse_w3c(self.path)[1]], ["b"])
        header, records = parse_w3c(os.path.join(self.folder, old))
        self.assertEqual([r["cs-uri-query"] for r in records], ["a"])
        self.assertEqual(parse_w3c(self.path)[0][0], "#Software: smtpd")

    def test_reopen_after_rename(self):
        """After logrotate renames the file, reopen() starts a new one with the header."""
        log = ActivityLog("w3c", self.path, self.clock, "mx.test", rotate="none")
        log.open()
        log.command(FakeSession(), "HELO", "before", 250)
        log.flush()
        os.rename(self.path, self.path + ".1")
        log.command(FakeSession(), "HELO", "buffered", 250)
        log.reopen()
        log.command(FakeSession(), "HELO", "after", 250)
        log.close()
        header, records = parse_w3c(self.path)
        self.assertEqual(header[0], "#Software: smtpd")
        self.assertEqual([r["cs-uri-query"] for r in records], ["after"])
        self.assertEqual([r["cs-uri-query"] for r in parse_w3c(self.path + ".1")[1]],
                         ["before", "buffered"])

    def test_delivery_line_carries_the_reply(self):
        """A delivery line says status=bounced with the remote reply, relay, delay, attempt."""
        log = ActivityLog("w3c", self.path, self.clock, "mx.test")
        log.open()
        log.delivery("ABC", "a@b.test", "mx.b.test[192.0.2.1]", 550, "5.1.1", 12.0,
                     outcome="bounced", reply="550 5.1.1 <a@b.test>: user unknown", attempt=2)
        log.close()
        [record] = parse_w3c(self.path)[1]
        self.assertEqual(
            record["cs-uri-query"],
            "id=ABC+relay=mx.b.test[192.0.2.1]+delay=12.0+attempt=2+dsn=5.1.1+"
            "status=bounced+(550+5.1.1+<a@b.test>:+user+unknown)")
        self.assertEqual((record["cs-method"], record["sc-status"]), ("DELIVER", "550"))


class TwistdLogTests(unittest.TestCase):
    """ActivityLog with path "-": lines go to twistd's log, gathered for BATCH_DELAY seconds."""

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

    def test_one_event_per_batch(self):
        """The lines of BATCH_DELAY seconds become one event, a line each, when it has passed."""
        from smtpd.util.activity import BATCH_DELAY

        self.log.command(FakeSession(), "MAIL", "FROM:<a@b.test>", 250)
        self.clock.advance(BATCH_DELAY / 2)
        self.log.delivery("ABC", "a@b.test", "local", 250, "2.0.0", 0.5)
        self.assertEqual(self.events, [])
        self.clock.advance(BATCH_DELAY * 0.6)
        [text] = self.texts()
        lines = text.split("\n")
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[0].split(" ")[8:], ["MAIL", "FROM:<a@b.test>", "250"])
        self.assertEqual(lines[1].split(" ")[2:4], ["local", "a@b.test"])
        self.clock.advance(BATCH_DELAY)
        self.assertEqual(len(self.events), 1)

    def test_full_batch_at_once(self):
        """A full batch is emitted without waiting for its time to pass."""
        from smtpd.util.activity import BATCH_DELAY, BATCH_LINES

        for i in range(BATCH_LINES + 1):
            self.log.command(FakeSession(), "RCPT", f"TO:<u{i}@b.test>", 250)
        self.assertEqual(len(self.events), 1)
        self.assertEqual(len(self.texts()[0].split("\n")), BATCH_LINES)
        self.clock.advance(BATCH_DELAY)
        self.assertEqual(len(self.events), 2)
        self.assertIn(f"TO:<u{BATCH_LINES}@b.test>", self.texts()[1])

    def test_close_flushes(self):
        """Closing the log emits the lines still gathered, and cancels the pending turn."""
        self.log.command(FakeSession(), "QUIT", "", 221)
        self.log.close()
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
