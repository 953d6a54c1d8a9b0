# -*- test-case-name: tests.test_directory -*-
"""
L{IDirectory} over the accounts file (C{[auth] users}, L{smtpd.directory.accounts}):
the default directory when no LDAP server is configured. Lookups answer from
memory; bcrypt password checks run in a thread pool.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from smtpd.directory.accounts import Users
from smtpd.directory.interfaces import IDirectory, Mailbox


@implementer(IDirectory)
class AccountsDirectory:
    """
    The accounts of C{etc/users} as a directory: each address is a mailbox and
    a login; there are no aliases and no routing.

    @param users: the parsed accounts; L{update} replaces them on reload.
    @param run_blocking: C{f(callable, *args) -> Deferred}, running the call
        in a thread pool (bcrypt takes tens of milliseconds).
    """

    def __init__(self, users: Users, run_blocking: Callable[..., Deferred]):
        self.users = users
        self._run = run_blocking

    def update(self, users: Users) -> None:
        """Answer from C{users} from now on (after C{etc/users} was re-read)."""
        self.users = users

    def lookup(self, address: str) -> Deferred[Mailbox | None]:
        """The account's mailbox, or L{None}."""
        address = address.lower()
        return defer.succeed(Mailbox(address) if address in self.users else None)

    def authenticate(self, login: str, password: bytes) -> Deferred[bool]:
        """Whether C{password} matches the bcrypt hash of account C{login}."""
        if not password:
            return defer.succeed(False)
        return self._run(self.users.check_password, login.lower(), password)
