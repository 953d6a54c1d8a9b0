# -*- test-case-name: tests.test_lmtp -*-
"""
The LMTP delivery agent (RFC 2033) for C{type = lmtp} domains: hands the
message to a mail store such as Dovecot's C{lmtp} service over a UNIX or TCP
socket. After the message the store answers once for each recipient it
accepted, so each recipient gets its own outcome: delivered (2xx), deferred
(4xx, e.g. over quota with a temporary failure) or bounced (5xx).

L{LMTPDelivery} is the L{IDeliveryAgent}: it keeps a few connections per
store open for the next messages. Each is an L{LMTPClient}
(L{smtpd.delivery.lmtpclient}: DATA, or BDAT to a store that offers
CHUNKING).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from smtpd.config.endpoints import lmtp_target_parts
from smtpd.delivery.interfaces import IDeliveryAgent
from smtpd.delivery.lmtpclient import LMTPClient, LMTPError, Reply, StaleSession
from smtpd.delivery.wire import enhanced_status
from smtpd.mail.envelope import DeliveryStatus, Envelope, Recipient

log = Logger()

IDLE_TIMEOUT = 10.0  # seconds an unused connection stays open


def store_of(destination: Any) -> str:
    """
    The store a destination names: its domain's C{lmtp} target, or for a
    mailbox held by another host, C{tcp:host:port} on that host.
    """
    host = getattr(destination, "host", "")
    if host:
        return f"tcp:[{host}]:{destination.port}" if ":" in host else \
            f"tcp:{host}:{destination.port}"
    return destination.section.lmtp


@implementer(IDeliveryAgent)
class LMTPDelivery:
    """
    The C{lmtp} transport: delivers to the store named by each recipient's
    domain section (C{lmtp = unix:/path} or C{tcp:host:port}).

    @param reactor: C{IReactorUNIX}, C{IReactorTCP} and C{IReactorTime}.
    @param hostname: our name, for LHLO.
    @param timeout: seconds without progress before a session is dropped.
    @param max_messages: messages per connection before a new one.
    @param max_connections: concurrent connections per store.
    @param clock: the C{IReactorTime} for timeouts and idle connections; the
        reactor by default.
    """

    name = "lmtp"

    def __init__(self, reactor: Any, hostname: str, timeout: float = 600.0,
                 max_messages: int = 20, max_connections: int = 20, clock: Any = None):
        self.reactor = reactor
        self.clock = clock or reactor
        self.hostname = hostname
        self.timeout = timeout
        self.max_messages = max_messages
        self.max_connections = max_connections
        self._stores: dict[str, _Store] = {}
        self.stopped = False

    def deliver(self, envelope: Envelope, deliveries: Sequence[tuple[Recipient, Any]],
                message: Any) -> Deferred[list[DeliveryStatus]]:
        """One L{DeliveryStatus} per delivery, in order; never fails."""
        return Deferred.fromCoroutine(self._deliver(envelope, list(deliveries), message))

    async def _deliver(self, envelope: Envelope, deliveries: list[tuple[Recipient, Any]],
                       message: Any) -> list[DeliveryStatus]:
        by_target: dict[str, list[int]] = {}
        for i, (_, destination) in enumerate(deliveries):
            by_target.setdefault(store_of(destination), []).append(i)
        results: list[DeliveryStatus | None] = [None] * len(deliveries)
        calls = [self._to_store(target, envelope, [deliveries[i] for i in indexes], message)
                 for target, indexes in by_target.items()]
        outcomes = await DeferredList([Deferred.fromCoroutine(c) for c in calls])
        for (target, indexes), (_, statuses) in zip(by_target.items(), outcomes):
            for i, status in zip(indexes, statuses):
                results[i] = status
        return [r for r in results if r is not None]

    async def _to_store(self, target: str, envelope: Envelope,
                        deliveries: list[tuple[Recipient, Any]], message: Any
                        ) -> list[DeliveryStatus]:
        store = self._stores.get(target)
        if store is None:
            store = self._stores[target] = _Store(self, target)
        pairs = [(destination.mailbox or recipient.address, recipient)
                 for recipient, destination in deliveries]
        try:
            replies = await store.send(envelope, pairs, message)
        except LMTPError as e:
            replies = [Reply(e.code, (e.reply[4:],))] * len(pairs)
        except Exception:
            log.failure("lmtp: delivery of {id} to {target} failed", id=envelope.id,
                        target=target)
            replies = [Reply(451, ("4.3.0 internal error",))] * len(pairs)
        return [DeliveryStatus(recipient.address, r.code, enhanced_status(r.code, r.text),
                               r.text, remote_mta=target)
                for (_, recipient), r in zip(pairs, replies)]

    def stop(self) -> None:
        """Close every idle connection; connections in use close when done."""
        self.stopped = True
        for store in self._stores.values():
            store.close_idle()


class _Store:
    """The connections to one LMTP store: at most C{max_connections}, reused."""

    def __init__(self, agent: LMTPDelivery, target: str):
        self.agent = agent
        self.target = target
        self.limit = DeferredSemaphore(agent.max_connections)
        self.idle: list[tuple[LMTPClient, Any]] = []

    async def send(self, envelope: Envelope, pairs: list[tuple[str, Recipient]],
                   message: Any) -> list[Reply]:
        """
        One transaction on an idle or a new connection (a new one when the
        idle one turns out closed).
        """
        await self.limit.acquire()
        try:
            for fresh in (False, True):
                client = await self._client(fresh)
                try:
                    return await client.transaction(envelope, pairs, message)
                except StaleSession:
                    if fresh:
                        raise
                finally:
                    self._release(client)
            raise AssertionError("unreachable")
        finally:
            self.limit.release()

    async def _client(self, fresh: bool = False) -> LMTPClient:
        while self.idle and not fresh:
            client, timer = self.idle.pop()
            timer.cancel()
            if client.usable:
                return client
        agent = self.agent
        kind, host, port = lmtp_target_parts(self.target)
        if kind == "unix":
            endpoint = UNIXClientEndpoint(agent.reactor, host, timeout=agent.timeout)
        else:
            endpoint = HostnameEndpoint(agent.reactor, host, port, timeout=agent.timeout)
        factory = Factory.forProtocol(
            lambda: LMTPClient(agent.hostname, agent.clock, agent.timeout, self.target))
        try:
            client = await endpoint.connect(factory)
        except Exception as e:
            raise LMTPError(451, f"451 4.4.1 {self.target}: cannot connect: {e}") from None
        try:
            await client.hello()
        except LMTPError:
            client.quit()
            raise
        return client

    def _release(self, client: LMTPClient) -> None:
        agent = self.agent
        if client.usable and client.transactions < agent.max_messages and not agent.stopped:
            timer = self.agent.clock.callLater(IDLE_TIMEOUT, self._expire, client)
            self.idle.append((client, timer))
        else:
            client.quit()

    def _expire(self, client: LMTPClient) -> None:
        self.idle = [(c, t) for c, t in self.idle if c is not client]
        client.quit()

    def close_idle(self) -> None:
        """Close the connections no transaction uses."""
        idle, self.idle = self.idle, []
        for client, timer in idle:
            timer.cancel()
            client.quit()
