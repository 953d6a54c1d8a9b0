# -*- test-case-name: tests.test_lmtp_bdat -*-
"""
One LMTP session (RFC 2033) with a mail store such as Dovecot's C{lmtp}
service, for the C{lmtp} delivery agent (L{smtpd.delivery.lmtp}).

L{LMTPClient} is the protocol: LHLO, MAIL, RCPT..., then the message and one
reply per accepted recipient; PIPELINING when offered. The message is
streamed from its file a chunk at a time: by DATA, dot-stuffed on the way,
or, to a store that offers CHUNKING (RFC 3030), as BDAT chunks through the
outbound SMTP client's L{MessageStreaming}, the store answering BDAT LAST
once per accepted recipient. A BODY=BINARYMIME message goes only that way,
byte for byte, to a store that also offers BINARYMIME.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import ITCPTransport
from twisted.protocols.basic import FileSender, LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from smtpd.delivery.streaming import MessageStreaming
from smtpd.delivery.wire import (
    DotStuffer,
    OutboundMessage,
    SessionError,
    enhanced_status,
    mail_command,
    rcpt_command,
    reply_text,
    safe_address,
)
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.intl import needs_smtputf8

MAX_REPLY_LINES = 100


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
