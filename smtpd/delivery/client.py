# -*- test-case-name: tests.test_client -*-
"""
The outbound SMTP client: one session with one remote host carrying any number
of mail transactions (RFC 5321), with EHLO and HELO fallback, STARTTLS per
policy (RFC 3207), AUTH PLAIN and LOGIN (RFC 4954), SIZE (RFC 1870),
BODY=8BITMIME (RFC 6152), DSN parameters (RFC 3461), PIPELINING (RFC 2920)
and CHUNKING (RFC 3030: BDAT toward hosts that offer it).

L{RelayClient} is the protocol: it reads replies (bounded in lines, octets
and time), sets the session up, and streams message data from disk with
flow control. L{smtpd.delivery.transaction} runs the mail transactions on it.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, NamedTuple

from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.protocols.basic import FileSender, LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from smtpd.delivery.handshake import set_up
from smtpd.delivery.tlsfailure import certificate_expired, lost_error
from smtpd.delivery.transaction import run_transaction
from smtpd.delivery.wire import (
    BdatChunker,
    DotStuffer,
    OutboundMessage,
    SessionError,
    enhanced_status,
    refusal,
    reply_text,
)
from smtpd.mail.envelope import DeliveryStatus
from smtpd.mail.source import CHUNK_SIZE, IMessageSource, held_data
from smtpd.util.directsend import send_at_once

TLS_POLICIES = ("none", "may", "encrypt", "verify", "dane")

# The most a host may send as one reply (RFC 5321 4.5.3.1.5: a reply line is at
# most 512 octets; EHLO replies are the longest in practice, a few dozen lines).
# Beyond either limit the session fails rather than hold the host's output.
MAX_REPLY_LINES = 100
MAX_REPLY_BYTES = 65536
MAX_REPLY_LINE = 4096

# A message held in memory up to this size goes in one write (its final dot
# or BDAT LAST included); a larger one, or one on disk, is streamed.
WHOLE_WRITE_LIMIT = 1024 * 1024

_REPLY_LINE = re.compile(rb"(\d{3})([ -]|\Z)")

log = Logger()


class Reply(NamedTuple):
    """One complete reply: its code, as one line (code first), and its lines' texts."""

    code: int
    text: str
    lines: list[bytes]


class _Reader:
    """A file whose read errors end the session instead of the transport's write loop."""

    def __init__(self, file: Any, client: RelayClient):
        self.file = file
        self.client = client

    def read(self, size: int) -> bytes:
        """Up to C{size} octets; b"" (the end) after a read error, which fails the session."""
        try:
            return self.file.read(size)
        except OSError as e:
            self.client.fail(SessionError(451, "4.3.0", f"451 4.3.0 cannot read the message: {e}"),
                             abort=True)
            return b""


