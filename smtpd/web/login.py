# -*- test-case-name: tests.test_web -*-
"""
Who is asking: web sessions (a cookie after the login form) and HTTP basic
authentication, both checked against the operators of C{[manhole] users};
each session has its own CSRF token for the forms that change something.

The rule: a listener whose interface is loopback (127.0.0.0/8 or ::1) serves
without a login unless C{[http] login = yes}, and then the operator is called
C{loopback}; any other listener always asks for a login (and serves TLS).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed

COOKIE = b"smtpd_session"

# A web session ends after this long without a request (seconds).
IDLE_TIMEOUT = 3600.0

# The operator name of requests served without a login on loopback.
LOOPBACK_OPERATOR = "loopback"


@dataclass
class WebSession:
    """One logged-in browser: the operator, its CSRF token, when it was last used."""

    operator: str
    csrf: str
    seen: float


class WebSessions:
    """
    The web sessions of the server, by cookie value, and the password check.

    @param checker: the L{smtpd.admin.operators.OperatorChecker} of C{[manhole] users}.
    @param clock: an C{IReactorTime}.
    """

    def __init__(self, checker, clock):
        self.checker = checker
        self.clock = clock
        self.sessions: dict[str, WebSession] = {}

    def start(self, operator: str) -> tuple[str, WebSession]:
        """A new session of C{operator}: its cookie value and itself."""
        self._expire()
        token = secrets.token_urlsafe(32)
        session = WebSession(operator, secrets.token_urlsafe(32), self.clock.seconds())
        self.sessions[token] = session
        return token, session

    def end(self, token: str) -> None:
        """Forget a session (log out)."""
        self.sessions.pop(token, None)

    def find(self, request) -> WebSession | None:
        """The session of C{request}'s cookie, if it is alive."""
        token = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
        session = self.sessions.get(token)
        now = self.clock.seconds()
        if session is None or now - session.seen > IDLE_TIMEOUT:
            self.sessions.pop(token, None)
            return None
        session.seen = now
        return session

    def _expire(self) -> None:
        now = self.clock.seconds()
        for token in [t for t, s in self.sessions.items() if now - s.seen > IDLE_TIMEOUT]:
            del self.sessions[token]

    def check(self, name: str, password: str) -> Deferred[str]:
        """The operator's name when the password is right; else fails UnauthorizedLogin."""
        return self.checker.requestAvatarId(UsernamePassword(name.encode("utf-8"),
                                                             password.encode("utf-8")))

    def basic(self, request) -> Deferred[str | None]:
        """The operator of C{request}'s HTTP basic credentials, or None (none or wrong)."""
        header = request.getHeader("authorization") or ""
        kind, _, encoded = header.partition(" ")
        if kind.lower() != "basic":
            return succeed(None)
        try:
            name, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return succeed(None)
        d = self.check(name, password)
        d.addErrback(lambda f: f.trap(UnauthorizedLogin) and None)
        return d


def csrf_ok(session: WebSession | None, token: str) -> bool:
    """Whether C{token} is the CSRF token of C{session}."""
    return session is not None and hmac.compare_digest(session.csrf.encode(), token.encode())


def set_cookie(request, token: str) -> None:
    """Give the browser its session cookie (not readable by scripts, same site only)."""
    request.addCookie(COOKIE, token.encode("ascii"), path=b"/", httpOnly=True,
                      secure=request.isSecure(), sameSite="strict")
