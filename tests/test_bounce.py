# -*- test-case-name: tests.test_bounce -*-
"""
Tests for L{smtpd.bounce}: RFC 3464 delivery status notifications.
"""

from __future__ import annotations

import email
import email.policy
import re

from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.queue.bounce import BounceBuilder, clean, format_age, rfc5322_date, split_headers
from smtpd.mail.envelope import Envelope, Recipient

NOW = 1732938000.0  # Sat, 30 Nov 2024 03:40:00 +0000

ORIGINAL = (
    b"Received: from client.example.org ([192.0.2.9])\r\n"
    b"\tby mx.example.net with ESMTP id ABC; Sat, 30 Nov 2024 02:40:00 +0000\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@remote.example\r\n"
    b"Subject: lunch\r\n"
    b"Message-ID: <lunch@example.org>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
    b"SECRET-BODY-LINE\r\n"
)


def make_envelope(**kw) -> Envelope:
    values = dict(id="0A1B2C3D4E5F", sender="alice@example.org", recipients=[],
                  arrival=NOW - 3600)
    values.update(kw)
    return Envelope(**values)


def failed_recipient(address="bob@remote.example", **kw) -> Recipient:
    values = dict(state="failed", status="5.1.1", remote_mta="mx.remote.example [192.0.2.1]",
                  last_reply="550 5.1.1 <bob@remote.example>: User unknown")
    values.update(kw)
    return Recipient(address, **values)


def parse(report: bytes):
    return email.message_from_bytes(report, policy=email.policy.compat32)


def status_blocks(report: bytes) -> list[dict[str, str]]:
    """The blocks of the message/delivery-status part, unfolded, as dicts."""
    message = parse(report)
    status = message.get_payload(1)
    assert status.get_content_type() == "message/delivery-status"
    blocks = []
    for block in status.get_payload():
        blocks.append({k: " ".join(v.split()) for k, v in block.items()})
    return blocks


