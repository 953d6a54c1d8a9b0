"""
Memory does not grow with the message (issue: stream DATA to disk): measured
with real sockets, by tracemalloc in this process for one 50 MB message, and
by the peak RSS (VmHWM) of a real C{twistd} for 50 sessions of 5 MB at once.
"""

from __future__ import annotations

import glob
import os
import tracemalloc

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPullProducer
from twisted.python import log
from twisted.trial import unittest
from zope.interface import implementer

from smtpd.config import load_config
from smtpd.tap import build
from tests.inbound import connect
from tests.test_e2e import eventually
from tests.test_tap import deployment, start_server

MB = 1024 * 1024
LINE = b"0123456789abcdef" * 4 + b"0123456789abcd\r\n"  # 80 octets
CHUNK = LINE * 819  # 65520 octets: whole lines


@implementer(IPullProducer)
class MessageProducer:
    """Writes C{size} octets of message data (and the terminator) as the transport drains."""

    def __init__(self, transport, size: int):
        self.transport = transport
        self.left = size
        self.done = defer.Deferred()

    def resumeProducing(self):
        if self.left <= 0:
            self.transport.unregisterProducer()
            self.transport.write(b".\r\n")
            self.done.callback(None)
            return
        chunk = CHUNK if self.left >= len(CHUNK) else LINE * max(1, self.left // len(LINE))
        self.left -= len(chunk)
        self.transport.write(chunk)

    def stopProducing(self):
        self.left = 0


async def send_large(testcase, port: int, size: int) -> str:
    """One session sending a C{size}-octet message; returns the reply to the data."""
    client = await connect(testcase, port)
    for line in (b"EHLO c.test\r\n", b"MAIL FROM:<a@example.com>\r\n",
                 b"RCPT TO:<postmaster@localhost>\r\n", b"DATA\r\n"):
        reply = await client.command(line)
        testcase.assertIn(reply[:3], ("250", "354"), reply)
    client.send(b"Subject: large\r\n\r\n")
    producer = MessageProducer(client.transport, size)
    client.transport.registerProducer(producer, False)
    await producer.done
    replies = await client.wait(6)
    await client.command(b"QUIT\r\n")
    return replies[5]


INI = """\
[server]
hostname = mx.test
listen = tcp:0:interface=127.0.0.1
[messages]
max_message_size = 100M
max_session_size = 0
[domain:localhost]
type = local
[logging]
path = activity.log
"""


class MemoryTests(unittest.TestCase):
    """Peak memory while large messages arrive."""

    timeout = 120

    def maildir(self, root: str) -> list[str]:
        return glob.glob(os.path.join(root, "mailroot", "mailbox", "localhost",
                                      "postmaster", "new", "*"))

    async def test_one_50mb_message(self):
        """
        One session sends 50 MB (max_message_size = 100M, max_session_size =
        0): the server's peak traced memory rises by less than 4 MB, and the
        message is delivered whole.
        """
        config_path = deployment(self, INI)
        root = os.path.dirname(os.path.dirname(config_path))
        top = build(load_config(config_path), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        [listener] = top.listeners.listeners
        await eventually(lambda: listener.address() is not None)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        base = tracemalloc.get_traced_memory()[0]
        reply = await send_large(self, listener.address()[1], 50 * MB)
        peak = tracemalloc.get_traced_memory()[1] - base
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        [path] = self.maildir(root)
        self.assertGreater(os.path.getsize(path), 50 * MB * 78 // 80)
        log.msg(f"one 50 MB message: peak traced memory rose by {peak / MB:.2f} MB")
        self.assertLess(peak, 4 * MB, f"peak rose by {peak / MB:.1f} MB")

    async def test_fifty_sessions_of_5mb_in_twistd(self):
        """
        50 sessions each sending 5 MB at once to a real twistd: its peak
        resident size (VmHWM) stays under 150 MB, and all 50 are delivered.
        """
        config_path = deployment(self, INI)
        root = os.path.dirname(os.path.dirname(config_path))
        process, port = await start_server(self, config_path)
        pid = process.transport.pid
        replies = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(send_large(self, port, 5 * MB)) for _ in range(50)])
        self.assertTrue(all(r.startswith("250 2.0.0 Ok: queued as ") for r in replies), replies)
        await eventually(lambda: len(self.maildir(root)) == 50)
        peak_kb = _status(pid, "VmHWM")
        log.msg(f"50 sessions of 5 MB: twistd peak RSS {peak_kb / 1024:.1f} MB")
        self.assertLess(peak_kb, 150 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB")


def _status(pid: int, field: str) -> int:
    """A kB figure from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")
