# -*- test-case-name: tests.test_directory_ldap -*-
"""
A small LDAP v3 client (RFC 4511) for the directory: connect (plain, ldaps or
StartTLS), simple bind, search. Messages are encoded and decoded by ldaptor's
C{pureldap}; the connection logic is ours because ldaptor's own client module
imports the global reactor at import time and starts TLS through it.

Every failure to get an answer (refused, reset, timed out, unreadable reply)
is a L{DirectoryUnavailable}; an answer the server gave is an L{LDAPResult}.
"""

from __future__ import annotations

from dataclasses import dataclass

from ldaptor.protocols import pureber, pureldap
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from smtpd.directory.interfaces import DirectoryUnavailable

# RFC 4511 4.1.9 result codes this module tells apart.
SUCCESS = 0
SIZE_LIMIT_EXCEEDED = 4
NO_SUCH_OBJECT = 32
INVALID_CREDENTIALS = 49

MAX_OUTSTANDING = 50

_FINAL_SEARCH = (pureldap.LDAPSearchResultEntry, pureldap.LDAPSearchResultReference)


@dataclass(frozen=True)
class LDAPResult:
    """The result of one operation: RFC 4511 result code and diagnostic text."""

    code: int
    message: str = ""


@dataclass(frozen=True)
class Entry:
    """One search result: its DN and attributes (lower-case names, text values)."""

    dn: str
    attributes: dict[str, tuple[str, ...]]

    def values(self, name: str) -> tuple[str, ...]:
        """The values of attribute C{name} (any case); empty when absent."""
        return self.attributes.get(name.lower(), ())


def _decoder() -> pureber.BERDecoderContext:
    """The BER context that reads whole LDAPMessages."""
    return pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        )
    )


def _text(value: bytes | str) -> str:
    """An LDAP string as text (LDAP strings are UTF-8)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _entry(response: pureldap.LDAPSearchResultEntry) -> Entry:
    """A search result entry as an L{Entry}."""
    attributes: dict[str, tuple[str, ...]] = {}
    for name, values in response.attributes:
        key = _text(name).lower()
        attributes[key] = attributes.get(key, ()) + tuple(_text(v) for v in values)
    return Entry(_text(response.objectName), attributes)


class LDAPClientProtocol(Protocol):
    """
    One LDAP connection: requests are multiplexed by message id; each
    request's Deferred fires with every response to it, the final one last.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self._buffer = b""
        self._next_id = 1
        self._pending: dict[int, tuple[defer.Deferred[list], list]] = {}
        self._decoder = _decoder()
        self.closed = False

    def connectionMade(self) -> None:
        """Requests are small writes that wait for an answer: no Nagle delay."""
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)

    def request(self, operation: pureldap.LDAPProtocolRequest) -> defer.Deferred[list]:
        """Send C{operation}; a Deferred of its responses (the final result last)."""
        if self.transport is None or self.closed:
            return defer.fail(DirectoryUnavailable(f"{self.where}: not connected"))
        message_id, self._next_id = self._next_id, self._next_id + 1
        d: defer.Deferred[list] = defer.Deferred()
        self._pending[message_id] = (d, [])
        self.transport.write(pureldap.LDAPMessage(operation, id=message_id).toWire())
        return d

    def dataReceived(self, data: bytes) -> None:
        """Decode every complete LDAPMessage and hand it to its request."""
        self._buffer += data
        while self._buffer:
            try:
                message, used = pureber.berDecodeObject(self._decoder, self._buffer)
            except pureber.BERExceptionInsufficientData:
                return
            except Exception:
                self.transport.abortConnection()
                return
            if used == 0:
                return
            self._buffer = self._buffer[used:]
            if message is not None:
                self._answer(message)

    def _answer(self, message: pureldap.LDAPMessage) -> None:
        """Record one response; fire its request when it is the final one."""
        pending = self._pending.get(message.id)
        if pending is None:
            return  # id 0: an unsolicited notice of disconnection follows
        d, responses = pending
        responses.append(message.value)
        if not isinstance(message.value, _FINAL_SEARCH):
            del self._pending[message.id]
            d.callback(responses)

    def connectionLost(self, reason: Failure) -> None:
        """Fail every request still waiting."""
        self.closed = True
        pending, self._pending = self._pending, {}
        for d, _ in pending.values():
            d.errback(DirectoryUnavailable(f"{self.where}: connection lost"))

    def close(self) -> None:
        """Unbind (RFC 4511 4.3) and close."""
        if self.transport is not None and not self.closed:
            message_id, self._next_id = self._next_id, self._next_id + 1
            self.transport.write(
                pureldap.LDAPMessage(pureldap.LDAPUnbindRequest(), id=message_id).toWire()
            )
            self.transport.loseConnection()


