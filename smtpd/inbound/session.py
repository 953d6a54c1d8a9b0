# -*- test-case-name: tests.test_protocol -*-
"""
The inbound ESMTP session (RFC 5321, 1869, 1870, 2034, 2920, 3207, 3461, 4954,
6152) and the factories that make it.

L{SMTPSession} subclasses Twisted's L{twisted.mail.smtp.ESMTP} for its timeout
and connection plumbing, and replaces its command and DATA handling, which has
flaws a production server cannot keep: it answers commands pipelined behind
STARTTLS inside the TLS session, drops into command mode after an over-long data
line, handles DATA one Python call per line, and cannot keep pipelined replies
in order around asynchronous checks. Here, input is one buffer: commands are
taken from it one at a time, and while an answer is pending (a password check,
a queue write) nothing more is read from it, so replies always come in command
order. DATA is read in bulk, searching only for the CRLF.CRLF terminator.
"""

from __future__ import annotations

import base64
import binascii
import errno
import re
from collections import Counter
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Callable

from twisted.internet import defer
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from smtpd.directory.routing import route
from smtpd.inbound import policy
from smtpd.mail import address
from smtpd.mail.envelope import Envelope, Recipient

log = Logger()

# Session kinds: the endpoint the client came in through.
LISTEN = "listen"  # port 25 style: anonymous mail per [auth] anonymous
SUBMISSION = "submission"  # port 587 style: AUTH before MAIL
SMTPS = "smtps"  # port 465 style: implicit TLS

MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4, CRLF included
MAX_PARAM_LINE = 512 + 500  # MAIL/RCPT with DSN parameters (RFC 3461 5)
MAX_AUTH_LINE = 12288  # RFC 4954 4
MAX_TEXT_LINE = 1000  # RFC 5321 4.5.3.1.6, CRLF included
MAX_PENDING_INPUT = 64 * 1024  # input held while an answer is pending

_COMMAND = 0
_DATA = 1
_AUTH = 2

_EOD = b"\r\n.\r\n"
_NEWLINE = re.compile(rb"\r\n|\r|\n")
_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
_HELO_SAFE = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


_date_cache: list = [None, ""]


def _header_date(now: float) -> str:
    """The RFC 5322 date of C{now} in UTC, made once per second."""
    second = int(now)
    if _date_cache[0] != second:
        _date_cache[:] = [second, format_datetime(datetime.fromtimestamp(second, timezone.utc))]
    return _date_cache[1]


