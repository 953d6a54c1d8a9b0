"""
Fixtures for administration tests: a whole server in this process (the real
service tree of C{smtpd.tap.build}) on a short temporary root (UNIX socket
paths are limited to 107 bytes), and real telnet and ssh manhole clients.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from twisted.conch.telnet import ECHO, SGA, TelnetProtocol, TelnetTransport
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from twisted.conch.manhole_ssh import ConchFactory

from smtpd.admin.manhole import TelnetFactory
from smtpd.config import load_config
from smtpd.directory.accounts import hash_password
from smtpd.inbound.registry import SMTPFactory
from smtpd.service.listeners import Listener, ListenerGroup
from smtpd.tap import build

# CSI and other escape sequences of the insults terminal.
_ESCAPES = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>78DEHMc])")

# Lines twistd's log must not get per lookup or per connection.
NOISE = (b"DNSDatagramProtocol", b"UDP Port", b"Starting factory", b"Stopping factory",
         b"Starting protocol", b"Stopping protocol")

OPERATOR = "alice"
PASSWORD = "manhole-secret"


def short_root(testcase) -> str:
    """A fresh deployment root under the system's temporary folder."""
    root = tempfile.mkdtemp(prefix="smtpd-")
    testcase.addCleanup(shutil.rmtree, root, True)
    os.makedirs(os.path.join(root, "etc"))
    return root


def write_operators(root: str, lines: list[str] | None = None) -> str:
    """etc/manhole.passwd with OPERATOR (bcrypt) or the given lines."""
    path = os.path.join(root, "etc", "manhole.passwd")
    if lines is None:
        lines = [f"{OPERATOR}:{hash_password(PASSWORD, rounds=4).decode()}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_ini(root: str, text: str) -> str:
    path = os.path.join(root, "etc", "smtpd.ini")
    with open(path, "w") as f:
        f.write(text)
    return path


def services(top):
    """Every service of a tree, depth first."""
    for child in top:
        yield child
        if hasattr(child, "__iter__"):
            yield from services(child)


class RunningServer:
    """The service tree of C{root}/etc/smtpd.ini, started on the real reactor."""

    def __init__(self, testcase, root: str):
        self.root = root
        self.config = load_config(os.path.join(root, "etc", "smtpd.ini"))
        self.top = build(self.config, reactor)
        self.top.startService()
        testcase.addCleanup(self.top.stopService)

    def listener(self, factory_type) -> Listener:
        [group] = [s for s in services(self.top) if isinstance(s, ListenerGroup)]
        [listener] = [l for l in group.listeners if isinstance(l.factory, factory_type)]
        return listener

    def smtp_port(self) -> int:
        return self.listener(SMTPFactory).address()[1]

    def manhole_port(self, kind: str) -> int:
        factory_type = TelnetFactory if kind == "telnet" else ConchFactory
        return self.listener(factory_type).address()[1]


def sleep(seconds: float) -> defer.Deferred:
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def eventually(predicate, timeout: float = 10.0) -> None:
    """Wait until C{predicate()} is true, polling the real reactor."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await sleep(0.02)
    raise AssertionError("condition not reached in time")


class Screen:
    """What a terminal client has received, without escape sequences."""

    def __init__(self):
        self.raw = b""
        self._waiters: list[tuple[bytes, int, defer.Deferred]] = []

    def add(self, data: bytes) -> None:
        self.raw += data
        self._check()

    @property
    def text(self) -> str:
        return _ESCAPES.sub(b"", self.raw).decode("utf-8", "replace")

    def _check(self) -> None:
        clean = _ESCAPES.sub(b"", self.raw)
        for item in list(self._waiters):
            pattern, start, d = item
            match = re.search(pattern, clean[start:])
            if match:
                self._waiters.remove(item)
                d.callback(match)

    def wait_for(self, pattern: bytes, timeout: float = 10.0) -> defer.Deferred:
        """Fires with the match of C{pattern} in output received from now on."""
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((pattern, len(_ESCAPES.sub(b"", self.raw)), d))
        timer = reactor.callLater(timeout, lambda: d.called or d.errback(
            AssertionError(f"{pattern!r} not seen; screen:\n{self.text}")))
        d.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        self._check()
        return d

    def wait_for_any(self, pattern: bytes, timeout: float = 10.0) -> defer.Deferred:
        """Like L{wait_for}, but output already received counts too."""
        d = self.wait_for(pattern, timeout)
        self._waiters[-1:] = [(pattern, 0, d)] if not d.called else []
        self._check()
        return d


class TelnetClient(TelnetProtocol):
    """A telnet client that lets the server echo (as a terminal's telnet does)."""

    def __init__(self):
        self.screen = Screen()

    def enableRemote(self, option):
        return option in (ECHO, SGA)

    def disableRemote(self, option):
        pass

    def dataReceived(self, data):
        self.screen.add(data)

    def send(self, text: str) -> None:
        self.transport.write(text.encode("utf-8"))


class RefusingTelnetClient(TelnetClient):
    """A client that refuses every option, as netcat or a scripted client does."""

    def enableRemote(self, option):
        return False


async def telnet_login(testcase, port: int, name: str = OPERATOR,
                       password: str = PASSWORD, client: TelnetClient | None = None
                       ) -> TelnetClient:
    """Connect to the telnet manhole and log in; returns the client at the prompt."""
    client = client or TelnetClient()
    transport = TelnetTransport(lambda: client)
    protocol = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), transport)
    testcase.addCleanup(protocol.transport.loseConnection)
    await client.screen.wait_for(b"Username: ")
    client.send(name + "\n")
    await client.screen.wait_for(b"Password: ")
    client.send(password + "\n")
    return client


