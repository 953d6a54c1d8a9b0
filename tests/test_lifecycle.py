# -*- test-case-name: tests.test_lifecycle -*-
"""
The process around the server, with real C{twistd} processes: listeners
bound before anything else (or exit 1), one instance per mailroot, signals
that never kill, SIGTERM's 421 to every session, and one validation path for
C{smtpctl check} and start.
"""

from __future__ import annotations

import glob
import hashlib
import os
import signal

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from smtpd.config.endpoints import split_endpoint
from smtpd.util.lock import LockHeld, MailrootLock, lock_holder
from tests.inbound import connect
from tests.test_tap import INI, deployment, send, sleep, spawn, start_server


def snapshot(folder: str) -> dict[str, str]:
    """Every file under C{folder} (relative name -> sha256 of its content)."""
    found = {}
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True) + glob.glob(
        os.path.join(folder, "**", ".*"), recursive=True
    ):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def seed_queue(root: str) -> str:
    """
    A mailroot queue with what a start-up scan would clean or deliver: a
    complete entry, a temporary file and a data file without an envelope.
    """
    queue = os.path.join(root, "mailroot", "queue")
    os.makedirs(queue)
    entry = "0000000A0000000000000001"
    envelope = (
        '{"id":"%s","sender":"a@example.com","recipients":[{"address":"postmaster@localhost"}],'
        '"arrival":1,"next_attempt":1}' % entry
    )
    for name, content in (
        (entry + ".eml", "Subject: queued\r\n\r\nbody\r\n"),
        (entry + ".json", envelope),
        (".x.eml.0123abcd.tmp", "half"),
        ("0000000B0000000000000002.eml", "orphan"),
    ):
        with open(os.path.join(queue, name), "w") as f:
            f.write(content)
    return queue


class BindOrExitTests(unittest.TestCase):
    """A listener that cannot bind stops the start before anything is touched."""

    timeout = 60

    async def test_taken_port(self):
        """
        Started on a port that is taken, twistd exits 1 at once with one
        log line naming the endpoint and the reason, no traceback, and the
        queue folder exactly as it was.
        """
        taken = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        config = deployment(self, INI.replace("tcp:0:", f"tcp:{port}:"))
        root = os.path.dirname(os.path.dirname(config))
        queue = seed_queue(root)
        before = snapshot(queue)
        started = reactor.seconds()
        process = spawn(
            self, ["twistd", "-n", "--pidfile=", "--logfile=-", "smtpd", "--config", config]
        )
        self.assertEqual(await process.ended, 1)
        # It exits instead of running headless; the bound is loose because a
        # loaded CI machine takes seconds just to start Python and Twisted
        # (about 1.5 s in all on a quiet 2-core machine).
        self.assertLess(reactor.seconds() - started, 30.0)
        output = process.output.decode()
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if "Cannot listen" in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn(f"tcp:{port}:interface=127.0.0.1", lines[0])
        self.assertIn("in use", lines[0])
        self.assertEqual(snapshot(queue), before)
        self.assertFalse(os.path.exists(os.path.join(root, "mailroot", "mailbox")))


class LockTests(unittest.TestCase):
    """One instance per mailroot."""

    timeout = 60

    def test_lock_is_exclusive(self):
        """A second lock on the same mailroot fails naming the holder; release frees it."""
        mailroot = os.path.abspath(self.mktemp())
        first = MailrootLock(mailroot)
        first.acquire()
        self.assertEqual(lock_holder(mailroot), os.getpid())
        error = self.assertRaises(LockHeld, MailrootLock(mailroot).acquire)
        self.assertEqual(error.pid, os.getpid())
        self.assertIn(f"process {os.getpid()}", str(error))
        first.release()
        self.assertIsNone(lock_holder(mailroot))
        second = MailrootLock(mailroot)
        second.acquire()
        second.release()

    async def test_second_instance(self):
        """
        A second real instance on the same mailroot exits 1 naming the first's
        pid; the first keeps serving and loses nothing.
        """
        config = deployment(self)
        root = os.path.dirname(os.path.dirname(config))
        first, port = await start_server(self, config)
        self.assertTrue((await send(self, port, b"postmaster@localhost")).startswith("250 "))
        second = spawn(
            self, ["twistd", "-n", "--pidfile=", "--logfile=-", "smtpd", "--config", config]
        )
        self.assertEqual(await second.ended, 1)
        output = second.output.decode()
        self.assertNotIn("Traceback", output)
        self.assertIn(f"locked by process {first.transport.pid}", output)
        self.assertTrue((await send(self, port, b"postmaster@localhost")).startswith("250 "))
        new = os.path.join(root, "mailroot", "mailbox", "localhost", "postmaster", "new")
        for _ in range(100):
            if len(os.listdir(new)) == 2:
                break
            await sleep(0.05)
        self.assertEqual(len(os.listdir(new)), 2)
        self.assertFalse(first.ended.called)


