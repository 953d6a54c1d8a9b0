# -*- test-case-name: tests.test_relay -*-
"""
The relay transport agent (SPEC 3 [delivery], 6): delivers a queued message to
its recipients in other domains over SMTP, by MX or by smart host, and reports
one L{DeliveryStatus} per recipient to the queue manager.

Recipients are grouped by route (their domain's MX hosts, or a smart host); a
route is one transaction carrying all its recipients. Routes run concurrently
within the global and per-destination connection limits, and an open
connection is reused for the next message on the same route.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable

from twisted.internet import error as neterror
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from smtpd.mail.address import ip_literal, split_address
from smtpd.delivery.client import OutboundMessage, RelayClient, SessionError
from smtpd.config import Config, SmartHost
from smtpd.mail.envelope import DeliveryStatus, Envelope, Recipient
from smtpd.delivery.interfaces import IDeliveryAgent
from smtpd.delivery.mx import DNSError, MXHost, MXResolver, PermanentDNSError, TemporaryDNSError
from smtpd.mail.source import IMessageSource, read_chunks

# Seconds to wait for a TCP connection (at most outbound_timeout).
CONNECT_TIMEOUT = 30.0

# Seconds an idle connection stays open for the next message on its route.
IDLE_TIMEOUT = 5.0

# How many answers L{LocalAddresses} remembers.
LOCAL_ADDRESS_CACHE = 1024

# RFC 5737 / RFC 3849 documentation addresses: never assigned to a host, so a
# system that lets us bind them binds anything (Linux ip_nonlocal_bind).
_NEVER_LOCAL = {4: "192.0.2.1", 6: "2001:db8::1"}


def bindable(address: str) -> bool:
    """Whether a UDP socket can be bound to C{address}: the system's test for its own."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


class LocalAddresses:
    """
    Whether an IP address is one of this machine's own, as a callable:
    C{is_local("192.0.2.7")}. An address is ours when a socket can be bound
    to it; when the system lets us bind an address that is never assigned
    (non-local binding is enabled) the test proves nothing and no address
    counts as ours. Answers are remembered, at most C{limit} of them.

    @param bind: the bind test (L{bindable}).
    @param limit: how many answers to remember.
    """

    def __init__(self, bind: Callable[[str], bool] = bindable, limit: int = LOCAL_ADDRESS_CACHE):
        self._bind = bind
        self._limit = limit
        self._answers: dict[str, bool] = {}
        self._trustworthy: dict[int, bool] = {}

    def __call__(self, address: str) -> bool:
        """Whether C{address} (an IP address, IPv4 or IPv6) is ours."""
        try:
            ip = _unmapped(ipaddress.ip_address(address))
        except ValueError:
            return False
        key = str(ip)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._trusted(ip.version) and self._bind(key)
            if len(self._answers) >= self._limit:
                del self._answers[next(iter(self._answers))]
            self._answers[key] = answer
        return answer

    def __len__(self) -> int:
        """How many answers are remembered."""
        return len(self._answers)

    def _trusted(self, version: int) -> bool:
        if version not in self._trustworthy:
            self._trustworthy[version] = not self._bind(_NEVER_LOCAL[version])
        return self._trustworthy[version]


@dataclass(frozen=True)
class Route:
    """
    Where a group of recipients goes.

    @ivar kind: C{"mx"} (the MX hosts of the domain C{destination}),
        C{"smart"} (the smart host C{smart_host}) or C{"literal"} (the IP
        address C{destination}, from an address literal).
    @ivar port: the TCP port of every host of the route.
    @ivar tls: the outbound TLS policy.
    @ivar auth: whether to AUTH with the C{[delivery]} smart host credentials.
    @ivar fallback: the route to use when this one fails as a whole.
    """

    kind: str
    destination: str
    port: int
    tls: str
    smart_host: SmartHost | None = None
    auth: bool = False
    fallback: Route | None = None


@dataclass(frozen=True)
class Target:
    """One address of one host of a route."""

    name: str
    address: str
    port: int
    preference: int

    @property
    def remote_mta(self) -> str:
        """The host as reported in statuses: C{"name [ip]"}."""
        return f"{self.name} [{self.address}]"


class _Limiter:
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


class _Connection:
    """An open session as the relay manager tracks it."""

    def __init__(self, client: RelayClient, key: tuple, generation: int):
        self.client = client
        self.key = key
        self.generation = generation
        self.timer: Any = None