@dataclass(frozen=True)
class LDAPServer:
    """
    Where the directory is and how to reach it.

    @ivar host: host name or IP address.
    @ivar port: TCP port.
    @ivar tls: implicit TLS (ldaps://).
    @ivar starttls: upgrade a plain connection with the StartTLS operation.
    @ivar tls_options: the client TLS options (trust roots, host name check)
        for either kind of TLS.
    """

    host: str
    port: int
    tls: bool = False
    starttls: bool = False
    tls_options: IOpenSSLClientConnectionCreator | None = None

    @property
    def url(self) -> str:
        """The server as an LDAP URL, for messages."""
        return f"{'ldaps' if self.tls else 'ldap'}://{self.host}:{self.port}"


class LDAPConnection:
    """
    A connected, possibly encrypted LDAP session with request timeouts and
    at most L{MAX_OUTSTANDING} requests on the wire (OpenLDAP stops reading
    from a connection with more pending, 100 by default when anonymous).
    Obtain one with L{connect}.
    """

    def __init__(self, protocol: LDAPClientProtocol, clock: IReactorTime, timeout: float):
        self.protocol = protocol
        self.clock = clock
        self.timeout = timeout
        self._slots = defer.DeferredSemaphore(MAX_OUTSTANDING)

    @property
    def open(self) -> bool:
        """Whether the connection can still carry requests."""
        return not self.protocol.closed

    async def call(self, operation: pureldap.LDAPProtocolRequest) -> list:
        """Every response to C{operation}; a timeout closes the connection."""
        await self._slots.acquire()
        d = self.protocol.request(operation)
        d.addTimeout(self.timeout, self.clock)
        try:
            return await d
        except defer.TimeoutError:
            self.protocol.transport.abortConnection()
            raise DirectoryUnavailable(
                f"{self.protocol.where}: no answer in {self.timeout:g}s"
            ) from None
        finally:
            self._slots.release()

    async def bind(self, dn: str, password: str) -> LDAPResult:
        """A simple bind (RFC 4511 4.2) as C{dn}; the server's result."""
        request = pureldap.LDAPBindRequest(dn=dn.encode("utf-8"), auth=password.encode("utf-8"))
        final = (await self.call(request))[-1]
        return LDAPResult(final.resultCode, _text(final.errorMessage or b""))

    async def search(self, base: str, filter_object: pureldap.LDAPFilter,
                     attributes: tuple[str, ...], scope: int = pureldap.LDAP_SCOPE_wholeSubtree,
                     limit: int = 0) -> list[Entry]:
        """
        The entries under C{base} that match, with C{attributes}.

        @raise DirectoryUnavailable: when the search does not succeed.
        """
        request = pureldap.LDAPSearchRequest(
            baseObject=base.encode("utf-8"), scope=scope,
            derefAliases=pureldap.LDAP_DEREF_neverDerefAliases, sizeLimit=limit,
            timeLimit=max(1, int(self.timeout)), typesOnly=False, filter=filter_object,
            attributes=[a.encode("ascii") for a in attributes] or [b"1.1"],
        )
        responses = await self.call(request)
        final = responses[-1]
        if final.resultCode == NO_SUCH_OBJECT and scope == pureldap.LDAP_SCOPE_baseObject:
            return []  # the entry asked for is gone (a missing base is an error)
        if final.resultCode not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
            raise DirectoryUnavailable(
                f"{self.protocol.where}: search failed ({final.resultCode} "
                f"{_text(final.errorMessage or b'')})"
            )
        return [_entry(r) for r in responses if isinstance(r, pureldap.LDAPSearchResultEntry)]

    async def starttls(self, options: IOpenSSLClientConnectionCreator) -> None:
        """Upgrade to TLS with the StartTLS extended operation (RFC 4511 4.14)."""
        final = (await self.call(pureldap.LDAPStartTLSRequest()))[-1]
        if final.resultCode != SUCCESS:
            raise DirectoryUnavailable(
                f"{self.protocol.where}: StartTLS refused ({final.resultCode})"
            )
        self.protocol.transport.startTLS(options)

    def close(self) -> None:
        """Unbind and close."""
        self.protocol.close()


async def connect(reactor, server: LDAPServer, timeout: float,
                  clock: IReactorTime | None = None) -> LDAPConnection:
    """
    A new connection to C{server}, encrypted as it asks; requests time out
    after C{timeout} seconds of C{clock} (the reactor by default).

    @raise DirectoryUnavailable: when it cannot be made.
    """
    endpoint = HostnameEndpoint(reactor, server.host, server.port, timeout=timeout)
    if server.tls:
        endpoint = wrapClientTLS(server.tls_options, endpoint)
    factory = Factory.forProtocol(lambda: LDAPClientProtocol(server.url))
    try:
        protocol = await endpoint.connect(factory)
    except Exception as e:
        raise DirectoryUnavailable(f"{server.url}: cannot connect: {e}") from e
    connection = LDAPConnection(protocol, clock or reactor, timeout)
    if server.starttls and not server.tls:
        await connection.starttls(server.tls_options)
    return connection
