# -*- test-case-name: tests.test_lmtp -*-
"""
The LMTP delivery agent (RFC 2033) for C{type = lmtp} domains: hands the
message to a mail store such as Dovecot's C{lmtp} service over a UNIX or TCP
socket. After the message the store answers once for each recipient it
accepted, so each recipient gets its own outcome: delivered (2xx), deferred
(4xx, e.g. over quota with a temporary failure) or bounced (5xx).

L{LMTPClient} is the protocol (LHLO, MAIL, RCPT..., DATA, one reply per
accepted recipient; PIPELINING when offered; the message streamed from its
file a chunk at a time and dot-stuffed on the way). A store that offers
CHUNKING (RFC 3030) gets the message as BDAT chunks instead, the outbound
SMTP client's L{MessageStreaming}, and answers BDAT LAST once per accepted
recipient; a BODY=BINARYMIME message goes only that way, byte for byte, to a
store that also offers BINARYMIME. L{LMTPDelivery} is the
L{IDeliveryAgent}: it keeps a few connections per store open for the next
messages.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import FileSender, LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from smtpd.config.endpoints import lmtp_target_parts
from smtpd.delivery.streaming import MessageStreaming
from smtpd.delivery.wire import (
    DotStuffer,
    SessionError,
    OutboundMessage,
    enhanced_status,
    mail_command,
    rcpt_command,
    reply_text,
    safe_address,
)
from smtpd.delivery.interfaces import IDeliveryAgent
from smtpd.mail.envelope import DeliveryStatus, Envelope, Recipient
from smtpd.mail.intl import needs_smtputf8

log = Logger()

MAX_REPLY_LINES = 100
IDLE_TIMEOUT = 10.0  # seconds an unused connection stays open


class LMTPError(Exception):
    """
    The session failed outside any one recipient's answer (no connection, a
    refusing greeting, LHLO or MAIL or DATA refused, lost, timed out).
    """

    def __init__(self, code: int, reply: str, status: str = ""):
        super().__init__(reply)
        self.code = code
        self.reply = reply
        self.status = status or enhanced_status(code, reply)


class StaleSession(LMTPError):
    """A reused session turned out closed before the transaction began."""


@dataclass(frozen=True)
class Reply:
    """One LMTP reply: its code and its text lines (without the code)."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The reply as one printable line, code first."""
        return reply_text(self.code, "\n".join(self.lines))


