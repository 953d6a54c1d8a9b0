# -*- test-case-name: tests.test_relay_memory -*-
"""
Relaying a big message keeps memory flat: a 50 MB queue file goes from the
queue manager through the relay agent and the outbound client to a real SMTP
sink over loopback, read and dot-stuffed a chunk at a time with flow control,
while tracemalloc watches the peak of this process's allocations.
"""

from __future__ import annotations

import os
import time
import tracemalloc

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from smtpd.config import Config, DeliveryConfig, MessagesConfig, ServerConfig
from smtpd.delivery.mx import MXResolver, make_resolver
from smtpd.delivery.relay import RelayManager
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.queue.bounce import BounceBuilder
from smtpd.queue.manager import QueueManager
from smtpd.queue.store import Queue
from smtpd.util.durable import replace_file
from tests.support import SinkScript, a, mx, start_dns_server, start_smtp_sink

SIZE = 50 * 1000 * 1000
LIMIT = 4 * 1024 * 1024

ZONES = {"test": {"big.test": [mx(10, "mx.big.test")], "mx.big.test": [a("127.0.0.2")]}}


def write_message(path: str, size: int) -> tuple[int, int]:
    """
    A message of about C{size} octets, every body line starting with a dot;
    its exact size, and how many lines start with a dot.
    """
    line = b"." + b"x" * 76 + b"\r\n"
    lines = (1 << 20) // len(line)
    block = line * lines
    written, dots = 0, 0
    with open(path, "wb") as f:
        f.write(b"Subject: big\r\n\r\n")
        written = 16
        while written < size:
            f.write(block)
            written += len(block)
            dots += lines
    return written, dots


async def wait_until(condition, seconds: float = 60.0) -> None:
    """Let the reactor run until C{condition()} holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        d: Deferred = Deferred()
        reactor.callLater(0.01, d.callback, None)
        await d


class RelayMemoryTests(unittest.TestCase):
    """A 50 MB message relayed from the queue."""

    async def test_relay_50mb_bounded_memory(self) -> None:
        """
        Relaying a 50 MB queue entry (max_message_size = 100M) to a sink
        raises the peak of traced memory by less than 4 MB; the sink gets
        every octet, dot-stuffed, and the entry leaves the queue.
        """
        dns = start_dns_server(self, ZONES)
        sink = start_smtp_sink(self, "127.0.0.2", script=SinkScript(keep_data=False))
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        config = Config(
            path=os.path.join(root, "smtpd.ini"), root=root,
            server=ServerConfig(hostname="smtp.ours.test", mailroot=root),
            messages=MessagesConfig(max_message_size=100 * 1000 * 1000),
            delivery=DeliveryConfig(remote_port=sink.port, outbound_tls="none"),
        )
        queue = Queue(os.path.join(root, "queue"), reactor, deferToThread)
        queue.schedule()  # creates the folder
        queue_id = queue.new_id()
        size, dots = write_message(queue.data_path(queue_id), SIZE)
        now = reactor.seconds()
        envelope = Envelope(queue_id, "a@ours.test", [Recipient("b@big.test")], now, now,
                            size=size, client="client [192.0.2.9]")
        replace_file(queue.envelope_path(queue_id), envelope.to_json())
        resolver = MXResolver(make_resolver([dns], reactor), reactor, "smtp.ours.test")
        relay = RelayManager(config, reactor, resolver, run_blocking=deferToThread)
        self.addCleanup(relay.stop)
        qmgr = QueueManager(config, queue, reactor, users={}, agents={"relay": relay},
                            bounces=BounceBuilder("smtp.ours.test", reactor),
                            log=lambda fields: None, run_blocking=deferToThread)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        qmgr.startService()
        self.addCleanup(qmgr.stopService)
        await wait_until(lambda: not os.path.exists(queue.data_path(queue_id)))
        peak = tracemalloc.get_traced_memory()[1]
        [message] = sink.messages
        self.assertEqual(message.size, size + dots + 3)  # a dot per line, the final ".CRLF"
        self.assertEqual(qmgr.counters["delivered"], 1)
        print(f"\nrelay of {size} octets: peak {(peak - baseline) / 1e6:.2f} MB above baseline")
        self.assertLess(peak - baseline, LIMIT)
