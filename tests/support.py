# -*- test-case-name: tests.test_relay -*-
"""
Shared test fixtures for outbound delivery, over real loopback sockets:

* L{start_dns_server}: an authoritative twisted.names server with in-memory
  zones (MX, A, AAAA, null MX, NXDOMAIN, SERVFAIL) that counts its queries;
* L{start_smtp_sink} / L{start_smtp_sinks}: recording SMTP servers whose replies
  a test scripts per stage and per recipient, on 127.0.0.x sharing one port;
* L{CertificateAuthority}: a throw-away certificate authority for STARTTLS tests;
  L{broken_tls_options}: a STARTTLS whose handshake always fails.

Every fixture registers its own cleanup on the test case.
"""

from __future__ import annotations

import base64
import datetime
import re
import time
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet import ssl
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.names import authority, dns, server
from twisted.protocols.basic import LineReceiver


# ---------------------------------------------------------------- DNS server


def mx(preference: int, name: str, ttl: int = 300) -> dns.Record_MX:
    """An MX record; C{name} "" makes the null MX of RFC 7505 with preference 0."""
    return dns.Record_MX(preference, name.encode("ascii"), ttl=ttl)


def a(address: str, ttl: int = 300) -> dns.Record_A:
    """An A record."""
    return dns.Record_A(address, ttl=ttl)


def aaaa(address: str, ttl: int = 300) -> dns.Record_AAAA:
    """An AAAA record."""
    return dns.Record_AAAA(address, ttl=ttl)


class _MemoryAuthority(authority.FileAuthority):
    """An authority for one zone whose records the test supplies."""

    def __init__(self, origin: str, records: dict[str, list[Any]]):
        self._origin = origin.lower()
        self._zone = records
        authority.FileAuthority.__init__(self, self._origin)

    def loadFile(self, filename: str) -> None:
        origin = self._origin.encode("ascii")
        soa = dns.Record_SOA(
            mname=b"ns." + origin,
            rname=b"hostmaster." + origin,
            serial=1,
            refresh=300,
            retry=60,
            expire=600,
            minimum=60,
            ttl=60,
        )
        self.soa = (origin, soa)
        self.records = {origin: [soa]}
        for name, records in self._zone.items():
            key = name.lower().rstrip(".").encode("ascii")
            self.records.setdefault(key, []).extend(records)


class _CountingDNSFactory(server.DNSServerFactory):
    """A DNS server that records every query and answers SERVFAIL for some names."""

    def __init__(self, authorities: list[Any], queries: list, servfail: set[str],
                 truncate: set[str] = frozenset(), authenticated: bool = False,
                 insecure: set[str] = frozenset()):
        server.DNSServerFactory.__init__(self, authorities=authorities)
        self.queries = queries
        self.servfail = servfail
        self.truncate = truncate
        self.transports: list[str] = []
        self.authenticated = authenticated
        self.insecure = insecure

    def sendReply(self, protocol: Any, message: dns.Message, address: Any) -> None:
        """Send C{message}, with the AD bit when this server plays a validating resolver."""
        names = {q.name.name.decode("ascii").lower() for q in message.queries}
        message.authenticData = self.authenticated and not names & self.insecure
        server.DNSServerFactory.sendReply(self, protocol, message, address)

    def handleQuery(self, message: dns.Message, protocol: Any, address: Any) -> Any:
        query = message.queries[0]
        name = query.name.name.decode("ascii").lower()
        self.queries.append((name, dns.QUERY_TYPES.get(query.type, query.type)))
        self.transports.append("tcp" if address is None else "udp")
        if address is not None and name in self.truncate:
            # Over UDP: "the answer does not fit" (TC), no records; TCP answers.
            response = dns.Message(id=message.id, answer=1, auth=1, trunc=1,
                                   recDes=message.recDes, recAv=1)
            response.queries = message.queries
            response.timeReceived = message.timeReceived
            self.sendReply(protocol, response, address)
            return defer.succeed(None)
        if any(name == s or name.endswith("." + s) for s in self.servfail):
            response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
            self.sendReply(protocol, response, address)
            return defer.succeed(None)
        return server.DNSServerFactory.handleQuery(self, message, protocol, address)


