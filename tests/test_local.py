"""
Tests for L{smtpd.delivery.maildir} and L{smtpd.delivery.drop}: Maildir and drop delivery.
"""

from __future__ import annotations

import errno
import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.mail.envelope import Envelope, Recipient
from smtpd.delivery.drop import DropDelivery
from smtpd.delivery.maildir import MailboxError, MaildirDelivery
from smtpd.delivery.interfaces import IDeliveryAgent, IMailboxAgent
from smtpd.directory.routing import Destination
from smtpd.mail.source import BytesSource, FileSource
from zope.interface.verify import verifyObject

DATA = b"From: a@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n"
SOURCE = BytesSource(DATA)


def files_under(folder: str) -> list[str]:
    """Every file and folder below C{folder}, as sorted relative paths."""
    found = []
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            found.append(os.path.relpath(os.path.join(parent, name), folder))
    return sorted(found)


class DeliveryTestCase(unittest.TestCase):
    """A deployment folder holding a mailroot, and a clock."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.mailroot = os.path.join(self.base, "mailroot")
        os.makedirs(self.mailroot)
        self.clock = Clock()
        self.clock.advance(1_700_000_000.25)
        self.envelope = Envelope("0ABC", "a@example.com", [Recipient("bob@example.com")], 1.0)


class MaildirTests(DeliveryTestCase):
    """L{MaildirDelivery}."""

    def setUp(self) -> None:
        super().setUp()
        self.agent = MaildirDelivery(self.mailroot, "mx.example.com", self.clock,
                                     defer.maybeDeferred)
        self.maildir = os.path.join(self.mailroot, "mailbox", "example.com", "bob")

    def delivered(self) -> list[bytes]:
        """The contents of the files in bob's new/."""
        new = os.path.join(self.maildir, "new")
        contents = []
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name), "rb") as f:
                contents.append(f.read())
        return contents

    def test_layout(self) -> None:
        """
        The first delivery creates tmp, new and cur; the message lands in new
        under a unique name carrying time, pid, host name and size; tmp is empty.
        """
        self.successResultOf(self.agent.write(self.envelope, "bob@example.com", SOURCE))
        self.assertEqual(sorted(os.listdir(self.maildir)), ["cur", "new", "tmp"])
        self.assertEqual(os.listdir(os.path.join(self.maildir, "tmp")), [])
        self.assertEqual(os.listdir(os.path.join(self.maildir, "cur")), [])
        [name] = os.listdir(os.path.join(self.maildir, "new"))
        content = self.delivered()[0]
        size, wire_size = len(content), len(content) + content.count(b"\n")
        self.assertRegex(name, r"\A1\.Q0ABCM[0-9a-f]{12}"
                               rf"\.mx\.example\.com,S={size},W={wire_size}\Z")

    def test_headers_and_line_endings(self) -> None:
        """The message starts with Return-Path and Delivered-To and has LF endings."""
        self.successResultOf(self.agent.write(self.envelope, "bob@example.com", SOURCE))
        [content] = self.delivered()
        self.assertEqual(
            content,
            b"Return-Path: <a@example.com>\nDelivered-To: bob@example.com\n"
            + DATA.replace(b"\r\n", b"\n"),
        )
        self.assertNotIn(b"\r", content)

    def test_null_sender(self) -> None:
        """A bounce (sender <>) gets an empty Return-Path."""
        self.envelope.sender = ""
        self.successResultOf(self.agent.write(self.envelope, "bob@example.com", SOURCE))
        self.assertTrue(self.delivered()[0].startswith(b"Return-Path: <>\n"))

    def test_unique_names(self) -> None:
        """Two messages delivered at the same instant make two files."""
        other = Envelope("0ABD", "a@example.com", [Recipient("bob@example.com")], 1.0)
        for envelope in (self.envelope, other):
            self.successResultOf(self.agent.write(envelope, "bob@example.com", SOURCE))
        self.assertEqual(len(self.delivered()), 2)

    def test_replayed_delivery_replaces_its_copy(self) -> None:
        """
        The same message written again to the same mailbox (an attempt
        replayed after a crash) replaces its own file: one copy, whole; a
        second mailbox gets its own.
        """
        for _ in range(2):
            self.successResultOf(self.agent.write(self.envelope, "bob@example.com", SOURCE))
        self.successResultOf(self.agent.write(self.envelope, "carol@example.com", SOURCE))
        self.assertEqual(len(self.delivered()), 1)
        carol = os.path.join(self.mailroot, "mailbox", "example.com", "carol", "new")
        self.assertEqual(len(os.listdir(carol)), 1)
        self.assertEqual(os.listdir(os.path.join(self.maildir, "tmp")), [])

    def test_copies_in_one_batch(self) -> None:
        """
        One message for three mailboxes in one batch: each copy has its own
        Delivered-To, the same LF body, and S= and W= that match the file as
        a single delivery's do; a copy left half-written in tmp/ by a crash
        is replaced.
        """
        single = MaildirDelivery(os.path.join(self.base, "single"), "mx.example.com",
                                 self.clock, defer.maybeDeferred)
        [alone] = self.successResultOf(defer.gatherResults(
            single.write_many(self.envelope, ["bob@example.com"], SOURCE)))
        mailboxes = ["bob@example.com", "carol@example.com", "dave@example.com"]
        carol = os.path.join(self.mailroot, "mailbox", "example.com", "carol")
        self.successResultOf(self.agent.write(Envelope(
            "0ABE", "a@example.com", [Recipient("carol@example.com")], 1.0),
            "carol@example.com", SOURCE))  # carol's Maildir exists now
        stale = os.path.join(carol, "tmp", self.agent.message_name(self.envelope,
                                                                   "carol@example.com"))
        with open(stale, "wb") as f:
            f.write(b"half a message")
        paths = self.successResultOf(defer.gatherResults(
            self.agent.write_many(self.envelope, mailboxes, SOURCE)))
        with open(alone, "rb") as f:
            expected = f.read()
        for mailbox, path in zip(mailboxes, paths):
            with open(path, "rb") as f:
                content = f.read()
            own = expected.replace(b"Delivered-To: bob@example.com\n",
                                   f"Delivered-To: {mailbox}\n".encode())
            self.assertEqual(content, own)
            size = len(content)
            self.assertTrue(path.endswith(f",S={size},W={size + content.count(b'\n')}"), path)
        self.assertEqual(os.listdir(os.path.join(carol, "tmp")), [])

    def test_hostname_escaped(self) -> None:
        """'/' and ':' in the host name are escaped in file names (Maildir rule)."""
        agent = MaildirDelivery(self.mailroot, "a/b:c", self.clock, defer.maybeDeferred)
        self.successResultOf(agent.write(self.envelope, "bob@example.com", SOURCE))
        [name] = os.listdir(os.path.join(self.maildir, "new"))
        self.assertIn(r".a\057b\072c,S=", name)

    def test_traversal_refused(self) -> None:
        """
        Mailbox names that could reach outside mailbox/<domain>/ are refused
        with MailboxError and nothing is written anywhere.
        """
        for bad in ("../x@localhost", "..@localhost", ".@localhost", ".hidden@localhost",
                    "a/b@localhost", "a\\b@localhost", "x@..", "x@.", "x@../etc",
                    "x@a/b", "x\0@localhost", "x@local\0host", "@localhost", "x@",
                    "nodomain", "x\n@localhost", "../../../tmp/x@localhost"):
            self.failureResultOf(self.agent.write(self.envelope, bad, SOURCE), MailboxError)
        self.assertEqual(files_under(self.base), ["mailroot"])

    def test_symlink_outside_refused(self) -> None:
        """A mailbox folder that is a symlink leading outside is refused."""
        outside = os.path.join(self.base, "outside")
        os.makedirs(outside)
        domain = os.path.join(self.mailroot, "mailbox", "example.com")
        os.makedirs(domain)
        os.symlink(outside, os.path.join(domain, "evil"))
        self.failureResultOf(
            self.agent.write(self.envelope, "evil@example.com", SOURCE), MailboxError)
        self.assertEqual(os.listdir(outside), [])

    def test_symlinked_domain_refused(self) -> None:
        """A domain folder that is a symlink leading outside is refused."""
        outside = os.path.join(self.base, "outside")
        os.makedirs(outside)
        os.makedirs(os.path.join(self.mailroot, "mailbox"))
        os.symlink(outside, os.path.join(self.mailroot, "mailbox", "example.com"))
        self.failureResultOf(
            self.agent.write(self.envelope, "bob@example.com", SOURCE), MailboxError)
        self.assertEqual(os.listdir(outside), [])

    def test_symlinked_new_refused(self) -> None:
        """A new/ folder that is a symlink leading outside is refused."""
        outside = os.path.join(self.base, "outside")
        os.makedirs(outside)
        os.makedirs(self.maildir)
        os.symlink(outside, os.path.join(self.maildir, "new"))
        self.failureResultOf(
            self.agent.write(self.envelope, "bob@example.com", SOURCE), MailboxError)
        self.assertEqual(os.listdir(outside), [])

    def test_header_injection_refused(self) -> None:
        """A sender carrying a line break is refused; nothing is written."""
        self.envelope.sender = "a@example.com>\nX-Evil: <yes"
        self.failureResultOf(
            self.agent.write(self.envelope, "bob@example.com", SOURCE), MailboxError)
        self.assertEqual(files_under(self.base), ["mailroot"])

    def test_crashed_own_tmp_files_cleaned(self) -> None:
        """
        At a Maildir's first use in a run, our own files in tmp/ (named for
        this host) changed before the run started are removed at once: copies
        cut short by a crash; another program's recent file stays.
        """
        tmp = os.path.join(self.maildir, "tmp")
        os.makedirs(tmp)
        for name in ("1.Q0AAAM1.mx.example.com", "1.other.host"):
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(b"half")
            os.utime(path, (1_700_000_000 - 10, 1_700_000_000 - 10))
        self.successResultOf(self.agent.write(self.envelope, "bob@example.com", SOURCE))
        self.assertEqual(os.listdir(tmp), ["1.other.host"])

    def test_old_tmp_files_cleaned(self) -> None:
        """
        At a Maildir's first use in the process, files left in tmp/ for over
        36 hours are removed; newer ones stay, and later deliveries do not
        look again.
        """
        tmp = os.path.join(self.maildir, "tmp")
        os.makedirs(tmp)
        now = self.clock.seconds()
        for name, age in (("old", 37 * 3600), ("recent", 35 * 3600)):
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(b"half a message")
            os.utime(path, (now - age, now - age))
        self.successResultOf(self.agent.write(self.envelope, "bob@example.com", SOURCE))
        self.assertEqual(os.listdir(tmp), ["recent"])
        os.utime(os.path.join(tmp, "recent"), (now - 40 * 3600, now - 40 * 3600))
        self.successResultOf(self.agent.write(Envelope("0ABD", "a@example.com", [], 1.0), "bob@example.com", SOURCE))
        self.assertEqual(os.listdir(tmp), ["recent"])
        self.assertEqual(len(self.delivered()), 2)

    def test_disk_error(self) -> None:
        """
        A disk error comes out as the OSError itself, and no file is left in
        tmp or new.
        """
        os.makedirs(os.path.join(self.maildir, "tmp"))
        with open(os.path.join(self.maildir, "new"), "wb") as f:
            f.write(b"a file where new/ should be")
        self.failureResultOf(
            self.agent.write(self.envelope, "bob@example.com", SOURCE), NotADirectoryError)
        self.assertEqual(os.listdir(os.path.join(self.maildir, "tmp")), [])


