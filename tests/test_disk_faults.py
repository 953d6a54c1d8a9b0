"""
Disk faults: a queue or Maildir write that fails for lack of space or with an
I/O error is answered 452 4.3.1 / 451 4.3.0, leaves nothing half-written, and
the server keeps serving and recovers once the disk does. On a real,
size-limited file system (a tmpfs the test mounts: needs root) and with an
injected failing fsync for EIO.
"""

from __future__ import annotations

import errno
import os
import subprocess

import bcrypt

from twisted.internet import reactor
from twisted.trial import unittest

from smtpd.config import load_config
from smtpd.tap import build
from tests.crash import leftovers, sleep
from tests.inbound import SMTPServerFixture, connect, make_config
from tests.support import start_smtp_sink

SMALL = b"Subject: small\r\n\r\nbody\r\n"
LARGE = b"Subject: large\r\n\r\n" + (b"y" * 98 + b"\r\n") * 3000  # 300 KB: spills to disk


async def transaction(testcase, port: int, rcpts: list[bytes], body: bytes) -> str:
    """One message; the reply to its end of data."""
    client = await connect(testcase, port)
    for line in [b"EHLO c.test\r\n", b"MAIL FROM:<a@client.test>\r\n"]:
        await client.command(line)
    for rcpt in rcpts:
        await client.command(b"RCPT TO:<" + rcpt + b">\r\n")
    await client.command(b"DATA\r\n")
    reply = await client.command(body + b".\r\n")
    await client.command(b"QUIT\r\n")
    return reply


class SmallFileSystemTests(unittest.TestCase):
    """The assembled server with its mailroot on a 2 MB tmpfs."""

    timeout = 60

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a size-limited tmpfs needs root")
        self.disk = os.path.abspath(self.mktemp())
        os.makedirs(self.disk)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", self.disk],
                       check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", self.disk], check=True)
        self.sink = start_smtp_sink(self, "127.0.0.2")
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        self.mailroot = os.path.join(self.disk, "mailroot")
        path = os.path.join(root, "etc", "smtpd.ini")
        with open(path, "w") as f:
            f.write(
                f"[server]\nhostname = mx.test\nlisten = tcp:0:interface=127.0.0.1\n"
                f"mailroot = {self.mailroot}\n"
                f"[delivery]\nsmart_host = [127.0.0.2]:{self.sink.port}\noutbound_tls = none\n"
                "[logging]\npath = activity.log\nformat = json\n"
                "[domain:localhost]\ntype = local\n"
            )
        hashed = bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()
        with open(os.path.join(root, "etc", "users"), "w") as f:
            f.write(f"alice@localhost:{hashed}\n")
        self.top = build(load_config(path), reactor)
        self.top.startService()
        self.addCleanup(self.top.stopService)
        [listener] = self.top.listeners.listeners
        self.port = listener.address()[1]

    def fill(self, leave: int) -> str:
        """Fill the file system up to C{leave} free octets; the filler's path."""
        filler = os.path.join(self.disk, "filler")
        stat = os.statvfs(self.disk)
        free = stat.f_bavail * stat.f_frsize
        with open(filler, "wb") as f:
            try:
                f.write(b"\0" * max(0, free - leave))
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)
        return filler

    def queue_files(self) -> list[str]:
        queue = os.path.join(self.mailroot, "queue")
        return sorted(n for n in os.listdir(queue) if not n.startswith("corrupt"))

    async def test_queue_write_disk_full(self):
        """
        With the disk full, a small and a large (spilled) message both get
        452 4.3.1, the queue holds nothing of them, no temporary file stays;
        the session goes on, and once space returns the next message is
        accepted and relayed.
        """
        filler = self.fill(leave=0)
        for body in (SMALL, LARGE):
            reply = await transaction(self, self.port, [b"r@remote.test"], body)
            self.assertEqual(reply, "452 4.3.1 Insufficient system storage")
        self.assertEqual(self.queue_files(), [])
        self.assertEqual(leftovers(self.mailroot), [])
        os.unlink(filler)
        reply = await transaction(self, self.port, [b"r@remote.test"], LARGE)
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        for _ in range(200):
            if self.sink.messages:
                break
            await sleep(0.02)
        self.assertEqual(len(self.sink.messages), 1)

    async def test_maildir_write_disk_full_retried(self):
        """
        A queued message whose Maildir copy does not fit is deferred with
        452 4.3.1 (the queue entry stays, Maildir tmp/ is empty); when space
        returns, a retry delivers exactly one copy.
        """
        queue = os.path.join(self.mailroot, "queue")
        # Room for the queue files (300 KB), not for a Maildir copy besides.
        filler = self.fill(leave=450 * 1024)
        reply = await transaction(self, self.port, [b"alice@localhost", b"r@remote.test"], LARGE)
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        queue_id = reply.rsplit(" ", 1)[1]
        await self.wait_for_reply(queue_id, "452 4.3.1")
        new = os.path.join(self.mailroot, "mailbox", "localhost", "alice", "new")
        self.assertEqual(os.listdir(new), [])
        self.assertEqual(leftovers(self.mailroot), [])
        os.unlink(filler)
        for _ in range(200):
            if not os.path.exists(os.path.join(queue, queue_id + ".json")):
                break
            # Asked again while polling: a retry asked while the attempt that
            # failed is still being written back is refused.
            self.top.qmgr.retry(queue_id)
            await sleep(0.02)
        self.assertEqual(len(os.listdir(new)), 1)

    async def wait_for_reply(self, queue_id: str, reply: str) -> None:
        path = os.path.join(self.mailroot, "queue", queue_id + ".json")
        for _ in range(300):
            with open(path, "rb") as f:
                if reply.encode() in f.read():
                    return
            await sleep(0.02)
        self.fail(f"{queue_id} never got {reply}")


class InjectedIOErrorTests(unittest.TestCase):
    """EIO from fsync of a queue file, injected into the real queue."""

    timeout = 30

    async def test_queue_write_eio(self):
        """
        A queue write whose fsync fails with EIO: 451 4.3.0, nothing left in
        the queue folder; the next message, with the disk well again, is 250.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        fixture = SMTPServerFixture(self, make_config(root))
        port = fixture.listen()
        real_fsync = os.fsync

        def failing_fsync(fd: int) -> None:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.dirname(target) == os.path.realpath(fixture.queue_dir) \
                    and os.path.isfile(target):
                raise OSError(errno.EIO, "Input/output error")
            real_fsync(fd)

        self.patch(os, "fsync", failing_fsync)
        for body in (SMALL, LARGE):
            reply = await transaction(self, port, [b"r@backup.test"], body)
            self.assertEqual(reply[:9], "451 4.3.0", reply)
        self.assertEqual(os.listdir(fixture.queue_dir), [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)
        self.patch(os, "fsync", real_fsync)
        reply = await transaction(self, port, [b"r@backup.test"], SMALL)
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        self.assertEqual(len(fixture.queued()), 1)
