"""
A Maildir as one POP3 session sees it (L{smtpd.pop3.maildir}): real folders,
real renames, including names another reader (Dovecot) gives to set flags.
"""

from __future__ import annotations

import os

from twisted.internet.defer import maybeDeferred
from twisted.trial import unittest

from smtpd.pop3.maildir import MaildirInbox, expunge, open_message, scan, uidl


class MaildirTests(unittest.TestCase):
    """scan, uidl, open_message and expunge on a Maildir on disk."""

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.folder, sub))

    def put(self, sub: str, name: str, data: bytes = b"Subject: x\n\nbody\n") -> str:
        path = os.path.join(self.folder, sub, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_scan_takes_new_into_cur(self):
        """new/ messages move to cur/ with ":2,"; cur/ names with flags stay as they are."""
        self.put("new", "1001.M1P1.mx,S=17")
        self.put("cur", "1000.M5P1.mx,S=17:2,S")
        messages = scan(self.folder)
        self.assertEqual(os.listdir(os.path.join(self.folder, "new")), [])
        self.assertEqual([m.name for m in messages],
                         ["1000.M5P1.mx,S=17:2,S", "1001.M1P1.mx,S=17:2,"])
        self.assertEqual([m.uid for m in messages], ["1000.M5P1.mx", "1001.M1P1.mx"])

    def test_scan_of_missing_maildir_is_empty(self):
        """An account with no mail yet has no Maildir: an empty listing."""
        self.assertEqual(scan(os.path.join(self.folder, "none")), [])

    def test_delivery_order(self):
        """Messages are listed by delivery time (seconds, then microseconds)."""
        for name in ("1000.M20P1.mx", "999.M5P1.mx", "1000.M3P1.mx"):
            self.put("new", name)
        self.assertEqual([m.uid for m in scan(self.folder)],
                         ["999.M5P1.mx", "1000.M3P1.mx", "1000.M20P1.mx"])

    def test_sizes(self):
        """The size counts LF as CRLF; Dovecot's W= field is used when present."""
        self.put("new", "1.M1P1.mx", b"a\nbb\n")
        self.put("new", "2.M1P1.mx,S=5,W=999", b"a\nbb\n")
        self.assertEqual([m.size for m in scan(self.folder)], [7, 999])

    def test_uidl_valid_characters(self):
        """A unique name too long or odd for RFC 1939 becomes a stable digest."""
        long_name = "1." + "x" * 80 + ",S=3:2,"
        self.assertEqual(uidl(long_name), uidl("1." + "x" * 80 + ":2,S"))
        self.assertEqual(len(uidl(long_name)), 64)
        self.assertEqual(uidl("1.M1P1.host\\057a,S=4:2,"), "1.M1P1.host\\057a")

    def test_flags_changed_by_another_reader(self):
        """A message renamed by another reader (flags) is still read and expunged."""
        self.put("new", "1.M1P1.mx,S=17")
        [message] = scan(self.folder)
        os.rename(os.path.join(self.folder, "cur", message.name),
                  os.path.join(self.folder, "cur", "1.M1P1.mx,S=17:2,RS"))
        with open_message(self.folder, message) as f:
            self.assertEqual(f.read(), b"Subject: x\n\nbody\n")
        self.assertEqual(expunge(self.folder, [message]), 1)
        self.assertEqual(os.listdir(os.path.join(self.folder, "cur")), [])

    def test_message_removed_by_another_reader(self):
        """A message expunged elsewhere cannot be opened (ValueError: -ERR)."""
        path = self.put("cur", "1.M1P1.mx:2,")
        [message] = scan(self.folder)
        os.unlink(path)
        self.assertRaises(ValueError, open_message, self.folder, message)
        self.assertEqual(expunge(self.folder, [message]), 0)

    async def test_inbox_expunges_only_marked(self):
        """MaildirInbox removes the messages marked with deleteMessage, no others."""
        self.put("new", "1.M1P1.mx")
        self.put("new", "2.M1P1.mx")
        inbox = MaildirInbox(self.folder, scan(self.folder), maybeDeferred)
        inbox.deleteMessage(1)
        self.assertRaises(ValueError, inbox.deleteMessage, 1)
        self.assertRaises(ValueError, inbox.deleteMessage, 2)
        self.assertEqual(inbox.listMessages(), [20, 0])
        self.assertEqual(await inbox.expunge(), 1)
        self.assertEqual(os.listdir(os.path.join(self.folder, "cur")), ["1.M1P1.mx:2,"])