class SignalTests(unittest.TestCase):
    """SIGHUP, SIGUSR1 and SIGTERM on a real process."""

    timeout = 60

    async def test_sighup_does_not_kill(self):
        """SIGHUP: the server still serves, and says so in one log line."""
        config = deployment(self)
        process, port = await start_server(self, config)
        process.transport.signalProcess(signal.SIGHUP)
        await process.wait_for(rb"SIGHUP received[^\n]*\n")
        self.assertTrue((await send(self, port, b"postmaster@localhost")).startswith("250 "))
        self.assertFalse(process.ended.called)
        self.assertEqual(process.output.count(b"SIGHUP received"), 1)

    async def test_reopen_after_rename(self):
        """
        After logrotate renames the activity log and sends SIGUSR1, new lines
        go to a new file at the configured path, which starts with the W3C
        header; the renamed file keeps the old lines.
        """
        config = deployment(
            self, INI.replace("format = json", "format = w3c\npath = log/smtpd.log")
        )
        root = os.path.dirname(os.path.dirname(config))
        os.makedirs(os.path.join(root, "log"))
        log_path = os.path.join(root, "log", "smtpd.log")
        process, port = await start_server(self, config)
        client = await connect(self, port)
        await client.command(b"NOOP first\r\n")
        os.rename(log_path, log_path + ".1")
        process.transport.signalProcess(signal.SIGUSR1)
        await process.wait_for(rb"SIGUSR1 received[^\n]*\n")
        await client.command(b"NOOP second\r\n")
        await client.command(b"QUIT\r\n")
        for _ in range(100):
            if os.path.exists(log_path) and b"second" in open(log_path, "rb").read():
                break
            await sleep(0.05)
        with open(log_path, "rb") as f:
            fresh = f.read().decode()
        with open(log_path + ".1", "rb") as f:
            old = f.read().decode()
        self.assertTrue(fresh.startswith("#Software: smtpd"), fresh)
        self.assertIn("NOOP second", fresh)
        self.assertNotIn("first", fresh)
        self.assertIn("NOOP first", old)
        self.assertFalse(process.ended.called)

    async def test_sigterm_421_to_idle_at_once(self):
        """
        SIGTERM with one session in DATA and one idle: the idle one reads
        421 4.3.2 at once; the one in DATA may finish its message, gets its
        250, then the 421 too.
        """
        config = deployment(self)
        process, port = await start_server(self, config)
        busy = await connect(self, port)
        for line in (b"EHLO c\r\n", b"MAIL FROM:<a@example.com>\r\n",
                     b"RCPT TO:<postmaster@localhost>\r\n", b"DATA\r\n"):
            await busy.command(line)
        busy.send(b"Subject: slow\r\n")
        idle = await connect(self, port)
        await idle.command(b"EHLO idle\r\n")
        started = reactor.seconds()
        process.transport.signalProcess("TERM")
        await idle.lost
        self.assertLess(reactor.seconds() - started, 2.0)
        self.assertTrue(idle.replies[-1].startswith("421 4.3.2 "), idle.replies)
        reply = await busy.command(b"\r\nbody\r\n.\r\n")
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        await busy.lost
        self.assertTrue(busy.replies[-1].startswith("421 4.3.2 "), busy.replies)
        await process.ended


