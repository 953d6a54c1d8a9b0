# -*- test-case-name: tests.test_sasl -*-
"""
SMTP AUTH (RFC 4954) through C{twisted.cred}.

The SASL mechanisms PLAIN (RFC 4616) and LOGIN turn the client's lines into
L{UsernamePassword} credentials; a L{Portal} with an L{AccountsChecker} over
the accounts file (C{etc/users}) turns those into an L{IMailLogin} avatar.
Password checks are bcrypt, so they run in a thread pool behind a
L{PasswordPool}: at most a fixed number run or wait at once, and the rest are
refused at once with L{AuthBusy} (the session answers C{454 4.7.0}) instead of
stalling every login behind an AUTH flood.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer

from smtpd.directory.accounts import Users

# Password checks allowed to wait for a thread, beyond those running: about
# four seconds of bcrypt (cost 12) on four threads.
DEFAULT_QUEUE = 64


class IMailLogin(Interface):
    """An authenticated SMTP client: what a session keeps after AUTH."""

    login = Attribute("The account address, lower case.")


@implementer(IMailLogin)
@dataclass(frozen=True)
class MailLogin:
    """The avatar of an account that authenticated."""

    login: str


@implementer(IRealm)
class LoginRealm:
    """Gives a L{MailLogin} for every account the checker vouched for."""

    def requestAvatar(self, avatarId, mind, *interfaces):
        """The L{IMailLogin} avatar of C{avatarId} (the login, UTF-8 bytes)."""
        if IMailLogin not in interfaces:
            raise NotImplementedError("only IMailLogin avatars")
        return IMailLogin, MailLogin(avatarId.decode("utf-8")), lambda: None


class AuthBusy(Exception):
    """Too many password checks are running or waiting: try again later."""


class PasswordPool:
    """
    A bounded front for blocking password checks: at most C{limit} checks are
    running or waiting in C{run_blocking}'s pool; more fail at once.

    @param run_blocking: C{run_blocking(f, *args) -> Deferred}, a thread pool.
    @param limit: the threads of that pool plus the checks that may wait.
    """

    def __init__(self, run_blocking: Callable[..., defer.Deferred], limit: int):
        self.run_blocking = run_blocking
        self.limit = limit
        self.pending = 0

    def run(self, f: Callable[..., bool], *args) -> defer.Deferred[bool]:
        """C{f(*args)} in the pool, or a failure with L{AuthBusy} when full."""
        if self.pending >= self.limit:
            return defer.fail(AuthBusy())
        self.pending += 1
        d = self.run_blocking(f, *args)
        d.addBoth(self._done)
        return d

    def _done(self, result):
        self.pending -= 1
        return result


@implementer(ICredentialsChecker)
class AccountsChecker:
    """
    Checks L{IUsernamePassword} credentials against the accounts file in a
    L{PasswordPool}; an unknown account costs as much time as a known one.

    @param users: returns the current L{Users} (they change on reload).
    @param directory: returns the L{IDirectory} when [directory] is on, else L{None}.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        users: Callable[[], Users],
        pool: PasswordPool,
        directory: Callable[[], object | None] = lambda: None,
    ):
        self.users = users
        self.pool = pool
        self.directory = directory

    def requestAvatarId(self, credentials) -> defer.Deferred[bytes]:
        """
        The login (UTF-8 bytes) when the password is right, else
        UnauthorizedLogin; the [directory] answers instead of the accounts
        file when it is on (failing with its DirectoryUnavailable when down).
        """
        login = credentials.username.decode("utf-8").lower()
        directory = self.directory()
        if directory is not None:
            d = directory.authenticate(login, credentials.password)
        else:
            d = self.pool.run(self.users().check_password, login, credentials.password)
        d.addCallback(self._verdict, login)
        return d

    @staticmethod
    def _verdict(ok: bool, login: str) -> bytes:
        if not ok:
            raise error.UnauthorizedLogin()
        return login.encode("utf-8")


def make_portal(
    users: Callable[[], Users],
    pool: PasswordPool,
    directory: Callable[[], object | None] = lambda: None,
) -> Portal:
    """The portal for SMTP AUTH over the accounts file (or the [directory])."""
    return Portal(LoginRealm(), [AccountsChecker(users, pool, directory)])


async def authenticate(portal: Portal, credentials: UsernamePassword) -> str | None:
    """
    The login C{credentials} prove, or L{None} when they prove nothing.

    @raise AuthBusy: when no password check can be started now.
    """
    try:
        _, avatar, _ = await portal.login(credentials, None, IMailLogin)
    except error.UnauthorizedLogin:
        return None
    return avatar.login


# -- SASL mechanisms ----------------------------------------------------------


class SASLError(Exception):
    """
    The client's SASL exchange cannot go on: the reply to send, and the
    login it tried when there was one.
    """

    def __init__(self, code: int, status: str, text: str, login: str = ""):
        super().__init__(f"{code} {status} {text}")
        self.code, self.status, self.text = code, status, text
        self.login = login


def _decode(line: bytes) -> bytes:
    """A client response: base64 (RFC 4954 4), "=" for empty, "*" to cancel."""
    if line == b"*":
        raise SASLError(501, "5.7.0", "Authentication aborted")
    if line == b"=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except binascii.Error:
        raise SASLError(501, "5.5.2", "Cannot decode response") from None


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(501, "5.5.2", "Cannot decode response") from None


class PlainExchange:
    """RFC 4616: one response C{authzid NUL authcid NUL password}."""

    name = "PLAIN"

    def respond(self, line: bytes) -> bytes | UsernamePassword:
        """The credentials in the response; the authzid must be empty or the login."""
        parts = _decode(line).split(b"\0")
        if len(parts) != 3 or not parts[1]:
            raise SASLError(501, "5.5.2", "Cannot decode response")
        authzid, login, password = _text(parts[0]), _text(parts[1]), parts[2]
        if authzid and authzid.lower() != login.lower():
            # Acting for another identity is not something any account may do.
            raise SASLError(535, "5.7.8", "Authentication credentials invalid", login)
        return UsernamePassword(login.lower().encode("utf-8"), password)


class LoginExchange:
    """The LOGIN mechanism: user name, then password, each base64."""

    name = "LOGIN"

    def __init__(self) -> None:
        self.login: bytes | None = None

    def first_challenge(self) -> bytes:
        """The challenge before any response."""
        return b"Username:"

    def respond(self, line: bytes) -> bytes | UsernamePassword:
        """The next challenge, or the credentials once both are in."""
        value = _decode(line)
        if self.login is None:
            self.login = _text(value).lower().encode("utf-8")
            return b"Password:"
        return UsernamePassword(self.login, value)


def start_exchange(
    mechanism: str, initial: str
) -> tuple[PlainExchange | LoginExchange, bytes | UsernamePassword]:
    """
    Begin C{mechanism} (PLAIN or LOGIN) with the optional initial response of
    the AUTH line: the exchange and its first challenge or the credentials.

    @raise SASLError: when the initial response cannot be used.
    """
    exchange: PlainExchange | LoginExchange
    if mechanism == "PLAIN":
        exchange = PlainExchange()
        first: bytes | UsernamePassword = b""
    else:
        exchange = LoginExchange()
        first = exchange.first_challenge()
    if initial:
        first = exchange.respond(initial.encode("ascii", "replace"))
    return exchange, first


def challenge_line(challenge: bytes) -> str:
    """The C{334} reply carrying C{challenge}."""
    return "334 " + base64.b64encode(challenge).decode("ascii") + "\r\n"
