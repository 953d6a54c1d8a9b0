# -*- test-case-name: tests.test_protocol -*-
"""
The core of an inbound session: the connection, the input buffer, pipelining
order, flow control, timeouts and replies. The commands are in
L{smtpd.inbound.commands}, the mail transaction in
L{smtpd.inbound.transaction}, AUTH in L{smtpd.inbound.auth}.

Input is one buffer: commands are taken from it one at a time, and while an
answer is pending (a password check, a queue write, a lagging disk) nothing
more is read from it, so replies always come in command order.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from twisted.internet import defer, tcp
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from smtpd.inbound import policy
from smtpd.inbound.deadline import Deadlines
from smtpd.inbound.snapshot import session_info
from smtpd.util.directsend import send_at_once

log = Logger()

# Session kinds: the endpoint the client came in through.
LISTEN = "listen"  # port 25 style: anonymous mail per [auth] anonymous
SUBMISSION = "submission"  # port 587 style: AUTH before MAIL
SMTPS = "smtps"  # port 465 style: implicit TLS

MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4, CRLF included
MAX_PARAM_LINE = 512 + 500  # MAIL/RCPT with DSN parameters (RFC 3461 5)
MAX_AUTH_LINE = 12288  # RFC 4954 4
MAX_PENDING_INPUT = 64 * 1024  # input held while an answer is pending

# What the buffer holds: command lines, message data, an AUTH response.
COMMAND = 0
DATA = 1
AUTH = 2


class SessionCore(smtp.ESMTP):
    """
    The plumbing of one inbound SMTP connection; L{SMTPSession} adds the
    commands. Subclasses Twisted's L{smtp.ESMTP} for its timeout and
    connection plumbing only.
    """

    session_id = 0
    peer_ip = ""
    _read_paused = False
    _unsent = False
    _direct = False
    _hostname = "localhost"
    _server_address: tuple[str, int | str] | None = None
    in_transfer = False
    # For the admin API (IIS Current Sessions).
    started = 0.0
    bytes_in = 0
    bytes_out = 0
    messages = 0
    current_command = ""

    # The session's state starts as these class attributes; an instance gets
    # its own only when one changes. Many idle sessions cost memory per
    # attribute (past ~30 an instance needs a whole dict of its own): the
    # base class's __init__ is not called for the same reason, as its
    # attributes (delivery, challengers, ...) serve the command handling this
    # class replaces; those read anywhere have their defaults here.
    _buf = b""
    _mode = COMMAND
    _waiting = False
    _closing = False
    _discarding = False
    _registered = False
    _denied = False
    _tls = False
    _errors = 0
    _command: tuple[str, str] | None = None
    _helo: str | None = None
    _from = None
    _to = ()
    delivery = None
    deliveryFactory = None
    ctx = None
    authenticated = False
    challengers: Mapping = MappingProxyType({})

    def __init__(self, inbound, kind: str):
        self.inbound = inbound
        self.kind = kind
        if kind == SMTPS:
            self._tls = True
        self.deadlines = Deadlines(inbound.clock, self.server_config, self.deadline_passed)

    def server_config(self):
        """The current C{[server]} section (it changes on reload)."""
        return self.inbound.config.server

    # -- connection

    def callLater(self, period, func):
        """Timeouts run on the injected clock."""
        return self.inbound.clock.callLater(period, func)

    def connectionMade(self):
        """Greet, or refuse with 421 (limits) or 554 (access control)."""
        self.started = self.inbound.clock.seconds()
        peer, host = self.transport.getPeer(), self.transport.getHost()
        self.peer_ip = getattr(peer, "host", "") or str(peer)
        self._server_address = (getattr(host, "host", ""), getattr(host, "port", ""))
        # Stop reading from a client that does not read its replies.
        self.transport.registerProducer(self, True)
        # Plain TCP straight from the listener (not TLS, not a PROXY wrapper):
        # replies may be written into the socket directly (L{_send}).
        self._direct = type(self.transport) is tcp.Server
        config = self.inbound.config
        self._hostname = config.server.hostname
        refusal = self.inbound.register(self)
        if refusal is not None:
            self._send(f"421 {refusal}\r\n")
            return self._close()
        self._registered = True
        self.setTimeout(config.server.connection_timeout or None)
        if not policy.may_connect(config, self.peer_ip):
            # RFC 5321 3.1: a 554 greeting, then 503 to everything but QUIT.
            self._denied = True
            self.inbound.events["refused_deny"] += 1
            self._send(f"554 5.7.1 {self._hostname} Access denied\r\n")
            return
        self.start_reverse_dns()
        self._send(f"220 {self._hostname} {config.server.banner}\r\n")

    def connectionLost(self, reason=None):
        """Release the session's place, timers and any message half received."""
        self._closing = True
        self.setTimeout(None)
        self.deadlines.stop()
        self.abort_transfer()
        if self._registered:
            self.inbound.unregister(self)
            self._registered = False

    def abort_transfer(self) -> None:
        """Give up a message being received (the transaction part overrides)."""

    def timeoutConnection(self):
        """The client was idle for C{connection_timeout}."""
        self.terminate("4.4.2 Error: timeout exceeded")

    def deadline_passed(self):
        """A command line or the DATA took longer than its deadline."""
        self.terminate("4.4.2 Error: timeout exceeded")

    def start_reverse_dns(self) -> None:
        """Look the client's name up (the access part overrides)."""

    def terminate(self, why: str) -> None:
        """Close this session with a C{421} reply saying C{why}."""
        if not self._closing:
            self._send(f"421 {why}\r\n")
            self._close()

    def _close(self) -> None:
        """Close after the replies written so far (TLS waits for our producer to go)."""
        self._closing = True
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    # -- input

    def dataReceived(self, data: bytes) -> None:
        """Take input into the buffer and work through it."""
        if self._closing:
            return
        self.bytes_in += len(data)
        self.resetTimeout()
        self._buf += data
        self._reading()
        self._process()

    def _reading(self) -> None:
        """
        Stop reading from a client whose input piles up: while an answer is
        pending, or while it does not read its replies (then we take no more
        commands), at most L{MAX_PENDING_INPUT} bytes are held.
        """
        held = (self._waiting or self._unsent) and len(self._buf) > MAX_PENDING_INPUT
        if held != self._read_paused and not self._closing:
            self._read_paused = held
            if held:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    # IPushProducer, registered on our own transport: Twisted pauses us when
    # the replies we wrote are not being read (and during a TLS handshake).

    def pauseProducing(self) -> None:
        """Our replies pile up unsent: take no more commands for now."""
        self._unsent = True

    def resumeProducing(self) -> None:
        """Our replies went out: take commands again."""
        self._unsent = False
        self._process()
        self._reading()

    def stopProducing(self) -> None:
        """The connection is going away."""
        self._closing = True

    def _process(self) -> None:
        while self._buf and not (self._waiting or self._unsent or self._closing):
            if self._mode == DATA:
                self._guarded(self.data_received)
            elif not self._take_line():
                break
        # A command line under way must be complete by its deadline.
        self.deadlines.partial_line(
            self._mode != DATA and bool(self._buf) and not self._waiting and not self._closing
        )

    def _take_line(self) -> bool:
        """Handle one command line from the buffer; False when none is complete."""
        end = self._buf.find(b"\n")
        # The limit of the line whatever part of it has arrived (RFC 4954 4:
        # AUTH lines and responses may be 12288 octets).
        auth = self._mode == AUTH or self._buf[:5].upper() == b"AUTH "
        limit = MAX_AUTH_LINE if auth else MAX_PARAM_LINE
        if end < 0:
            if len(self._buf) > limit:
                self._buf = b""
                self._discarding = True
            return False
        line, self._buf = self._buf[:end], self._buf[end + 1 :]
        self.deadlines.line_taken()
        if self._discarding:
            self._discarding = False
            self._reply(500, "5.5.2", "Error: line too long")
            return True
        if line.endswith(b"\r"):
            line = line[:-1]
        handler = self.auth_continue if self._mode == AUTH else self._command_line
        self._guarded(handler, line)
        return True

    def _guarded(self, handler, *args) -> None:
        """Run one step; an unexpected error is logged and answered 451 4.3.0."""
        try:
            result = handler(*args)
        except Exception:
            log.failure("Unexpected error in SMTP session {id}", id=self.session_id)
            if self.step_failed():
                self._reply(451, "4.3.0", "Error: internal error")
            return
        self.wait_for(result)

    def wait_for(self, result) -> None:
        """When C{result} is a Deferred, read no more input until it fires."""
        if isinstance(result, defer.Deferred):
            self._waiting = True
            result.addErrback(self._internal_error)
            result.addBoth(self._resume)

    def step_failed(self) -> bool:
        """
        A step raised: leave the session consistent (the transaction
        overrides); whether the C{451} is to be sent now.
        """
        return True

    def _resume(self, _ignored=None) -> None:
        self._waiting = False
        if not self._closing:
            self._process()
            self._reading()

    def _internal_error(self, failure: Failure) -> None:
        log.failure("Unexpected error in SMTP session {id}", failure, id=self.session_id)
        if self.step_failed():
            self._reply(451, "4.3.0", "Error: internal error")

    def _command_line(self, line: bytes):
        verb, _, arg = line.partition(b" ")
        try:
            verb_s = verb.decode("ascii").upper()
            arg_s = arg.decode("utf-8").strip(" ")
        except UnicodeDecodeError:
            verb_s, arg_s = verb.decode("latin-1").upper(), None
        limit = MAX_PARAM_LINE if verb_s in ("MAIL", "RCPT") else MAX_COMMAND_LINE
        if verb_s == "AUTH":
            limit = MAX_AUTH_LINE
        self._command = (verb_s, arg_s or "")
        self.current_command = verb_s[:16]
        if len(line) + 2 > limit:
            return self._reply(500, "5.5.2", "Error: line too long")
        if self._denied and verb_s != "QUIT":
            return self._reply(503, "5.7.1", "Error: access denied for your address")
        handler = getattr(self, "smtp_" + verb_s, None) if verb_s.isalpha() else None
        if handler is None:
            return self._reply(500, "5.5.1", "Error: command not recognized")
        if arg_s is None or not arg_s.isprintable():
            return self._reply(501, "5.5.4", "Error: bad characters in command")
        return handler(arg_s)

    # -- output

    def _send(self, text: str) -> None:
        data = text.encode("utf-8")
        self.bytes_out += len(data)
        if self._direct and not (self._tls or self._closing):
            # A reply goes straight into the socket when it fits (it nearly
            # always does): Twisted's write would buffer it, ask epoll for
            # writability, send on the next poll and ask again to stop (two
            # epoll_ctl calls and a loop turn per reply). What does not fit,
            # and everything after it, goes through the transport, in order.
            sent = send_at_once(self.transport, data)
            if sent == len(data):
                return
            self._direct = False
            data = data[sent:]
        self.transport.write(data)

    def _reply(self, code: int, status: str, text: str) -> None:
        """Send one reply C{code status text} and log the command it answers."""
        line = f"{code} {status} {text}\r\n" if status else f"{code} {text}\r\n"
        self._send(line)
        self._log(code)
        if code >= 500:
            self._errors += 1
            limit = self.inbound.config.access.max_errors
            if limit and self._errors >= limit and not self._closing:
                self.terminate("4.7.0 Error: too many errors")

    def _log(self, code: int) -> None:
        command_log = self.inbound.command_log
        if command_log is not None and self._command is not None:
            verb, arg = self._command
            if verb == "AUTH":
                arg = arg.split(" ", 1)[0]
            command_log.command(self, verb, arg, code)
        self._command = None

    # -- for the admin API

    def info(self) -> dict:
        """This session as plain data for the admin API (L{session_info})."""
        return session_info(self)

    @property
    def tls_active(self) -> bool:
        """Whether the session runs over TLS (STARTTLS done, or implicit TLS)."""
        return self._tls

    @property
    def server_address(self) -> tuple[str, int | str]:
        """The (ip, port) the client connected to, kept from the connection's start."""
        return self._server_address or ("", "")
