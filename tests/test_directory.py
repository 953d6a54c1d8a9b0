"""
The accounts file as an L{IDirectory}: lookups from memory, bcrypt password
checks in a real thread pool.
"""

from __future__ import annotations

import threading

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from smtpd.directory.accounts import Users
from smtpd.directory.file import AccountsDirectory
from smtpd.directory.interfaces import DirectoryUnavailable, IDirectory, Mailbox
from smtpd.directory.resolve import RecipientResolver
from tests.inbound import make_config
from tests.test_users import hashed


class AccountsDirectoryTests(unittest.TestCase):
    """Lookups and AUTH over etc/users."""

    def setUp(self):
        self.pool = ThreadPool(0, 2, name="test-auth")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.threads: list[str] = []

        def run(f, *args):
            def record(*a):
                self.threads.append(threading.current_thread().name)
                return f(*a)
            return deferToThreadPool(reactor, self.pool, record, *args)

        users = Users({"ann@example.com": hashed(b"ann-secret").encode("ascii")})
        self.directory = AccountsDirectory(users, run)

    @defer.inlineCallbacks
    def test_lookup(self):
        """An account (any case) is its own mailbox; anything else is None."""
        self.assertTrue(IDirectory.providedBy(self.directory))
        self.assertEqual((yield self.directory.lookup("Ann@Example.com")),
                         Mailbox("ann@example.com"))
        self.assertIsNone((yield self.directory.lookup("bob@example.com")))

    @defer.inlineCallbacks
    def test_authenticate(self):
        """The right password is accepted in a pool thread; a wrong or empty one is not."""
        self.assertTrue((yield self.directory.authenticate("ANN@example.com", b"ann-secret")))
        self.assertFalse((yield self.directory.authenticate("ann@example.com", b"wrong")))
        self.assertFalse((yield self.directory.authenticate("ann@example.com", b"")))
        self.assertFalse((yield self.directory.authenticate("bob@example.com", b"ann-secret")))
        self.assertEqual(len(self.threads), 3)
        self.assertNotIn("MainThread", self.threads)

    @defer.inlineCallbacks
    def test_update(self):
        """After a reload, lookups answer from the new accounts."""
        self.directory.update(Users({"bob@example.com": hashed(b"x").encode("ascii")}))
        self.assertIsNone((yield self.directory.lookup("ann@example.com")))
        self.assertTrue((yield self.directory.lookup("bob@example.com")))


class ResolverTests(unittest.TestCase):
    """Recipient validation with the directory's answer."""

    def setUp(self):
        self.config = make_config(self.mktemp())
        users = Users({"ann@localhost": hashed(b"x").encode("ascii")})
        self.resolver = RecipientResolver(self.config, AccountsDirectory(users, None))

    @defer.inlineCallbacks
    def test_local_and_alias(self):
        """
        A mailbox of a local domain, or of its alias domain, is local and
        queued under its mailbox address; others are None.
        """
        resolved = yield self.resolver.resolve("Ann@localhost")
        self.assertEqual((resolved.destination.kind, resolved.destination.mailbox),
                         ("local", "ann@localhost"))
        self.assertEqual(resolved.recipients, ("ann@localhost",))
        resolved = yield self.resolver.resolve("ann@alias.test")
        self.assertEqual(resolved.destination.mailbox, "ann@localhost")
        self.assertIsNone((yield self.resolver.resolve("bob@localhost")))

    @defer.inlineCallbacks
    def test_postmaster_drop_remote(self):
        """postmaster always exists; drop and remote domains are not asked about."""
        resolved = yield self.resolver.resolve("POSTMASTER@localhost")
        self.assertEqual((resolved.destination.kind, resolved.recipients),
                         ("local", ("POSTMASTER@localhost",)))
        self.assertEqual((yield self.resolver.resolve("any@drop.test")).destination.kind, "drop")
        self.assertEqual((yield self.resolver.resolve("any@example.org")).destination.kind,
                         "remote")

    @defer.inlineCallbacks
    def test_directory_down(self):
        """A directory that cannot answer fails the resolution with DirectoryUnavailable."""

        class Down:
            """A directory that is down."""

            def lookup(self, address):
                return defer.fail(DirectoryUnavailable("ldap://x: connection refused"))

        resolver = RecipientResolver(self.config, Down())
        yield self.assertFailure(resolver.resolve("ann@localhost"), DirectoryUnavailable)
        self.assertEqual((yield resolver.resolve("x@example.org")).destination.kind, "remote")
