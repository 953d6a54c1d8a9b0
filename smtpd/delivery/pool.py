# -*- test-case-name: tests.test_relay -*-
"""
The relay's outbound connections: how many may be open (globally), making
new ones (TCP, then the session set-up of L{RelayClient}), and keeping idle
ones for the next message on the same route (RSET, not a new connection).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet import error as neterror
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory

from smtpd.config import Config
from smtpd.delivery.client import RelayClient
from smtpd.delivery.routes import Route, Target
from smtpd.delivery.sni import ServerNameOptions
from smtpd.delivery.wire import SessionError

# Seconds to wait for a TCP connection (at most outbound_timeout).
CONNECT_TIMEOUT = 30.0

# Seconds an idle connection stays open for the next message on its route.
IDLE_TIMEOUT = 5.0


class Limiter:
    """A counting limit whose waiters are served in order; resizable."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._waiting: deque[Deferred[None]] = deque()

    @property
    def full(self) -> bool:
        """Whether an acquire would wait."""
        return self.used >= self.limit

    @property
    def waiting(self) -> int:
        """How many acquires are waiting."""
        return len(self._waiting)

    def acquire(self) -> Deferred[None]:
        """A Deferred that fires when a slot is ours."""
        if self.used < self.limit:
            self.used += 1
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def release(self) -> None:
        """Give a slot back."""
        self.used -= 1
        self._wake()

    def resize(self, limit: int) -> None:
        """Change the limit (slots in use beyond it are given back in time)."""
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.used < self.limit:
            self.used += 1
            self._waiting.popleft().callback(None)


class Connection:
    """An open session as the pool tracks it."""

    def __init__(self, client: RelayClient, key: tuple, generation: int):
        self.client = client
        self.key = key
        self.generation = generation
        self.timer: Any = None



