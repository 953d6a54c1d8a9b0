# -*- test-case-name: tests.test_relay -*-
"""
Where the relay sends each recipient (SPEC 3 [delivery], [domain:...]): by
MX, to a smart host (the domain's or the server's, with fallback), or to an
address literal; and the statuses for a route that failed as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpd.config import Config, SmartHost
from smtpd.delivery.mx import DNSError, PermanentDNSError
from smtpd.delivery.wire import SessionError
from smtpd.mail.address import ip_literal, split_address
from smtpd.mail.envelope import DeliveryStatus, Recipient
from smtpd.mail.intl import a_label_domain


@dataclass(frozen=True)
class Route:
    """
    Where a group of recipients goes.

    @ivar kind: C{"mx"} (the MX hosts of the domain C{destination}),
        C{"smart"} (the smart host C{smart_host}), C{"literal"} (the IP
        address C{destination}, from an address literal) or C{"host"} (the
        host C{destination} that holds the recipients' mailbox).
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


def route_for(config: Config, address: str) -> Route:
    """
    The route for one recipient under C{config}. Only the part after the
    last C{@} is the domain: C{%}, C{!} and quoted C{@} in the local part
    never route.
    """
    _, domain = split_address(address)
    # DNS and the routes see the A-label form of an internationalized domain.
    domain = a_label_domain(domain)
    if not domain:
        raise PermanentDNSError("5.1.3", f"recipient {address!r} has no domain")
    delivery = config.delivery
    if domain.startswith("[") and domain.endswith("]"):
        literal = ip_literal(domain[1:-1])
        if literal is None:
            raise PermanentDNSError("5.1.2", f"bad address literal {domain}")
        return Route("literal", literal, delivery.remote_port, delivery.outbound_tls)
    settings = config.domain(domain)
    port = delivery.remote_port
    tls = delivery.outbound_tls
    if settings is not None and settings.remote_port is not None:
        port = settings.remote_port
    if settings is not None and settings.outbound_tls:
        tls = settings.outbound_tls
    if settings is not None and settings.smart_host is not None:
        return smart_route(settings.smart_host, port, tls, auth=False)
    if delivery.smart_host is None:
        return Route("mx", domain, port, tls)
    smart = smart_route(delivery.smart_host, port, tls, bool(delivery.smart_host_user))
    if not delivery.smart_host_fallback:
        return smart
    return Route("mx", domain, port, tls, fallback=smart)


def host_route(config: Config, host: str, port: int) -> Route:
    """
    The route to the host that holds a mailbox (the directory's host
    attribute): its addresses on C{port}, with the [delivery] TLS policy.
    """
    return Route("host", host.lower().rstrip("."), port, config.delivery.outbound_tls)


def smart_route(smart: SmartHost, port: int, tls: str, auth: bool) -> Route:
    """The route to smart host C{smart} (its own port, else C{port})."""
    port = smart.port if smart.port is not None else port
    return Route("smart", str(smart), port, tls, smart_host=smart, auth=auth)


def masquerade(config: Config, sender: str) -> str:
    """A sender in one of our local or alias domains, as C{masquerade_domain}."""
    replacement = config.delivery.masquerade_domain
    if not replacement or not sender:
        return sender
    local, domain = split_address(sender)
    settings = config.domain(domain) if domain else None
    if settings is not None and settings.type in ("local", "alias"):
        return f"{local}@{replacement}"
    return sender


def route_status(recipient: Recipient, failure: DNSError | SessionError,
                 remote: str) -> DeliveryStatus:
    """The status of C{recipient} when C{failure} applied to its whole route."""
    return DeliveryStatus(
        address=recipient.address,
        code=failure.code,
        status=failure.status,
        reply=failure.reply,
        remote_mta=remote,
    )


def internal_error(recipient: Recipient) -> DeliveryStatus:
    """The status for a recipient whose delivery hit an unexpected error."""
    return DeliveryStatus(
        recipient.address, 451, "4.3.0", "451 4.3.0 internal error during delivery"
    )


def falls_back(failure: DNSError | SessionError) -> bool:
    """
    Whether the smart host is tried after the MX route failed like this: it
    could not be reached or found, but did not refuse the mail (null MX, 5xx)
    nor loop.
    """
    return failure.code < 500 or failure.status in ("5.1.2", "5.4.4")
