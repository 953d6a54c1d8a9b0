"""
A whole smtpd deployment for mail pick-up tests: SMTP in, Maildir delivery,
POP3 out, on loopback ports, with a certificate from a test CA that clients
verify. Clients that block (poplib, smtplib, imaplib) run in threads.
"""

from __future__ import annotations

import glob
import os
import smtplib
import ssl

from twisted.internet import defer, reactor, threads
from twisted.protocols.tls import TLSMemoryBIOFactory

from smtpd.config import load_config
from smtpd.directory import accounts
from smtpd.pop3.server import POP3Factory
from smtpd.tap import build
from tests import support

HOST = "mx.example.test"
USER = "alice@example.test"
PASSWORD = "correct horse"
MESSAGE = (b"From: <sender@example.org>\r\nTo: <alice@example.test>\r\n"
           b"Subject: pick me up\r\n\r\n.leading dot\r\nbody line\r\n")


def sleep(seconds: float) -> defer.Deferred:
    """A Deferred that fires after C{seconds} of real time."""
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def eventually(predicate, timeout: float = 10.0) -> None:
    """Wait until C{predicate()} is true (polling the real reactor)."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await sleep(0.02)
    raise AssertionError("condition not reached in time")


class Deployment:
    """
    smtpd started in this process for C{testcase} with SMTP, POP3 (STLS) and
    POP3S listeners on 127.0.0.1, account L{USER}, alias domain alias.test.
    """

    def __init__(self, testcase, allow_plaintext: bool = False, login_delay: int = 0,
                 failure_delay: float = 0.2, root: str | None = None):
        self.root = root = root or os.path.abspath(testcase.mktemp())
        etc = os.path.join(root, "etc")
        os.makedirs(os.path.join(etc, "tls"))
        ca = support.CertificateAuthority()
        key_pem, cert_pem = ca.server_pem(HOST)
        self.ca_file = os.path.join(root, "ca.pem")
        for path, data in ((os.path.join(etc, "tls", "smtpd.key"), key_pem),
                           (os.path.join(etc, "tls", "smtpd.pem"), cert_pem),
                           (self.ca_file, ca.ca_pem())):
            with open(path, "wb") as f:
                f.write(data)
        accounts.add(os.path.join(etc, "users"), USER, PASSWORD, rounds=4)
        path = os.path.join(etc, "smtpd.ini")
        with open(path, "w") as f:
            f.write(
                f"[server]\nhostname = {HOST}\nlisten = tcp:0:interface=127.0.0.1\n"
                f"[auth]\nallow_plaintext = {'yes' if allow_plaintext else 'no'}\n"
                "[pop3]\nlisten = tcp:0:interface=127.0.0.1\n"
                "pop3s = tcp:0:interface=127.0.0.1\n"
                "[logging]\npath = activity.log\n"
                "[domain:example.test]\ntype = local\n"
                "[domain:alias.test]\ntype = alias\nalias_of = example.test\n"
            )
        self.config = load_config(path)
        self.top = build(self.config, reactor)
        self.top.pop3.login_delay = login_delay
        self.top.pop3.failure_delay = failure_delay
        self.top.startService()
        testcase.addCleanup(self.top.stopService)
        self.smtp_port = self.pop3_port = self.pop3s_port = 0
        for listener in self.top.listeners.listeners:
            port = listener.address()[1]
            factory = listener.factory
            if isinstance(factory, TLSMemoryBIOFactory):
                factory = factory.wrappedFactory
                if isinstance(factory, POP3Factory):
                    self.pop3s_port = port
            elif isinstance(factory, POP3Factory):
                self.pop3_port = port
            else:
                self.smtp_port = port
        self.maildir = os.path.join(root, "mailroot", "mailbox", "example.test", "alice")

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the test CA (the name is not checked)."""
        context = ssl.create_default_context(cafile=self.ca_file)
        context.check_hostname = False
        return context

    def files(self, sub: str) -> list[str]:
        """The message files in C{sub} (new or cur) of the account's Maildir."""
        return sorted(glob.glob(os.path.join(self.maildir, sub, "*")))

    async def deliver(self, body: bytes = MESSAGE, rcpt: str = USER) -> None:
        """Send C{body} to C{rcpt} over SMTP and wait until it is in the Maildir."""
        before = len(self.files("new"))

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
                smtp.sendmail("sender@example.org", [rcpt], body)

        await threads.deferToThread(send)
        await eventually(lambda: len(self.files("new")) > before)

    def activity(self) -> str:
        """The activity log so far (its buffer written out first)."""
        self.top.inbound.command_log.flush()
        with open(os.path.join(self.root, "activity.log"), encoding="utf-8") as f:
            return f.read()
