"""
Interop with a real Debian Postfix 3.7 (tests/postfix.py), both directions:
Postfix relays into smtpd, and smtpd relays into Postfix, which delivers to
its own virtual Maildir; the bytes are compared end to end.
"""

from __future__ import annotations

import glob
import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from smtpd.config import load_config
from smtpd.directory import accounts as users
from smtpd.tap import build
from tests.postfix import POSTFIX_MISSING, start_postfix

BODY = (b"From: <alice@postfix.test>\r\nTo: <bob@smtpd.test>\r\nSubject: interop\r\n"
        b"Message-ID: <interop-1@postfix.test>\r\n\r\n"
        b".a line with a leading dot\r\n..two dots\r\n.\r\n" + b"z" * 998 + b"\r\nend\r\n")


def sleep(seconds: float) -> defer.Deferred:
    """A Deferred that fires after C{seconds} of the real reactor."""
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def eventually(predicate, timeout: float = 30.0, what: str = "condition"):
    """Wait until C{predicate()} is true, polling while the reactor runs."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s")


class SmtpdDeployment:
    """smtpd built from a generated smtpd.ini, started in this process."""

    def __init__(self, case: unittest.TestCase, extra: str = "") -> None:
        self.root = os.path.abspath(case.mktemp())
        os.makedirs(os.path.join(self.root, "etc"))
        users.add(os.path.join(self.root, "etc", "users"), "bob@smtpd.test", "secret",
                  rounds=4)
        path = os.path.join(self.root, "etc", "smtpd.ini")
        with open(path, "w") as f:
            f.write("[server]\nhostname = mx.smtpd.test\nlisten = tcp:0:interface=127.0.0.1\n"
                    "[logging]\npath = activity.log\nformat = json\n"
                    "[domain:smtpd.test]\ntype = local\n" + extra)
        self.top = build(load_config(path), reactor)
        self.top.startService()
        case.addCleanup(self.top.stopService)
        [listener] = self.top.listeners.listeners
        self.port = listener.address()[1]

    def maildir(self, address: str) -> list[bytes]:
        """The messages in the Maildir of local@smtpd.test."""
        local, _, domain = address.partition("@")
        found = []
        pattern = os.path.join(self.root, "mailroot", "mailbox", domain, local, "new", "*")
        for path in sorted(glob.glob(pattern)):
            with open(path, "rb") as f:
                found.append(f.read())
        return found

    def activity(self) -> list[dict]:
        """The JSON lines of the activity log written so far."""
        self.top.inbound.command_log.flush()
        path = os.path.join(self.root, "activity.log")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]


class PostfixIntoSmtpdTests(unittest.TestCase):
    """Postfix (sendmail, then its SMTP client) relays into smtpd."""

    skip = POSTFIX_MISSING
    timeout = 90

    async def test_relayed_byte_exact(self) -> None:
        """
        A message submitted to Postfix with sendmail and relayed by Postfix's
        SMTP client (relayhost = smtpd) lands in smtpd's Maildir with the
        body byte for byte, Postfix's and smtpd's Received: lines on top.
        """
        smtpd = SmtpdDeployment(self)
        postfix = start_postfix(self, relay=smtpd.port)
        postfix.sendmail(BODY, "alice@postfix.test", ["bob@smtpd.test"])
        await eventually(lambda: smtpd.maildir("bob@smtpd.test"), what="delivery into smtpd")
        [stored] = smtpd.maildir("bob@smtpd.test")
        head, _, body = stored.partition(b"\n\n")
        self.assertEqual(body, BODY.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))
        self.assertIn(b"by postfix.test (Postfix", head)
        self.assertIn(b"by mx.smtpd.test", head)
        await eventually(lambda: "status=sent" in postfix.log(), what="Postfix's status=sent")
        self.assertIn("relay=127.0.0.1[127.0.0.1]:%d" % smtpd.port, postfix.log())
