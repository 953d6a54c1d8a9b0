"""Routing and the relay rule."""

import ipaddress

from twisted.trial import unittest

from smtpd.directory import routing
from smtpd.inbound import policy
from smtpd.config import AccessConfig, Config, DomainConfig


def config(**access) -> Config:
    return Config(
        path="/x/etc/smtpd.ini",
        root="/x",
        access=AccessConfig(**access),
        domains=(
            DomainConfig("local.test"),
            DomainConfig("alias.test", type="alias", alias_of="local.test"),
            DomainConfig("drop.test", type="drop"),
            DomainConfig("*.backup.test", type="remote", relay=True),
        ),
    )


USERS = {"bob@local.test"}


class RouteTests(unittest.TestCase):
    """policy.route."""

    def test_local_and_alias(self):
        """Accounts of a local domain, and the same accounts through an alias."""
        c = config()
        self.assertEqual(routing.route(c, USERS, "Bob@local.test").mailbox, "bob@local.test")
        self.assertEqual(routing.route(c, USERS, "bob@alias.test").mailbox, "bob@local.test")
        self.assertIsNone(routing.route(c, USERS, "eve@local.test"))
        self.assertIsNone(routing.route(c, USERS, "eve@alias.test"))

    def test_postmaster(self):
        """postmaster exists at every local and alias domain, and bare."""
        c = config()
        self.assertEqual(routing.route(c, USERS, "POSTMASTER@alias.test").mailbox, "postmaster@local.test")
        self.assertEqual(routing.route(c, USERS, "postmaster").mailbox, "postmaster@local.test")

    def test_tricks_stay_local(self):
        """%, ! and quoted @ in a local part never make a remote destination."""
        c = config()
        for trick in ("a%evil.test@local.test", "evil.test!a@local.test", '"a@evil.test"@local.test'):
            self.assertIsNone(routing.route(c, USERS, trick))

    def test_kinds(self):
        """drop, wildcard remote, and unknown domains."""
        c = config()
        self.assertEqual(routing.route(c, USERS, "x@drop.test").kind, routing.DROP)
        d = routing.route(c, USERS, "x@mx.backup.test")
        self.assertEqual((d.kind, d.section.relay), (routing.REMOTE, True))
        d = routing.route(c, USERS, "x@elsewhere.test")
        self.assertEqual((d.kind, d.section), (routing.REMOTE, None))


class RelayTests(unittest.TestCase):
    """policy.may_relay and may_connect."""

    def test_relay_rule(self):
        """Relay clients, authenticated sessions, backup-MX domains; no one else."""
        c = config(relay=(ipaddress.ip_network("10.0.0.0/8"),))
        remote = routing.route(c, USERS, "x@elsewhere.test")
        self.assertTrue(policy.may_relay(c, "10.1.2.3", False, remote))
        self.assertTrue(policy.may_relay(c, "::ffff:10.1.2.3", False, remote))
        self.assertFalse(policy.may_relay(c, "192.0.2.1", False, remote))
        self.assertTrue(policy.may_relay(c, "192.0.2.1", True, remote))
        backup = routing.route(c, USERS, "x@mx.backup.test")
        self.assertTrue(policy.may_relay(c, "192.0.2.1", False, backup))
        c2 = config(relay=(), relay_authenticated=False)
        self.assertFalse(policy.may_relay(c2, "192.0.2.1", True, remote))

    def test_connect(self):
        """deny wins over allow."""
        c = config(deny=(ipaddress.ip_network("192.0.2.0/24"),))
        self.assertTrue(policy.may_connect(c, "198.51.100.1"))
        self.assertFalse(policy.may_connect(c, "192.0.2.9"))