class DNSServerAddress(tuple):
    """
    C{(host, port)} of a test DNS server; C{.queries} lists every query it
    received as C{(name, type)}, e.g. C{("example.test", "MX")}.
    """

    queries: list[tuple[str, str]]
    transports: list[str]

    def query_count(self, rtype: str | None = None) -> int:
        """How many queries arrived (of one type, e.g. C{"MX"})."""
        return sum(1 for _, t in self.queries if rtype is None or t == rtype)


def start_dns_server(
    testcase: Any,
    zones: dict[str, dict[str, list[Any]]],
    servfail: tuple[str, ...] = (),
    truncate: tuple[str, ...] = (),
    authenticated: bool = False,
    interface: str = "127.0.0.1",
    insecure: tuple[str, ...] = (),
    port: int = 0,
) -> DNSServerAddress:
    """
    Run an authoritative DNS server on 127.0.0.1 (UDP and TCP on one port).

    @param zones: C{{origin: {name: [records]}}}, records from L{mx}, L{a},
        L{aaaa} or L{twisted.names.dns}. A name under an origin that has no
        records answers NXDOMAIN; a name with records but none of the asked
        type answers NODATA.
    @param servfail: names (and their subdomains) answered with SERVFAIL.
    @param truncate: names answered over UDP with TC set and no records (the
        answer is only given over TCP).
    @param authenticated: set the AD bit in every answer, as a validating
        resolver does for DNSSEC-secure data (for DANE).
    @param insecure: names (exactly) answered without the AD bit even when
        C{authenticated} (data from an unsigned zone).
    @param interface: the loopback address to listen on instead.
    @param port: the port to listen on (53, for resolvers that cannot be
        told a port) instead of a free one.
    @return: the address, with the list of queries received (and
        C{transports}: "udp" or "tcp" for each).
    """
    queries: list[tuple[str, str]] = []
    authorities = [_MemoryAuthority(origin, records) for origin, records in zones.items()]
    factory = _CountingDNSFactory(authorities, queries, set(servfail), set(truncate),
                                  authenticated, {n.lower() for n in insecure})
    wanted = port
    for _ in range(20 if not wanted else 1):
        udp = reactor.listenUDP(wanted, dns.DNSDatagramProtocol(factory), interface=interface)
        port = udp.getHost().port
        try:
            tcp = reactor.listenTCP(port, factory, interface=interface)
        except CannotListenError:
            udp.stopListening()
            continue
        testcase.addCleanup(udp.stopListening)
        testcase.addCleanup(tcp.stopListening)
        testcase.addCleanup(_close_connections, factory)
        address = DNSServerAddress((interface, port))
        address.queries = queries
        address.transports = factory.transports
        return address
    raise RuntimeError("no free port pair for the test DNS server")


def _close_connections(factory: server.DNSServerFactory) -> defer.Deferred:
    """
    Close the TCP connections of a test DNS server (resolvers keep theirs
    open), and give the clients a moment to see it.
    """
    for protocol in list(factory.connections):
        protocol.transport.abortConnection()
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(0.01 if factory.connections else 0, d.callback, None)
    return d


