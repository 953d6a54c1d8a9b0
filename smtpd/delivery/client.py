# -*- test-case-name: tests.test_client -*-
"""
The outbound SMTP client: one session with one remote host carrying any number
of mail transactions (RFC 5321), with EHLO and HELO fallback, STARTTLS per
policy (RFC 3207), AUTH PLAIN and LOGIN (RFC 4954), SIZE (RFC 1870),
BODY=8BITMIME (RFC 6152), DSN parameters (RFC 3461), PIPELINING (RFC 2920)
and CHUNKING (RFC 3030: BDAT toward hosts that offer it).

L{RelayClient} is the protocol: it reads replies (bounded in lines, octets
and time), sets the session up, and sends the message data
(L{smtpd.delivery.streaming}). L{smtpd.delivery.transaction} runs the mail
transactions on it.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from smtpd.delivery.handshake import set_up
from smtpd.delivery.streaming import MessageStreaming
from smtpd.delivery.tlsfailure import certificate_expired, lost_error
from smtpd.delivery.transaction import run_transaction
from smtpd.delivery.wire import (
    OutboundMessage,
    Reply,
    SessionError,
    enhanced_status,
    refusal,
    reply_text,
)
from smtpd.mail.envelope import DeliveryStatus
from smtpd.util.directsend import send_at_once

TLS_POLICIES = ("none", "may", "encrypt", "verify", "dane")

# The most a host may send as one reply (RFC 5321 4.5.3.1.5: a reply line is at
# most 512 octets; EHLO replies are the longest in practice, a few dozen lines).
# Beyond either limit the session fails rather than hold the host's output.
MAX_REPLY_LINES = 100
MAX_REPLY_BYTES = 65536
MAX_REPLY_LINE = 4096

_REPLY_LINE = re.compile(rb"(\d{3})([ -]|\Z)")

log = Logger()


class RelayClient(MessageStreaming, LineReceiver, TimeoutMixin):
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