BAD_CONFIGS = {
    "missing log folder": (
        "[logging]\npath = nowhere/smtpd.log\n", "[logging] path", "does not exist"),
    "certificate not PEM": (
        "[tls]\ncertificate = etc/cert.pem\nkey = etc/key.pem\n", "[tls] certificate",
        "not a PEM certificate"),
    "mailroot cannot be created": (
        "[server]\nlisten = tcp:0:interface=127.0.0.1\nmailroot = etc/smtpd.ini/mailroot\n",
        "[server] mailroot", "not a folder"),
    "no listener": (
        "[server]\nlisten =\n", "[server] listen", "serve nothing"),
    "mistyped certificate path": (
        "[tls]\ncertificate = etc/tls/smtpd.crt\n", "[tls] certificate", "no such file"),
}


class CheckIsStartTests(unittest.TestCase):
    """What start refuses, smtpctl check refuses, with the same one line."""

    timeout = 60

    def config(self, text: str) -> str:
        base = "[domain:localhost]\ntype = local\n"
        if "[server]" not in text:
            base = "[server]\nlisten = tcp:0:interface=127.0.0.1\n" + base
        path = deployment(self, base + text)
        etc = os.path.dirname(path)
        for name in ("cert.pem", "key.pem"):
            with open(os.path.join(etc, name), "w") as f:
                f.write("this is not PEM\n")
        return path

    async def check_both(self, text: str, key: str, why: str) -> None:
        path = self.config(text)
        root = os.path.dirname(os.path.dirname(path))
        for args in (["smtpctl", "--config", path, "check"],
                     ["twistd", "-n", "--pidfile=", "smtpd", "--config", path]):
            process = spawn(self, args)
            self.assertEqual(await process.ended, 1, process.output)
            output = process.output.decode()
            self.assertNotIn("Traceback", output)
            lines = output.strip().splitlines()
            self.assertEqual(len(lines), 1, (args[0], output))
            self.assertIn(path, lines[0])
            self.assertIn(key, lines[0])
            self.assertIn(why, lines[0])
        # Nothing was created on the way: no certificate minted, no folders.
        self.assertFalse(os.path.exists(os.path.join(root, "etc", "tls")))
        self.assertFalse(os.path.exists(os.path.join(root, "mailroot")))

    async def test_missing_log_folder(self):
        """A [logging] path in a folder that does not exist."""
        await self.check_both(*BAD_CONFIGS["missing log folder"])

    async def test_certificate_not_pem(self):
        """A certificate file that is not PEM."""
        await self.check_both(*BAD_CONFIGS["certificate not PEM"])

    async def test_mailroot_cannot_be_created(self):
        """A mailroot below a file."""
        await self.check_both(*BAD_CONFIGS["mailroot cannot be created"])

    async def test_no_listener(self):
        """No listener at all: the server would serve nothing."""
        await self.check_both(*BAD_CONFIGS["no listener"])

    async def test_mistyped_certificate_path(self):
        """A configured certificate path that does not exist is not created."""
        await self.check_both(*BAD_CONFIGS["mistyped certificate path"])


class EndpointSplitTests(unittest.TestCase):
    """Our endpoint-string splitter (instead of a private Twisted parser)."""

    def test_split(self):
        """Colons separate, name=value names, a backslash escapes."""
        self.assertEqual(split_endpoint("tcp:25:interface=127.0.0.1"),
                         (["tcp", "25"], {"interface": "127.0.0.1"}))
        self.assertEqual(split_endpoint(r"tcp:25:interface=\:\:"),
                         (["tcp", "25"], {"interface": "::"}))
        self.assertEqual(split_endpoint(r"unix:/run/a\:b:mode=600"),
                         (["unix", "/run/a:b"], {"mode": "600"}))
        self.assertEqual(split_endpoint(r"unix:a\=b"), (["unix", "a=b"], {}))
        self.assertRaises(ValueError, split_endpoint, "tcp:25\\")