class BuildTests(unittest.TestCase):
    """L{BounceBuilder.build} for each kind of report."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.builder = BounceBuilder("mx.example.net", self.clock)

    def build(self, envelope=None, recipients=None, action="failed", original=ORIGINAL, **kw):
        envelope = envelope or make_envelope()
        recipients = recipients if recipients is not None else [failed_recipient()]
        return self.builder.build(envelope, recipients, action, original, **kw)

    def test_crlf_only(self) -> None:
        """Every line of the report ends in CRLF; no bare CR or LF anywhere."""
        report = self.build()
        self.assertIsNone(re.search(rb"\r(?!\n)|(?<!\r)\n", report))
        self.assertTrue(report.endswith(b"--\r\n"))

    def test_top_level_headers(self) -> None:
        """From MAILER-DAEMON, To the sender, the dates, ids and MIME type of a report."""
        message = parse(self.build())
        self.assertEqual(message["From"], "Mail Delivery System <MAILER-DAEMON@mx.example.net>")
        self.assertEqual(message["To"], "alice@example.org")
        self.assertEqual(message["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(message["Date"], "Sat, 30 Nov 2024 03:40:00 +0000")
        self.assertRegex(message["Message-ID"], r"^<[^<>@\s]+@mx\.example\.net>$")
        self.assertEqual(message["MIME-Version"], "1.0")
        self.assertEqual(message["Auto-Submitted"], "auto-replied")
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "delivery-status")

    def test_three_parts(self) -> None:
        """Notification text, delivery-status, then the original headers."""
        message = parse(self.build())
        self.assertTrue(message.is_multipart())
        types = [p.get_content_type() for p in message.get_payload()]
        self.assertEqual(types, ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        self.assertEqual(message.defects, [])

    def test_human_part(self) -> None:
        """The text names the failed recipient, the remote host and its reply."""
        text = parse(self.build()).get_payload(0).get_payload()
        self.assertIn("This is the mail system at host mx.example.net.", text)
        self.assertIn("could not\r\nbe delivered", text)
        self.assertIn("<bob@remote.example>: host mx.remote.example [192.0.2.1] said: "
                      "550 5.1.1 <bob@remote.example>: User unknown", " ".join(text.split()))

    def test_failed_fields(self) -> None:
        """Per-message and per-recipient fields of RFC 3464 for a failure."""
        envelope = make_envelope(envid="QQ314159")
        recipient = failed_recipient(orcpt="rfc822;Bob@Remote.Example")
        message, rcpt = status_blocks(self.build(envelope, [recipient]))
        self.assertEqual(message, {
            "Reporting-MTA": "dns; mx.example.net",
            "Original-Envelope-Id": "QQ314159",
            "Arrival-Date": "Sat, 30 Nov 2024 02:40:00 +0000",
        })
        self.assertEqual(rcpt, {
            "Original-Recipient": "rfc822; Bob@Remote.Example",
            "Final-Recipient": "rfc822; bob@remote.example",
            "Action": "failed",
            "Status": "5.1.1",
            "Remote-MTA": "dns; mx.remote.example",
            "Diagnostic-Code": "smtp; 550 5.1.1 <bob@remote.example>: User unknown",
        })

    def test_optional_fields_left_out(self) -> None:
        """No ENVID, ORCPT, remote host or reply: those fields are absent."""
        recipient = Recipient("carol@example.com", state="failed", status="5.1.1")
        message, rcpt = status_blocks(self.build(recipients=[recipient]))
        self.assertNotIn("Original-Envelope-Id", message)
        self.assertEqual(sorted(rcpt), ["Action", "Final-Recipient", "Status"])

    def test_several_recipients(self) -> None:
        """One per-recipient block per recipient, in order."""
        recipients = [failed_recipient("a@remote.example"), failed_recipient("b@remote.example")]
        blocks = status_blocks(self.build(recipients=recipients))
        self.assertEqual([b["Final-Recipient"] for b in blocks[1:]],
                         ["rfc822; a@remote.example", "rfc822; b@remote.example"])

    def test_headers_only_by_default(self) -> None:
        """Without RET the original headers come back, not the body."""
        report = self.build()
        part = parse(report).get_payload(2)
        self.assertEqual(part.get_content_type(), "text/rfc822-headers")
        self.assertIn(b"Subject: lunch\r\n", report)
        self.assertIn(b"\tby mx.example.net with ESMTP", report)
        self.assertNotIn(b"SECRET-BODY-LINE", report)

    def test_ret_hdrs(self) -> None:
        """RET=HDRS: headers only."""
        report = self.build(make_envelope(ret="HDRS"))
        self.assertEqual(parse(report).get_payload(2).get_content_type(), "text/rfc822-headers")
        self.assertNotIn(b"SECRET-BODY-LINE", report)

    def test_ret_full(self) -> None:
        """RET=FULL: the whole original as message/rfc822."""
        report = self.build(make_envelope(ret="FULL"))
        part = parse(report).get_payload(2)
        self.assertEqual(part.get_content_type(), "message/rfc822")
        inner = part.get_payload(0)
        self.assertEqual(inner["Subject"], "lunch")
        self.assertIn("SECRET-BODY-LINE", inner.get_payload())
        self.assertIn(ORIGINAL, report)

    def test_ret_full_only_for_failures(self) -> None:
        """RFC 3461 4.3: RET governs failure reports; others carry headers only."""
        recipient = Recipient("bob@remote.example", state="pending", status="4.4.1")
        report = self.build(make_envelope(ret="FULL"), [recipient], "delayed")
        self.assertEqual(parse(report).get_payload(2).get_content_type(), "text/rfc822-headers")
        self.assertNotIn(b"SECRET-BODY-LINE", report)

    def test_delayed(self) -> None:
        """A delay warning: subject, Action delayed, 4.x.x status, Will-Retry-Until."""
        recipient = Recipient("bob@remote.example", status="4.4.1",
                              last_reply="451 4.4.1 connection refused",
                              remote_mta="mx.remote.example")
        until = NOW + 86400
        report = self.build(recipients=[recipient], action="delayed", retry_until=until)
        message = parse(report)
        self.assertEqual(message["Subject"], "Delayed Mail (still being retried)")
        text = message.get_payload(0).get_payload()
        self.assertIn("THIS IS A WARNING ONLY", text)
        self.assertIn("could not be delivered for 1 hour.", text)
        self.assertIn("retried until Sun, 01 Dec 2024 03:40:00 +0000", text)
        rcpt = status_blocks(report)[1]
        self.assertEqual(rcpt["Action"], "delayed")
        self.assertEqual(rcpt["Status"], "4.4.1")
        self.assertEqual(rcpt["Will-Retry-Until"], "Sun, 01 Dec 2024 03:40:00 +0000")
        self.assertEqual(parse(report).get_payload(2).get_content_type(), "text/rfc822-headers")

    def test_delivered(self) -> None:
        """A success report for a local delivery: Action delivered, 2.0.0."""
        recipient = Recipient("carol@example.net", state="delivered", status="2.0.0",
                              last_reply="250 2.0.0 delivered to maildir")
        report = self.build(recipients=[recipient], action="delivered")
        message = parse(report)
        self.assertEqual(message["Subject"], "Successful Mail Delivery Report")
        self.assertIn("<carol@example.net>: delivered to mailbox",
                      message.get_payload(0).get_payload())
        rcpt = status_blocks(report)[1]
        self.assertEqual((rcpt["Action"], rcpt["Status"]), ("delivered", "2.0.0"))
        self.assertNotIn("Will-Retry-Until", rcpt)

    def test_relayed(self) -> None:
        """A success report for a relayed recipient: Action relayed, the remote MTA."""
        recipient = Recipient("bob@remote.example", state="delivered", status="2.0.0",
                              last_reply="250 2.0.0 Ok: queued as X",
                              remote_mta="mx.remote.example [192.0.2.1]")
        report = self.build(recipients=[recipient], action="relayed")
        rcpt = status_blocks(report)[1]
        self.assertEqual(rcpt["Action"], "relayed")
        self.assertEqual(rcpt["Remote-MTA"], "dns; mx.remote.example")
        self.assertIn("relayed to mx.remote.example",
                      parse(report).get_payload(0).get_payload())

    def test_expired(self) -> None:
        """A 4.4.7 failure (expiry) says so and keeps the last reply as diagnostic."""
        recipient = Recipient("bob@remote.example", state="failed", status="4.4.7",
                              last_reply="451 4.4.1 connection refused")
        envelope = make_envelope(arrival=NOW - 2 * 86400)
        report = self.build(envelope, [recipient])
        rcpt = status_blocks(report)[1]
        self.assertEqual((rcpt["Action"], rcpt["Status"]), ("failed", "4.4.7"))
        self.assertEqual(rcpt["Diagnostic-Code"], "smtp; 451 4.4.1 connection refused")
        text = parse(report).get_payload(0).get_payload()
        self.assertIn("delivery time expired", text)
        self.assertIn("2 days", text)

    def test_status_matches_action(self) -> None:
        """A missing or inconsistent status is replaced by the class default."""
        for status, action, expected in [("", "failed", "5.0.0"), ("4.4.7", "failed", "4.4.7"),
                                         ("2.0.0", "failed", "5.0.0"), ("", "delayed", "4.0.0"),
                                         ("5.1.1", "delayed", "4.0.0"),
                                         ("x.y", "relayed", "2.0.0"),
                                         ("2.1.5", "delivered", "2.1.5")]:
            recipient = Recipient("bob@remote.example", status=status)
            rcpt = status_blocks(self.build(recipients=[recipient], action=action))[1]
            self.assertEqual(rcpt["Status"], expected, (status, action))

    def test_unknown_action(self) -> None:
        """An action outside RFC 3464's list is a programming error."""
        self.assertRaises(ValueError, self.build, action="expanded")

    def test_reply_injection(self) -> None:
        """A reply with line breaks and controls cannot add header lines or fields."""
        recipient = failed_recipient(
            last_reply="550 no\r\nAction: delivered\r\nBcc: victim@example.com\x00\x1b")
        report = self.build(recipients=[recipient])
        self.assertNotIn(b"\r\nAction: delivered", report)
        self.assertNotIn(b"\r\nBcc:", report)
        self.assertNotIn(b"\x00", report)
        self.assertNotIn(b"\x1b", report)
        self.assertEqual(status_blocks(report)[1]["Action"], "failed")

    def test_long_reply_folded(self) -> None:
        """A long diagnostic is folded under 79 columns and still parses whole."""
        words = " ".join(f"word{i}" for i in range(300))
        recipient = failed_recipient(last_reply=f"550 5.7.1 {words}")
        report = self.build(recipients=[recipient])
        for line in report.split(b"\r\n"):
            self.assertLessEqual(len(line), 998)
        status_part = report.split(b"message/delivery-status\r\n", 1)[1].split(b"\r\n--")[0]
        for line in status_part.split(b"\r\n"):
            self.assertLessEqual(len(line), 78)
        diagnostic = status_blocks(report)[1]["Diagnostic-Code"]
        self.assertTrue(diagnostic.startswith("smtp; 550 5.7.1 word0 word1"))

    def test_boundary_not_in_original(self) -> None:
        """The MIME boundary never occurs in the returned message."""
        first = self.build(make_envelope(ret="FULL"))
        boundary = parse(first).get_boundary()
        hostile = ORIGINAL + b"--" + boundary.encode() + b"\r\n" + boundary.encode() + b"\r\n"
        report = self.build(make_envelope(ret="FULL"), original=hostile)
        message = parse(report)
        self.assertNotEqual(message.get_boundary(), boundary)
        self.assertEqual(len(message.get_payload()), 3)
        self.assertIn(hostile, report)

    def test_bare_newlines_in_original(self) -> None:
        """An original with LF or CR line ends is returned with CRLF."""
        original = b"Subject: lf\nFrom: a@example.org\rX: y\n\nbody\n"
        report = self.build(make_envelope(ret="FULL"), original=original)
        self.assertIsNone(re.search(rb"\r(?!\n)|(?<!\r)\n", report))
        self.assertIn(b"Subject: lf\r\nFrom: a@example.org\r\nX: y\r\n\r\nbody\r\n", report)

    def test_eight_bit_original(self) -> None:
        """An 8-bit original is labelled 8bit, not 7bit."""
        original = "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode()
        report = self.build(make_envelope(ret="FULL"), original=original)
        message = parse(report)
        self.assertEqual(message["Content-Transfer-Encoding"], "8bit")
        self.assertEqual(message.get_payload(2)["Content-Transfer-Encoding"], "8bit")
        self.assertEqual(parse(self.build())["Content-Transfer-Encoding"], "7bit")

    def test_empty_original(self) -> None:
        """An unreadable (empty) original still gives a well-formed report."""
        message = parse(self.build(original=b""))
        self.assertEqual(len(message.get_payload()), 3)
        self.assertEqual(message.get_payload(2).get_payload(), "")

    def test_parses_with_default_policy(self) -> None:
        """The modern email policy reads the report without defects."""
        for ret, action in (("", "failed"), ("FULL", "failed"), ("", "delayed"),
                            ("", "delivered"), ("", "relayed")):
            report = self.build(make_envelope(ret=ret), action=action)
            message = email.message_from_bytes(report, policy=email.policy.default)
            self.assertEqual(message.get_content_type(), "multipart/report")
            for part in message.walk():
                self.assertEqual(part.defects, [], (ret, action))


class HelperTests(unittest.TestCase):
    """The small formatting helpers."""

    def test_clean(self) -> None:
        """Line breaks and tabs become spaces, other controls and 8-bit become '?'."""
        self.assertEqual(clean("a\r\nb\tc\x00d\u00e9"), "a b c?d?")

    def test_format_age(self) -> None:
        """Durations read naturally."""
        self.assertEqual(format_age(45 * 60), "45 minutes")
        self.assertEqual(format_age(3600), "1 hour")
        self.assertEqual(format_age(12 * 3600), "12 hours")
        self.assertEqual(format_age(2 * 86400), "2 days")
        self.assertEqual(format_age(5), "5 seconds")

    def test_rfc5322_date(self) -> None:
        """Dates are RFC 5322, UTC, numeric zone."""
        self.assertEqual(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000")

    def test_split_headers(self) -> None:
        """The header section ends before the blank line; no body means all headers."""
        self.assertEqual(split_headers(b"A: b\r\n\r\nbody"), b"A: b\r\n")
        self.assertEqual(split_headers(b"A: b"), b"A: b\r\n")
        self.assertEqual(split_headers(b"\r\nbody"), b"")
