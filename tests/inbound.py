"""
Fixtures for inbound tests: a real L{Inbound} listening on 127.0.0.1 (port 0)
with the real queue on a temporary mailroot, and a raw SMTP client that sends
exact bytes and collects complete replies.
"""

from __future__ import annotations

import dataclasses
import os

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThreadPool
from twisted.protocols.tls import TLSMemoryBIOFactory

from smtpd.config import (
    Config,
    DomainConfig,
    ServerConfig,
    TLSConfig,
)
from smtpd.cleanup.stage import Cleanup
from smtpd.inbound.registry import Inbound
from smtpd.inbound.session import LISTEN, SMTPS
from smtpd.queue.store import Queue
from smtpd.directory.accounts import Users


def run_blocking(f, *args, **kwargs):
    """The production runner: the reactor's thread pool."""
    return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kwargs)


def make_config(root: str, **sections) -> Config:
    """
    A configuration rooted at C{root} with domain C{localhost} (local) and
    C{alias.test} (alias of localhost); C{sections} replace fields of a section:
    C{make_config(root, messages={"max_recipients": 2})}.
    """
    config = Config(
        path=os.path.join(root, "etc", "smtpd.ini"),
        root=root,
        server=ServerConfig(mailroot=os.path.join(root, "mailroot")),
        tls=TLSConfig(
            certificate=os.path.join(root, "etc", "tls", "smtpd.pem"),
            key=os.path.join(root, "etc", "tls", "smtpd.key"),
        ),
        domains=(
            DomainConfig("localhost"),
            DomainConfig("alias.test", type="alias", alias_of="localhost"),
            DomainConfig("drop.test", type="drop"),
            DomainConfig("backup.test", type="remote", relay=True),
        ),
    )
    for name, changes in sections.items():
        if name == "domains":
            config = dataclasses.replace(config, domains=changes)
            continue
        section = dataclasses.replace(getattr(config, name), **changes)
        config = dataclasses.replace(config, **{name: section})
    return config


class SMTPServerFixture:
    """A live inbound server for one test."""

    def __init__(self, testcase, config: Config, users=None, tls_options=None, resolver=None):
        self.testcase = testcase
        self.config = config
        self.clock = Clock()
        mailroot = config.server.mailroot
        self.queue_dir = os.path.join(mailroot, "queue")
        os.makedirs(self.queue_dir, exist_ok=True)
        self.queue = Queue(self.queue_dir, self.clock, run_blocking)
        self.stored = []
        self.queue.add_observer(self.stored.append)
        self.cleanup = Cleanup(config, self.queue, self.clock, run_blocking)
        self.inbound = Inbound(
            config,
            users if users is not None else Users.load(os.path.join(config.root, "no-users")),
            self.cleanup,
            self.clock,
            run_blocking,
            tls_options,
            resolver=resolver,
        )
        self.ports = []

    def listen(self, kind: str = LISTEN, interface: str = "127.0.0.1") -> int:
        """Listen for C{kind} sessions; returns the port."""
        factory = self.inbound.factory(kind)
        if kind == SMTPS:
            factory = TLSMemoryBIOFactory(self.inbound.tls_options, False, factory)
        port = reactor.listenTCP(0, factory, interface=interface)
        self.ports.append(port)
        self.testcase.addCleanup(port.stopListening)
        return port.getHost().port

    def queued(self) -> list[str]:
        """Queue ids with a committed envelope on disk."""
        return sorted(n[:-5] for n in os.listdir(self.queue_dir) if n.endswith(".json"))

    def data(self, queue_id: str) -> bytes:
        """The stored message data of C{queue_id}."""
        with open(os.path.join(self.queue_dir, queue_id + ".eml"), "rb") as f:
            return f.read()


class RawClient(Protocol):
    """Sends exact bytes; collects complete SMTP replies (multi-line joined)."""

    def __init__(self):
        self.buffer = b""
        self.replies: list[str] = []
        self._waiters: list[tuple[int, defer.Deferred]] = []
        self.lost = defer.Deferred()
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while True:
            reply, rest = _one_reply(self.buffer)
            if reply is None:
                break
            self.buffer = rest
            self.replies.append(reply)
        self._wake()

    def connectionLost(self, reason=None):
        self.closed = True
        self._wake(final=True)
        self.lost.callback(None)

    def _wake(self, final: bool = False) -> None:
        for item in list(self._waiters):
            count, d = item
            if len(self.replies) >= count or final:
                self._waiters.remove(item)
                d.callback(self.replies[:count])

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def wait(self, count: int) -> defer.Deferred[list[str]]:
        """Fires with the first C{count} replies (fewer if the connection closed)."""
        d: defer.Deferred[list[str]] = defer.Deferred()
        self._waiters.append((count, d))
        self._wake(final=self.closed)
        return d

    async def command(self, data: bytes) -> str:
        """Send C{data} and return the next reply."""
        n = len(self.replies) + 1
        self.send(data)
        return (await self.wait(n))[-1]


def _one_reply(buffer: bytes):
    lines = []
    start = 0
    while True:
        end = buffer.find(b"\r\n", start)
        if end < 0:
            return None, buffer
        line = buffer[start:end].decode("utf-8", "replace")
        lines.append(line)
        start = end + 2
        if len(line) < 4 or line[3] != "-":
            return "\n".join(lines), buffer[start:]


async def connect(testcase, port: int, host: str = "127.0.0.1") -> RawClient:
    """Connect a L{RawClient} and wait for the greeting."""
    client = RawClient()
    await connectProtocol(TCP4ClientEndpoint(reactor, host, port), client)

    def close():
        if not client.closed:
            client.transport.abortConnection()
            return client.lost

    testcase.addCleanup(close)
    await client.wait(1)
    return client
