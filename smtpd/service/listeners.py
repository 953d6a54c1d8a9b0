# -*- test-case-name: tests.test_lifecycle -*-
"""
The listening endpoints, bound before anything else starts: in
C{privilegedStartService} (as root, before twistd drops privileges), all of
them or none. A failure to bind is a L{StartupError}: twistd removes its
pidfile and the process exits 1 before the queue is touched.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from smtpd.inbound.proxy import server_endpoint

log = Logger()


class StartupError(Exception):
    """The server cannot start; C{str()} is the one line that says why."""


class Listener:
    """
    One endpoint string and the factory it serves; C{port} once bound.
    A C{haproxy:tcp:...} string reads a PROXY protocol header from the
    C{proxies} networks first (L{smtpd.inbound.proxy}).
    """

    def __init__(self, reactor: Any, description: str, factory: Any, proxies: Any = ()):
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.proxies = tuple(proxies)
        self.port: Any = None

    def bind(self) -> None:
        """
        Listen now.

        @raise StartupError: when the endpoint cannot be bound.
        """
        outcome: list[Any] = []
        d = server_endpoint(self.reactor, self.description, self.proxies).listen(self.factory)
        d.addBoth(outcome.append)
        if not outcome:
            raise StartupError(f"Cannot listen on {self.description}: it did not bind at once")
        if isinstance(outcome[0], Failure):
            raise StartupError(
                f"Cannot listen on {self.description}: {outcome[0].getErrorMessage()}"
            )
        self.port = outcome[0]
        log.info("Listening on {endpoint} ({address})", endpoint=self.description,
                 address=self.shown_address())

    def close(self) -> Any:
        """Stop listening; a Deferred (or None)."""
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def address(self) -> tuple[str, int] | None:
        """The (host, port) actually bound, once listening; None for UNIX sockets."""
        if self.port is None:
            return None
        host = self.port.getHost()
        if not hasattr(host, "port"):
            return None
        return (host.host, host.port)

    def shown_address(self) -> str:
        """The bound address for people: C{127.0.0.1:2525}, or the socket path."""
        if self.port is None:
            return "-"
        host = self.port.getHost()
        if hasattr(host, "port"):
            return f"{host.host}:{host.port}"
        return str(getattr(host, "name", host))


class ListenerGroup(service.Service):
    """
    Every listener of the server: bound together in L{privilegedStartService},
    closed together on stop.

    @param then: called once all are bound (the mailroot lock is taken
        there); may raise L{StartupError}, which closes them again.
    """

    def __init__(self, listeners: list[Listener], then: Any = None):
        self.listeners = listeners
        self._then = then
        self._bound = False

    def privilegedStartService(self) -> None:
        """Bind every endpoint, or none; then run C{then}."""
        service.Service.privilegedStartService(self)
        self.bind()

    def bind(self) -> None:
        """
        Bind every endpoint (once), then run C{then}.

        @raise StartupError: naming the first endpoint that failed, after
            closing those already bound.
        """
        if self._bound:
            return
        try:
            for listener in self.listeners:
                listener.bind()
            if self._then is not None:
                self._then()
        except StartupError as e:
            log.error("{why}", why=str(e))
            for listener in self.listeners:
                listener.close()
            raise
        self._bound = True

    def startService(self) -> None:
        """Bind now if twistd did not call L{privilegedStartService} (tests)."""
        self.bind()
        service.Service.startService(self)

    def stopService(self) -> Any:
        """Stop listening (sessions already open are the inbound service's)."""
        service.Service.stopService(self)
        self._bound = False
        return gatherResults([maybeDeferred(l.close) for l in self.listeners])

    def addresses(self) -> set[tuple[str, int]]:
        """The (host, port) pairs bound now."""
        return {a for a in (l.address() for l in self.listeners) if a is not None}
