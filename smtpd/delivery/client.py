# -*- test-case-name: tests.test_client -*-
"""
The outbound SMTP client: one session with one remote host carrying any number
of mail transactions (RFC 5321), with EHLO and HELO fallback, STARTTLS per
policy (RFC 3207), AUTH PLAIN and LOGIN (RFC 4954), SIZE (RFC 1870),
BODY=8BITMIME (RFC 6152) and DSN parameters (RFC 3461).

L{RelayClient} takes Twisted's ESMTP client for the session set-up (greeting,
EHLO, STARTTLS, AUTH) and runs the mail transaction itself, one command at a
time, so that every recipient gets its own answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.mail import smtp
from twisted.mail.interfaces import IClientAuthentication
from twisted.python.failure import Failure
from zope.interface import implementer

from smtpd.mail.envelope import DeliveryStatus, Recipient
from smtpd.mail.lineends import LineEnds
from smtpd.mail.source import IMessageSource, read_chunks

TLS_POLICIES = ("none", "may", "encrypt", "verify")

# Longest reply text kept for a status (a reply may be many lines).
MAX_REPLY = 900

# The most a host may send as one reply (RFC 5321 4.5.3.1.5: a reply line is at
# most 512 octets; EHLO replies are the longest in practice, a few dozen lines).
# Beyond either limit the session fails rather than hold the host's output.
MAX_REPLY_LINES = 100
MAX_REPLY_BYTES = 65536
MAX_REPLY_LINE = 4096

# How much message data is dot-stuffed and written at a time.
CHUNK_SIZE = 65536

_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_VERBS = {b"EHLO", b"HELO", b"STARTTLS", b"AUTH", b"MAIL", b"RCPT", b"DATA", b"RSET", b"QUIT"}


class SessionError(Exception):
    """
    The session with one host failed as a whole, before or outside any
    recipient's own answer: no connection, a refusing greeting, EHLO or MAIL
    rejected, TLS or AUTH impossible, the connection lost or timed out.

    @ivar code: the reply code (real, or synthesised: 451 for a local
        diagnosis such as a refused connection).
    @ivar status: the RFC 3463 status.
    @ivar reply: a one-line reply text, code first.
    @ivar stale: the failure hit a reused connection before MAIL was
        accepted: the same host may well work on a fresh connection.
    @ivar final: the host refused the transaction itself (a 5xx to MAIL), or
        no host could take it as it is: the other hosts of the route are
        not tried.
    @ivar tls_failure: TLS itself failed (STARTTLS refused, or the
        handshake): the same host may work without TLS.
    """

    def __init__(
        self,
        code: int,
        status: str,
        reply: str,
        stale: bool = False,
        final: bool = False,
        tls_failure: bool = False,
    ):
        super().__init__(reply)
        self.code = code
        self.status = status
        self.reply = reply
        self.stale = stale
        self.final = final
        self.tls_failure = tls_failure

    @property
    def permanent(self) -> bool:
        """Whether no retry will cure it."""
        return self.code >= 500


@dataclass(frozen=True)
class OutboundMessage:
    """
    One mail transaction to carry.

    @ivar sender: the reverse-path without angle brackets ("" for C{<>}).
    @ivar recipients: the recipients, with their RFC 3461 NOTIFY and ORCPT.
    @ivar source: the message (header and body), CRLF line endings, an
        L{IMessageSource} read in chunks.
    @ivar ret: RFC 3461 RET or "".
    @ivar envid: RFC 3461 ENVID (decoded) or "".
    @ivar eight_bit: whether the message needs BODY=8BITMIME.
    """

    sender: str
    recipients: tuple[Recipient, ...]
    source: IMessageSource
    ret: str = ""
    envid: str = ""
    eight_bit: bool = False


class DotStuffer:
    """
    Turns message data into an SMTP DATA stream (RFC 5321 4.5.2), a chunk at a
    time: every line ends in CRLF (a bare CR or LF becomes CRLF), a line that
    starts with "." gets another one, wherever the chunks are cut, and the
    stream ends with CRLF "." CRLF.
    """

    def __init__(self) -> None:
        self._line_ends = LineEnds(b"\r\n")
        self._line_start = True

    def feed(self, chunk: bytes) -> bytes:
        """The DATA stream for the next piece of the message."""
        text = self._line_ends.feed(chunk)
        if not text:
            return b""
        if self._line_start and text.startswith(b"."):
            text = b"." + text
        text = text.replace(b"\r\n.", b"\r\n..")
        self._line_start = text.endswith(b"\r\n")
        return text

    def finish(self) -> bytes:
        """The end of the stream: a CRLF when the message lacks one, then ".CRLF"."""
        held = self._line_ends.finish()
        tail = b"\r\n" if held or not self._line_start else b""
        self._line_start = True
        return tail + b".\r\n"


def dot_stuff(data: bytes) -> bytes:
    """The whole DATA stream for C{data}, final dot line included."""
    stuffer = DotStuffer()
    return stuffer.feed(data) + stuffer.finish()


def xtext(value: str) -> str:
    """RFC 3461 xtext: C{+}, C{=}, controls and non-ASCII as C{+HH}."""
    out = []
    for char in value:
        if 33 <= ord(char) <= 126 and char not in "+=":
            out.append(char)
        else:
            out.extend(f"+{b:02X}" for b in char.encode("utf-8"))
    return "".join(out)


def reply_text(code: int, resp: bytes | str | None) -> str:
    """A reply as one printable line, code first: C{"550 5.1.1 no such user"}."""
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    lines = (resp or "").splitlines()
    text = " ".join(line.strip() for line in lines)
    text = "".join(c if c.isprintable() else " " for c in text)
    return f"{code} {text}".strip()[:MAX_REPLY]


def enhanced_status(code: int, reply: str) -> str:
    """
    The RFC 3463 status in C{reply} (code first) when it agrees with C{code},
    else the generic one of its class (C{"4.0.0"}).
    """
    text = reply[4:] if reply[:3] == str(code) else reply
    match = _ENHANCED.match(text)
    if match and match.group(1) == str(code)[0]:
        return match.group(0)
    if 200 <= code < 600:
        return f"{code // 100}.0.0"
    return "4.0.0"


def _safe(address: str) -> bool:
    """Whether C{address} can go on a command line (no controls, no spaces, ASCII)."""
    return address.isascii() and address.isprintable() and " " not in address


@implementer(IClientAuthentication)
class PlainAuthenticator:
    """SASL PLAIN (RFC 4616) with an empty authorisation identity."""

    def __init__(self, user: bytes):
        self.user = user

    def getName(self) -> bytes:
        """The mechanism name."""
        return b"PLAIN"

    def challengeResponse(self, secret: bytes, chal: Any) -> bytes:
        """The initial response: NUL user NUL password."""
        return b"\0" + self.user + b"\0" + secret


class RelayClient(smtp.ESMTPClient):
    """
    A client session with one host.

    L{ready} fires with the client once the host greeted, answered EHLO (or
    HELO), and TLS and AUTH were done as required; it fails with
    L{SessionError} otherwise. Then L{send} runs one transaction at a time;
    L{quit} ends the session; L{whenClosed} fires when the connection is gone.

    @param helo: our name, for EHLO and HELO.
    @param remote_mta: the host as reported in statuses: C{"name [ip]"}.
    @param clock: the L{IReactorTime} for the timeout.
    @param timeout: seconds to wait for any reply.
    @param tls: the L{TLS_POLICIES} entry: C{none} never starts TLS; C{may}
        starts it when offered; C{encrypt} and C{verify} require it (the
        verification itself is in C{tls_options}).
    @param tls_options: the client TLS connection creator (unused for C{none}).
    @param username: AUTH toward the host when not empty.
    @param password: the AUTH password.
    """

    debug = False
    MAX_LENGTH = MAX_REPLY_LINE

    def __init__(
        self,
        helo: str,
        remote_mta: str,
        clock: Any,
        timeout: float,
        tls: str = "none",
        tls_options: Any = None,
        username: str = "",
        password: str = "",
    ):
        if tls not in TLS_POLICIES:
            raise ValueError(f"unknown TLS policy {tls!r}")
        secret = password.encode("utf-8") if username else None
        context = tls_options if tls != "none" else None
        smtp.ESMTPClient.__init__(self, secret, context, helo.encode("ascii", "replace"))
        self.remote_mta = remote_mta
        self.timeout = timeout
        self.callLater = clock.callLater
        self.requireTransportSecurity = tls in ("encrypt", "verify")
        self.requireAuthentication = bool(username)
        if username:
            user = username.encode("utf-8")
            self.registerAuthenticator(PlainAuthenticator(user))
            self.registerAuthenticator(smtp.LOGINAuthenticator(user))
        self.ready: Deferred[RelayClient] = Deferred()
        self.extensions: dict[str, str] = {}
        self.transactions = 0
        self._phase = "initial greeting"
        self._pending: Deferred[tuple[int, str]] | None = None
        self._established = False
        self._connected = False
        self._lost = False
        self._busy = False
        self._error: SessionError | None = None
        self._closed_waiters: list[Deferred[None]] = []
        self._reply_lines = 0
        self._reply_bytes = 0

    # ------------------------------------------------------------ state

    @property
    def usable(self) -> bool:
        """Whether a transaction may start now."""
        return (
            self._established and self._connected and not self._busy and self._error is None
        )

    @property
    def secure(self) -> bool:
        """Whether the session runs over TLS."""
        return bool(self._tlsMode)

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
            self._close(abort=False)
        return closed

    # ------------------------------------------------------------ session set-up

    def connectionMade(self) -> None:
        """Wait for the greeting, under the timeout."""
        self._connected = True
        smtp.ESMTPClient.connectionMade(self)

    def sendLine(self, line: bytes) -> None:
        """Send a command, remembering which one for diagnostics."""
        verb = line.split(b" ", 1)[0].upper()
        if verb in _VERBS:
            self._phase = f"reply to {verb.decode()}"
        smtp.ESMTPClient.sendLine(self, line)

    def lineReceived(self, line: bytes) -> None:
        """
        Take one reply line. Only a complete reply restarts the timeout, and
        one reply may not pass L{MAX_REPLY_LINES} lines or L{MAX_REPLY_BYTES}:
        a hostile host could otherwise hold the session, and our memory,
        with an endless multi-line reply.
        """
        if self._error is not None:
            return
        self._reply_lines += 1
        self._reply_bytes += len(line)
        if self._reply_lines > MAX_REPLY_LINES or self._reply_bytes > MAX_REPLY_BYTES:
            self._fail(
                SessionError(
                    451,
                    "4.5.0",
                    f"451 4.5.0 reply from {self.remote_mta} longer than "
                    f"{MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES} bytes",
                ),
                abort=True,
            )
            return
        if line[:3].isdigit() and (line[3:4] == b"-" or line[:1] == b"0"):
            # A continuation (or Twisted's "0yz" informational line): kept
            # without restarting the timeout.
            if line[:1] != b"0":
                self.code = int(line[:3])
                self.resp.append(line[4:])
            return
        self._reply_lines = self._reply_bytes = 0
        smtp.ESMTPClient.lineReceived(self, line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A reply line longer than L{MAX_REPLY_LINE}: a protocol error."""
        self._fail(
            SessionError(
                451,
                "4.5.0",
                f"451 4.5.0 reply line from {self.remote_mta} longer than {MAX_REPLY_LINE} bytes",
            ),
            abort=True,
        )

    def smtpConnectionFailed(self, code: int, resp: bytes) -> None:
        """The greeting was not 220."""
        self._fail(self._rejection(code, resp))

    def esmtpState_ehlo(self, code: int, resp: bytes) -> None:
        """Send EHLO; a refusal is handled by L{_ehloRejected}."""
        smtp.ESMTPClient.esmtpState_ehlo(self, code, resp)
        self._failresponse = self._ehloRejected

    def _ehloRejected(self, code: int, resp: bytes) -> None:
        """
        A 5xx to EHLO falls back to HELO unless TLS or AUTH is required
        (both need ESMTP); a 4xx means this host cannot take mail now.
        """
        if not 500 <= code < 600:
            self._fail(self._rejection(code, resp))
        elif self.requireTransportSecurity and not self._tlsMode:
            self.esmtpTLSRequired()
        elif self.requireAuthentication:
            self.esmtpAUTHRequired()
        else:
            self.smtpState_helo(code, resp)

    def smtpState_helo(self, code: int, resp: bytes) -> None:
        """Send HELO; a refusal fails the session."""
        self.extensions = {}
        smtp.ESMTPClient.smtpState_helo(self, code, resp)
        self._failresponse = self._rejected

    def esmtpState_serverConfig(self, code: int, resp: bytes) -> None:
        """Read the EHLO keywords (case-insensitively), then STARTTLS or AUTH."""
        items: dict[bytes, bytes | None] = {}
        for line in resp.splitlines()[1:]:
            keyword, _, value = line.strip().partition(b" ")
            items[keyword.upper()] = value.strip() or None
        self.extensions = {
            k.decode("ascii", "replace"): (v or b"").decode("ascii", "replace")
            for k, v in items.items()
        }
        self.tryTLS(code, resp, items)

    def esmtpState_starttls(self, code: int, resp: bytes) -> None:
        """220 to STARTTLS: start the handshake, then EHLO again (RFC 3207 4.2)."""
        try:
            self.transport.startTLS(self.context)
        except Exception as e:
            self._fail(
                SessionError(451, "4.7.5", f"451 4.7.5 cannot start TLS: {e}", tls_failure=True)
            )
            return
        self._tlsMode = True
        self.esmtpState_ehlo(code, resp)

    def esmtpTLSRequired(self, code: int = -1, resp: bytes | None = None) -> None:
        """TLS is required and the host does not offer STARTTLS."""
        self._fail(
            SessionError(451, "4.7.5", "451 4.7.5 TLS is required, but was not offered by host")
        )

    def esmtpTLSFailed(self, code: int = -1, resp: bytes | None = None) -> None:
        """The host refused STARTTLS."""
        reply = reply_text(code, resp)
        self._fail(
            SessionError(451, "4.7.5", f"451 4.7.5 STARTTLS refused: {reply}", tls_failure=True)
        )

    def esmtpAUTHRequired(self, code: int = -1, resp: bytes | None = None) -> None:
        """AUTH is required and the host offers neither PLAIN nor LOGIN."""
        self._fail(
            SessionError(
                451, "4.7.0", "451 4.7.0 AUTH is required, but the host offers no PLAIN or LOGIN"
            )
        )

    def esmtpAUTHDeclined(self, code: int = -1, resp: bytes | None = None) -> None:
        """The host rejected our credentials: a configuration problem, so temporary."""
        reply = reply_text(code, resp)
        self._fail(SessionError(451, "4.7.0", f"451 4.7.0 authentication failed: {reply}"))

    esmtpAUTHServerError = esmtpAUTHDeclined
    esmtpEHLORequired = esmtpAUTHRequired

    def _esmtpState_plainAuth(self, code: int, resp: bytes) -> None:
        """
        A refused AUTH PLAIN is final (Twisted would send the same credentials
        again, and count twice against the host's failure limit).
        """
        self.esmtpAUTHDeclined(code, resp)

    def esmtpAUTHMalformedChallenge(self, code: int = -1, resp: bytes | None = None) -> None:
        """The host sent a challenge that is not base64."""
        self._fail(SessionError(451, "4.7.0", "451 4.7.0 malformed AUTH challenge from host"))

    def smtpState_from(self, code: int, resp: bytes) -> None:
        """The session is established: wait for L{send}."""
        self._established = True
        self._idle()
        if not self.ready.called:
            self.ready.callback(self)

    # ------------------------------------------------------------ failures

    def timeoutConnection(self) -> None:
        """No reply within the timeout."""
        error = SessionError(451, "4.4.2", f"451 4.4.2 timeout while waiting for {self._phase}")
        self._fail(error, abort=True)

    def sendError(self, exc: Exception) -> None:
        """Twisted's report of a malformed reply: a protocol error."""
        error = SessionError(451, "4.5.0", f"451 4.5.0 protocol error: {exc}")
        self._fail(error, abort=True)

    def _rejection(self, code: int, resp: bytes | None) -> SessionError:
        """The error for a refusing reply received by Twisted's state machine."""
        return self._errorFor(code, reply_text(code, resp))

    def _errorFor(self, code: int, reply: str) -> SessionError:
        """The error for a refusing reply C{reply} (code first)."""
        if not 400 <= code < 600:
            return SessionError(451, "4.5.0", f"451 4.5.0 unexpected reply: {reply}")
        return SessionError(code, enhanced_status(code, reply), reply)

    def _rejected(self, code: int, resp: bytes) -> None:
        self._fail(self._rejection(code, resp))

    def _fail(self, error: SessionError, abort: bool = False) -> None:
        """The session is over: tell whoever waits, then close."""
        if self._error is not None:
            return
        self._error = error
        self.setTimeout(None)
        self._notify(error)
        if self._connected:
            self._close(abort)

    def _notify(self, error: SessionError) -> None:
        if not self.ready.called:
            self.ready.errback(error)
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.errback(error)

    def _close(self, abort: bool) -> None:
        self._okresponse = self._failresponse = self._ignore
        if abort:
            self.transport.abortConnection()
        else:
            smtp.ESMTPClient.sendLine(self, b"QUIT")
            self.transport.loseConnection()

    def _ignore(self, code: int, resp: bytes) -> None:
        """Replies after we gave up on the session (the reply to QUIT)."""

    def connectionLost(self, reason: Failure = None) -> None:
        """Fail whatever waits with a lost-connection (or TLS) error."""
        smtp.ESMTPClient.connectionLost(self, reason)
        self._connected = False
        self._lost = True
        if self._error is None:
            self._error = self._lostError(reason)
            self._notify(self._error)
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)

    def _lostError(self, reason: Failure | None) -> SessionError:
        why = reason.getErrorMessage() if reason is not None else "connection lost"
        if self._tlsMode and not self._established:
            return SessionError(
                451, "4.7.5", f"451 4.7.5 TLS negotiation failed: {why}", tls_failure=True
            )
        return SessionError(
            451, "4.4.2", f"451 4.4.2 lost connection while waiting for {self._phase}"
        )

    # ------------------------------------------------------------ transactions

    def _idle(self) -> None:
        self.setTimeout(None)
        self._okresponse = self._failresponse = self._unsolicited

    def _unsolicited(self, code: int, resp: bytes) -> None:
        """The host spoke unasked (typically 421 before closing): end the session."""
        self._fail(self._rejection(code, resp))

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
        d = Deferred.fromCoroutine(self._transaction(message))
        return d.addBoth(self._transactionDone)

    def _transactionDone(self, result: Any) -> Any:
        self._busy = False
        if self._error is None:
            self._idle()
        return result

    async def _transaction(self, message: OutboundMessage) -> list[DeliveryStatus]:
        reused = self.transactions > 0
        self.transactions += 1
        self.setTimeout(self.timeout)
        try:
            await self._open(message, reused)
        except SessionError as e:
            # A reused connection that died before MAIL: try a fresh one.
            stale = reused and (self._error is not None)
            raise SessionError(e.code, e.status, e.reply, stale=stale, final=e.final) from None
        results: dict[int, DeliveryStatus] = {}
        try:
            accepted = await self._recipients(message, results)
            if accepted:
                await self._data(message, accepted, results)
        except SessionError as e:
            for i, recipient in enumerate(message.recipients):
                if i not in results:
                    results[i] = self._status(recipient, e.code, e.reply, e.status)
        return [results[i] for i in range(len(message.recipients))]

    async def _open(self, message: OutboundMessage, reused: bool) -> None:
        """RSET (on a reused session), the SIZE check, then MAIL."""
        if reused:
            code, reply = await self._command(b"RSET")
            if not 200 <= code < 300:
                raise self._stop(code, reply)
        limit = self.extensions.get("SIZE", "")
        if limit.isdigit() and 0 < int(limit) < message.source.size:
            raise SessionError(
                552,
                "5.3.4",
                f"552 5.3.4 message size {message.source.size} exceeds "
                f"the size limit {int(limit)} of the host",
            )
        if not _safe(message.sender):
            raise SessionError(553, "5.1.7", "553 5.1.7 bad sender address syntax", final=True)
        code, reply = await self._command(self._mailCommand(message))
        if code == 421:
            raise self._stop(code, reply)
        if not 200 <= code < 300:
            error = self._errorFor(code, reply)
            # A 5xx to MAIL refuses this sender or message, whatever host
            # we try next (as Postfix: only the greeting's 5xx is skipped).
            error.final = error.permanent
            raise error

    def _stop(self, code: int, reply: str) -> SessionError:
        """A reply that ends the session (421, or a failed RSET)."""
        error = self._errorFor(code, reply)
        self._fail(error)
        return error

    async def _recipients(self, message: OutboundMessage, results: dict) -> list[int]:
        """RCPT for each recipient; the indexes of those accepted."""
        accepted = []
        for i, recipient in enumerate(message.recipients):
            if not _safe(recipient.address):
                results[i] = self._status(recipient, 553, "553 5.1.3 bad address syntax")
                continue
            code, reply = await self._command(self._rcptCommand(recipient))
            if code == 421:
                raise self._stop(code, reply)
            if 200 <= code < 300:
                accepted.append(i)
            else:
                results[i] = self._status(recipient, code, reply)
        return accepted

    async def _data(self, message: OutboundMessage, accepted: list[int], results: dict) -> None:
        """DATA, the stuffed message, and the final reply for the accepted ones."""
        code, reply = await self._command(b"DATA")
        if code == 354:
            final = self._expect()
            self._phase = "reply to end of DATA"
            stuffer = DotStuffer()
            for chunk in read_chunks(message.source, CHUNK_SIZE):
                self.transport.write(stuffer.feed(chunk))
            self.transport.write(stuffer.finish())
            code, reply = await final
        if code == 421:
            self._fail(self._errorFor(code, reply))
        for i in accepted:
            results[i] = self._status(message.recipients[i], code, reply)

    def _mailCommand(self, message: OutboundMessage) -> bytes:
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={message.source.size}")
        if message.eight_bit and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")
        if "DSN" in self.extensions:
            if message.ret:
                params.append(f"RET={message.ret.upper()}")
            if message.envid:
                params.append(f"ENVID={xtext(message.envid)}")
        return " ".join([f"MAIL FROM:<{message.sender}>"] + params).encode("ascii")

    def _rcptCommand(self, recipient: Recipient) -> bytes:
        params = []
        if "DSN" in self.extensions:
            if recipient.notify:
                params.append("NOTIFY=" + ",".join(n.upper() for n in recipient.notify))
            kind, semi, original = recipient.orcpt.partition(";")
            if semi and _ADDR_TYPE.match(kind):
                # RFC 3461 4.2: the address is xtext on the wire.
                params.append(f"ORCPT={kind};{xtext(original)}")
        return " ".join([f"RCPT TO:<{recipient.address}>"] + params).encode("ascii")

    def _status(
        self, recipient: Recipient, code: int, reply: str, status: str = ""
    ) -> DeliveryStatus:
        return DeliveryStatus(
            address=recipient.address,
            code=code,
            status=status or enhanced_status(code, reply),
            reply=reply,
            remote_mta=self.remote_mta,
            tls=self.secure,
        )

    def _command(self, line: bytes) -> Deferred[tuple[int, str]]:
        """Send one command; the Deferred fires with C{(code, reply)}."""
        d = self._expect()
        if self._error is None:
            self.sendLine(line)
        return d

    def _expect(self) -> Deferred[tuple[int, str]]:
        """A Deferred for the next reply (fails with the session's error)."""
        if self._error is not None:
            return fail(self._error)
        d: Deferred[tuple[int, str]] = Deferred()
        self._pending = d
        self._expected = range(1000)
        self._okresponse = self._failresponse = self._gotReply
        return d

    def _gotReply(self, code: int, resp: bytes) -> None:
        d, self._pending = self._pending, None
        self._okresponse = self._failresponse = self._unsolicited
        if d is not None:
            d.callback((code, reply_text(code, resp)))

