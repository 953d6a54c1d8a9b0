# -*- test-case-name: tests.test_pop3_session -*-
"""
The AUTHORIZATION state of a POP3 session (RFC 1939 4): logins against the
accounts file or the [directory] with USER/PASS or RFC 5034 C{AUTH PLAIN}, only under TLS unless
C{[auth] allow_plaintext}; C{STLS} (RFC 2595); the RFC 2449 capabilities.
Mixed into L{smtpd.pop3.session.POP3Session}.
"""

from __future__ import annotations

import base64
import binascii

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITLSTransport
from twisted.logger import Logger

from smtpd.directory.interfaces import DirectoryUnavailable

log = Logger()

# Commands allowed before login (RFC 1939 4, RFC 2449, RFC 2595, RFC 5034).
AUTHORIZATION = [b"CAPA", b"USER", b"PASS", b"APOP", b"AUTH", b"STLS", b"QUIT"]
LOGIN_COMMANDS = (b"USER", b"PASS", b"APOP", b"AUTH", b"STLS")


class LoginRefused(Exception):
    """
    The password was right but the session cannot have the mailbox now.

    @ivar text: the C{-ERR} text, starting with its RFC 2449 response code.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class AuthorizationState:
    """
    Login, STLS and CAPA for a L{smtpd.pop3.session.POP3Session}: uses its
    C{server}, C{tls}, C{transport}, replies and C{hold}.
    """

    def may_login(self) -> bool:
        """Passwords travel only under TLS, unless C{[auth] allow_plaintext}."""
        return self.tls or self.server.config.auth.allow_plaintext

    def can_stls(self) -> bool:
        """Whether STLS can be offered now."""
        return (not self.tls and self.server.tls_options is not None
                and ITLSTransport.providedBy(self.transport))

    def listCapabilities(self) -> list[bytes]:
        """RFC 2449 capabilities for CAPA, as they stand in this state."""
        caps = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
                b"EXPIRE NEVER"]
        if self.server.login_delay:
            caps.append(b"LOGIN-DELAY %d" % self.server.login_delay)
        if self.mbox is None:
            if self.may_login():
                caps += [b"USER", b"SASL PLAIN"]
            if self.can_stls():
                caps.append(b"STLS")
        return caps

    def do_STLS(self):
        """RFC 2595 4: start TLS; what the client sent behind STLS is dropped."""
        if self.tls:
            return self.failResponse("Already using TLS")
        if not self.can_stls():
            return self.failResponse("[SYS/PERM] TLS not available")
        self.successResponse("Begin TLS negotiation")
        self.discard = True
        self.transport.startTLS(self.server.tls_options)
        self.tls = True
        self.pending_user = None
        return None

    def refuse_plaintext(self) -> None:
        """The reply to a login attempt in the clear."""
        self.failResponse("[AUTH] Plaintext authentication disallowed on non-secure "
                          "connections; use STLS or POP3S")

    def do_USER(self, user: bytes):
        """RFC 1939 7: the login; the password follows with PASS."""
        if not self.may_login():
            return self.refuse_plaintext()
        self.pending_user = user.decode("utf-8", "replace")
        return self.successResponse("Send PASS")

    def do_PASS(self, password: bytes, *words: bytes):
        """RFC 1939 7: the password (it may contain spaces)."""
        if not self.may_login():
            return self.refuse_plaintext()
        if self.pending_user is None:
            return self.failResponse("Send USER first")
        login, self.pending_user = self.pending_user, None
        return self.hold(self.authenticate(login, b" ".join((password, *words))))

    def do_APOP(self, *args: bytes):
        """APOP needs plain passwords on the server; accounts keep bcrypt hashes."""
        return self.failResponse("APOP not supported")

    def do_AUTH(self, mechanism: bytes | None = None, initial: bytes | None = None):
        """RFC 5034: SASL PLAIN, with or without an initial response."""
        if mechanism is None:
            # RFC 1734 clients list the mechanisms with a bare AUTH.
            self.successResponse("Mechanisms follow")
            if self.may_login():
                self.sendLine(b"PLAIN")
            return self.sendLine(b".")
        if not self.may_login():
            return self.refuse_plaintext()
        if mechanism.upper() != b"PLAIN":
            return self.failResponse("Unsupported authentication mechanism")
        if initial is None:
            self.sendLine(b"+ ")
            self.state = "AUTH"
            return None
        return self.sasl_plain(initial)

    def state_AUTH(self, line: bytes):
        """The client's SASL response to our C{+} continuation."""
        self.state = "COMMAND"
        if line == b"*":
            return self.failResponse("Authentication cancelled")
        d = self.sasl_plain(line)
        if isinstance(d, Deferred):
            d.addBoth(self.command_done, self.logging)
        return d

    def sasl_plain(self, response: bytes):
        """RFC 4616: C{authzid NUL authcid NUL password}, base64 ("=" is empty)."""
        try:
            raw = b"" if response == b"=" else base64.b64decode(response, validate=True)
            authzid, login, password = raw.split(b"\0")
            login_text = login.decode("utf-8")
            if authzid and authzid.decode("utf-8").lower() != login_text.lower():
                return self.failResponse("[AUTH] Cannot log in as another user")
        except (binascii.Error, ValueError):
            return self.failResponse("Cannot decode the response")
        return self.hold(self.authenticate(login_text, password))

    async def authenticate(self, login: str, password: bytes) -> None:
        """
        Check the password (in a thread), then take the mailbox. A failure is
        answered after a delay and counted; at C{[access] auth_failures} the
        session is closed.
        """
        server = self.server
        try:
            account = await server.check(login, password)
        except DirectoryUnavailable as e:
            log.warn("POP3 login: directory unavailable: {why}", why=e)
            self.failResponse("[SYS/TEMP] Authentication service unavailable, try again later")
            return
        except LoginRefused as e:
            self.failResponse(e.text)
            return
        if account is None:
            self.failures += 1
            delay, blocked = server.login_failed(self.peer_ip)
            await task.deferLater(server.clock, delay, lambda: None)
            limit = server.config.access.auth_failures
            if blocked or (limit and self.failures >= limit):
                self.failResponse("[AUTH] Authentication failed; too many failures")
                self.transport.loseConnection()
            else:
                self.failResponse("[AUTH] Authentication failed")
            return
        try:
            mbox, release = await server.open_mailbox(account)
        except LoginRefused as e:
            self.failResponse(e.text)
            return
        if self.closed:
            release()
            return
        self.mbox, self.release, self.user = mbox, release, account
        self.successResponse(f"Logged in, {len(mbox.messages)} messages")
