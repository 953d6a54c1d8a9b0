"""
The real program: C{twistd -n smtpd --config PATH} in its own process, started
from an unrelated working directory, killed with SIGKILL, restarted.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import sys

from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from tests.inbound import connect

BIN = os.path.dirname(sys.executable)

INI = """\
[server]
hostname = mx.test
listen = tcp:0:interface=127.0.0.1
[domain:localhost]
type = local
[logging]
format = json
"""


class Process(ProcessProtocol):
    """A child process whose output is collected; can wait for a pattern."""

    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()
        self._waiters = []

    def outReceived(self, data):
        self.output += data
        self._check()

    errReceived = outReceived

    def _check(self):
        for pattern, d in list(self._waiters):
            match = re.search(pattern, self.output)
            if match:
                self._waiters.remove((pattern, d))
                d.callback(match)

    def wait_for(self, pattern: bytes) -> defer.Deferred:
        d = defer.Deferred()
        self._waiters.append((pattern, d))
        self._check()
        return d

    def processEnded(self, reason):
        for _, d in self._waiters:
            d.errback(AssertionError(b"process ended; output:\n" + self.output))
        self._waiters = []
        self.signal = reason.value.signal
        self.ended.callback(reason.value.exitCode)


def deployment(testcase, ini: str = INI) -> str:
    """A deployment root with etc/smtpd.ini; returns the config path."""
    root = os.path.abspath(testcase.mktemp())
    os.makedirs(os.path.join(root, "etc"))
    path = os.path.join(root, "etc", "smtpd.ini")
    with open(path, "w") as f:
        f.write(ini)
    return path


def spawn(testcase, args: list[str], extra_env: dict[str, str] | None = None) -> Process:
    """Run a command of the venv from an unrelated working directory (C{extra_env} added)."""
    elsewhere = os.path.abspath(testcase.mktemp())
    os.makedirs(elsewhere)
    process = Process()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SMTPD_FAULT")}
    env.update(extra_env or {})
    transport = reactor.spawnProcess(
        process, os.path.join(BIN, args[0]), args, env=env, path=elsewhere
    )

    def stop():
        if process.ended.called:
            return None
        transport.signalProcess("KILL")
        return process.ended

    testcase.addCleanup(stop)
    process.transport = transport
    return process


async def start_server(testcase, config: str) -> tuple[Process, int]:
    """Start twistd smtpd; return it and the port it listens on."""
    process = spawn(
        testcase, ["twistd", "-n", "--pidfile=", "--logfile=-", "smtpd", "--config", config]
    )
    match = await process.wait_for(rb"Listening on \S+ \(127\.0\.0\.1:(\d+)\)")
    return process, int(match.group(1))


async def send(testcase, port: int, rcpt: bytes) -> str:
    client = await connect(testcase, port)
    for line in (b"EHLO c.test\r\n", b"MAIL FROM:<a@example.com>\r\n", b"RCPT TO:<" + rcpt + b">\r\n", b"DATA\r\n"):
        reply = await client.command(line)
        testcase.assertIn(reply[:3], ("250", "354"), reply)
    return await client.command(b"Subject: durable\r\n\r\nbody\r\n.\r\n")


class TwistdTests(unittest.TestCase):
    """The twistd plugin end to end."""

    timeout = 60

    async def test_delivers_from_any_directory(self):
        """
        Started from an unrelated directory, the server resolves paths against
        the deployment root and delivers to postmaster's Maildir.
        """
        config = deployment(self)
        root = os.path.dirname(os.path.dirname(config))
        process, port = await start_server(self, config)
        reply = await send(self, port, b"postmaster@localhost")
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        pattern = os.path.join(root, "mailroot", "mailbox", "localhost", "postmaster", "new", "*")
        for _ in range(100):
            if glob.glob(pattern):
                break
            await sleep(0.05)
        [path] = glob.glob(pattern)
        with open(path, "rb") as f:
            stored = f.read()
        self.assertTrue(stored.startswith(b"Return-Path: <a@example.com>\nDelivered-To: postmaster@localhost\n"), stored[:100])
        self.assertIn(b"Subject: durable\n", stored)
        self.assertTrue(os.path.exists(os.path.join(root, "etc", "tls", "smtpd.pem")))
        process.transport.signalProcess("TERM")
        # twistd stops cleanly, then ends by the signal it got (or exits 0).
        code = await process.ended
        self.assertTrue(code == 0 or process.signal == signal.SIGTERM, (code, process.signal))
        self.assertIn(b"Main loop terminated.", process.output)
        self.assertEqual(glob.glob(os.path.join(root, "mailroot", "queue", "*")), [])

    async def test_sigkill_after_250(self):
        """
        A message that got 250 survives SIGKILL of the server right after the
        reply, and is delivered after the restart.
        """
        config = deployment(self, INI + "[domain:other.test]\ntype = local\n")
        root = os.path.dirname(os.path.dirname(config))
        process, port = await start_server(self, config)
        client = await connect(self, port)
        client.send(
            b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<postmaster@localhost>\r\n"
            b"DATA\r\nSubject: kill\r\n\r\nbody\r\n.\r\n"
        )
        replies = await client.wait(6)
        os.kill(process.transport.pid, signal.SIGKILL)
        self.assertTrue(replies[5].startswith("250 2.0.0 Ok: queued as "), replies)
        queue_id = replies[5].rsplit(" ", 1)[1]
        await process.ended
        new = os.path.join(root, "mailroot", "mailbox", "localhost", "postmaster", "new")
        queued = os.path.join(root, "mailroot", "queue", queue_id + ".json")
        # Either still queued or already delivered: never lost.
        self.assertTrue(os.path.exists(queued) or os.listdir(new), "message lost")
        process, port = await start_server(self, config)
        for _ in range(100):
            if os.path.isdir(new) and os.listdir(new) and not os.path.exists(queued):
                break
            await sleep(0.05)
        [name] = os.listdir(new)
        with open(os.path.join(new, name), "rb") as f:
            self.assertIn(b"Subject: kill\n", f.read())
        self.assertFalse(os.path.exists(queued))

    async def test_bad_config(self):
        """A bad config: one line per problem naming file and key, exit 1, no traceback."""
        config = deployment(
            self, "[server]\nmax_connections = lots\nfoo = 1\n[domain:localhost]\ntype = local\n"
        )
        process = spawn(self, ["twistd", "-n", "smtpd", "--config", config])
        self.assertEqual(await process.ended, 1)
        lines = process.output.decode().strip().splitlines()
        self.assertEqual(len(lines), 2, process.output)
        self.assertIn("[server] max_connections = lots", lines[0] + lines[1])
        self.assertIn(config, lines[0])
        self.assertNotIn("Traceback", process.output.decode())

    async def test_smtpctl_check(self):
        """smtpctl check agrees with twistd on the same bad file."""
        config = deployment(self, "[server]\nmax_connections = lots\n")
        process = spawn(self, ["smtpctl", "--config", config, "check"])
        self.assertEqual(await process.ended, 1)
        self.assertIn(b"[server] max_connections = lots", process.output)
        self.assertNotIn(b"Traceback", process.output)


def sleep(seconds: float) -> defer.Deferred:
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
