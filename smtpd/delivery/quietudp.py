# -*- test-case-name: tests.test_quietdns -*-
"""
UDP sockets for DNS queries that do not log. Twisted's resolver opens a new
UDP port per query (a random source port, RFC 5452) and its UDP port logs
"starting on", "Starting protocol", "Stopping protocol" and "Closed" for each:
four lines in twistd's log per lookup. L{QuietDatagramReactor} gives the
resolver a reactor whose C{listenUDP} makes a L{QuietDatagramPort} instead:
the same socket work through the reactor's public reader interface, and no
log lines.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import succeed
from twisted.internet.interfaces import IListeningPort, IReadDescriptor, IUDPTransport
from zope.interface import implementer

MAX_PACKET = 8192
# Datagrams read per wake-up before other work gets its turn.
READS_PER_TURN = 64
_TRY_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
# ICMP errors surfacing on a later read: the answer is simply missing.
_REFUSED = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EMSGSIZE)


@implementer(IReadDescriptor, IListeningPort, IUDPTransport)
class QuietDatagramPort:
    """A bound UDP socket serving one datagram protocol, without log lines."""

    def __init__(self, reactor: Any, port: int, protocol: Any, interface: str = "",
                 maxPacketSize: int = MAX_PACKET):
        self.reactor = reactor
        self.protocol = protocol
        self.max_packet = maxPacketSize
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        try:
            self.socket.bind((interface, port))
        except OSError as e:
            self.socket.close()
            raise error.CannotListenError(interface, port, e) from None
        self._fd = self.socket.fileno()
        self._open = True

    def startListening(self) -> None:
        """Hand the socket to the protocol and start reading."""
        if hasattr(self.protocol, "noisy"):
            self.protocol.noisy = False
        self.protocol.makeConnection(self)
        self.reactor.addReader(self)

    # IReadDescriptor

    def fileno(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return self._fd

    def doRead(self) -> None:
        """Read waiting datagrams and give them to the protocol."""
        for _ in range(READS_PER_TURN):
            try:
                data, addr = self.socket.recvfrom(self.max_packet)
            except OSError as e:
                if e.errno in _REFUSED and hasattr(self.protocol, "connectionRefused"):
                    self.protocol.connectionRefused()
                    continue
                return
            self.protocol.datagramReceived(data, addr[:2])

    def connectionLost(self, reason: Any) -> None:
        """The reactor dropped us (shutdown): close."""
        self._close()

    def logPrefix(self) -> str:
        """The log system of this port's events."""
        return "dns"

    # IUDPTransport / IListeningPort

    def write(self, packet: bytes, addr: tuple[str, int] | None = None) -> None:
        """Send one datagram; a send that fails is like one lost on the way."""
        try:
            self.socket.sendto(packet, addr)
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                raise error.MessageLengthError("message too long") from None

    def getHost(self):
        """The bound address."""
        host, port = self.socket.getsockname()[:2]
        kind = IPv6Address if self.socket.family == socket.AF_INET6 else IPv4Address
        return kind("UDP", host, port)

    def stopListening(self):
        """Stop reading and close the socket; a Deferred that has fired."""
        self._close()
        return succeed(None)

    def _close(self) -> None:
        if not self._open:
            return
        self._open = False
        self.reactor.removeReader(self)
        self.socket.close()
        self._fd = -1
        self.protocol.doStop()

    def connect(self, host: str, port: int) -> None:
        """Not used by the resolver."""
        raise NotImplementedError("connected UDP is not supported here")

    def getBroadcastAllowed(self) -> bool:
        """Broadcast is never used for DNS."""
        return False

    def setBroadcastAllowed(self, enabled: bool) -> None:
        """Broadcast is never used for DNS."""
        raise NotImplementedError("broadcast is not supported here")


class QuietDatagramReactor:
    """A reactor whose C{listenUDP} makes L{QuietDatagramPort}s; all else is the real one."""

    def __init__(self, reactor: Any):
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = MAX_PACKET) -> QuietDatagramPort:
        """Bind a quiet UDP port (L{error.CannotListenError} when taken)."""
        listening = QuietDatagramPort(self._reactor, port, protocol, interface, maxPacketSize)
        listening.startListening()
        return listening