class Inbound:
    """
    What every inbound session shares: configuration, accounts, the queue, the
    live sessions and their counters. One per server process; C{config} and
    C{users} may be swapped at run time (reload) and sessions see the new ones
    at their next command.

    @param accept: C{accept(envelope, data) -> Deferred} making a received
        message durable before its 250 (the queue manager's, which may deliver
        it at once); L{None} (the default) for C{queue.store}.
    """

    def __init__(
        self,
        config,
        users,
        queue,
        clock,
        run_blocking: Callable[..., defer.Deferred],
        tls_options=None,
        command_log=None,
        accept: Callable[[Envelope, bytes], defer.Deferred] | None = None,
    ):
        self.config = config
        self.users = users
        self.queue = queue
        self.accept = accept
        self.clock = clock
        self.run_blocking = run_blocking
        self.tls_options = tls_options
        self.command_log = command_log
        self.sessions: dict[int, SMTPSession] = {}
        self.per_ip: Counter[str] = Counter()
        self.received = 0
        self._next_id = 0
        self._stopping = False
        self._on_empty: tuple[defer.Deferred[None], object] | None = None

    def factory(self, kind: str = LISTEN) -> SMTPFactory:
        """A protocol factory for one kind of endpoint (L{LISTEN}, ...)."""
        return SMTPFactory(self, kind)

    def register(self, session: SMTPSession) -> str | None:
        """
        Admit a new session, or say why not: the C{421} reply text when a
        connection limit is reached or the server is stopping.
        """
        server = self.config.server
        if self._stopping:
            return "4.3.2 Service shutting down"
        if server.max_connections and len(self.sessions) >= server.max_connections:
            return "4.7.0 Error: too many connections"
        limit = server.max_connections_per_ip
        if limit and self.per_ip[session.peer_ip] >= limit:
            return "4.7.0 Error: too many connections from your address"
        self._next_id += 1
        session.session_id = self._next_id
        self.sessions[session.session_id] = session
        self.per_ip[session.peer_ip] += 1
        return None

    def unregister(self, session: SMTPSession) -> None:
        """Forget a session whose connection is gone."""
        if self.sessions.pop(session.session_id, None) is not None:
            self.per_ip[session.peer_ip] -= 1
            if not self.per_ip[session.peer_ip]:
                del self.per_ip[session.peer_ip]
        if not self.sessions and self._on_empty is not None:
            self._closed_all()

    def shutdown(self, grace: float, flush: float = 2.0) -> defer.Deferred[None]:
        """
        Stop admitting sessions; close every session not in the middle of a
        message with C{421 4.3.2} at once; let sessions in DATA finish for up
        to C{grace} seconds (each is closed with the 421 as soon as its
        message is answered), then close the rest with the 421 too. Fires once
        every connection is closed (the 421s written), at most C{flush}
        seconds after that.
        """
        self._stopping = True
        done: defer.Deferred[None] = defer.Deferred()
        deadline = self.clock.seconds() + grace
        why = "4.3.2 Service shutting down"

        def check() -> None:
            busy = False
            for s in list(self.sessions.values()):
                if s.in_transfer:
                    busy = True
                else:
                    s.terminate(why)
            if busy and self.clock.seconds() < deadline:
                self.clock.callLater(0.1, check)
                return
            for s in list(self.sessions.values()):
                s.terminate(why)
            self._wait_closed(done, flush)

        check()
        return done

    def _wait_closed(self, done: defer.Deferred[None], flush: float) -> None:
        """Fire C{done} when no session is left, or after C{flush} seconds."""
        if not self.sessions:
            done.callback(None)
            return
        timer = self.clock.callLater(flush, self._closed_all)
        self._on_empty = (done, timer)

    def _closed_all(self) -> None:
        done, timer = self._on_empty or (None, None)
        self._on_empty = None
        if timer is not None and timer.active():
            timer.cancel()
        if done is not None and not done.called:
            done.callback(None)


class SMTPFactory(ServerFactory):
    """Builds L{SMTPSession}s of one kind for an endpoint."""

    noisy = False

    def __init__(self, inbound: Inbound, kind: str):
        self.inbound = inbound
        self.kind = kind

    def buildProtocol(self, addr):
        """A new session for a connection from C{addr}."""
        session = SMTPSession(self.inbound, self.kind)
        session.factory = self
        return session


