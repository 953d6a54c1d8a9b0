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

from dataclasses import replace
from typing import Any, Callable

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from smtpd.config import Config, SmartHost
from smtpd.delivery.hosts import HostDelivery
from smtpd.delivery.interfaces import IDeliveryAgent
from smtpd.delivery.loops import LocalAddresses, bindable, is_listener
from smtpd.delivery.mx import DNSError, MXHost, MXResolver, PermanentDNSError, TemporaryDNSError
from smtpd.delivery.pool import IDLE_TIMEOUT, ConnectionPool, Limiter
from smtpd.delivery.routes import (
    Route,
    Target,
    falls_back,
    host_route,
    internal_error,
    masquerade,
    route_for,
    route_status,
)
from smtpd.delivery.tlsoutcome import POLICY_STS, TLSOutcome, TLSOutcomes, is_tls_report
from smtpd.delivery.tlspolicy import HostPolicy, TLSPolicies, sts_strings
from smtpd.delivery.wire import OutboundMessage, SessionError
from smtpd.mail.envelope import DeliveryStatus, Envelope, Recipient
from smtpd.mail.intl import needs_smtputf8
from smtpd.mail.source import IMessageSource, held_data, read_chunks, read_head

__all__ = ["RelayManager", "LocalAddresses", "bindable", "has_8bit", "tls_not_required"]


def tls_not_required(message: IMessageSource) -> bool:
    """
    Whether the header of C{message} has C{TLS-Required: No} (RFC 8689 5):
    the sender asks that recipient-side TLS policies (MTA-STS, DANE) do not
    stop the delivery. Only the header is read.
    """
    for line in read_head(message).split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"tls-required":
            return value.strip().lower() == b"no"
    return False


def has_8bit(message: IMessageSource) -> bool:
    """Whether the data of C{message} has an octet outside 7-bit ASCII (read in chunks)."""
    return not all(chunk.isascii() for chunk in read_chunks(message))