class _BlackHole(DatagramProtocol):
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Never answer."""


def start_silent_dns_server(testcase: Any) -> tuple[str, int]:
    """A UDP port on 127.0.0.1 that swallows DNS queries: every query times out."""
    port = reactor.listenUDP(0, _BlackHole(), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return ("127.0.0.1", port.getHost().port)


# ---------------------------------------------------------------- SMTP sink


@dataclass
class SinkScript:
    """
    How a sink answers. Replies are full lines, C{"550 5.1.1 no such user"};
    C{None} for L{greeting} or L{end_of_data} means never answer.

    @ivar extensions: EHLO keywords beyond SIZE, DSN, STARTTLS and AUTH.
    @ivar size: advertise C{SIZE n} (0: C{SIZE} without limit; None: not at all).
    @ivar tls: server TLS options; when set, STARTTLS is offered.
    @ivar auth: C{{login: password}}; when set, AUTH is offered with
        L{auth_mechanisms} (PLAIN and LOGIN are implemented).
    @ivar rcpt: replies to RCPT by address (lower case); others get L{rcpt_ok}.
    @ivar keep_data: whether messages keep their data; when not, only its
        size is counted (L{SinkMessage.size}), for messages too big to hold.
    @ivar drop_in_data: abort the connection as soon as message data arrives.
    @ivar reset_after_data: record the message at the final dot, then abort
        the connection (a reset) instead of answering.
    @ivar chunking: offer CHUNKING and take BDAT (RFC 3030); a chunk is
        answered L{bdat_ok}, the last one L{end_of_data}.
    """

    name: str = "sink.test"
    greeting: str | None = "220 {name} ESMTP sink"
    ehlo: str | None = None
    helo: str = "250 {name}"
    extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES")
    size: int | None = None
    dsn: bool = False
    tls: Any = None
    auth: dict[str, str] | None = None
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    mail: str = "250 2.1.0 Ok"
    rcpt: dict[str, str] = field(default_factory=dict)
    rcpt_ok: str = "250 2.1.5 Ok"
    data: str = "354 End data with <CR><LF>.<CR><LF>"
    rset: str = "250 2.0.0 Ok"
    end_of_data: str | None = "250 2.0.0 Ok: queued"
    keep_data: bool = True
    drop_in_data: bool = False
    reset_after_data: bool = False
    chunking: bool = False
    bdat_ok: str = "250 2.0.0 {count} octets received"


@dataclass
class SinkMessage:
    """
    One transaction that reached the end of DATA.

    @ivar mail: the MAIL command line as received.
    @ivar sender: the reverse-path inside the angle brackets.
    @ivar rcpt: every RCPT command line of the transaction, as received.
    @ivar recipients: the forward-paths the sink accepted.
    @ivar raw: the DATA stream as on the wire, final C{.CRLF} included.
    @ivar data: the message after dot-unstuffing: everything before the final
        dot line, so it ends with the CRLF that precedes that line.
    @ivar size: the octets of the DATA stream, final C{.CRLF} included.
    @ivar chunks: for BDAT, the size of each chunk in order.
    @ivar received_at: C{time.monotonic()} when the end of the data came in,
        just before the sink answered it.
    """

    helo: str
    tls: bool
    auth: str | None
    mail: str
    sender: str
    rcpt: list[str]
    recipients: list[str]
    raw: bytes = b""
    data: bytes = b""
    size: int = 0
    chunks: list[int] = field(default_factory=list)
    received_at: float = 0.0


def _path(argument: str) -> str:
    match = re.match(r"\s*<([^>]*)>", argument)
    return match.group(1) if match else argument.strip()


def unstuff(raw: bytes) -> bytes:
    """The message carried by a DATA stream (RFC 5321 4.5.2): the final dot line removed."""
    body = raw[: -len(b".\r\n")]
    lines = body.split(b"\r\n")
    return b"\r\n".join(x[1:] if x.startswith(b".") else x for x in lines)


class SinkSession(LineReceiver):
    """One SMTP server session of a L{SmtpSink}."""

    delimiter = b"\r\n"
    MAX_LENGTH = 100000

    def __init__(self, sink: SmtpSink):
        self.sink = sink
        self.script = sink.script
        self.helo = ""
        self.tls = False
        self.auth: str | None = None
        self.current: SinkMessage | None = None
        self._raw = b""
        self._counted = 0
        self._tail = b""
        self._auth_state: tuple[str, ...] | None = None
        self._bdat: list | None = None
        self.greeted = False

    def reply(self, line: str) -> None:
        self.sendLine(line.format(name=self.script.name).encode("utf-8"))

    def connectionMade(self) -> None:
        self.sink.connected(self)
        if self.script.greeting is not None:
            self.greeted = self.script.greeting.startswith("2")
            self.reply(self.script.greeting)

    def connectionLost(self, reason: Any = None) -> None:
        self.sink.disconnected(self)

    def dataReceived(self, data: bytes) -> None:
        """Record the command lines that came in one read (a pipelined flight)."""
        before = len(self.sink.commands)
        super().dataReceived(data)
        batch = self.sink.commands[before:]
        if batch:
            self.sink.batches.append(batch)

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        self.sink.commands.append(text)
        if self._auth_state is not None:
            return self._auth_step(text)
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        if verb == "QUIT":
            self.reply("221 2.0.0 Bye")
            self.transport.loseConnection()
            return
        if not self.greeted:
            self.reply("503 5.5.1 Not greeted")
            return
        handler = getattr(self, "smtp_" + verb, None)
        if handler is None:
            self.reply("500 5.5.1 Unknown command")
            return
        handler(argument)

    def smtp_EHLO(self, argument: str) -> None:
        self.helo = argument
        self.current = None
        if self.script.ehlo is not None:
            self.reply(self.script.ehlo)
            return
        lines = [self.script.name] + list(self.script.extensions)
        if self.script.size is not None:
            lines.append(f"SIZE {self.script.size}" if self.script.size else "SIZE")
        if self.script.dsn:
            lines.append("DSN")
        if self.script.chunking:
            lines.append("CHUNKING")
        if self.script.tls is not None and not self.tls:
            lines.append("STARTTLS")
        if self.script.auth is not None:
            lines.append("AUTH " + " ".join(self.script.auth_mechanisms))
        for line in lines[:-1]:
            self.reply("250-" + line)
        self.reply("250 " + lines[-1])

    def smtp_HELO(self, argument: str) -> None:
        self.helo = argument
        self.current = None
        self.reply(self.script.helo)

    def smtp_STARTTLS(self, argument: str) -> None:
        if self.script.tls is None or self.tls:
            self.reply("502 5.5.1 No TLS")
            return
        self.reply("220 2.0.0 Ready to start TLS")
        self.transport.startTLS(self.script.tls)
        self.tls = True
        self.helo = ""
        self.current = None

    def smtp_AUTH(self, argument: str) -> None:
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if self.script.auth is None or mechanism not in self.script.auth_mechanisms:
            self.reply("504 5.5.4 Unrecognized authentication type")
            return
        if mechanism == "PLAIN" and initial:
            return self._check_plain(initial)
        self._auth_state = (mechanism,)
        self.reply("334 " if mechanism == "PLAIN" else "334 VXNlcm5hbWU6")

    def _auth_step(self, text: str) -> None:
        state, self._auth_state = self._auth_state, None
        if state == ("PLAIN",):
            return self._check_plain(text)
        if state == ("LOGIN",):
            self._auth_state = ("LOGIN", base64.b64decode(text).decode("utf-8"))
            self.reply("334 UGFzc3dvcmQ6")
            return
        self._authenticated(state[1], base64.b64decode(text).decode("utf-8"))

    def _check_plain(self, encoded: str) -> None:
        _, user, password = base64.b64decode(encoded).decode("utf-8").split("\0")
        self._authenticated(user, password)

    def _authenticated(self, user: str, password: str) -> None:
        if self.script.auth.get(user) == password:
            self.auth = user
            self.reply("235 2.7.0 Authentication successful")
        else:
            self.reply("535 5.7.8 Authentication credentials invalid")

    def smtp_MAIL(self, argument: str) -> None:
        if not self.helo:
            self.reply("503 5.5.1 EHLO first")
            return
        if not argument.upper().startswith("FROM:"):
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        if not self.script.mail.startswith("2"):
            self.reply(self.script.mail)
            return
        self.current = SinkMessage(
            helo=self.helo,
            tls=self.tls,
            auth=self.auth,
            mail="MAIL " + argument,
            sender=_path(argument[5:]),
            rcpt=[],
            recipients=[],
        )
        self.reply(self.script.mail)

    def smtp_RCPT(self, argument: str) -> None:
        if self.current is None:
            self.reply("503 5.5.1 MAIL first")
            return
        address = _path(argument[3:])
        self.current.rcpt.append("RCPT " + argument)
        reply = self.script.rcpt.get(address.lower(), self.script.rcpt_ok)
        if reply.startswith("2"):
            self.current.recipients.append(address)
        self.reply(reply)

    def smtp_DATA(self, argument: str) -> None:
        if self.current is None or not self.current.recipients:
            self.reply("503 5.5.1 No valid recipients")
            return
        self.reply(self.script.data)
        if self.script.data.startswith("354"):
            self._raw = b""
            self.setRawMode()

    def smtp_BDAT(self, argument: str) -> None:
        match = re.fullmatch(r"(\d+)(?: +(LAST))?", argument, re.IGNORECASE)
        if not self.script.chunking or match is None:
            self.reply("501 5.5.4 Syntax: BDAT count [LAST]")
            return
        self._bdat = [int(match.group(1)), match.group(2) is not None]
        if self._bdat[0]:
            self._raw = b""
            self.setRawMode()
        else:
            self._chunk_done(b"")

    def _chunk_received(self, data: bytes) -> None:
        count = self._bdat[0]
        self._raw += data
        if len(self._raw) < count:
            return
        chunk, rest = self._raw[:count], self._raw[count:]
        self._raw = b""
        self._chunk_done(chunk)
        self.setLineMode(rest)

    def _chunk_done(self, chunk: bytes) -> None:
        """One BDAT chunk read: kept in the message, answered."""
        count, last = self._bdat
        self._bdat = None
        if self.current is None or not self.current.recipients:
            self.reply("503 5.5.1 No valid recipients")
            return
        self.current.chunks.append(count)
        self.current.raw += chunk
        self.current.data += chunk
        if last:
            self._received(len(self.current.raw))
        else:
            self.reply(self.script.bdat_ok.replace("{count}", str(count)))

    def rawDataReceived(self, data: bytes) -> None:
        if self._bdat is not None:
            return self._chunk_received(data)
        if self.script.drop_in_data:
            self.transport.abortConnection()
            return
        if not self.script.keep_data:
            return self._count(data)
        self._raw += data
        if self._raw.startswith(b".\r\n"):
            end = 3
        else:
            end = self._raw.find(b"\r\n.\r\n")
            if end < 0:
                return
            end += 5
        raw, rest = self._raw[:end], self._raw[end:]
        self._raw = b""
        message = self._received(len(raw))
        message.raw = raw
        message.data = unstuff(raw)
        self.setLineMode(rest)

    def _count(self, data: bytes) -> None:
        """Count a DATA stream without keeping it: only its last octets, to find its end."""
        window = self._tail + data
        if self._counted == 0 and window.startswith(b".\r\n"):
            end = 3
        else:
            end = window.find(b"\r\n.\r\n")
            if end < 0:
                self._counted += len(data)
                self._tail = window[-4:]
                return
            end += 5
        used = end - len(self._tail)
        size, self._counted, self._tail = self._counted + used, 0, b""
        self._received(size)
        self.setLineMode(data[used:])

    def _received(self, size: int) -> SinkMessage:
        """The end of a DATA stream of C{size} octets: record the message and answer."""
        message, self.current = self.current, None
        message.size = size
        message.received_at = time.monotonic()
        self.sink.messages.append(message)
        if self.script.reset_after_data:
            self.transport.abortConnection()
        elif self.script.end_of_data is not None:
            self.reply(self.script.end_of_data)
        return message

    def smtp_RSET(self, argument: str) -> None:
        self.current = None
        self.reply(self.script.rset)
        if self.script.rset.startswith("421"):
            self.transport.loseConnection()

    def smtp_NOOP(self, argument: str) -> None:
        self.reply("250 2.0.0 Ok")


class SmtpSink:
    """
    A recording SMTP server.

    @ivar host: the interface it listens on.
    @ivar port: its port.
    @ivar script: the L{SinkScript}; tests may change it between deliveries.
    @ivar messages: every L{SinkMessage} received, in order.
    @ivar commands: every command line received (all sessions, in order).
    @ivar batches: the command lines, grouped as they came in one read.
    @ivar connections: how many TCP connections were accepted.
    @ivar max_concurrent: the most sessions open at one time.
    """

    def __init__(self, host: str, script: SinkScript):
        self.host = host
        self.port = 0
        self.script = script
        self.messages: list[SinkMessage] = []
        self.commands: list[str] = []
        self.batches: list[list[str]] = []
        self.connections = 0
        self.max_concurrent = 0
        self.sessions: list[SinkSession] = []
        self._closed: list[defer.Deferred] = []
        self._connection_waiters: list[defer.Deferred] = []

    def connected(self, session: SinkSession) -> None:
        self.connections += 1
        self.sessions.append(session)
        self.max_concurrent = max(self.max_concurrent, len(self.sessions))
        waiters, self._connection_waiters = self._connection_waiters, []
        for d in waiters:
            d.callback(session)

    def disconnected(self, session: SinkSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        if not self.sessions:
            waiters, self._closed = self._closed, []
            for d in waiters:
                d.callback(None)

    def next_connection(self) -> defer.Deferred:
        """A Deferred that fires with the next session accepted."""
        d: defer.Deferred = defer.Deferred()
        self._connection_waiters.append(d)
        return d

    def all_closed(self) -> defer.Deferred:
        """A Deferred that fires when no session is open."""
        if not self.sessions:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._closed.append(d)
        return d

    def close_all(self) -> defer.Deferred:
        """Abort every open session; fires when they are gone."""
        for session in list(self.sessions):
            session.transport.abortConnection()
        return self.all_closed()


class _SinkFactory(Factory):
    def __init__(self, sink: SmtpSink, session: type[SinkSession] = SinkSession):
        self.sink = sink
        self.session = session

    def buildProtocol(self, addr: Any) -> SinkSession:
        session = self.session(self.sink)
        session.factory = self
        return session


def start_smtp_sink(
    testcase: Any, interface: str, port: int = 0, script: SinkScript | None = None,
    session: type[SinkSession] = SinkSession,
) -> SmtpSink:
    """
    Listen with a recording SMTP server on C{interface}:C{port} (0: any port);
    C{session} is the L{SinkSession} class of its connections.

    @raise CannotListenError: when the port is taken on that interface.
    """
    sink = SmtpSink(interface, script or SinkScript())
    listening = reactor.listenTCP(port, _SinkFactory(sink, session), interface=interface)
    sink.port = listening.getHost().port
    testcase.addCleanup(sink.close_all)
    testcase.addCleanup(listening.stopListening)
    return sink


def start_smtp_sinks(
    testcase: Any, interfaces: list[str], scripts: list[SinkScript | None] | None = None
) -> list[SmtpSink]:
    """
    Recording SMTP servers on several loopback addresses that share one port
    (as all MX hosts of a route share C{remote_port}); retried on another port
    when one is taken.
    """
    scripts = scripts or [None] * len(interfaces)
    for _ in range(20):
        started: list[SmtpSink] = []
        try:
            for interface, script in zip(interfaces, scripts):
                port = started[0].port if started else 0
                started.append(start_smtp_sink(testcase, interface, port, script))
        except CannotListenError:
            continue
        return started
    raise RuntimeError(f"no port free on all of {interfaces}")


# ---------------------------------------------------------------- TLS


def broken_tls_options() -> Any:
    """
    Server TLS options whose handshake always fails: no certificate, so no
    cipher suite to share with any client (a peer with broken TLS set-up).
    """
    return ssl.CertificateOptions()


class CertificateAuthority:
    """A certificate authority for tests, issuing certificates for host names."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ec, self._oid = x509, hashes, ec, NameOID
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtpd test CA")])
        self.certificate = (
            self._builder(name, name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def _builder(self, subject: Any, issuer: Any, public_key: Any) -> Any:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            self._x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(self._x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )

    def trust_root(self) -> Any:
        """The CA as a Twisted trust root (what C{client_tls} takes)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        pem = self.certificate.public_bytes(Encoding.PEM)
        return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem)])

    def ca_pem(self) -> bytes:
        """The CA certificate in PEM (for clients outside Twisted)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.certificate.public_bytes(Encoding.PEM)

    def server_pem(self, hostname: str) -> tuple[bytes, bytes]:
        """A new key and a certificate for C{hostname} issued by this CA, in PEM."""
        from cryptography.hazmat.primitives import serialization

        x509 = self._x509
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(self._oid.COMMON_NAME, hostname)])
        cert = (
            self._builder(subject, self.certificate.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
            .sign(self.key, self._hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, cert.public_bytes(serialization.Encoding.PEM)

    def server_options(self, hostname: str) -> Any:
        """Server TLS options with a certificate for C{hostname} issued by this CA."""
        key_pem, cert_pem = self.server_pem(hostname)
        return ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options()
