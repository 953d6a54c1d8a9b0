"""
Tests for L{smtpd.inbound.sasl}: the SASL mechanisms PLAIN and LOGIN, the
twisted.cred portal over the accounts file, and the bounded password pool.
"""

from __future__ import annotations

import base64

from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer
from twisted.trial import unittest

from smtpd.directory.accounts import Users, hash_password
from smtpd.directory.file import AccountsDirectory
from smtpd.directory.interfaces import DirectoryUnavailable
from smtpd.inbound.sasl import (
    AuthBusy,
    PasswordPool,
    SASLError,
    authenticate,
    challenge_line,
    make_portal,
    start_exchange,
)


def b64(raw: bytes) -> str:
    """Base64 text of C{raw}."""
    return base64.b64encode(raw).decode("ascii")


def run_now(f, *args):
    """Run C{f} at once: a Deferred of its result."""
    return defer.maybeDeferred(f, *args)


class MechanismTests(unittest.TestCase):
    """PLAIN and LOGIN turn the client's lines into credentials."""

    def test_plain_initial_response(self):
        """PLAIN with an initial response gives the credentials at once, login lower-cased."""
        _, result = start_exchange("PLAIN", b64(b"\0Bob@Localhost\0secret"))
        self.assertIsInstance(result, UsernamePassword)
        self.assertEqual((result.username, result.password), (b"bob@localhost", b"secret"))

    def test_plain_challenge(self):
        """PLAIN without an initial response sends an empty challenge, then takes the response."""
        exchange, first = start_exchange("PLAIN", "")
        self.assertEqual(first, b"")
        self.assertEqual(challenge_line(first), "334 \r\n")
        result = exchange.respond(b64(b"\0bob@localhost\0pw").encode())
        self.assertEqual(result.password, b"pw")

    def test_plain_authzid_equal_to_login(self):
        """An authorization identity equal to the login (any case) is honoured."""
        _, result = start_exchange("PLAIN", b64(b"BOB@localhost\0bob@localhost\0pw"))
        self.assertEqual(result.username, b"bob@localhost")

    def test_plain_other_authzid_refused(self):
        """An authorization identity other than the login is refused with 535 5.7.8."""
        e = self.assertRaises(
            SASLError, start_exchange, "PLAIN", b64(b"alice@localhost\0bob@localhost\0pw")
        )
        self.assertEqual((e.code, e.status), (535, "5.7.8"))

    def test_plain_malformed(self):
        """Bad base64, a wrong number of fields or an empty login get 501 5.5.2."""
        for initial in ["%%%", b64(b"bob\0pw"), b64(b"\0\0pw"), b64(b"\0\xff\0pw")]:
            e = self.assertRaises(SASLError, start_exchange, "PLAIN", initial)
            self.assertEqual((e.code, e.status), (501, "5.5.2"), initial)

    def test_cancel(self):
        """A "*" response cancels the exchange with 501 5.7.0 (RFC 4954 4)."""
        exchange, _ = start_exchange("LOGIN", "")
        e = self.assertRaises(SASLError, exchange.respond, b"*")
        self.assertEqual((e.code, e.status), (501, "5.7.0"))

    def test_login(self):
        """LOGIN asks for the user name, then the password."""
        exchange, first = start_exchange("LOGIN", "")
        self.assertEqual(first, b"Username:")
        self.assertEqual(exchange.respond(b64(b"Bob@localhost").encode()), b"Password:")
        result = exchange.respond(b64(b"pw").encode())
        self.assertEqual((result.username, result.password), (b"bob@localhost", b"pw"))

    def test_login_initial_response(self):
        """LOGIN with an initial response (the user name) asks for the password next."""
        _, first = start_exchange("LOGIN", b64(b"bob@localhost"))
        self.assertEqual(first, b"Password:")