async def run(client, line: str, until: bytes, timeout: float = 10.0):
    """Type C{line} at the manhole prompt; the match of C{until} in the output."""
    waiting = client.screen.wait_for(until, timeout)
    client.send(line + "\n")
    return await waiting


def ssh_client_factory(testcase, name: str, password: str, host_key_blob: bytes,
                       opened: defer.Deferred):
    """
    A conch client factory: checks the server's host key against
    C{host_key_blob}, logs in with a password, opens a session with a pty and
    a shell, and fires C{opened} with the channel (its C{screen} and C{send}).
    """
    from twisted.conch.ssh import channel, connection, session, transport, userauth
    from twisted.internet.protocol import ClientFactory

    class Shell(channel.SSHChannel):
        name = b"session"

        def channelOpen(self, data):
            self.screen = Screen()
            pty = session.packRequest_pty_req(b"xterm", (24, 100, 0, 0), b"")
            d = self.conn.sendRequest(self, b"pty-req", pty, wantReply=1)
            d.addCallback(lambda _: self.conn.sendRequest(self, b"shell", b"", wantReply=1))
            d.addCallbacks(lambda _: opened.callback(self), opened.errback)

        def dataReceived(self, data):
            self.screen.add(data)

        def send(self, text: str) -> None:
            self.write(text.encode("utf-8"))

    class Connection(connection.SSHConnection):
        def serviceStarted(self):
            connection.SSHConnection.serviceStarted(self)
            self.openChannel(Shell(conn=self))

    class Auth(userauth.SSHUserAuthClient):
        tried = False

        def getPassword(self, prompt=None):
            if self.tried:
                return None  # one try, as a person would before giving up
            self.tried = True
            return defer.succeed(password.encode("utf-8"))

        def getPublicKey(self):
            return None

    class Client(transport.SSHClientTransport):
        def verifyHostKey(self, hostKey, fingerprint):
            if hostKey != host_key_blob:
                return defer.fail(AssertionError("unexpected host key"))
            return defer.succeed(True)

        def connectionSecure(self):
            self.requestService(Auth(name.encode("utf-8"), Connection()))

        def connectionLost(self, reason):
            transport.SSHClientTransport.connectionLost(self, reason)
            if not opened.called:
                opened.errback(reason)

    factory = ClientFactory()
    factory.protocol = Client
    factory.noisy = False
    return factory
