"""
A whole smtpd started in this process for relay and interop tests: local
domain smtpd.test (account bob@smtpd.test), a JSON activity log, more
smtpd.ini lines from the test (a smart host, ...), and an SMTP client
helper that submits one message to it.
"""

from __future__ import annotations

import email
import glob
import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from smtpd.config import load_config
from smtpd.directory import accounts
from smtpd.tap import build
from tests.inbound import connect

HOST = "mx.smtpd.test"
DOMAIN = "smtpd.test"
USER = "bob@smtpd.test"


def sleep(seconds: float) -> defer.Deferred:
    """A Deferred that fires after C{seconds} of the real reactor."""
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def eventually(predicate, timeout: float = 30.0, what: str = "condition",
                     log=lambda: "") -> None:
    """
    Wait until C{predicate()} is true, polling while the reactor runs; else
    an AssertionError naming C{what}, with C{log()} (e.g. a peer's log).
    """
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s\n{log()}")


def dsn_fields(report: bytes) -> dict[str, str]:
    """The fields of a DSN's message/delivery-status part, all blocks merged."""
    message = email.message_from_bytes(report)
    [status] = [part for part in message.walk()
                if part.get_content_type() == "message/delivery-status"]
    fields: dict[str, str] = {}
    for block in status.get_payload():
        fields.update({name: str(value) for name, value in block.items()})
    return fields


class SmtpdDeployment:
    """smtpd built from a generated smtpd.ini and started for C{case}."""

    def __init__(self, case: unittest.TestCase, extra: str = "") -> None:
        """@param extra: more smtpd.ini lines (whole sections)."""
        self.root = os.path.abspath(case.mktemp())
        etc = os.path.join(self.root, "etc")
        os.makedirs(etc)
        accounts.add(os.path.join(etc, "users"), USER, "secret", rounds=4)
        path = os.path.join(etc, "smtpd.ini")
        with open(path, "w") as f:
            f.write(f"[server]\nhostname = {HOST}\nlisten = tcp:0:interface=127.0.0.1\n"
                    "[logging]\npath = activity.log\nformat = json\n"
                    f"[domain:{DOMAIN}]\ntype = local\n" + extra)
        self.top = build(load_config(path), reactor)
        self.top.startService()
        case.addCleanup(self.top.stopService)
        [listener] = self.top.listeners.listeners
        self.port = listener.address()[1]
        self.case = case

    def maildir(self, address: str = USER) -> list[bytes]:
        """The messages in the Maildir of a local address, oldest first."""
        local, _, domain = address.partition("@")
        found = []
        pattern = os.path.join(self.root, "mailroot", "mailbox", domain, local, "new", "*")
        for path in sorted(glob.glob(pattern)):
            with open(path, "rb") as f:
                found.append(f.read())
        return found

    def queue_empty(self) -> bool:
        """Whether the queue holds no entry."""
        return not glob.glob(os.path.join(self.root, "mailroot", "queue", "*.json"))

    def activity(self) -> list[dict]:
        """The activity log's JSON lines so far (its buffer written out first)."""
        self.top.inbound.command_log.flush()
        path = os.path.join(self.root, "activity.log")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    async def send(self, mail: bytes, rcpts: list[bytes], body: bytes) -> str:
        """
        Submit C{body} over SMTP with the command lines C{mail} (MAIL FROM:...)
        and C{rcpts} (RCPT TO:...); the queue id.
        """
        client = await connect(self.case, self.port)
        await client.command(b"EHLO client.test\r\n")
        self.case.assertEqual(await client.command(mail + b"\r\n"), "250 2.1.0 Ok")
        for rcpt in rcpts:
            self.case.assertEqual(await client.command(rcpt + b"\r\n"), "250 2.1.5 Ok")
        self.case.assertTrue((await client.command(b"DATA\r\n")).startswith("354 "))
        reply = await client.command(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        self.case.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        await client.command(b"QUIT\r\n")
        return reply.rsplit(" ", 1)[1]
