# -*- test-case-name: tests.test_access -*-
"""
SMTP AUTH (RFC 4954) in the session: the SASL exchange of
L{smtpd.inbound.sasl}, the credentials checked through the twisted.cred
portal (the accounts file off the reactor, or a simple bind when the
[directory] is on), and failures counted per session and per address
(L{smtpd.inbound.throttle}).
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from smtpd.directory.interfaces import DirectoryUnavailable
from smtpd.inbound.core import AUTH, COMMAND
from smtpd.inbound.sasl import (
    AuthBusy,
    SASLError,
    authenticate,
    challenge_line,
    start_exchange,
)

log = Logger()

log = Logger()


class Auth:
    """The AUTH command of L{smtpd.inbound.session.SMTPSession}."""

    _user: str | None = None
    _auth_failures = 0
    _exchange = None

    def _auth_offered(self) -> bool:
        auth = self.inbound.config.auth
        return (
            bool(auth.mechanisms)
            and self._user is None
            and (self._tls or auth.allow_plaintext)
        )

    def smtp_AUTH(self, arg: str):
        """RFC 4954: PLAIN and LOGIN."""
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
        try:
            self._exchange, step = start_exchange(mechanism, initial.strip())
        except SASLError as e:
            return self._sasl_error(e)
        return self._auth_step(step)

    def auth_continue(self, line: bytes):
        """The client's response to a C{334} challenge."""
        self._mode = COMMAND
        try:
            step = self._exchange.respond(line.strip())
        except SASLError as e:
            return self._sasl_error(e)
        return self._auth_step(step)

    def _auth_step(self, step):
        """Send the next challenge, or check the credentials."""
        if isinstance(step, bytes):
            self._mode = AUTH
            self._send(challenge_line(step))
            return None
        self._exchange = None
        attempted = step.username.decode("utf-8", "replace")
        d = defer.Deferred.fromCoroutine(authenticate(self.inbound.portal, step))
        d.addCallbacks(self._auth_result, self._auth_trouble, callbackArgs=(attempted,))
        return d

    def _sasl_error(self, e: SASLError):
        self._exchange = None
        if e.code == 535:
            return self._auth_failed(e.login)
        return self._reply(e.code, e.status, e.text)

    def _auth_result(self, login: str | None, attempted: str):
        if login is None:
            return self._auth_failed(attempted)
        self._user = login
        return self._reply(235, "2.7.0", "Authentication successful")

    def _auth_trouble(self, failure: Failure) -> None:
        """RFC 4954 6: the password cannot be checked now (pool full, directory down)."""
        if failure.trap(AuthBusy, DirectoryUnavailable) is DirectoryUnavailable:
            log.warn("AUTH: directory unavailable: {why}", why=failure.getErrorMessage())
        self._reply(454, "4.7.0", "Temporary authentication failure")

    def _auth_failed(self, attempted: str):
        """
        A wrong login: counted for the session and for the address, which
        may make us wait (a guesser gets slower) and then close.
        """
        self._auth_failures += 1
        # The attempted login goes into the log line (what fail2ban reads).
        self._command = ("AUTH", "login=" + "".join(c if c.isprintable() and c != " " else "?"
                                                   for c in attempted[:256]))
        delay, blocked = self.inbound.throttle.auth_failed(self.peer_ip)
        if delay:
            return task.deferLater(self.inbound.clock, delay, self._refuse_login, blocked)
        return self._refuse_login(blocked)

    def _refuse_login(self, blocked: bool) -> None:
        if self._closing:
            return
        self._reply(535, "5.7.8", "Authentication credentials invalid")
        limit = self.inbound.config.access.auth_failures
        if blocked or (limit and self._auth_failures >= limit):
            self.terminate("4.7.0 Error: too many failed authentications")

    @property
    def user(self) -> str | None:
        """The authenticated login, if any."""
        return self._user
