# -*- test-case-name: tests.test_protocol -*-
"""
SMTP AUTH (RFC 4954): PLAIN and LOGIN, checked against C{etc/users} off the
reactor, or by a simple bind when the [directory] is on.
"""

from __future__ import annotations

import base64
import binascii

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from smtpd.directory.interfaces import DirectoryUnavailable
from smtpd.inbound.core import AUTH, COMMAND

log = Logger()


class Auth:
    """The AUTH command of L{smtpd.inbound.session.SMTPSession}."""

    _user: str | None = None
    _auth_failures = 0
    _auth_mechanism = ""
    _auth_login: str | None = None

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
        self._auth_mechanism = mechanism
        self._auth_login = None
        if mechanism == "PLAIN":
            if initial:
                return self._auth_plain(initial.encode("ascii", "replace"))
            return self._challenge(b"")
        if initial:
            return self.auth_continue(initial.encode("ascii", "replace"))
        return self._challenge(b"Username:")

    def _challenge(self, text: bytes) -> None:
        self._mode = AUTH
        self._send("334 " + base64.b64encode(text).decode() + "\r\n")

    def auth_continue(self, line: bytes):
        """The client's response to a C{334} challenge."""
        self._mode = COMMAND
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
        directory = self.inbound.directory
        if directory is not None:
            d = directory.authenticate(login.lower(), password.encode("utf-8"))
            d.addCallbacks(self._auth_result, self._auth_unavailable,
                           callbackArgs=(login,))
            return d
        users = self.inbound.users
        d = self.inbound.run_blocking(
            users.check_password, login.lower(), password.encode("utf-8")
        )
        d.addCallback(self._auth_result, login)
        return d

    def _auth_unavailable(self, failure: Failure) -> None:
        """RFC 4954 6: the directory could not check the password now."""
        failure.trap(DirectoryUnavailable)
        log.warn("AUTH: directory unavailable: {why}", why=failure.getErrorMessage())
        self._reply(454, "4.7.0", "Temporary authentication failure")

    def _auth_result(self, ok: bool, login: str) -> None:
        if ok:
            self._user = login.lower()
            return self._reply(235, "2.7.0", "Authentication successful")
        self._auth_failures += 1
        # The attempted login goes into the log line (what fail2ban reads).
        self._command = ("AUTH", "login=" + "".join(c if c.isprintable() and c != " " else "?"
                                                   for c in login[:256]))
        self._reply(535, "5.7.8", "Authentication credentials invalid")
        limit = self.inbound.config.access.auth_failures
        if limit and self._auth_failures >= limit:
            self.terminate("4.7.0 Error: too many failed authentications")

    @property
    def user(self) -> str | None:
        """The authenticated login, if any."""
        return self._user
