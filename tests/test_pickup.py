"""
The pickup folder, in the assembled server (C{smtpd.tap.build}) with real
files and real inotify: files dropped in C{mailroot/pickup/} are delivered and
removed; broken ones go to badmail with their reason.
"""

from __future__ import annotations

import email
import glob
import os

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.cleanup.interfaces import MessageRefused
from smtpd.cleanup.stage import Cleanup
from smtpd.config import load_config
from smtpd.directory import accounts
from smtpd.pickup.parse import PickupError, parse
from smtpd.pickup.sender import PickupSender
from smtpd.pickup.service import PickupService, inotify_available
from smtpd.queue.store import Queue
from smtpd.tap import build
from tests.inbound import run_blocking
from tests.test_e2e import eventually, sleep

IIS_FILE = (b"x-sender: sender@example.org\r\nx-receiver: postmaster@localhost\r\n"
            b"From: Sender <sender@example.org>\r\nSubject: iis\r\n\r\nbody\r\n")


class PickupServerTests(unittest.TestCase):
    """The pickup watcher wired into the server."""

    timeout = 60

    def setUp(self):
        if not inotify_available():
            raise unittest.SkipTest("inotify is Linux only; the polling test covers the rest")
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        path = os.path.join(root, "etc", "smtpd.ini")
        with open(path, "w") as f:
            f.write("[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
                    "[logging]\npath = activity.log\n[domain:localhost]\ntype = local\n")
        for name in ("alice", "bob", "carol"):
            accounts.add(os.path.join(root, "etc", "users"), f"{name}@localhost", "pw", rounds=4)
        self.root = root
        self.mailroot = os.path.join(root, "mailroot")
        self.pickup = os.path.join(self.mailroot, "pickup")
        top = build(load_config(path), reactor)
        top.startService()
        self.addCleanup(top.stopService)

    def mailbox(self, user: str) -> list[bytes]:
        out = []
        for name in sorted(glob.glob(os.path.join(self.mailroot, "mailbox", "localhost",
                                                  user, "new", "*"))):
            with open(name, "rb") as f:
                out.append(f.read())
        return out

    def drop(self, name: str, data: bytes) -> str:
        path = os.path.join(self.pickup, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def test_iis_file_delivered_and_removed(self):
        """X-Sender/X-Receiver lines give the envelope and are not in the copy delivered."""
        path = self.drop("one.eml", IIS_FILE)
        await eventually(lambda: self.mailbox("postmaster") and not os.path.exists(path))
        [copy] = self.mailbox("postmaster")
        message = email.message_from_bytes(copy)
        self.assertEqual(message["Return-Path"], "<sender@example.org>")
        self.assertEqual(message["Subject"], "iis")
        self.assertNotIn(b"x-sender", copy.lower())
        self.assertIsNotNone(message["Date"])
        self.assertTrue(message["Message-ID"].endswith("@mx.local.test>"), message["Message-ID"])
        self.assertEqual(os.listdir(self.pickup), [])

    async def test_header_envelope_and_bcc(self):
        """Without X- lines, From and To/Cc/Bcc give the envelope; Bcc is removed."""
        self.drop("two.eml", b"From: a@example.org\nTo: alice@localhost\n"
                             b"Cc: Bob <bob@localhost>\nBcc: carol@localhost\n"
                             b"Date: Mon, 1 Dec 2025 10:00:00 +0000\nSubject: hdr\n\nunix\n")
        await eventually(lambda: all(self.mailbox(u) for u in ("alice", "bob", "carol")))
        for user in ("alice", "bob", "carol"):
            [copy] = self.mailbox(user)
            message = email.message_from_bytes(copy)
            # No Bcc header and no Bcc address (a random queue id may spell "bcc").
            self.assertIsNone(message["Bcc"])
            self.assertNotIn(b"carol@localhost", copy.split(b"\n\n", 1)[0].replace(
                b"Delivered-To: carol@localhost", b"").replace(b"for <carol@localhost>", b""))
            self.assertEqual((message["To"], message["Cc"]), ("alice@localhost", "Bob <bob@localhost>"))
            self.assertEqual(message["Delivered-To"], f"{user}@localhost")
            self.assertIn(b"Date: Mon, 1 Dec 2025 10:00:00 +0000", copy)

    async def test_broken_file_to_badmail(self):
        """A file with no recipient goes to badmail as .bad with a .bdr giving the reason."""
        self.drop("broken.txt", b"Subject: nobody\r\n\r\nno recipients\r\n")
        bdr = os.path.join(self.mailroot, "badmail", "broken.txt.bdr")
        await eventually(lambda: os.path.exists(bdr))
        with open(bdr, "rb") as f:
            self.assertIn(b"Reason: no X-Sender line and no From field", f.read())
        with open(os.path.join(self.mailroot, "badmail", "broken.txt.bad"), "rb") as f:
            self.assertEqual(f.read(), b"Subject: nobody\r\n\r\nno recipients\r\n")
        self.assertEqual(os.listdir(self.pickup), [])

    async def test_file_being_written_is_not_taken(self):
        """A file opened and partly written is left alone until it is closed."""
        path = os.path.join(self.pickup, "slow.eml")
        f = open(path, "wb")
        try:
            f.write(IIS_FILE[:60])
            f.flush()
            await sleep(0.5)
            self.assertTrue(os.path.exists(path))
            self.assertEqual(self.mailbox("postmaster"), [])
            f.write(IIS_FILE[60:])
        finally:
            f.close()
        await eventually(lambda: self.mailbox("postmaster"))
        self.assertIn(b"Subject: iis", self.mailbox("postmaster")[0])

    async def test_thousand_files(self):
        """1000 files dropped at once are all delivered and removed."""
        for i in range(1000):
            self.drop(f"m{i:04}.eml", IIS_FILE.replace(b"Subject: iis", b"Subject: n%d" % i))
        await eventually(lambda: len(self.mailbox("postmaster")) == 1000, timeout=50)
        await eventually(lambda: not os.listdir(self.pickup))
        subjects = {email.message_from_bytes(m)["Subject"] for m in self.mailbox("postmaster")}
        self.assertEqual(len(subjects), 1000)


class PollingTests(unittest.TestCase):
    """The fallback where inotify is missing: size and mtime stable across two polls."""

    async def test_polling(self):
        """A file is taken on the poll that finds it unchanged, then removed and queued."""
        root = os.path.abspath(self.mktemp())
        from tests.inbound import make_config

        config = make_config(root)
        clock = Clock()
        queue = Queue(os.path.join(config.server.mailroot, "queue"), clock, run_blocking)
        stored = []
        queue.add_observer(stored.append)
        sender = PickupSender(Cleanup(config, queue, clock, run_blocking),
                              os.path.join(config.server.mailroot, "badmail"), run_blocking)
        folder = os.path.join(config.server.mailroot, "pickup")
        service = PickupService(folder, sender, clock, use_inotify=False)
        service.startService()
        self.addCleanup(service.stopService)
        with open(os.path.join(folder, "p.eml"), "wb") as f:
            f.write(IIS_FILE)
        clock.advance(1)
        self.assertEqual(stored, [])
        clock.advance(1)
        await eventually(lambda: stored and not os.listdir(folder))
        self.assertEqual(stored[0].sender, "sender@example.org")
        self.assertEqual([r.address for r in stored[0].recipients], ["postmaster@localhost"])
        self.assertEqual(stored[0].client, "pickup")


class ParseTests(unittest.TestCase):
    """The envelope from the header section."""

    def test_header_too_long(self):
        """No end of header in the first 256 KiB: refused with a reason."""
        head = b"X: " + b"y" * 300000
        with self.assertRaises(PickupError):
            parse(head, False, "h", "date")

    def test_receiver_local_part_case_kept(self):
        """Recipients differing only in the local part's case are both kept."""
        parsed = parse(b"x-sender: <>\r\nx-receiver: Bob@x.example\r\n"
                       b"x-receiver: bob@X.example\r\n\r\n", True, "h", "d")
        self.assertEqual(parsed.sender, "")
        self.assertEqual(parsed.recipients, ["Bob@x.example", "bob@x.example"])


class FailingFilter:
    """A cleanup filter that breaks."""

    name = "broken"

    def check(self, envelope, message, client):
        raise RuntimeError("filter broken")


class TemporaryFailureTests(unittest.TestCase):
    """A temporary refusal keeps the file for a later try."""

    async def test_failing_filter_keeps_the_file(self):
        """A filter that fails (451) leaves the pickup file in place, not in badmail."""
        root = os.path.abspath(self.mktemp())
        from tests.inbound import make_config

        config = make_config(root)
        clock = Clock()
        queue = Queue(os.path.join(config.server.mailroot, "queue"), clock, run_blocking)
        cleanup = Cleanup(config, queue, clock, run_blocking, filters=[FailingFilter()])
        badmail = os.path.join(config.server.mailroot, "badmail")
        sender = PickupSender(cleanup, badmail, run_blocking)
        os.makedirs(os.path.join(config.server.mailroot, "pickup"))
        path = os.path.join(config.server.mailroot, "pickup", "f.eml")
        with open(path, "wb") as f:
            f.write(IIS_FILE)
        with self.assertRaises(MessageRefused):
            await sender.send(path)
        self.assertTrue(os.path.exists(path))
        self.assertFalse(os.path.exists(badmail) and os.listdir(badmail))
        self.assertEqual(queue.scan(cleanup=False), [])
        self.flushLoggedErrors(RuntimeError)