def utf8_header(message: IMessageSource) -> bool:
    """Whether the header section of C{message} has UTF-8 (RFC 6532) in it."""
    return not read_head(message).isascii()


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
    @param policies: the L{TLSPolicies} (MTA-STS, DANE) of recipient
        domains; None: neither applies.

    @ivar tls_outcomes: where the TLS outcome of each new session is
        published (L{TLSOutcomes}; TLS reporting subscribes there).
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
        policies: TLSPolicies | None = None,
    ):
        self._config = config
        self._mx = mx
        self._local_endpoints = local_endpoints
        self._is_local_address = (
            is_local_address if is_local_address is not None else LocalAddresses()
        )
        self._log = log if log is not None else Logger()
        self._run = run_blocking if run_blocking is not None else maybeDeferred
        self._pool = ConnectionPool(config, reactor, client_tls, idle_timeout)
        self._destinations: dict[str, Limiter] = {}
        self._policies = policies if policies is not None else TLSPolicies()
        self.tls_outcomes = TLSOutcomes()
        self._hosts = HostDelivery(self._pool, reactor, self._log, self.tls_outcomes)

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
        return Deferred.fromCoroutine(self._deliverSafely(envelope, list(deliveries), message))

    def reconfigure(self, config: Config) -> None:
        """Use C{config} from now on; idle connections made under the old one close."""
        self._config = config
        self._mx.hostname = config.server.hostname.lower().rstrip(".")
        for limiter in self._destinations.values():
            limiter.resize(config.delivery.outbound_connections_per_domain)
        self._pool.reconfigure(config)

    def stop(self) -> Deferred[None]:
        """Close the idle connections; connections in use close when done."""
        return self._pool.stop()

    # ------------------------------------------------------------ routing

    async def _deliverSafely(
        self, envelope: Envelope, deliveries: list[tuple[Recipient, Any]],
        message: IMessageSource,
    ) -> list[DeliveryStatus]:
        try:
            return await self._deliver(envelope, deliveries, message)
        except Exception:
            self._log.failure("relay {queue_id}: delivery failed", queue_id=envelope.id)
            return [internal_error(r) for r, _ in deliveries]

    def _route(self, recipient: Recipient, destination: Any) -> Route:
        """The route of one recipient: its mailbox's host, else by its domain."""
        host = getattr(destination, "host", "")
        if host:
            return host_route(self._config, host, destination.port)
        return route_for(self._config, recipient.address)

    def _scan(self, read: Callable[[IMessageSource], bool], message: IMessageSource) -> Any:
        """
        C{read(message)}: at once when the data is held in memory (a scan of
        a few KiB costs less than a thread hop), else off the reactor thread.
        """
        if held_data(message) is not None:
            return maybeDeferred(read, message)
        return self._run(read, message)

    async def _deliver(
        self, envelope: Envelope, deliveries: list[tuple[Recipient, Any]],
        message: IMessageSource,
    ) -> list[DeliveryStatus]:
        recipients = [recipient for recipient, _ in deliveries]
        statuses: list[DeliveryStatus | None] = [None] * len(recipients)
        groups: dict[Route, list[int]] = {}
        for i, (recipient, destination) in enumerate(deliveries):
            try:
                groups.setdefault(self._route(recipient, destination), []).append(i)
            except DNSError as e:
                statuses[i] = route_status(recipient, e, "")
        sender = masquerade(self._config, envelope.sender)
        binary = envelope.body.upper() == "BINARYMIME"
        eight_bit = envelope.body.upper() == "8BITMIME"
        if groups and not (eight_bit or binary):
            eight_bit = await self._scan(has_8bit, message)
        # RFC 6531 3.4: SMTPUTF8 only when the envelope or the header needs
        # it; then only toward hosts that offer it (no downgrade).
        utf8_header_fields = False
        if groups and envelope.smtputf8:
            utf8_header_fields = await self._scan(utf8_header, message)
        # RFC 8460 5.3: the sessions that deliver TLS reports are not counted.
        tls_report = bool(groups) and self.tls_outcomes.observed and await self._scan(
            is_tls_report, message)
        jobs = []
        for route, indexes in groups.items():
            outbound = OutboundMessage(
                sender=sender,
                recipients=tuple(recipients[i] for i in indexes),
                source=message,
                ret=envelope.ret,
                envid=envelope.envid,
                eight_bit=eight_bit,
                binary=binary,
                smtputf8=utf8_header_fields or any(
                    needs_smtputf8(a) for a in
                    [sender, *(recipients[i].address for i in indexes)]),
                requiretls=envelope.requiretls,
                tls_report=tls_report,
            )
            jobs.append(Deferred.fromCoroutine(self._deliverGroup(envelope.id, route, outbound)))
        results = await gatherResults(jobs) if jobs else []
        for indexes, group in zip(groups.values(), results):
            for i, status in zip(indexes, group):
                statuses[i] = status
        return [s for s in statuses if s is not None]


    # ------------------------------------------------------------ one route

    async def _deliverGroup(
        self, queue_id: str, route: Route, message: OutboundMessage
    ) -> list[DeliveryStatus]:
        try:
            statuses, failure = await self._deliverRoute(route, message)
            if failure is not None and route.fallback is not None and falls_back(failure):
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
            return [internal_error(r) for r in message.recipients]

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
            limiter = Limiter(self._config.delivery.outbound_connections_per_domain)
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
            return [route_status(r, e, "") for r in message.recipients], e
        sts = None
        if route.kind == "mx":
            sts, failure = await self._policies.domain_policy(self._config, route.destination)
            if failure is not None and not message.tls_report:
                self._policyFailed(route.destination, sts, failure)
            # RFC 8689 5: TLS-Required: No (read only when a policy may apply;
            # with REQUIRETLS the header field is ignored).
            if ((sts is not None or self._config.delivery.dnssec == "trust-ad")
                    and not message.requiretls
                    and await self._scan(tls_not_required, message.source)):
                sts, message = None, replace(message, tls_optional=True)
        temporary: tuple[SessionError, str] | None = None
        permanent: tuple[SessionError, str] | None = None
        policies: dict[str, HostPolicy] = {}
        label = ""
        for target in targets:
            policy = await self._hostPolicy(route, target, sts, message, policies)
            label = policy.label
            try:
                statuses = await self._hosts.deliver(route, target, message, policy)
                return [replace(s, tls_policy=label) for s in statuses], None
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
        return [replace(route_status(r, failure, remote), tls_policy=label)
                for r in message.recipients], failure

    def _policyFailed(self, domain: str, cached: Any, failure: Any) -> None:
        """Publish that the MTA-STS policy C{domain} announced could not be fetched."""
        self.tls_outcomes.publish(TLSOutcome(
            policy_domain=domain, policy_type=POLICY_STS,
            policy_strings=sts_strings(cached) if cached is not None else (),
            mx_host="", receiving_ip="", result=failure.kind, detail=failure.detail,
            mode=cached.mode if cached is not None else ""))

    async def _hostPolicy(self, route: Route, target: Target, sts: Any,
                          message: OutboundMessage,
                          known: dict[str, HostPolicy]) -> HostPolicy:
        """The recipient side's policy for the host of C{target} (DANE, MTA-STS or none)."""
        if route.kind != "mx" or message.tls_optional:
            return HostPolicy(route.destination)
        if target.name not in known:
            known[target.name] = await self._policies.host_policy(
                self._config, route.destination, target.name, target.port, sts)
        return known[target.name]

    async def _targets(self, route: Route) -> list[Target]:
        """The addresses to try for C{route}, in order, our own ones removed."""
        if route.kind == "literal":
            hosts = [MXHost(route.destination, 0, (route.destination,))]
        elif route.kind == "mx":
            hosts = await self._mx.lookup(route.destination)
        elif route.kind == "host":
            hosts = await self._mailboxHost(route.destination)
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

    async def _mailboxHost(self, host: str) -> list[MXHost]:
        """
        The addresses of the host that holds a mailbox (A and AAAA, no MX: it
        names a host). A name that cannot be found is a directory problem:
        the mail waits (4.4.3) rather than bounce.
        """
        try:
            return await self._mx.lookup_host(host)
        except PermanentDNSError as e:
            raise TemporaryDNSError("4.4.3", f"mailbox host {host}: {e.message}") from None

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
        """Whether C{address}:C{port} is one of our listeners (L{is_listener})."""
        return is_listener(address, port, self._local_endpoints(), self._is_local_address)