def has_8bit(message: IMessageSource) -> bool:
    """Whether the data of C{message} has an octet outside 7-bit ASCII (read in chunks)."""
    return not all(chunk.isascii() for chunk in read_chunks(message))


@implementer(IDeliveryAgent)
class RelayManager:
    """
    The C{relay} agent: the transport for remote recipients.

    @param config: the validated configuration.
    @param reactor: provides TCP connections and time.
    @param mx: the L{MXResolver}.
    @param local_endpoints: returns the set of C{(ip, port)} this server
        listens on; a host at one of them is ourselves (a mail loop).
    @param is_local_address: whether an IP address is one of this machine's
        own (a host at it, on the port of a wildcard listener, is ourselves);
        by default a L{LocalAddresses}.
    @param client_tls: the trust root (L{IOpenSSLTrustRoot}) for
        C{outbound_tls = verify}; None: the platform's trust store.
    @param log: a L{Logger}.
    @param idle_timeout: seconds an idle connection is kept for reuse.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk reads
        (the scan for 8-bit data); by default in the caller's thread.
    """

    name = "relay"

    def __init__(
        self,
        config: Config,
        reactor: Any,
        mx: MXResolver,
        *,
        local_endpoints: Callable[[], set[tuple[str, int]]] = lambda: set(),
        is_local_address: Callable[[str], bool] | None = None,
        client_tls: Any = None,
        log: Logger | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        run_blocking: Callable[..., Deferred] | None = None,
    ):
        self._config = config
        self._reactor = reactor
        self._mx = mx
        self._local_endpoints = local_endpoints
        self._is_local_address = (
            is_local_address if is_local_address is not None else LocalAddresses()
        )
        self._trust_root = client_tls
        self._log = log if log is not None else Logger()
        self._idle_timeout = idle_timeout
        self._run = run_blocking if run_blocking is not None else maybeDeferred
        self._connections = _Limiter(config.delivery.outbound_connections)
        self._destinations: dict[str, _Limiter] = {}
        self._idle: dict[tuple, list[_Connection]] = {}
        self._generation = 0
        self._stopped = False
        self._unverified: Any = None

    # ------------------------------------------------------------ public

    def deliver(
        self, envelope: Envelope, deliveries: list[tuple[Recipient, Any]],
        message: IMessageSource,
    ) -> Deferred[list[DeliveryStatus]]:
        """
        Deliver C{message} from C{envelope.sender} to the recipients of
        C{deliveries} (C{(Recipient, Destination)} pairs).

        @return: a Deferred that fires with exactly one status per recipient,
            in the order given; it never fails.
        """
        recipients = [recipient for recipient, _ in deliveries]
        return Deferred.fromCoroutine(self._deliverSafely(envelope, recipients, message))

    def reconfigure(self, config: Config) -> None:
        """Use C{config} from now on; idle connections made under the old one close."""
        self._config = config
        self._mx.hostname = config.server.hostname.lower().rstrip(".")
        self._connections.resize(config.delivery.outbound_connections)
        for limiter in self._destinations.values():
            limiter.resize(config.delivery.outbound_connections_per_domain)
        self._generation += 1
        self._closeIdle()

    def stop(self) -> Deferred[None]:
        """Close the idle connections; connections in use close when done."""
        self._stopped = True
        return self._closeIdle()

    # ------------------------------------------------------------ routing

    async def _deliverSafely(
        self, envelope: Envelope, recipients: list[Recipient], message: IMessageSource
    ) -> list[DeliveryStatus]:
        try:
            return await self._deliver(envelope, recipients, message)
        except Exception:
            self._log.failure("relay {queue_id}: delivery failed", queue_id=envelope.id)
            return [_internalError(r) for r in recipients]

    async def _deliver(
        self, envelope: Envelope, recipients: list[Recipient], message: IMessageSource
    ) -> list[DeliveryStatus]:
        statuses: list[DeliveryStatus | None] = [None] * len(recipients)
        groups: dict[Route, list[int]] = {}
        for i, recipient in enumerate(recipients):
            try:
                groups.setdefault(self._route(recipient.address), []).append(i)
            except DNSError as e:
                statuses[i] = _status(recipient, e, "")
        sender = self._masquerade(envelope.sender)
        eight_bit = envelope.body.upper() == "8BITMIME"
        if groups and not eight_bit:
            eight_bit = await self._run(has_8bit, message)
        jobs = []
        for route, indexes in groups.items():
            outbound = OutboundMessage(
                sender=sender,
                recipients=tuple(recipients[i] for i in indexes),
                source=message,
                ret=envelope.ret,
                envid=envelope.envid,
                eight_bit=eight_bit,
            )
            jobs.append(Deferred.fromCoroutine(self._deliverGroup(envelope.id, route, outbound)))
        results = await gatherResults(jobs) if jobs else []
        for indexes, group in zip(groups.values(), results):
            for i, status in zip(indexes, group):
                statuses[i] = status
        return [s for s in statuses if s is not None]

    def _route(self, address: str) -> Route:
        """
        The route for one recipient. Only the part after the last C{@} is the
        domain: C{%}, C{!} and quoted C{@} in the local part never route.
        """
        _, domain = split_address(address)
        domain = domain.lower().rstrip(".")
        if not domain:
            raise PermanentDNSError("5.1.3", f"recipient {address!r} has no domain")
        delivery = self._config.delivery
        if domain.startswith("[") and domain.endswith("]"):
            literal = ip_literal(domain[1:-1])
            if literal is None:
                raise PermanentDNSError("5.1.2", f"bad address literal {domain}")
            return Route("literal", literal, delivery.remote_port, delivery.outbound_tls)
        settings = self._config.domain(domain)
        port = delivery.remote_port
        tls = delivery.outbound_tls
        if settings is not None and settings.remote_port is not None:
            port = settings.remote_port
        if settings is not None and settings.outbound_tls:
            tls = settings.outbound_tls
        if settings is not None and settings.smart_host is not None:
            return self._smartRoute(settings.smart_host, port, tls, auth=False)
        if delivery.smart_host is None:
            return Route("mx", domain, port, tls)
        smart = self._smartRoute(delivery.smart_host, port, tls, bool(delivery.smart_host_user))
        if not delivery.smart_host_fallback:
            return smart
        return Route("mx", domain, port, tls, fallback=smart)

    def _smartRoute(self, smart: SmartHost, port: int, tls: str, auth: bool) -> Route:
        port = smart.port if smart.port is not None else port
        return Route("smart", str(smart), port, tls, smart_host=smart, auth=auth)

    def _masquerade(self, sender: str) -> str:
        """A sender in one of our local or alias domains, as C{masquerade_domain}."""
        masquerade = self._config.delivery.masquerade_domain
        if not masquerade or not sender:
            return sender
        local, domain = split_address(sender)
        settings = self._config.domain(domain) if domain else None
        if settings is not None and settings.type in ("local", "alias"):
            return f"{local}@{masquerade}"
        return sender

    # ------------------------------------------------------------ one route

    async def _deliverGroup(
        self, queue_id: str, route: Route, message: OutboundMessage
    ) -> list[DeliveryStatus]:
        try:
            statuses, failure = await self._deliverRoute(route, message)
            if failure is not None and route.fallback is not None and _fallsBack(failure):
                self._log.info(
                    "relay {queue_id}: {route} failed ({reply}), trying {fallback}",
                    queue_id=queue_id,
                    route=route.destination,
                    reply=failure.reply,
                    fallback=route.fallback.destination,
                )
                statuses, failure = await self._deliverRoute(route.fallback, message)
            return statuses
        except Exception:
            self._log.failure(
                "relay {queue_id}: delivery via {route} failed", queue_id=queue_id,
                route=route.destination,
            )
            return [_internalError(r) for r in message.recipients]

    async def _deliverRoute(
        self, route: Route, message: OutboundMessage
    ) -> tuple[list[DeliveryStatus], DNSError | SessionError | None]:
        """
        Try the hosts of C{route} in order until one takes the transaction.

        @return: the statuses, and the failure that applied to the whole route
            (None when a host answered for each recipient).
        """
        key = f"{route.kind}:{route.destination}"
        limiter = self._destinations.get(key)
        if limiter is None:
            limiter = _Limiter(self._config.delivery.outbound_connections_per_domain)
            self._destinations[key] = limiter
        await limiter.acquire()
        try:
            return await self._tryTargets(route, message)
        finally:
            limiter.release()
            if limiter.used == 0 and not limiter.waiting:
                self._destinations.pop(key, None)

    async def _tryTargets(
        self, route: Route, message: OutboundMessage
    ) -> tuple[list[DeliveryStatus], DNSError | SessionError | None]:
        try:
            targets = await self._targets(route)
        except DNSError as e:
            return [_status(r, e, "") for r in message.recipients], e
        temporary: tuple[SessionError, str] | None = None
        permanent: tuple[SessionError, str] | None = None
        for target in targets:
            try:
                return await self._deliverToHost(route, target, message), None
            except SessionError as e:
                self._log.info(
                    "relay: {remote}: {reply}", remote=target.remote_mta, reply=e.reply
                )
                if e.final:
                    permanent, temporary = (e, target.remote_mta), None
                    break
                if e.permanent:
                    permanent = (e, target.remote_mta)
                else:
                    temporary = (e, target.remote_mta)
        # SPEC 6: 4xx or no connection moves on, then defers; a 5xx greeting
        # (Postfix smtp_skip_5xx_greeting) moves on too, and is final only
        # when every host refused so.
        failure, remote = temporary or permanent or (
            SessionError(451, "4.4.1", "451 4.4.1 no host to try"), ""
        )
        return [_status(r, failure, remote) for r in message.recipients], failure

    async def _deliverToHost(
        self, route: Route, target: Target, message: OutboundMessage
    ) -> list[DeliveryStatus]:
        """
        One transaction with one host; at C{outbound_tls = may} a host whose
        TLS fails gets one more try in plain text (as Postfix at level may).
        """
        try:
            return await self._deliverTo(route, target, message)
        except SessionError as e:
            if not (e.tls_failure and route.tls == "may"):
                raise
            self._log.info(
                "relay: {remote}: {reply}; trying again without TLS",
                remote=target.remote_mta,
                reply=e.reply,
            )
        return await self._deliverTo(replace(route, tls="none"), target, message)

    async def _targets(self, route: Route) -> list[Target]:
        """The addresses to try for C{route}, in order, our own ones removed."""
        if route.kind == "literal":
            hosts = [MXHost(route.destination, 0, (route.destination,))]
        elif route.kind == "mx":
            hosts = await self._mx.lookup(route.destination)
        else:
            hosts = await self._smartHosts(route.smart_host)
        targets = [
            Target(host.name, address, route.port, host.preference)
            for host in hosts
            for address in host.addresses
        ]
        return self._withoutLoops(route, targets)

    async def _smartHosts(self, smart: SmartHost) -> list[MXHost]:
        """
        The hosts of a smart host: by MX for C{host}, by address only for
        C{[host]}. A smart host that cannot be found is a configuration
        problem: the mail waits (4.4.3) rather than bounce.
        """
        try:
            if smart.mx_lookup:
                return await self._mx.lookup(smart.host)
            return await self._mx.lookup_host(smart.host)
        except PermanentDNSError as e:
            if e.status == "5.4.6":
                raise
            raise TemporaryDNSError("4.4.3", f"smart host {smart}: {e.message}") from None

    def _withoutLoops(self, route: Route, targets: list[Target]) -> list[Target]:
        """
        SPEC 6: a host at one of our listening endpoints is ourselves; like an
        MX named as us, only more preferred hosts remain, else it is a loop.
        """
        ours = [t.preference for t in targets if self._isLocal(t.address, t.port)]
        if not ours:
            return targets
        kept = [t for t in targets if t.preference < min(ours)]
        if not kept:
            raise PermanentDNSError(
                "5.4.6", f"mail for {route.destination} loops back to myself"
            )
        return kept

    def _isLocal(self, address: str, port: int) -> bool:
        """
        Whether C{address}:C{port} is one of our listeners: a listener on
        that address, or a wildcard one (0.0.0.0 for IPv4, :: for both) when
        the address is loopback or one of this machine's own.
        """
        try:
            ip = _unmapped(ipaddress.ip_address(address))
        except ValueError:
            return False
        wildcard = False
        for local_address, local_port in self._local_endpoints():
            if local_port != port:
                continue
            try:
                local = _unmapped(ipaddress.ip_address(local_address))
            except ValueError:
                continue
            if local == ip:
                return True
            if local.is_unspecified and (local.version == 6 or ip.version == 4):
                wildcard = True
        return wildcard and (ip.is_loopback or self._is_local_address(str(ip)))

    # ------------------------------------------------------------ one host

    async def _deliverTo(
        self, route: Route, target: Target, message: OutboundMessage
    ) -> list[DeliveryStatus]:
        """One transaction with one host, on a pooled connection if there is one."""
        connection = await self._connection(route, target)
        try:
            return await connection.client.send(message)
        except SessionError as e:
            if not e.stale:
                raise
        finally:
            self._release(connection)
        # The pooled connection had died: once more on a fresh one.
        connection = await self._connect(route, target)
        try:
            return await connection.client.send(message)
        finally:
            self._release(connection)

    def _key(self, route: Route, target: Target) -> tuple:
        user = self._config.delivery.smart_host_user if route.auth else ""
        name = target.name if route.tls == "verify" else ""
        return (target.address, target.port, route.tls, name, user)

    async def _connection(self, route: Route, target: Target) -> _Connection:
        idle = self._idle.get(self._key(route, target), [])
        while idle:
            connection = idle.pop()
            self._unpark(connection)
            if connection.client.usable:
                return connection
            connection.client.quit()
        return await self._connect(route, target)

    async def _connect(self, route: Route, target: Target) -> _Connection:
        """A new session with C{target}, greeted and ready (or L{SessionError})."""
        client = self._client(route, target)
        if self._connections.full:
            self._evictIdle()
        await self._connections.acquire()
        connection = _Connection(client, self._key(route, target), self._generation)
        try:
            await self._endpoint(target).connect(_QuietFactory(client))
        except Exception as e:
            self._connections.release()
            raise _connectError(e, target) from None
        client.whenClosed().addCallback(lambda _: self._closed(connection))
        await client.ready
        return connection

    def _client(self, route: Route, target: Target) -> RelayClient:
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
        )

    def _endpoint(self, target: Target) -> Any:
        timeout = min(self._config.delivery.outbound_timeout, CONNECT_TIMEOUT)
        kind = TCP6ClientEndpoint if ":" in target.address else TCP4ClientEndpoint
        return kind(self._reactor, target.address, target.port, timeout=timeout)

    def _tlsOptions(self, policy: str, name: str) -> Any:
        """
        C{may}/C{encrypt}: TLS without verification (RFC 7435 opportunistic);
        C{verify}: the certificate must match the host name (service-identity).
        """
        if policy == "none":
            return None
        if policy == "verify":
            trust = self._trust_root if self._trust_root is not None else ssl.platformTrust()
            return ssl.optionsForClientTLS(name, trustRoot=trust)
        if self._unverified is None:
            self._unverified = ssl.CertificateOptions()
        return self._unverified

    # ------------------------------------------------------------ the pool

    def _release(self, connection: _Connection) -> None:
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

    def _unpark(self, connection: _Connection) -> None:
        if connection.timer is not None and connection.timer.active():
            connection.timer.cancel()
        connection.timer = None
        idle = self._idle.get(connection.key)
        if idle is not None:
            if connection in idle:
                idle.remove(connection)
            if not idle:
                del self._idle[connection.key]

    def _expire(self, connection: _Connection) -> None:
        connection.timer = None
        self._unpark(connection)
        connection.client.quit()

    def _closed(self, connection: _Connection) -> None:
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

    def _closeIdle(self) -> Deferred[None]:
        closing = []
        for idle in list(self._idle.values()):
            for connection in list(idle):
                self._unpark(connection)
                closing.append(connection.client.quit())
        return gatherResults(closing).addCallback(lambda _: None)


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
    """C{::ffff:a.b.c.d} as C{a.b.c.d}."""
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def _status(recipient: Recipient, failure: DNSError | SessionError, remote: str) -> DeliveryStatus:
    """The status of C{recipient} when C{failure} applied to its whole route."""
    return DeliveryStatus(
        address=recipient.address,
        code=failure.code,
        status=failure.status,
        reply=failure.reply,
        remote_mta=remote,
    )


def _internalError(recipient: Recipient) -> DeliveryStatus:
    """The status for a recipient whose delivery hit an unexpected error."""
    return DeliveryStatus(
        recipient.address, 451, "4.3.0", "451 4.3.0 internal error during delivery"
    )


def _fallsBack(failure: DNSError | SessionError) -> bool:
    """
    Whether the smart host is tried after the MX route failed like this: it
    could not be reached or found, but did not refuse the mail (null MX, 5xx)
    nor loop.
    """
    return failure.code < 500 or failure.status in ("5.1.2", "5.4.4")


def _connectError(e: Exception, target: Target) -> SessionError:
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
