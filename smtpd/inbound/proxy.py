# -*- test-case-name: tests.test_proxy -*-
"""
The PROXY protocol (HAProxy, v1 text and v2 binary) on listeners written
C{haproxy:tcp:...}: the load balancer in front of us states the real client's
address in a header before the SMTP session, and the session (access control,
limits per address, logs, C{Received:}) sees that address as its peer.

Only connections from C{[access] proxy_from} may speak it; anyone else is
disconnected before a byte is read, since a client that could send the header
itself could claim any address.

Twisted's own C{haproxy:} wrapper starts the wrapped protocol when the TCP
connection opens, before the header has arrived: an SMTP server speaks first
(the 220 greeting, the access decision), so it would greet and judge the
proxy's address. L{ProxyHeaderFactory} builds the session only once the header
has named the client.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, implementer, providedBy

from smtpd.config import Network

log = Logger()

PREFIX = "haproxy:"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 header line, CRLF included (the spec's limit)
V2_MAX = 16 + 536  # fixed part and addresses with room for TLVs
HEADER_TIMEOUT = 10.0


class ProxyHeaderError(Exception):
    """The bytes are not a PROXY protocol header."""


Address = IPv4Address | IPv6Address | None


def parse_header(data: bytes) -> tuple[Address, Address, int] | None:
    """
    The client (source) and our (destination) addresses of the PROXY header at
    the start of C{data}, and the header's length; L{None} when more bytes
    are needed. Addresses are L{None} for v1 C{UNKNOWN} and v2 C{LOCAL} (a
    health check by the proxy itself).

    @raise ProxyHeaderError: when C{data} does not start with a valid header.
    """
    if data.startswith(V2_SIGNATURE[: len(data)]) and len(data) < len(V2_SIGNATURE):
        return None
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if b"PROXY "[: len(data)] == data[:6]:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[Address, Address, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("v1 header without CRLF")
        return None
    fields = data[:end].decode("ascii", "replace").split(" ")
    if fields[1:2] == ["UNKNOWN"]:
        return None, None, end + 2
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("malformed v1 header")
    _, family, source, destination, source_port, destination_port = fields
    kind = IPv4Address if family == "TCP4" else IPv6Address
    version = 4 if family == "TCP4" else 6
    try:
        for address in (source, destination):
            if ipaddress.ip_address(address).version != version:
                raise ValueError(address)
        ports = [int(p) for p in (source_port, destination_port)
                 if p.isdigit() and str(int(p)) == p]
        if len(ports) != 2 or not all(0 <= p < 65536 for p in ports):
            raise ValueError("port")
    except ValueError:
        raise ProxyHeaderError("malformed v1 addresses") from None
    return kind("TCP", source, ports[0]), kind("TCP", destination, ports[1]), end + 2


def _parse_v2(data: bytes) -> tuple[Address, Address, int] | None:
    if len(data) < 16:
        return None
    version_command, family, length = struct.unpack("!BBH", data[12:16])
    if version_command >> 4 != 2 or version_command & 0xF not in (0, 1):
        raise ProxyHeaderError("v2 header of an unknown version or command")
    if 16 + length > V2_MAX:
        raise ProxyHeaderError("v2 header too long")
    if len(data) < 16 + length:
        return None
    body = data[16 : 16 + length]
    if version_command & 0xF == 0:
        return None, None, 16 + length  # LOCAL: the proxy's own connection
    if family == 0x11 and length >= 12:  # TCP over IPv4
        source, destination, sport, dport = struct.unpack("!4s4sHH", body[:12])
        kind = IPv4Address
    elif family == 0x21 and length >= 36:  # TCP over IPv6
        source, destination, sport, dport = struct.unpack("!16s16sHH", body[:36])
        kind = IPv6Address
    elif family == 0x00:
        return None, None, 16 + length  # UNSPEC: no address information
    else:
        raise ProxyHeaderError("v2 header of an unsupported address family")
    to_text = (lambda b: str(ipaddress.ip_address(b)))
    return (kind("TCP", to_text(source), sport), kind("TCP", to_text(destination), dport),
            16 + length)


def _allowed(address: Any, networks: Sequence[Network]) -> bool:
    host = getattr(address, "host", None)
    try:
        ip = ipaddress.ip_address(host)
    except (TypeError, ValueError):
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class ProxyHeaderProtocol(ProtocolWrapper):
    """
    Reads the PROXY header, then builds the real protocol for the client's
    address and hands it everything after the header. Until then nothing is
    sent; a connection from outside C{proxy_from}, a bad header or no header
    within L{HEADER_TIMEOUT} seconds is closed.
    """

    def __init__(self, factory: ProxyHeaderFactory, wrappedProtocol: Any = None):
        super().__init__(factory, wrappedProtocol)
        self._buffer = b""
        self._peer: Address = None
        self._host: Address = None
        self._timer: Any = None

    def makeConnection(self, transport: Any) -> None:
        """Check the proxy's address; wait for the header."""
        directlyProvides(self, providedBy(transport))
        self.connected = 1
        self.transport = transport
        self.factory.registerProtocol(self)
        peer = transport.getPeer()
        if not _allowed(peer, self.factory.proxies):
            log.warn("PROXY protocol: refused a connection from {peer}, not in "
                     "[access] proxy_from", peer=getattr(peer, "host", peer))
            transport.abortConnection()
            return
        self._timer = self.factory.clock.callLater(HEADER_TIMEOUT, self._no_header)

    def _no_header(self) -> None:
        self._timer = None
        log.warn("PROXY protocol: no header from {peer} in {t:g}s",
                 peer=self.transport.getPeer().host, t=HEADER_TIMEOUT)
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """The header first, then the wrapped protocol's data."""
        if self.wrappedProtocol is not None:
            return self.wrappedProtocol.dataReceived(data)
        self._buffer += data
        try:
            parsed = parse_header(self._buffer)
        except ProxyHeaderError as e:
            log.warn("PROXY protocol: {why} from {peer}; closed", why=str(e),
                     peer=self.transport.getPeer().host)
            self.transport.abortConnection()
            return
        if parsed is not None:
            self._start(*parsed)

    def _start(self, source: Address, destination: Address, length: int) -> None:
        """Build and connect the real protocol for the client C{source}."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rest, self._buffer = self._buffer[length:], b""
        self._peer, self._host = source, destination
        protocol = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if protocol is None:
            self.transport.loseConnection()
            return
        self.wrappedProtocol = protocol
        protocol.makeConnection(self)
        if rest:
            protocol.dataReceived(rest)

    def getPeer(self) -> Any:
        """The client's address as the header stated it (the proxy's for LOCAL)."""
        return self._peer or self.transport.getPeer()

    def getHost(self) -> Any:
        """The address the client connected to, as the header stated it."""
        return self._host or self.transport.getHost()

    def connectionLost(self, reason: Any) -> None:
        """Tell the real protocol, if it was ever started."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.factory.unregisterProtocol(self)
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)