class LMTPClient(MessageStreaming, LineReceiver, TimeoutMixin):
    """
    One LMTP session. Commands may be pipelined: replies are matched to the
    waiting commands in order. Each call of L{transaction} carries one
    message; a session carries any number of them one after another.

    @param hostname: the name given in LHLO.
    @param clock: the C{IReactorTime} for the timeout.
    @param timeout: seconds without progress before the session is dropped.
    @param where: the store's name for replies and logs.
    """

    delimiter = b"\r\n"
    MAX_LENGTH = 4096

    def __init__(self, hostname: str, clock: Any, timeout: float, where: str):
        self.hostname = hostname
        self.clock = clock
        self.timeout = timeout
        self.where = where
        self.extensions: dict[str, str] = {}
        self.transactions = 0
        self.error: LMTPError | None = None
        self._waiting: deque[Deferred[Reply]] = deque()
        self._lines: list[str] = []
        self.greeting: Deferred[Reply] = self._expect()

    # -- TimeoutMixin uses the injected clock -------------------------------

    def callLater(self, period: float, func: Any) -> Any:
        """Schedule on the injected clock."""
        return self.clock.callLater(period, func)

    def timeoutConnection(self) -> None:
        """No progress for C{timeout} seconds: drop the session."""
        self._fail(LMTPError(451, f"451 4.4.2 {self.where}: no answer in {self.timeout:g}s"))
        self.transport.abortConnection()

    # -- replies ------------------------------------------------------------

    def connectionMade(self) -> None:
        """Wait for the greeting."""
        if ITCPTransport.providedBy(self.transport):
            # Commands and the final dot are small writes that wait for an
            # answer: Nagle's algorithm against the store's delayed ACK
            # would hold each of them ~40 ms.
            self.transport.setTcpNoDelay(True)
        self.setTimeout(self.timeout)

    def lineReceived(self, line: bytes) -> None:
        """Collect the lines of one reply; hand it to the oldest waiting command."""
        self.resetTimeout()
        text = line.decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in ("", " ", "-"):
            return self._protocolError(f"unreadable reply line {text[:60]!r}")
        self._lines.append(text[4:])
        if len(self._lines) > MAX_REPLY_LINES:
            return self._protocolError("reply too long")
        if text[3:4] == "-":
            return
        reply, self._lines = Reply(int(text[:3]), tuple(self._lines)), []
        if not self._waiting:
            if reply.code == 421:
                self._fail(LMTPError(421, reply.text))
                self.transport.loseConnection()
            return
        self._waiting.popleft().callback(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A reply line longer than any server sends."""
        self._protocolError("reply line too long")

    def _protocolError(self, why: str) -> None:
        self._fail(LMTPError(451, f"451 4.5.0 {self.where}: {why}"))
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        """Every command still waiting fails."""
        self.setTimeout(None)
        self._fail(LMTPError(451, f"451 4.4.2 {self.where}: connection lost"))

    def _fail(self, error: LMTPError) -> None:
        if self.error is None:
            self.error = error
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(self.error)

    def _expect(self) -> Deferred[Reply]:
        """A Deferred for the next reply."""
        d: Deferred[Reply] = Deferred()
        if self.error is not None:
            d.errback(self.error)
        else:
            self._waiting.append(d)
        return d

    def expect(self, phase: str = "") -> Deferred[Reply]:
        """A Deferred for the next reply (L{MessageStreaming}'s name; C{phase} is not kept)."""
        return self._expect()

    def write(self, data: bytes) -> None:
        """Send C{data} as it is (L{MessageStreaming}'s BDAT chunks)."""
        self.transport.write(data)

    def fail(self, error: SessionError, abort: bool = False) -> None:
        """
        The session is over (L{MessageStreaming}: the message could not be
        read): whatever waits fails with C{error}, then the connection closes.
        """
        self._fail(LMTPError(error.code, error.reply, error.status))
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def command(self, line: str) -> Deferred[Reply]:
        """Send one command line; a Deferred of its reply."""
        d = self._expect()
        if self.error is None:
            self.sendLine(line.encode("utf-8"))
        return d

    @property
    def usable(self) -> bool:
        """Whether another transaction may use this session."""
        return self.error is None and self.connected

    # -- the session --------------------------------------------------------

    async def hello(self) -> None:
        """The greeting and LHLO (RFC 2033 4.1); records the extensions."""
        greeting = await self.greeting
        if greeting.code != 220:
            raise LMTPError(greeting.code, greeting.text)
        reply = await self.command(f"LHLO {self.hostname}")
        if reply.code != 250:
            raise LMTPError(reply.code, reply.text)
        for line in reply.lines[1:]:
            keyword, _, value = line.strip().partition(" ")
            self.extensions[keyword.upper()] = value

    async def transaction(self, envelope: Envelope, recipients: Sequence[tuple[str, Recipient]],
                          source: Any) -> list[Reply]:
        """
        Deliver the message of C{source} (an C{IMessageSource}) to
        C{recipients} (C{(address, Recipient)} pairs): one reply per recipient,
        the RCPT refusal or the store's answer after the data.

        @raise LMTPError: when the transaction as a whole fails.
        """
        if self.transactions:
            try:
                reset = await self.command("RSET")
            except LMTPError as e:
                # The store closed the idle session: nothing of this message
                # was sent, a new connection may take it.
                raise StaleSession(e.code, e.reply) from None
            if reset.code == 421:  # it was closing the session
                self._fail(StaleSession(reset.code, reset.text))
                self.transport.loseConnection()
                raise StaleSession(reset.code, reset.text)
            if reset.code != 250:
                raise LMTPError(reset.code, reset.text)
        self.transactions += 1
        rcpt_replies = await self._envelope(envelope, recipients, source)
        accepted = [i for i, r in enumerate(rcpt_replies) if 200 <= r.code < 300]
        if not accepted:
            return rcpt_replies
        if "CHUNKING" in self.extensions:
            answers = await self._chunks(envelope, source, len(accepted))
        else:
            answers = await self._data(source, len(accepted))
            if isinstance(answers, Reply):
                return [answers if i in accepted else r for i, r in enumerate(rcpt_replies)]
        results = list(rcpt_replies)
        for i, answer in zip(accepted, answers):
            try:
                results[i] = await answer
            except LMTPError as e:
                results[i] = Reply(e.code, (e.reply[4:],))
        return results

    async def _data(self, source: Any, count: int) -> Reply | list[Deferred[Reply]]:
        """
        DATA and the dot-stuffed message: the C{count} answers to come (RFC
        2033 4.2: one per accepted recipient, in RCPT order), or the refusal
        of DATA itself.
        """
        data = await self.command("DATA")
        if data.code != 354:
            return data
        answers = [self._expect() for _ in range(count)]
        try:
            await self._send_message(source)
        except BaseException:
            # The message could not be read: this session is in the middle of
            # DATA and cannot be used again.
            self._fail(LMTPError(451, f"451 4.3.0 {self.where}: message unreadable"))
            self.transport.abortConnection()
            for answer in answers:
                answer.addErrback(lambda f: None)
            raise
        return answers

    async def _chunks(self, envelope: Envelope, source: Any, count: int
                      ) -> list[Deferred[Reply]]:
        """
        The message as BDAT chunks (RFC 3030), byte for byte for BINARYMIME:
        the C{count} answers to BDAT LAST. A refused chunk is every
        recipient's answer, and ends the session: after pipelined chunks
        nobody knows how many replies are still to come.
        """
        binary = envelope.body.upper() == "BINARYMIME"
        refused, finals = await self.send_chunks(
            source, binary, "PIPELINING" in self.extensions, count)
        if refused is None:
            return finals
        for d in finals:
            d.addErrback(lambda f: None)
        self._fail(LMTPError(refused.code, refused.text))
        self.transport.loseConnection()
        return [succeed(refused) for _ in range(count)]

    async def _envelope(self, envelope: Envelope, recipients: Sequence[tuple[str, Recipient]],
                        source: Any) -> list[Reply]:
        """
        MAIL and the RCPTs, pipelined when the store offers it; the RCPT
        replies. A BINARYMIME message goes only to a store that offers
        CHUNKING and BINARYMIME (else 5.6.3: DATA cannot carry it, and it is
        not converted), and addresses with UTF-8 local parts only to a store
        that offers SMTPUTF8 (5.6.7).
        """
        binary = envelope.body.upper() == "BINARYMIME"
        if binary and not {"CHUNKING", "BINARYMIME"} <= self.extensions.keys():
            raise LMTPError(554, "554 5.6.3 Conversion required but not supported: "
                                 "the mail store does not take BINARYMIME")
        addresses = [envelope.sender, *(address for address, _ in recipients)]
        smtputf8 = any(needs_smtputf8(a) for a in addresses)
        if smtputf8 and "SMTPUTF8" not in self.extensions:
            raise LMTPError(550, "550 5.6.7 Non-ASCII addresses need SMTPUTF8, "
                                 "which the mail store does not offer")
        if not safe_address(envelope.sender, smtputf8):
            raise LMTPError(553, "553 5.1.7 bad sender address syntax")
        if not all(safe_address(address, smtputf8) for address, _ in recipients):
            raise LMTPError(553, "553 5.1.3 bad recipient address syntax")
        message = OutboundMessage(
            envelope.sender, tuple(r for _, r in recipients), source, envelope.ret,
            envelope.envid, envelope.body == "8BITMIME", binary=binary, smtputf8=smtputf8,
        )
        mail = mail_command(message, source.size, self.extensions).decode("utf-8")
        rcpts = [rcpt_command(dataclasses.replace(r, address=address), self.extensions, smtputf8)
                 .decode("utf-8") for address, r in recipients]
        if "PIPELINING" in self.extensions:
            pending = [self.command(mail)] + [self.command(line) for line in rcpts]
            outcomes = await DeferredList(pending, consumeErrors=True)
            for ok, value in outcomes:
                if not ok:
                    value.raiseException()
            replies = [value for _, value in outcomes]
            mail_reply, rcpt_replies = replies[0], replies[1:]
        else:
            mail_reply = await self.command(mail)
            rcpt_replies = []
        if mail_reply.code != 250:
            raise LMTPError(mail_reply.code, mail_reply.text)
        if not rcpt_replies:
            rcpt_replies = [await self.command(line) for line in rcpts]
        return rcpt_replies

    async def _send_message(self, source: Any) -> None:
        """Stream the message, dot-stuffed, then the final dot (RFC 5321 4.5.2)."""
        stuffer = DotStuffer()

        def transform(chunk: bytes) -> bytes:
            """One chunk of the file, dot-stuffed; the session is making progress."""
            self.resetTimeout()
            return stuffer.feed(chunk)

        with source.open() as f:
            try:
                await FileSender().beginFileTransfer(f, self.transport, transform)
            except Exception:
                # The transport stopped taking data: the session is lost, and
                # the waiting answers fail with the session's error.
                return
        if self.error is None:
            self.transport.write(stuffer.finish())

    def quit(self) -> None:
        """End the session politely."""
        if self.usable:
            self.command("QUIT").addErrback(lambda f: None)
        self.setTimeout(None)
        self.transport.loseConnection()


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