class AgentTests(DeliveryTestCase):
    """Both local agents as L{IDeliveryAgent}s: one status per delivery."""

    def deliveries(self, *addresses: str, kind: str = "local"):
        return [(Recipient(a), Destination(kind, a.partition("@")[2], a.lower()))
                for a in addresses]

    def test_maildir_agent(self) -> None:
        """
        The Maildir agent writes one copy per mailbox (two recipients of one
        mailbox share it), from a file read in chunks, and reports 250 each;
        an unsafe mailbox is 550 5.1.1 for its recipients only.
        """
        agent = MaildirDelivery(self.mailroot, "mx.example.com", self.clock,
                                defer.maybeDeferred)
        verifyObject(IMailboxAgent, agent)
        path = os.path.join(self.base, "message")
        body = b"Subject: big\r\n\r\n" + b"line\r\n" * 100_000
        with open(path, "wb") as f:
            f.write(body)
        deliveries = self.deliveries("bob@example.com", "Bob@example.com", "../x@example.com")
        statuses = self.successResultOf(agent.deliver(self.envelope, deliveries,
                                                      FileSource(path)))
        self.assertEqual([(s.address, s.code, s.status) for s in statuses],
                         [("bob@example.com", 250, "2.0.0"), ("Bob@example.com", 250, "2.0.0"),
                          ("../x@example.com", 550, "5.1.1")])
        new = os.path.join(self.mailroot, "mailbox", "example.com", "bob", "new")
        [name] = os.listdir(new)
        with open(os.path.join(new, name), "rb") as f:
            self.assertTrue(f.read().endswith(body.replace(b"\r\n", b"\n")))

    def test_drop_agent(self) -> None:
        """The drop agent writes one file for all its recipients and reports 250 each."""
        agent = DropDelivery(self.mailroot, self.clock, defer.maybeDeferred)
        verifyObject(IDeliveryAgent, agent)
        deliveries = self.deliveries("b@drop.example", "c@drop.example", kind="drop")
        statuses = self.successResultOf(agent.deliver(self.envelope, deliveries, SOURCE))
        self.assertEqual([s.code for s in statuses], [250, 250])
        self.assertEqual(len(os.listdir(os.path.join(self.mailroot, "drop"))), 1)

    def test_drop_agent_disk_full(self) -> None:
        """A full disk is 452 4.3.1 for every recipient of the drop agent."""
        agent = DropDelivery(self.mailroot, self.clock,
                             lambda f, *a: defer.fail(OSError(errno.ENOSPC, "No space")))
        statuses = self.successResultOf(
            agent.deliver(self.envelope, self.deliveries("b@drop.example", kind="drop"), SOURCE))
        self.assertEqual([(s.code, s.status) for s in statuses], [(452, "4.3.1")])