class ProxyHeaderFactory(WrappingFactory):
    """
    Wraps a listener's factory: connections must come from C{proxies} and
    start with a PROXY header.

    @param proxies: the networks of the proxies (C{[access] proxy_from}).
    @param clock: the C{IReactorTime} for the header timeout.
    """

    protocol = ProxyHeaderProtocol

    def __init__(self, wrappedFactory: Any, proxies: Sequence[Network], clock: Any):
        super().__init__(wrappedFactory)
        self.proxies = tuple(proxies)
        self.clock = clock

    def buildProtocol(self, addr: Any) -> ProxyHeaderProtocol:
        """A header reader; the real protocol comes once the header is read."""
        return self.protocol(self)


@implementer(IStreamServerEndpoint)
class ProxyHeaderEndpoint:
    """A server endpoint whose connections start with a PROXY header."""

    def __init__(self, endpoint: IStreamServerEndpoint, proxies: Sequence[Network], clock: Any):
        self.endpoint = endpoint
        self.proxies = tuple(proxies)
        self.clock = clock

    def listen(self, factory: Any) -> Any:
        """Listen with C{factory} wrapped in a L{ProxyHeaderFactory}."""
        return self.endpoint.listen(ProxyHeaderFactory(factory, self.proxies, self.clock))


def server_endpoint(reactor: Any, description: str, proxies: Sequence[Network]) -> Any:
    """
    The server endpoint of a listener string: C{haproxy:tcp:...} gives a
    L{ProxyHeaderEndpoint} accepting the proxies C{proxies}; anything else is
    Twisted's endpoint for the string.
    """
    from twisted.internet.endpoints import serverFromString

    if description.startswith(PREFIX):
        inner = serverFromString(reactor, description[len(PREFIX):])
        return ProxyHeaderEndpoint(inner, proxies, reactor)
    return serverFromString(reactor, description)
