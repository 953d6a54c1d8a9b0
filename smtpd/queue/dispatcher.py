# -*- test-case-name: tests.test_qmgr -*-
"""
Which agent delivers what: each pending recipient is routed
(L{smtpd.directory.routing.route}) and the recipients of each transport are
handed, in one call, to the delivery agent of that name from the registry
(L{smtpd.delivery.interfaces.IDeliveryAgent}: C{local}, C{drop}, C{relay}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred

from smtpd.config import Config
from smtpd.delivery.outcome import temporary
from smtpd.directory.routing import DROP, LOCAL, REMOTE, Destination, route, routed_to_host
from smtpd.mail.envelope import DeliveryStatus, Envelope, Recipient
from smtpd.mail.source import IMessageSource

# The agent (by name in the registry) for each kind of destination.
AGENT_FOR = {LOCAL: "local", DROP: "drop", REMOTE: "relay"}


class Dispatcher:
    """
    Hands the pending recipients of one message to the agents.

    @param config: the L{Config}; may be replaced on reload.
    @param users: the accounts for routing; may be replaced on reload.
    @param agents: the delivery agents by name.
    @param errors: a logger with C{failure} for routing and agent errors.
    """

    def __init__(self, config: Config, users: Any, agents: Mapping[str, Any], errors: Any):
        self.config = config
        self.users = users
        self.agents = dict(agents)
        self._errors = errors

    def destination(self, recipient: Recipient) -> Destination | None:
        """
        Where C{recipient} goes now (L{None}: a local domain without that
        account): by its address, or to the other host the directory said
        holds its mailbox.
        """
        address = recipient.address
        return routed_to_host(self.config, route(self.config, self.users, address),
                              address, recipient.host)

    async def deliver(
        self, envelope: Envelope, pending: list[Recipient], message: IMessageSource
    ) -> tuple[dict[str, DeliveryStatus], dict[str, str]]:
        """
        Route each pending recipient and run the agents concurrently, each
        with all its recipients (a repeated address is delivered once).

        @return: a status per address, and the destination kind per address.
        """
        statuses: dict[str, DeliveryStatus] = {}
        kinds: dict[str, str] = {}
        groups: dict[str, list[tuple[Recipient, Destination]]] = {}
        for recipient in pending:
            address = recipient.address
            if address in kinds or address in statuses:
                continue  # a repeated RCPT: one delivery
            try:
                destination = self.destination(recipient)
            except Exception:
                self._errors.failure("Routing {address} failed", address=address)
                statuses[address] = temporary(address, "routing error")
                continue
            if destination is None:
                statuses[address] = DeliveryStatus(
                    address, 550, "5.1.1",
                    f"<{address}>: Recipient address rejected: no such user here",
                )
                continue
            kinds[address] = destination.kind
            name = AGENT_FOR.get(destination.kind, destination.kind)
            groups.setdefault(name, []).append((recipient, destination))
        jobs = [Deferred.fromCoroutine(self._hand_over(name, envelope, deliveries, message))
                for name, deliveries in groups.items()]
        for results in await gatherResults(jobs, consumeErrors=True):
            for status in results:
                statuses.setdefault(status.address, status)
        return statuses, kinds

    async def _hand_over(
        self, name: str, envelope: Envelope,
        deliveries: list[tuple[Recipient, Destination]], message: IMessageSource,
    ) -> list[DeliveryStatus]:
        """One call of agent C{name} for its recipients; one status each, whatever happens."""
        agent = self.agents.get(name)
        try:
            if agent is None:
                raise LookupError(f"no delivery agent {name!r}")
            results = list(await maybeDeferred(agent.deliver, envelope, deliveries, message))
        except Exception:
            self._errors.failure("Delivery of {queue_id} by {agent} failed",
                                 queue_id=envelope.id, agent=name)
            results = []
        answered = {s.address for s in results}
        for recipient, _ in deliveries:
            if recipient.address not in answered:
                results.append(temporary(recipient.address, f"{name} error"))
        return results
