# -*- test-case-name: tests.test_mailauth_mtasts -*-
"""
An HTTPS agent for policy fetches (MTA-STS): host names resolved through the
injected twisted.names lookup (the configured C{dns_servers}, like every
other lookup), certificates verified against the platform's trust store or
an injected trust root, no connection pooling.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import DNSLookupError
from twisted.internet.ssl import optionsForClientTLS
from twisted.names import dns
from twisted.web.client import Agent
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from smtpd.mailauth.lookup import DNSLookup

CONNECT_TIMEOUT = 30


class _ResolvedTLSEndpoint:
    """Resolve a host name with L{DNSLookup}, connect to its first address, then TLS."""

    def __init__(self, reactor: Any, lookup: DNSLookup, host: str, port: int, trust_root: Any):
        self.reactor = reactor
        self.lookup = lookup
        self.host = host
        self.port = port
        self.trust_root = trust_root

    def connect(self, factory: Any) -> Deferred:
        """Connect C{factory}'s protocol over verified TLS (IStreamClientEndpoint)."""
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        addresses = [p.dottedQuad() for p in await self.lookup.records(self.host, dns.A)]
        endpoint_class: Any = TCP4ClientEndpoint
        if not addresses:
            addresses = [_ipv6(p) for p in await self.lookup.records(self.host, dns.AAAA)]
            endpoint_class = TCP6ClientEndpoint
        if not addresses:
            raise DNSLookupError(f"{self.host} has no address")
        creator = optionsForClientTLS(self.host, trustRoot=self.trust_root)
        tcp = endpoint_class(self.reactor, addresses[0], self.port, timeout=CONNECT_TIMEOUT)
        return await wrapClientTLS(creator, tcp).connect(factory)


def _ipv6(payload: Any) -> str:
    """The text form of an AAAA payload."""
    return str(ipaddress.IPv6Address(payload.address))


@implementer(IAgentEndpointFactory)
class ResolvingEndpointFactory:
    """
    Endpoints for https URLs only.

    @param port: the port to connect to instead of the URL's (tests serve
        on a port of their own); L{None} uses the URL's.
    @param trust_root: a Twisted trust root, or L{None} for the platform's.
    """

    def __init__(self, reactor: Any, lookup: DNSLookup, trust_root: Any = None,
                 port: int | None = None) -> None:
        self.reactor = reactor
        self.lookup = lookup
        self.trust_root = trust_root
        self.port = port

    def endpointForURI(self, uri: Any) -> _ResolvedTLSEndpoint:
        """The endpoint for C{uri}; only https is allowed (IAgentEndpointFactory)."""
        if uri.scheme != b"https":
            raise ValueError(f"only https URLs are fetched, not {uri.scheme!r}")
        host = uri.host.decode("ascii")
        return _ResolvedTLSEndpoint(
            self.reactor, self.lookup, host, self.port or uri.port, self.trust_root
        )


def https_agent(reactor: Any, lookup: DNSLookup, trust_root: Any = None,
                port: int | None = None) -> Agent:
    """An L{Agent} that fetches https URLs through L{ResolvingEndpointFactory}."""
    return Agent.usingEndpointFactory(
        reactor, ResolvingEndpointFactory(reactor, lookup, trust_root, port)
    )