class SMTPSession(smtp.ESMTP):
    """
    One inbound SMTP connection.

    Reply codes and enhanced status codes follow Postfix where RFC 5321 leaves
    a choice. Every command is logged through the L{Inbound}'s command log.
    """

    session_id = 0
    peer_ip = ""
    _read_paused = False
    _unsent = False
    _hostname = "localhost"
    _server_address: tuple[str, int | str] | None = None
    in_transfer = False

    def __init__(self, inbound: Inbound, kind: str):
        smtp.ESMTP.__init__(self)
        self.inbound = inbound
        self.kind = kind
        self._buf = b""
        self._mode = _COMMAND
        self._waiting = False
        self._closing = False
        self._discarding = False
        self._registered = False
        self._denied = False
        self._tls = kind == SMTPS
        self._helo: str | None = None
        self._esmtp = False
        self._user: str | None = None
        self._errors = 0
        self._auth_failures = 0
        self._session_bytes = 0
        self._command: tuple[str, str] | None = None
        self._reset()

    # -- connection -------------------------------------------------------

    def callLater(self, period, func):
        """Timeouts run on the injected clock."""
        return self.inbound.clock.callLater(period, func)

    def connectionMade(self):
        """Greet, or refuse with 421 (limits) or 554 (access control)."""
        peer, host = self.transport.getPeer(), self.transport.getHost()
        self.peer_ip = getattr(peer, "host", "") or str(peer)
        self._server_address = (getattr(host, "host", ""), getattr(host, "port", ""))
        # Stop reading from a client that does not read its replies.
        self.transport.registerProducer(self, True)
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
            self._send(f"554 5.7.1 {self._hostname} Access denied\r\n")
            return
        self._send(f"220 {self._hostname} {config.server.banner}\r\n")

    def connectionLost(self, reason=None):
        """Release the session's place and timers."""
        self._closing = True
        self.setTimeout(None)
        if self._registered:
            self.inbound.unregister(self)
            self._registered = False

    def timeoutConnection(self):
        """The client was idle for C{connection_timeout}."""
        self.terminate("4.4.2 Error: timeout exceeded")

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

    # -- input ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Take input into the buffer and work through it."""
        if self._closing:
            return
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
            if self._mode == _DATA:
                self._data_received()
            elif not self._take_line():
                break

    def _take_line(self) -> bool:
        """Handle one command line from the buffer; False when none is complete."""
        end = self._buf.find(b"\n")
        limit = MAX_AUTH_LINE if self._mode == _AUTH else MAX_PARAM_LINE
        if end < 0:
            if len(self._buf) > limit:
                self._buf = b""
                self._discarding = True
            return False
        line, self._buf = self._buf[:end], self._buf[end + 1 :]
        if self._discarding:
            self._discarding = False
            self._reply(500, "5.5.2", "Error: line too long")
            return True
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            if self._mode == _AUTH:
                result = self._auth_continue(line)
            else:
                result = self._command_line(line)
        except Exception:
            log.failure("Unexpected error in SMTP session {id}", id=self.session_id)
            result = None
            self._reply(451, "4.3.0", "Error: internal error")
        if isinstance(result, defer.Deferred):
            self._waiting = True
            result.addErrback(self._internal_error)
            result.addBoth(self._resume)
        return True

    def _resume(self, _ignored=None) -> None:
        self._waiting = False
        if not self._closing:
            self._process()
            self._reading()

    def _internal_error(self, failure: Failure) -> None:
        log.failure(
            "Unexpected error in SMTP session {id}", failure, id=self.session_id
        )
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

    # -- output -----------------------------------------------------------

    def _send(self, text: str) -> None:
        self.transport.write(text.encode("utf-8"))

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

    # -- commands ---------------------------------------------------------

    def _reset(self) -> None:
        self._sender: str | None = None
        self._mail_params = address.MailParams()
        self._rcpts: list[Recipient] = []
        self._rcpt_seen: set[str] = set()

    def smtp_HELO(self, arg: str):
        """RFC 5321 4.1.1.1."""
        return self._greet(arg, esmtp=False)

    def smtp_EHLO(self, arg: str):
        """RFC 5321 4.1.1.1 and RFC 1869: the greeting with our extensions."""
        return self._greet(arg, esmtp=True)

    def _greet(self, arg: str, esmtp: bool):
        verb = "EHLO" if esmtp else "HELO"
        if not arg or " " in arg or not arg.isascii():
            return self._reply(501, "5.5.4", f"Syntax: {verb} hostname")
        self._helo, self._esmtp = arg, esmtp
        self._reset()
        name = self._hostname
        if not esmtp:
            self._send(f"250 {name}\r\n")
            return self._log(250)
        lines = [name, *self._extensions()]
        text = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
        self._send(text)
        self._log(250)

    def _extensions(self) -> list[str]:
        config = self.inbound.config
        ext = [
            "PIPELINING",
            f"SIZE {config.messages.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "DSN",
        ]
        if self._can_starttls():
            ext.append("STARTTLS")
        if self._auth_offered():
            ext.append("AUTH " + " ".join(config.auth.mechanisms))
        return ext

    def _can_starttls(self) -> bool:
        return (
            not self._tls
            and self.inbound.tls_options is not None
            and ITLSTransport.providedBy(self.transport)
        )

    def _auth_offered(self) -> bool:
        auth = self.inbound.config.auth
        return (
            bool(auth.mechanisms)
            and self._user is None
            and (self._tls or auth.allow_plaintext)
        )

    def smtp_NOOP(self, arg: str):
        """RFC 5321 4.1.1.9: arguments are allowed and ignored."""
        return self._reply(250, "2.0.0", "Ok")

    def smtp_RSET(self, arg: str):
        """RFC 5321 4.1.1.5: abort the transaction."""
        if arg:
            return self._reply(501, "5.5.4", "Syntax: RSET")
        self._reset()
        return self._reply(250, "2.0.0", "Ok")

    def smtp_QUIT(self, arg: str):
        """RFC 5321 4.1.1.10."""
        self._reply(221, "2.0.0", "Bye")
        self._close()

    def smtp_VRFY(self, arg: str):
        """RFC 5321 3.5.3: no address harvesting, but no refusal either."""
        if not arg:
            return self._reply(501, "5.5.4", "Syntax: VRFY address")
        return self._reply(
            252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"
        )

    def smtp_EXPN(self, arg: str):
        """RFC 5321 3.5.3: mailing lists are not disclosed."""
        return self._reply(502, "5.5.1", "Error: command not implemented")

    def smtp_HELP(self, arg: str):
        """RFC 5321 4.1.1.8."""
        return self._reply(
            214,
            "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        )

    def smtp_STARTTLS(self, arg: str):
        """
        RFC 3207. Whatever the client pipelined behind STARTTLS is discarded
        before the handshake (command injection), and the session starts anew.
        """
        if arg:
            return self._reply(501, "5.5.4", "Syntax: STARTTLS")
        if self._tls:
            return self._reply(503, "5.5.1", "Error: TLS already active")
        if not self._can_starttls():
            return self._reply(454, "4.7.0", "TLS not available")
        self._reply(220, "2.0.0", "Ready to start TLS")
        self._buf = b""
        self.transport.startTLS(self.inbound.tls_options)
        self._tls = True
        # RFC 3207 4.2: forget everything learnt before TLS.
        self._helo, self._esmtp, self._user = None, False, None
        self._reset()

    def smtp_MAIL(self, arg: str):
        """RFC 5321 4.1.1.2 with SIZE, BODY, RET, ENVID."""
        config = self.inbound.config
        if self._helo is None:
            return self._reply(503, "5.5.1", "Error: send HELO/EHLO first")
        if self._sender is not None:
            return self._reply(503, "5.5.1", "Error: nested MAIL command")
        if config.tls.require and not self._tls:
            return self._reply(530, "5.7.0", "Must issue a STARTTLS command first")
        if self._user is None and (
            self.kind == SUBMISSION or not config.auth.anonymous
        ):
            return self._reply(530, "5.7.0", "Authentication required")
        if arg[:5].upper() != "FROM:":
            return self._reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
        try:
            sender, rest = address.parse_path(arg[5:].lstrip(" "), null_ok=True)
            if rest and not self._esmtp:
                raise address.ParameterError("parameters need EHLO", unknown=True)
            params = address.mail_params(rest)
        except address.AddressError as e:
            return self._reply(501, "5.5.4", f"Bad sender address syntax: {e}")
        except address.ParameterError as e:
            return self._param_error(e)
        messages = config.messages
        if params.size is not None:
            if messages.max_message_size and params.size > messages.max_message_size:
                return self._reply(
                    552, "5.3.4", "Message size exceeds fixed maximum message size"
                )
            if self._session_full(params.size):
                return self._reply(552, "5.3.4", "Session size limit exceeded")
        self._sender, self._mail_params = sender, params
        return self._reply(250, "2.1.0", "Ok")

    def _session_full(self, size: int) -> bool:
        limit = self.inbound.config.messages.max_session_size
        return bool(limit) and self._session_bytes + size > limit

    def _param_error(self, e: address.ParameterError):
        if e.unknown:
            return self._reply(555, "5.5.4", f"Error: {e}")
        return self._reply(501, "5.5.4", f"Error: {e}")

    def smtp_RCPT(self, arg: str):
        """RFC 5321 4.1.1.3 with NOTIFY and ORCPT; the relay rule of SPEC 5."""
        config = self.inbound.config
        if self._sender is None:
            return self._reply(503, "5.5.1", "Error: need MAIL command")
        if arg[:3].upper() != "TO:":
            return self._reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
        try:
            rcpt, rest = address.parse_path(arg[3:].lstrip(" "), null_ok=False)
            if rest and not self._esmtp:
                raise address.ParameterError("parameters need EHLO", unknown=True)
            params = address.rcpt_params(rest)
        except address.AddressError as e:
            return self._reply(501, "5.5.4", f"Bad recipient address syntax: {e}")
        except address.ParameterError as e:
            return self._param_error(e)
        if len(self._rcpts) >= config.messages.max_recipients > 0:
            return self._reply(452, "4.5.3", "Error: too many recipients")
        dest = route(config, self.inbound.users, rcpt)
        if dest is None:
            return self._reply(550, "5.1.1", f"<{rcpt}>: User unknown")
        if not policy.may_relay(config, self.peer_ip, self._user is not None, dest):
            return self._reply(554, "5.7.1", "Relay access denied")
        if rcpt.lower() not in self._rcpt_seen:
            self._rcpt_seen.add(rcpt.lower())
            self._rcpts.append(Recipient(rcpt, params.notify, params.orcpt))
        return self._reply(250, "2.1.5", "Ok")

    def smtp_DATA(self, arg: str):
        """RFC 5321 4.1.1.4: read the message in bulk up to CRLF.CRLF."""
        if arg:
            return self._reply(501, "5.5.4", "Syntax: DATA")
        if self._sender is None:
            return self._reply(503, "5.5.1", "Error: need MAIL command")
        if not self._rcpts:
            return self._reply(554, "5.5.1", "Error: no valid recipients")
        self._send("354 End data with <CR><LF>.<CR><LF>\r\n")
        self._log(354)
        self._command = ("DATA", "")
        self._mode = _DATA
        self.in_transfer = True
        # The leading CRLF lets one search find a terminator on the first line.
        self._data = bytearray(b"\r\n")
        self._overflow = False

    def _data_received(self) -> None:
        data = self._data
        start = max(0, len(data) - 4)
        data += self._buf
        self._buf = b""
        end = data.find(_EOD, start)
        if end < 0:
            self._check_overflow()
            return
        self._buf = bytes(data[end + len(_EOD) :])
        del data[end + 2 :]
        self._mode = _COMMAND
        self._data = None
        result = self._end_of_data(data)
        if isinstance(result, defer.Deferred):
            self._waiting = True
            result.addErrback(self._internal_error)
            result.addBoth(self._resume)
        else:
            self.in_transfer = False

    def _check_overflow(self) -> None:
        limit = self.inbound.config.messages.max_message_size
        if limit and len(self._data) > limit + limit // 8 + 1024:
            # Keep reading to the terminator, but not keeping the data.
            self._overflow = True
            del self._data[:-4]

    def _end_of_data(self, raw: bytearray):
        messages = self.inbound.config.messages
        if self._overflow:
            return self._data_refused(
                552, "5.3.4", "Message size exceeds fixed maximum message size"
            )
        if raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\n"):
            # Bare CR or LF: the stuff of SMTP smuggling.
            if messages.bare_newlines == "reject":
                return self._data_refused(
                    550, "5.6.0", "Error: bare CR or LF in message data"
                )
            raw = bytearray(_NEWLINE.sub(b"\r\n", raw))
        message = raw.replace(b"\r\n.", b"\r\n")[2:]
        # RFC 5321 4.5.3.1.6: 998 octets a line, not counting a stuffed dot.
        if len(message) > MAX_TEXT_LINE - 2 and max(map(len, message.split(b"\n"))) > MAX_TEXT_LINE - 1:
            return self._data_refused(500, "5.5.2", "Error: line too long in message data")
        if messages.max_message_size and len(message) > messages.max_message_size:
            return self._data_refused(
                552, "5.3.4", "Message size exceeds fixed maximum message size"
            )
        if self._session_full(len(message)):
            return self._data_refused(552, "5.3.4", "Session size limit exceeded")
        if self._hops(message) > messages.max_hop_count:
            return self._data_refused(554, "5.4.6", "Error: too many hops")
        return self._store(bytes(message))

    def _data_refused(self, code: int, status: str, text: str) -> None:
        self._reset()
        self._reply(code, status, text)

    @staticmethod
    def _hops(message: bytearray) -> int:
        end = message.find(b"\r\n\r\n")
        header = message if end < 0 else message[: end + 2]
        return len(_RECEIVED.findall(header))

    def _store(self, message: bytes) -> defer.Deferred[None]:
        inbound = self.inbound
        queue = inbound.queue
        now = inbound.clock.seconds()
        params = self._mail_params
        queue_id = queue.new_id()
        data = self._received_header(queue_id, now) + message
        envelope = Envelope(
            id=queue_id,
            sender=self._sender or "",
            recipients=self._rcpts,
            arrival=now,
            next_attempt=now,
            ret=params.ret,
            envid=params.envid,
            size=len(data),
            client=f"{self._helo} [{self.peer_ip}]",
            body=params.body,
        )
        self._reset()
        d = (inbound.accept or queue.store)(envelope, data)
        d.addCallbacks(self._stored, self._store_failed, (envelope, len(message)))
        d.addBoth(self._transfer_done)
        return d

    def _stored(self, _ignored, envelope: Envelope, size: int) -> None:
        self._session_bytes += size
        self.inbound.received += 1
        self._reply(250, "2.0.0", f"Ok: queued as {envelope.id}")

    def _store_failed(self, failure: Failure) -> None:
        if failure.check(OSError) and failure.value.errno in _DISK_FULL:
            log.error("Queue write failed: {e}", e=failure.value)
            return self._reply(452, "4.3.1", "Insufficient system storage")
        log.failure("Queue write failed in session {id}", failure, id=self.session_id)
        self._reply(451, "4.3.0", "Error: local error in processing")

    def _transfer_done(self, result):
        self.in_transfer = False
        return result

    def _received_header(self, queue_id: str, now: float) -> bytes:
        """The RFC 5321 4.4 trace header, with the RFC 3848 protocol keyword."""
        helo = self._helo or ""
        if not address.is_domain(helo):
            helo = _HELO_SAFE.sub("_", helo)[:64]
        proto = "ESMTP" if self._esmtp else "SMTP"
        if self._esmtp and self._tls:
            proto += "S"
        if self._esmtp and self._user is not None:
            proto += "A"
        rcpt = f"\r\n\tfor <{self._rcpts[0].address}>" if len(self._rcpts) == 1 else ""
        return (
            f"Received: from {helo} ([{self.peer_ip}])\r\n"
            f"\tby {self._hostname} (smtpd) with {proto} id {queue_id}{rcpt};\r\n"
            f"\t{_header_date(now)}\r\n"
        ).encode("utf-8")

    # -- AUTH (RFC 4954) --------------------------------------------------

    def smtp_AUTH(self, arg: str):
        """RFC 4954: PLAIN and LOGIN, checked against etc/users off the reactor."""
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        auth = self.inbound.config.auth
        if self._helo is None or not self._esmtp:
            return self._reply(503, "5.5.1", "Error: send EHLO first")
        if self._user is not None:
            return self._reply(503, "5.5.1", "Error: already authenticated")
        if self._sender is not None:
            return self._reply(503, "5.5.1", "Error: MAIL transaction in progress")
        if not self._tls and not auth.allow_plaintext:
            if self._can_starttls():
                return self._reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
            return self._reply(503, "5.5.1", "Error: authentication not enabled")
        if mechanism not in auth.mechanisms:
            return self._reply(504, "5.5.4", "Unrecognized authentication type")
        self._auth_mechanism = mechanism
        self._auth_login = None
        if mechanism == "PLAIN":
            if initial:
                return self._auth_plain(initial.encode("ascii", "replace"))
            return self._challenge(b"")
        if initial:
            return self._auth_continue(initial.encode("ascii", "replace"))
        return self._challenge(b"Username:")

    def _challenge(self, text: bytes) -> None:
        self._mode = _AUTH
        self._send("334 " + base64.b64encode(text).decode() + "\r\n")

    def _auth_continue(self, line: bytes):
        self._mode = _COMMAND
        if line == b"*":
            return self._reply(501, "5.7.0", "Authentication aborted")
        if self._auth_mechanism == "PLAIN":
            return self._auth_plain(line)
        try:
            value = base64.b64decode(line, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return self._reply(501, "5.5.2", "Cannot decode response")
        if self._auth_login is None:
            self._auth_login = value
            return self._challenge(b"Password:")
        return self._check_password(self._auth_login, value)

    def _auth_plain(self, line: bytes):
        try:
            decoded = base64.b64decode(line, validate=True).decode("utf-8")
            _authzid, login, password = decoded.split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return self._reply(501, "5.5.2", "Cannot decode response")
        return self._check_password(login, password)

    def _check_password(self, login: str, password: str) -> defer.Deferred[None]:
        users = self.inbound.users
        d = self.inbound.run_blocking(
            users.check_password, login.lower(), password.encode("utf-8")
        )
        d.addCallback(self._auth_result, login)
        return d

    def _auth_result(self, ok: bool, login: str) -> None:
        if ok:
            self._user = login.lower()
            return self._reply(235, "2.7.0", "Authentication successful")
        self._auth_failures += 1
        self._reply(535, "5.7.8", "Authentication credentials invalid")
        limit = self.inbound.config.access.auth_failures
        if limit and self._auth_failures >= limit:
            self.terminate("4.7.0 Error: too many failed authentications")

    # -- for the admin API ------------------------------------------------

    @property
    def user(self) -> str | None:
        """The authenticated login, if any."""
        return self._user

    @property
    def server_address(self) -> tuple[str, int | str]:
        """The (ip, port) the client connected to, kept from the connection's start."""
        return self._server_address or ("", "")

    @property
    def helo(self) -> str | None:
        """The HELO/EHLO name the client gave."""
        return self._helo