class DropTests(DeliveryTestCase):
    """L{DropDelivery}."""

    def setUp(self) -> None:
        super().setUp()
        self.agent = DropDelivery(self.mailroot, self.clock, defer.maybeDeferred)
        self.drop = os.path.join(self.mailroot, "drop")

    def test_crashed_temporaries_removed(self) -> None:
        """
        At the first drop of a run, temporary files a crash left (changed
        before the run started) are removed; a newer one and other files stay.
        """
        os.makedirs(self.drop)
        for name, when in ((".0AAA.X.eml.1234abcd.tmp", 1_600_000_000),
                           (".0BBB.X.eml.1234abcd.tmp", 1_800_000_000),
                           ("other.eml", 1_600_000_000)):
            path = os.path.join(self.drop, name)
            with open(path, "wb") as f:
                f.write(b"half")
            os.utime(path, (when, when))
        self.successResultOf(self.agent.drop(self.envelope, ["b@drop.example"], SOURCE))
        names = sorted(os.listdir(self.drop))
        self.assertNotIn(".0AAA.X.eml.1234abcd.tmp", names)
        self.assertIn(".0BBB.X.eml.1234abcd.tmp", names)
        self.assertIn("other.eml", names)

    def test_format(self) -> None:
        """
        One .eml file per message: x-sender, one x-receiver per recipient, then
        the message, CRLF line endings; no temporary file stays.
        """
        self.successResultOf(self.agent.drop(
            self.envelope, ["bob@drop.example", "carol@drop.example"], SOURCE))
        [name] = os.listdir(self.drop)
        self.assertTrue(name.startswith("0ABC.") and name.endswith(".eml"), name)
        with open(os.path.join(self.drop, name), "rb") as f:
            content = f.read()
        self.assertEqual(
            content,
            b"x-sender: a@example.com\r\nx-receiver: bob@drop.example\r\n"
            b"x-receiver: carol@drop.example\r\n" + DATA,
        )

    def test_crlf(self) -> None:
        """Bare LF line endings in the data become CRLF."""
        self.successResultOf(self.agent.drop(
            self.envelope, ["bob@drop.example"], BytesSource(b"Subject: x\n\nbody\n")))
        [name] = os.listdir(self.drop)
        with open(os.path.join(self.drop, name), "rb") as f:
            self.assertEqual(f.read().split(b"\r\n")[2:], [b"Subject: x", b"", b"body", b""])

    def test_one_file_per_message(self) -> None:
        """
        Two messages make two files; the same message dropped again (an
        attempt replayed after a crash) replaces its own file.
        """
        other = Envelope("0ABD", "a@example.com", [], 1.0)
        for envelope in (self.envelope, self.envelope, other):
            self.successResultOf(self.agent.drop(envelope, ["b@drop.example"], SOURCE))
        self.assertEqual(len(os.listdir(self.drop)), 2)

    def test_header_injection_refused(self) -> None:
        """A recipient carrying a line break is refused; nothing is written."""
        self.failureResultOf(self.agent.drop(
            self.envelope, ["b@drop.example\r\nx-receiver: evil@example.com"], SOURCE),
            MailboxError)
        self.assertEqual(files_under(self.base), ["mailroot"])

    def test_disk_error(self) -> None:
        """When drop/ cannot be made, the OSError itself comes out."""
        with open(self.drop, "wb") as f:
            f.write(b"a file where drop/ should be")
        self.failureResultOf(
            self.agent.drop(self.envelope, ["b@drop.example"], SOURCE), OSError)
