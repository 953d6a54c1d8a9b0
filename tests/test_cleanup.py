"""
The cleanup stage: the streaming rules (L{MessageRules}) whatever the
chunking, and L{Cleanup.submit} for reports.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.cleanup.interfaces import FilterResult
from smtpd.cleanup.rules import MessageRules
from smtpd.cleanup.stage import Cleanup
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource
from smtpd.queue.store import Queue
from tests.inbound import make_config, run_blocking


def check(data: bytes, size: int = 0, normalize: bool = False, hops: int = 100,
          chunk: int | None = None):
    """Feed C{data} in chunks of C{chunk} (all sizes 1..7 when None): (refusal, output)."""
    results = set()
    for n in ([chunk] if chunk else range(1, 8)):
        rules = MessageRules(size, None, normalize, hops)
        out = b"".join(rules.feed(data[i : i + n]) for i in range(0, len(data), n))
        out += rules.finish()
        refusal = rules.refusal()
        results.add((refusal and str(refusal), out))
    assert len(results) == 1, results
    return results.pop()


class RulesTests(unittest.TestCase):
    """Each rule gives the same verdict however the data is split."""

    def test_clean(self):
        """An ordinary message passes unchanged."""
        data = b"Subject: a\r\n\r\nbody\r\n"
        self.assertEqual(check(data), (None, data))

    def test_line_of_998_passes_999_fails(self):
        """998 octets a line is legal; 999 gets 500 5.5.2."""
        ok = b"a\r\n" + b"x" * 998 + b"\r\nb\r\n"
        self.assertEqual(check(ok, chunk=100)[0], None)
        self.assertEqual(check(ok, chunk=7)[0], None)
        bad = b"a\r\n" + b"x" * 999 + b"\r\nb\r\n"
        for n in (1, 100, 5000):
            self.assertEqual(check(bad, chunk=n)[0],
                             "500 5.5.2 Error: line too long in message data")

    def test_bare_newlines(self):
        """A bare LF or CR is refused (550 5.6.0), or made CRLF with normalize."""
        for data in (b"a\nb\r\n", b"a\rb\r\n", b"a\r\n\rb\r\n"):
            self.assertEqual(check(data)[0], "550 5.6.0 Error: bare CR or LF in message data")
        self.assertEqual(check(b"a\nb\rc\r\n\r", normalize=True), (None, b"a\r\nb\r\nc\r\n\r\n"))

    def test_size(self):
        """One octet over max_message_size: 552 5.3.4."""
        self.assertEqual(check(b"x" * 8 + b"\r\n", size=10)[0], None)
        self.assertEqual(check(b"x" * 9 + b"\r\n", size=10)[0],
                         "552 5.3.4 Message size exceeds fixed maximum message size")

    def test_hops_counted_in_the_header_only(self):
        """Received fields above the body count; one in the body does not."""
        data = b"Received: a\r\nreceived: b\r\nX: y\r\n\r\nReceived: c\r\n"
        self.assertEqual(check(data, hops=2)[0], None)
        self.assertEqual(check(data, hops=1)[0], "554 5.4.6 Error: too many hops")
        long_first = b"Received: " + b"z" * 3000 + b"\r\nReceived: b\r\n\r\n"
        rules = MessageRules(0, None, False, 100)
        for i in range(0, len(long_first), 5):
            rules.feed(long_first[i : i + 5])
        self.assertEqual(rules.hops, 2)


class SubmitTests(unittest.TestCase):
    """Reports enter the queue through cleanup too."""

    async def test_submit_signs_and_stores(self):
        """Filters prepend to a report (their refusal is ignored); it is stored."""
        root = os.path.abspath(self.mktemp())
        config = make_config(root)
        queue = Queue(os.path.join(root, "mailroot", "queue"), Clock(), run_blocking)
        seen = []

        class Signer:
            name = "signer"

            def check(self, envelope, message, client):
                seen.append(client)
                return FilterResult([b"X-Signed: 1\r\n"], (550, "5.7.1", "no"))

        cleanup = Cleanup(config, queue, Clock(), run_blocking, filters=[Signer()])
        envelope = Envelope(id=queue.new_id(), sender="", recipients=[Recipient("a@b.example")],
                            arrival=0, client="local")
        await cleanup.submit(envelope, BytesSource(b"Subject: report\r\n\r\nx\r\n"))
        with open(queue.data_path(envelope.id), "rb") as f:
            self.assertEqual(f.read(), b"X-Signed: 1\r\nSubject: report\r\n\r\nx\r\n")
        self.assertEqual(seen, [None])
        self.assertEqual(envelope.size, len(b"X-Signed: 1\r\nSubject: report\r\n\r\nx\r\n"))