class RelayClient(LineReceiver, TimeoutMixin):
    """
    A client session with one host.

    L{ready} fires with the client once the host greeted, answered EHLO (or
    HELO), and TLS and AUTH were done as required; it fails with
    L{SessionError} otherwise. Then L{send} runs one transaction at a time;
    L{quit} ends the session; L{whenClosed} fires when the connection is gone.

    @param helo: our name, for EHLO and HELO.
    @param remote_mta: the host as reported in statuses: C{"name [ip]"}.
    @param clock: the L{IReactorTime} for the timeout.
    @param timeout: seconds to wait for any reply (or for the host to take
        more of the message).
    @param tls: the L{TLS_POLICIES} entry: C{none} never starts TLS; C{may}
        starts it when offered; C{encrypt}, C{verify} and C{dane} require it
        (the verification itself is in C{tls_options}, or C{check_peer}).
    @param tls_options: the client TLS connection creator (unused for C{none}).
    @param username: AUTH toward the host when not empty.
    @param password: the AUTH password.
    @param check_peer: called with the TLS transport once TLS is up; raises
        L{SessionError} when the peer's certificate is not acceptable (DANE).

    @ivar extensions: the EHLO keywords (upper case) and their parameters.
    @ivar secure: whether the session runs over TLS.
    @ivar transactions: how many transactions were started.
    """

    delimiter = b"\r\n"
    MAX_LENGTH = MAX_REPLY_LINE

    def __init__(self, helo: str, remote_mta: str, clock: Any, timeout: float,
                 tls: str = "none", tls_options: Any = None, username: str = "",
                 password: str = "", check_peer: Any = None):
        if tls not in TLS_POLICIES:
            raise ValueError(f"unknown TLS policy {tls!r}")
        self.helo = helo.encode("ascii", "replace")
        self.remote_mta = remote_mta
        self.timeout = timeout
        self._clock = clock
        self._tls = tls
        self._tls_options = tls_options if tls != "none" else None
        self._username = username
        self._password = password
        self._check_peer = check_peer
        self.ready: Deferred[RelayClient] = Deferred()
        self.extensions: dict[str, str] = {}
        self.secure = False
        self.transactions = 0
        self._phase = "initial greeting"
        self._waiting: deque[tuple[Deferred[Reply], str]] = deque()
        self._lines: list[bytes] = []
        self._reply_bytes = 0
        self._established = self._connected = self._lost = self._busy = False
        self._streaming = False
        self._direct = False
        self._error: SessionError | None = None
        self._closed_waiters: list[Deferred[None]] = []

    def callLater(self, period: float, func: Any) -> Any:
        """The timeout's timer, on the injected clock."""
        return self._clock.callLater(period, func)

    # ------------------------------------------------------------ state

    @property
    def usable(self) -> bool:
        """Whether a transaction may start now."""
        return self._established and self._connected and not self._busy and self._error is None

    @property
    def error(self) -> SessionError | None:
        """What ended the session, or L{None} while it lasts."""
        return self._error

    def whenClosed(self) -> Deferred[None]:
        """A Deferred that fires when the connection is closed."""
        if self._lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed_waiters.append(d)
        return d

    def quit(self) -> Deferred[None]:
        """Say QUIT and close the connection; fires when it is closed."""
        closed = self.whenClosed()
        if self._connected:
            if self._error is None:
                self._error = SessionError(451, "4.4.2", "451 4.4.2 session closed")
                self._notify(self._error)
            self._close(abort=self._streaming)
        return closed

    def verify_peer(self) -> None:
        """Check the TLS peer with C{check_peer} (L{SessionError} when it fails)."""
        if self._check_peer is not None:
            self._check_peer(self.transport)

    # ------------------------------------------------------------ replies

    def connectionMade(self) -> None:
        """Wait for the greeting, under the timeout, then set the session up."""
        self._connected = True
        # Plain TCP: writes may go straight into the socket (L{write}).
        self._direct = type(self.transport) is tcp.Client
        if ITCPTransport.providedBy(self.transport):
            # A pipelined flight, BDAT LAST or the final dot is a small write
            # after a larger one that waits for an answer: Nagle's algorithm
            # against the peer's delayed ACK would hold it ~40 ms, for every
            # message of the session.
            self.transport.setTcpNoDelay(True)
        d = Deferred.fromCoroutine(self._setup())
        d.addErrback(self._setupFailed)

    def lineReceived(self, line: bytes) -> None:
        """
        Take one reply line. Only a complete reply restarts the timeout, and
        one reply may not pass L{MAX_REPLY_LINES} lines or L{MAX_REPLY_BYTES}:
        a hostile host could otherwise hold the session, and our memory,
        with an endless multi-line reply.
        """
        if self._error is not None:
            return
        self._lines.append(line)
        self._reply_bytes += len(line)
        if len(self._lines) > MAX_REPLY_LINES or self._reply_bytes > MAX_REPLY_BYTES:
            self.fail(SessionError(
                451, "4.5.0", f"451 4.5.0 reply from {self.remote_mta} longer than "
                f"{MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES} bytes"), abort=True)
            return
        match = _REPLY_LINE.match(line)
        if match is None:
            text = reply_text(0, line).strip()
            self.fail(SessionError(451, "4.5.0", f"451 4.5.0 protocol error: malformed reply "
                                   f"{text!r} from {self.remote_mta}"), abort=True)
            return
        if match.group(2) == b"-":
            return  # a continuation: kept, without restarting the timeout
        lines, self._lines, self._reply_bytes = self._lines, [], 0
        code = int(match.group(1))
        self._replied(Reply(code, reply_text(code, [x[4:] for x in lines]),
                            [x[4:] for x in lines]))

    def lineLengthExceeded(self, line: bytes) -> None:
        """A reply line longer than L{MAX_REPLY_LINE}: a protocol error."""
        self.fail(SessionError(451, "4.5.0", f"451 4.5.0 reply line from {self.remote_mta} "
                               f"longer than {MAX_REPLY_LINE} bytes"), abort=True)

    def _replied(self, reply: Reply) -> None:
        """Hand a complete reply to the oldest waiting command."""
        if not self._waiting:
            # The host spoke unasked (typically 421 before closing).
            self.fail(refusal(reply.code, reply.text))
            return
        d, _ = self._waiting.popleft()
        if self._waiting:
            self._phase = self._waiting[0][1]
            self.resetTimeout()
        elif not self._streaming:
            self.setTimeout(None)
        d.callback(reply)

    def expect(self, phase: str) -> Deferred[Reply]:
        """A Deferred for the next reply not yet claimed (fails with the session's error)."""
        if self._error is not None:
            return fail(self._error)
        d: Deferred[Reply] = Deferred()
        self._waiting.append((d, phase))
        if len(self._waiting) == 1:
            self._phase = phase
            if not self._streaming:
                self.setTimeout(self.timeout)
        return d

    def command(self, line: bytes, phase: str = "") -> Deferred[Reply]:
        """Send one command line; its reply."""
        d = self.expect(phase or "reply to " + line.split(b" ", 1)[0].decode("ascii", "replace"))
        if self._error is None:
            self.sendLine(line)
        return d

    def pipeline(self, lines: list[bytes]) -> list[Deferred[Reply]]:
        """Send several commands in one write (RFC 2920); their replies, in order."""
        replies = [self.expect("reply to " + line.split(b" ", 1)[0].decode("ascii", "replace"))
                   for line in lines]
        if self._error is None:
            self.write(self.delimiter.join(lines) + self.delimiter)
        return replies

    def sendLine(self, line: bytes) -> None:
        """Send one command line (L{write})."""
        self.write(line + self.delimiter)

    def write(self, data: bytes) -> None:
        """
        Send C{data}: straight into the socket of a plain TCP session when it
        takes all of it (Twisted's write would buffer it, ask epoll for
        writability and send on the next loop turn: two epoll_ctl calls and a
        turn per command or flight). What does not fit, anything while TLS
        runs or a file is streamed, and everything after, goes through the
        transport, in order.
        """
        if self._direct and not (self.secure or self._streaming):
            sent = send_at_once(self.transport, data)
            if sent == len(data):
                return
            data = data[sent:]
        self._direct = False
        self.transport.write(data)

    # ------------------------------------------------------------ set-up

    async def _setup(self) -> None:
        greeting = await self.expect("initial greeting")
        if greeting.code != 220:
            raise refusal(greeting.code, greeting.text)
        await set_up(self, self._tls, self._tls_options, self._username, self._password)
        self._established = True
        self.setTimeout(None)
        self.ready.callback(self)

    def _setupFailed(self, failure: Failure) -> None:
        if failure.check(SessionError):
            self.fail(failure.value)
            return
        log.failure("Session with {remote} failed", failure, remote=self.remote_mta)
        self.fail(SessionError(451, "4.3.0", "451 4.3.0 internal error during delivery"),
                  abort=True)


    # ------------------------------------------------------------ failures

    def timeoutConnection(self) -> None:
        """No reply (nor progress of the data) within the timeout."""
        self.fail(SessionError(451, "4.4.2", f"451 4.4.2 timeout while waiting for "
                               f"{self._phase}"), abort=True)

    def fail(self, error: SessionError, abort: bool = False) -> None:
        """The session is over: tell whoever waits, then close."""
        if self._error is not None:
            return
        self._error = error
        self.setTimeout(None)
        self._notify(error)
        if self._connected:
            self._close(abort or self._streaming)

    def _notify(self, error: SessionError) -> None:
        if not self.ready.called:
            self.ready.errback(error)
        waiting, self._waiting = self._waiting, deque()
        for d, _ in waiting:
            d.errback(error)

    def _close(self, abort: bool) -> None:
        if abort:
            self.transport.abortConnection()
        else:
            self.sendLine(b"QUIT")
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        """Fail whatever waits with a lost-connection (or TLS) error."""
        self._connected = False
        self._lost = True
        self.setTimeout(None)
        if self._error is None:
            handshake = self.secure and not self._established
            expired = handshake and certificate_expired(self.transport, self._clock.seconds())
            self._error = lost_error(reason, handshake, self._phase, expired)
            self._notify(self._error)
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)

    # ------------------------------------------------------------ transactions

    def send(self, message: OutboundMessage) -> Deferred[list[DeliveryStatus]]:
        """
        Run one mail transaction.

        @return: a Deferred with one status per recipient of C{message}, in
            order; it fails with L{SessionError} when the host refused the
            transaction as a whole (MAIL rejected, message too big, the
            session lost before MAIL was accepted).
        """
        if not self.usable:
            error = self._error or SessionError(451, "4.4.2", "451 4.4.2 session not ready")
            return fail(SessionError(error.code, error.status, error.reply, stale=True))
        self._busy = True
        self.transactions += 1
        d = Deferred.fromCoroutine(run_transaction(self, message, self.transactions > 1))
        return d.addBoth(self._transactionDone)

    def _transactionDone(self, result: Any) -> Any:
        self._busy = False
        if self._error is None and not self._waiting:
            self.setTimeout(None)
        return result

    def status(self, address: str, code: int, reply: str, status: str = "") -> DeliveryStatus:
        """The status of one recipient from a reply of this host."""
        return DeliveryStatus(address=address, code=code,
                              status=status or enhanced_status(code, reply), reply=reply,
                              remote_mta=self.remote_mta, tls=self.secure,
                              dsn_passed="DSN" in self.extensions)

    async def stream(self, source: IMessageSource) -> Reply:
        """
        Send the message as the DATA stream, dot-stuffed a chunk at a time as
        the host takes it (a pull producer on the transport: never more than
        a chunk or two in memory), then the final dot; the reply to it.
        """
        final = self.expect("reply to end of DATA")
        stuffer = DotStuffer()
        await self._send_source(source, stuffer.feed, stuffer.finish)
        return await final

    async def stream_chunks(self, source: IMessageSource, binary: bool = False,
                            pipelined: bool = True) -> Reply:
        """
        Send the message as BDAT chunks (RFC 3030), one per piece read from
        C{source}, the last with C{LAST}. C{pipelined} (the host offers
        PIPELINING): the chunks stream as the host takes them without waiting
        for their replies. Otherwise each chunk waits for its reply and a
        refusal ends the message there (RFC 3030 2: no more chunks after a
        4xx or 5xx; without PIPELINING a client may not send a command before
        the previous one is answered). The reply that decides: the first
        refusal of a chunk, else the reply to the last one. C{binary}
        (BINARYMIME): the octets go as they are, line ends untouched.
        """
        chunker = BdatChunker(binary)
        if not pipelined:
            return await self._chunks_in_step(source, chunker)
        replies: list[Deferred[Reply]] = []

        def chunk(data: bytes) -> bytes:
            out = chunker.feed(data)
            if out:
                replies.append(self.expect("reply to BDAT"))
            return out

        def last() -> bytes:
            replies.append(self.expect("reply to BDAT LAST"))
            return chunker.finish()

        def whole(data: bytes) -> bytes:
            replies.append(self.expect("reply to BDAT LAST"))
            return chunker.whole(data)

        self.setTimeout(self.timeout)  # armed for the replies of the chunks to come
        await self._send_source(source, chunk, last, whole)
        decisive = None
        try:
            for d in replies:
                reply = await d
                if decisive is None and not 200 <= reply.code < 300:
                    decisive = reply
        finally:
            for d in replies:
                d.addErrback(lambda _: None)
        return decisive or reply

    async def _chunks_in_step(self, source: IMessageSource, chunker: BdatChunker) -> Reply:
        """
        BDAT toward a host without PIPELINING: one chunk, then its reply,
        then the next (the reply also shows the host took the chunk: never
        more than one chunk in memory). The first refusal is the answer. A
        message held in memory is one chunk, C{BDAT <n> LAST}.
        """
        data = held_data(source)
        if data is not None and len(data) <= WHOLE_WRITE_LIMIT:
            return await self._chunk(chunker.whole(data), "reply to BDAT LAST")
        try:
            file = source.open()
        except OSError as e:
            self.fail(SessionError(451, "4.3.0", f"451 4.3.0 cannot read the message: {e}"),
                      abort=True)
            return await self.expect("reply to BDAT")
        reader = _Reader(file, self)
        try:
            while self._error is None:
                data = reader.read(CHUNK_SIZE)
                if not data:
                    break
                out = chunker.feed(data)
                if out:
                    reply = await self._chunk(out, "reply to BDAT")
                    if not 200 <= reply.code < 300:
                        return reply
        finally:
            file.close()
        return await self._chunk(chunker.finish(), "reply to BDAT LAST")

    def _chunk(self, chunk: bytes, phase: str) -> Deferred[Reply]:
        """Write one BDAT command and its data; its reply."""
        d = self.expect(phase)
        if self._error is None:
            self.write(chunk)
        return d

    async def _send_source(self, source: IMessageSource, transform: Any, finish: Any,
                           whole: Any = None) -> None:
        """
        Write C{source} through C{transform} a chunk at a time as the host
        takes it (a pull producer on the transport: never more than a chunk
        or two in memory), then C{finish()}. A read error fails the session.
        A message held in memory (up to L{WHOLE_WRITE_LIMIT}) goes in one
        write: C{whole(data)} when given, else C{transform(data) + finish()}.
        """
        data = held_data(source)
        if data is not None and len(data) <= WHOLE_WRITE_LIMIT:
            self.resetTimeout()
            out = whole(data) if whole is not None else transform(data) + finish()
            if self._error is None:
                self.write(out)
            return
        await self._stream_file(source, transform)
        tail = finish()
        if self._error is None:
            self.write(tail)

    async def _stream_file(self, source: IMessageSource, transform: Any) -> None:
        """Write C{source} through C{transform} as the host takes it (a pull producer)."""

        def progress(chunk: bytes) -> bytes:
            self.resetTimeout()  # the host is taking the data: progress
            return transform(chunk)

        try:
            file = source.open()
        except OSError as e:
            self.fail(SessionError(451, "4.3.0", f"451 4.3.0 cannot read the message: {e}"),
                      abort=True)
            return
        sender = FileSender()
        sender.CHUNK_SIZE = CHUNK_SIZE
        self._direct = False  # the file goes through the transport: so does all after it
        self._streaming = True
        try:
            await sender.beginFileTransfer(_Reader(file, self), self.transport, progress)
        except Exception:
            pass  # the transport stopped us: the connection is gone, the replies fail
        finally:
            self._streaming = False
            file.close()