class ConnectionPool:
    """
    Open outbound sessions, within C{[delivery] outbound_connections}.

    @param config: the validated configuration; see L{reconfigure}.
    @param reactor: provides TCP connections and time.
    @param client_tls: the trust root (L{IOpenSSLTrustRoot}) for
        C{outbound_tls = verify}; None: the platform's trust store.
    @param idle_timeout: seconds an idle connection is kept for reuse.
    """

    def __init__(self, config: Config, reactor: Any, client_tls: Any = None,
                 idle_timeout: float = IDLE_TIMEOUT):
        self._config = config
        self._reactor = reactor
        self._trust_root = client_tls
        self._idle_timeout = idle_timeout
        self._connections = Limiter(config.delivery.outbound_connections)
        self._idle: dict[tuple, list[Connection]] = {}
        self._generation = 0
        self._stopped = False
        self._unverified: Any = None

    def reconfigure(self, config: Config) -> Deferred[None]:
        """Use C{config} from now on; idle connections made under the old one close."""
        self._config = config
        self._connections.resize(config.delivery.outbound_connections)
        self._generation += 1
        return self.close_idle()

    def stop(self) -> Deferred[None]:
        """Close the idle connections; connections in use close when released."""
        self._stopped = True
        return self.close_idle()

    def _key(self, route: Route, target: Target) -> tuple:
        """Which connections are interchangeable: same address, port, TLS, name checked, user."""
        user = self._config.delivery.smart_host_user if route.auth else ""
        name = target.name if route.tls in ("verify", "dane") else ""
        return (target.address, target.port, route.tls, name, user)

    async def connection(self, route: Route, target: Target,
                         check_peer: Any = None) -> Connection:
        """
        An idle connection to C{target} when there is a usable one, else a new
        one (whose TLS peer C{check_peer} checks, see L{RelayClient}).
        """
        idle = self._idle.get(self._key(route, target), [])
        while idle:
            connection = idle.pop()
            self._unpark(connection)
            if connection.client.usable:
                return connection
            connection.client.quit()
        return await self.connect(route, target, check_peer)

    async def connect(self, route: Route, target: Target, check_peer: Any = None) -> Connection:
        """A new session with C{target}, greeted and ready (or L{SessionError})."""
        client = self._client(route, target, check_peer)
        if self._connections.full:
            self._evictIdle()
        await self._connections.acquire()
        connection = Connection(client, self._key(route, target), self._generation)
        try:
            await self._endpoint(target).connect(_QuietFactory(client))
        except Exception as e:
            self._connections.release()
            raise connect_error(e, target) from None
        client.whenClosed().addCallback(lambda _: self._closed(connection))
        await client.ready
        return connection

    def _client(self, route: Route, target: Target, check_peer: Any) -> RelayClient:
        delivery = self._config.delivery
        try:
            tls_options = self._tlsOptions(route.tls, target.name)
        except Exception as e:
            raise SessionError(
                451, "4.7.5", f"451 4.7.5 no TLS settings for {target.remote_mta}: {e}"
            ) from None
        return RelayClient(
            helo=self._config.server.hostname,
            remote_mta=target.remote_mta,
            clock=self._reactor,
            timeout=delivery.outbound_timeout,
            tls=route.tls,
            tls_options=tls_options,
            username=delivery.smart_host_user if route.auth else "",
            password=delivery.smart_host_password if route.auth else "",
            check_peer=check_peer,
        )

    def _endpoint(self, target: Target) -> Any:
        timeout = min(self._config.delivery.outbound_timeout, CONNECT_TIMEOUT)
        kind = TCP6ClientEndpoint if ":" in target.address else TCP4ClientEndpoint
        return kind(self._reactor, target.address, target.port, timeout=timeout)

    def _tlsOptions(self, policy: str, name: str) -> Any:
        """
        C{may}/C{encrypt}: TLS without verification (RFC 7435 opportunistic);
        C{verify}: the certificate must match the host name (service-identity);
        C{dane}: no PKIX verification, the TLSA records decide (RFC 7672 3.1).
        All send C{name} (the MX host, the TLSA base domain) as SNI (RFC 7672 8.1).
        """
        if policy == "none":
            return None
        if policy == "verify":
            trust = self._trust_root if self._trust_root is not None else ssl.platformTrust()
            return ssl.optionsForClientTLS(name, trustRoot=trust)
        if self._unverified is None:
            self._unverified = ssl.CertificateOptions()
        return ServerNameOptions(self._unverified, name)

    def release(self, connection: Connection) -> None:
        """Keep C{connection} for the next message on its route, or close it."""
        client = connection.client
        keep = (
            not self._stopped
            and client.usable
            and client.transactions < self._config.delivery.max_messages_per_connection
            and connection.generation == self._generation
            and not self._connections.waiting
        )
        if not keep:
            client.quit()
            return
        connection.timer = self._reactor.callLater(self._idle_timeout, self._expire, connection)
        self._idle.setdefault(connection.key, []).append(connection)

    def _unpark(self, connection: Connection) -> None:
        if connection.timer is not None and connection.timer.active():
            connection.timer.cancel()
        connection.timer = None
        idle = self._idle.get(connection.key)
        if idle is not None:
            if connection in idle:
                idle.remove(connection)
            if not idle:
                del self._idle[connection.key]

    def _expire(self, connection: Connection) -> None:
        connection.timer = None
        self._unpark(connection)
        connection.client.quit()

    def _closed(self, connection: Connection) -> None:
        self._unpark(connection)
        self._connections.release()

    def _evictIdle(self) -> None:
        """Close the longest-idle connection to make room for a new one."""
        for idle in self._idle.values():
            if idle:
                connection = idle[0]
                self._unpark(connection)
                connection.client.quit()
                return

    def close_idle(self) -> Deferred[None]:
        """Close every idle connection; fires when they are closed."""
        closing = []
        for idle in list(self._idle.values()):
            for connection in list(idle):
                self._unpark(connection)
                closing.append(connection.client.quit())
        return gatherResults(closing).addCallback(lambda _: None)



def connect_error(e: Exception, target: Target) -> SessionError:
    """A failed TCP connection as a temporary 4.4.1 (RFC 3463: no answer from host)."""
    if isinstance(e, neterror.ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(e, (neterror.TimeoutError, neterror.TCPTimedOutError)):
        why = "connection timed out"
    else:
        why = str(e).strip() or e.__class__.__name__
    return SessionError(
        451, "4.4.1", f"451 4.4.1 connect to {target.remote_mta}:{target.port}: {why}"
    )


class _QuietFactory(Factory):
    """Hands one prepared client to one connection, without log lines of its own."""

    noisy = False

    def __init__(self, client):
        self.client = client

    def buildProtocol(self, addr):
        """The prepared client."""
        return self.client