class PortalTests(unittest.TestCase):
    """The cred portal checks passwords against the accounts."""

    def setUp(self):
        self.users = Users({"bob@localhost": hash_password("secret", 4)})
        self.pool = PasswordPool(run_now, 4)
        self.portal = make_portal(lambda: self.users, self.pool)

    def login(self, user: bytes, password: bytes):
        return defer.Deferred.fromCoroutine(
            authenticate(self.portal, UsernamePassword(user, password))
        )

    def test_right_password(self):
        """The right password gives the login."""
        self.assertEqual(self.successResultOf(self.login(b"bob@localhost", b"secret")),
                         "bob@localhost")

    def test_wrong_password_and_unknown_account(self):
        """A wrong password and an unknown account both give None."""
        self.assertIsNone(self.successResultOf(self.login(b"bob@localhost", b"nope")))
        self.assertIsNone(self.successResultOf(self.login(b"eve@localhost", b"secret")))

    def test_accounts_swapped(self):
        """The checker asks for the current accounts at each login (reload)."""
        self.users = Users({"ann@localhost": hash_password("pw", 4)})
        self.assertEqual(self.successResultOf(self.login(b"ann@localhost", b"pw")),
                         "ann@localhost")
        self.assertIsNone(self.successResultOf(self.login(b"bob@localhost", b"secret")))


class PoolTests(unittest.TestCase):
    """The password pool bounds the checks running or waiting."""

    def test_full_pool_refuses(self):
        """Beyond the limit a check fails at once with AuthBusy; a finished one frees a place."""
        waiting = []

        def hold(f, *args):
            d = defer.Deferred()
            waiting.append((d, f, args))
            return d

        pool = PasswordPool(hold, 2)
        first, second = pool.run(lambda: True), pool.run(lambda: True)
        self.failureResultOf(pool.run(lambda: True), AuthBusy)
        d, f, args = waiting.pop(0)
        d.callback(f(*args))
        self.assertTrue(self.successResultOf(first))
        third = pool.run(lambda: False)
        self.assertNoResult(third)
        self.assertNoResult(second)
        self.assertEqual(pool.pending, 2)

    def test_busy_through_portal(self):
        """A full pool reaches the session as AuthBusy, not as a wrong password."""
        pool = PasswordPool(lambda f, *a: defer.Deferred(), 1)
        portal = make_portal(lambda: Users(), pool)
        pool.run(lambda: True)
        d = defer.Deferred.fromCoroutine(
            authenticate(portal, UsernamePassword(b"bob@localhost", b"pw"))
        )
        self.failureResultOf(d, AuthBusy)


class _DownDirectory:
    """A directory whose server cannot be reached."""

    def authenticate(self, login, password):
        return defer.fail(DirectoryUnavailable("ldap://127.0.0.1:1 refused"))


class DirectoryPortalTests(unittest.TestCase):
    """With [directory] on, the portal asks the directory instead of the accounts file."""

    def login(self, portal, user: bytes, password: bytes):
        return defer.Deferred.fromCoroutine(
            authenticate(portal, UsernamePassword(user, password))
        )

    def test_directory_answers(self):
        """The directory's verdict decides; the accounts file given to the portal is not used."""
        directory = AccountsDirectory(Users({"ann@localhost": hash_password("pw", 4)}), run_now)
        portal = make_portal(lambda: Users(), PasswordPool(run_now, 4), lambda: directory)
        self.assertEqual(self.successResultOf(self.login(portal, b"ann@localhost", b"pw")),
                         "ann@localhost")
        self.assertIsNone(self.successResultOf(self.login(portal, b"ann@localhost", b"no")))

    def test_directory_down(self):
        """A directory that cannot answer fails the login with DirectoryUnavailable (454 later)."""
        portal = make_portal(lambda: Users(), PasswordPool(run_now, 4), lambda: _DownDirectory())
        self.failureResultOf(self.login(portal, b"ann@localhost", b"pw"), DirectoryUnavailable)
