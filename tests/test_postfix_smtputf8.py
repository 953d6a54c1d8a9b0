"""
SMTPUTF8 interop with a real Debian Postfix (tests/postfix.py, smtputf8_enable
= yes), both ways: a message with a UTF-8 sender, recipient and header goes
from Postfix into smtpd, and from smtpd into Postfix.
"""

from __future__ import annotations

from twisted.trial import unittest

from smtpd.directory import accounts as users
from tests.inbound import connect
from tests.interop import SmtpdDeployment, eventually
from tests.postfix import POSTFIX_MISSING, start_postfix

SENDER = "jos\u00e9@postfix.test"
RCPT = "ren\u00e9@smtpd.test"
BODY = "Subject: \u00bfQu\u00e9 tal? \u2603\r\n\r\nCuerpo \u00f1 \u4f8b\u5b50\r\n"
# As a Maildir holds them (LF line ends).
SUBJECT = "\nSubject: \u00bfQu\u00e9 tal? \u2603\n".encode("utf-8")
TEXT = "\n\nCuerpo \u00f1 \u4f8b\u5b50\n".encode("utf-8")


async def submit(case: unittest.TestCase, port: int, sender: str, rcpt: str,
                 header: str) -> list[str]:
    """
    One SMTPUTF8 transaction on 127.0.0.1:C{port}, pipelined: the replies to
    MAIL, RCPT, DATA, the message and QUIT.
    """
    client = await connect(case, port)
    await client.command(b"EHLO client.test\r\n")
    message = f"From: <{sender}>\r\nTo: <{rcpt}>\r\n{header}{BODY}".encode("utf-8")
    client.send(f"MAIL FROM:<{sender}> SMTPUTF8\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode("utf-8"))
    replies = await client.wait(5)
    client.send(message + b".\r\nQUIT\r\n")
    return replies[2:] + (await client.wait(7))[5:]


class SMTPUTF8InteropTests(unittest.TestCase):
    """An internationalized message through Postfix and smtpd, both ways."""

    skip = POSTFIX_MISSING
    timeout = 120

    async def test_postfix_into_smtpd(self) -> None:
        """
        Postfix (smtputf8_enable = yes) relays a message from a UTF-8 sender
        to a UTF-8 account of smtpd with SMTPUTF8: it lands in the account's
        Maildir (its UTF-8 folder), the header and body as sent, smtpd's
        Received: saying UTF8SMTP.
        """
        smtpd = SmtpdDeployment(self)
        users.add(f"{smtpd.root}/etc/users", RCPT, "secret", rounds=4)
        smtpd.top.reload()  # re-read etc/users, as smtpctl user add makes it
        postfix = start_postfix(self, relay=smtpd.port, settings={"smtputf8_enable": "yes"})
        replies = await submit(self, postfix.port, SENDER, RCPT, "")
        self.assertTrue(replies[3].startswith("250 2.0.0 Ok: queued"), replies)
        await eventually(lambda: smtpd.maildir(RCPT), what="delivery into smtpd")
        [stored] = smtpd.maildir(RCPT)
        self.assertTrue(stored.startswith(f"Return-Path: <{SENDER}>\n".encode("utf-8")), stored)
        self.assertIn(f"Delivered-To: {RCPT}\n".encode("utf-8"), stored)
        self.assertTrue(stored.endswith(TEXT), stored)
        self.assertIn(SUBJECT, stored)
        self.assertIn(b"by postfix.test (Postfix", stored)
        self.assertIn(b"by mx.smtpd.test (smtpd) with UTF8SMTP id ", stored)
        await eventually(lambda: "status=sent" in postfix.log(), what="Postfix's status=sent")

    async def test_smtpd_into_postfix(self) -> None:
        """
        smtpd relays a message with a UTF-8 sender, recipient and header to
        Postfix (smtputf8_enable = yes) with SMTPUTF8: Postfix takes it and
        delivers it to the recipient's Maildir as sent.
        """
        local = "ren\u00e9"
        postfix = start_postfix(self, mailboxes={"postfix.test": [local]},
                                settings={"smtputf8_enable": "yes"})
        smtpd = SmtpdDeployment(
            self, f"[delivery]\nsmart_host = [127.0.0.1]:{postfix.port}\n")
        sender, rcpt = "jos\u00e9@smtpd.test", f"{local}@postfix.test"
        replies = await submit(self, smtpd.port, sender, rcpt, "")
        self.assertTrue(replies[3].startswith("250 2.0.0 Ok: queued as "), replies)
        await eventually(lambda: postfix.messages(rcpt), timeout=60,
                         what=f"delivery into Postfix ({postfix.log()[-2000:]})")
        [stored] = postfix.messages(rcpt)
        self.assertIn(f"Return-Path: <{sender}>".encode("utf-8"), stored)
        self.assertTrue(stored.endswith(TEXT), stored)
        self.assertIn(SUBJECT, stored)
        # Postfix's own trace field: the message came in with SMTPUTF8.
        self.assertIn(b"by postfix.test (Postfix) with UTF8SMTP id ", stored)
        self.assertIn(b"by mx.smtpd.test (smtpd) with UTF8SMTP id ", stored)
        self.assertIn(f"to=<{rcpt}>".encode("utf-8"), postfix.log().encode("utf-8"))
