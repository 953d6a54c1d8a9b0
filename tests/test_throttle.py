"""
Tests for L{smtpd.inbound.throttle}: the per-address counters kept across
sessions, on a L{Clock}.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.config import AccessConfig
from smtpd.inbound.throttle import Throttle, client_key


class ThrottleTests(unittest.TestCase):
    """Failed AUTH blocks, connection and message rates, bounded memory."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.access = AccessConfig(
            relay=(ipaddress.ip_network("10.0.0.0/8"),),
            auth_failure_limit=3,
            auth_failure_window=600,
            auth_failure_delay=2,
            auth_block=900,
            connection_rate=5,
            message_rate=2,
        )
        self.throttle = Throttle(self.clock, lambda: self.access)

    def test_auth_failures_block_at_connect(self):
        """
        The first failure is answered at once, later ones after the delay; at
        the limit the address is refused at connect for auth_block, others not.
        """
        self.assertEqual(self.throttle.auth_failed("192.0.2.1"), (0.0, False))
        self.assertEqual(self.throttle.auth_failed("192.0.2.1"), (2, False))
        self.assertEqual(self.throttle.auth_failed("192.0.2.1"), (2, True))
        self.assertIn("4.7.0", self.throttle.connect("192.0.2.1"))
        self.assertIsNone(self.throttle.connect("192.0.2.2"))
        self.clock.advance(899)
        self.assertIsNotNone(self.throttle.connect("192.0.2.1"))
        self.clock.advance(2)
        self.assertIsNone(self.throttle.connect("192.0.2.1"))

    def test_auth_failures_window(self):
        """Failures further apart than the window never add up to a block."""
        for _ in range(5):
            self.assertFalse(self.throttle.auth_failed("192.0.2.1")[1])
            self.clock.advance(300)
            self.assertFalse(self.throttle.auth_failed("192.0.2.1")[1])
            self.clock.advance(601)

    def test_no_block_when_limit_zero(self):
        """auth_failure_limit = 0 never blocks."""
        self.access = dataclasses.replace(self.access, auth_failure_limit=0)
        for _ in range(50):
            self.assertFalse(self.throttle.auth_failed("192.0.2.1")[1])
        self.assertIsNone(self.throttle.connect("192.0.2.1"))

    def test_connection_rate(self):
        """More than connection_rate connections a minute get 421 4.7.0, until the minute is over."""
        for _ in range(5):
            self.assertIsNone(self.throttle.connect("192.0.2.1"))
        self.assertEqual(
            self.throttle.connect("192.0.2.1"),
            "4.7.0 Error: too many connections from your address, slow down",
        )
        self.assertIsNone(self.throttle.connect("192.0.2.9"))
        self.clock.advance(60)
        self.assertIsNone(self.throttle.connect("192.0.2.1"))

    def test_message_rate(self):
        """More than message_rate messages a minute get 451 4.7.1."""
        self.assertIsNone(self.throttle.message("192.0.2.1"))
        self.assertIsNone(self.throttle.message("192.0.2.1"))
        self.assertTrue(self.throttle.message("192.0.2.1").startswith("4.7.1 "))

    def test_relay_networks_exempt_from_rates(self):
        """The relay networks have no connection or message rate; AUTH blocks still apply."""
        for _ in range(20):
            self.assertIsNone(self.throttle.connect("10.1.2.3"))
            self.assertIsNone(self.throttle.message("10.1.2.3"))
        for _ in range(3):
            self.throttle.auth_failed("10.1.2.3")
        self.assertIsNotNone(self.throttle.connect("10.1.2.3"))

    def test_rates_off_by_default(self):
        """With the shipped defaults (rates 0) nothing is limited."""
        self.access = AccessConfig()
        for _ in range(1000):
            self.assertIsNone(self.throttle.connect("192.0.2.1"))
            self.assertIsNone(self.throttle.message("192.0.2.1"))

    def test_ipv6_counted_per_64(self):
        """IPv6 clients are counted per /64; IPv4-mapped addresses as IPv4."""
        self.assertEqual(client_key("2001:db8:1:2::5"), "2001:db8:1:2::/64")
        self.assertEqual(client_key("::ffff:192.0.2.1"), "192.0.2.1")
        for n in range(3):
            self.throttle.auth_failed(f"2001:db8:1:2::{n + 1}")
        self.assertIsNotNone(self.throttle.connect("2001:db8:1:2::ff"))
        self.assertIsNone(self.throttle.connect("2001:db8:1:3::1"))

    def test_expired_entries_dropped(self):
        """Records whose windows and blocks are over are forgotten."""
        for n in range(100):
            self.throttle.connect(f"192.0.2.{n}")
        self.assertEqual(len(self.throttle), 100)
        self.clock.advance(61)
        self.throttle.connect("198.51.100.1")
        self.assertEqual(len(self.throttle), 1)

    def test_bounded(self):
        """At most max_addresses records are kept: the least recently seen go first."""
        throttle = Throttle(self.clock, lambda: self.access, max_addresses=10)
        for n in range(50):
            throttle.connect(f"192.0.2.{n}")
        self.assertEqual(len(throttle), 10)
        self.assertEqual(throttle.snapshot()[0]["address"], "192.0.2.40")

    def test_snapshot(self):
        """The snapshot is plain data, one dict per address."""
        self.throttle.connect("192.0.2.1")
        self.throttle.message("192.0.2.1")
        for _ in range(3):
            self.throttle.auth_failed("192.0.2.1")
        self.assertEqual(self.throttle.snapshot(), [{
            "address": "192.0.2.1",
            "connections_per_minute": 1,
            "messages_per_minute": 1,
            "auth_failures": 3,
            "blocked_until": 1900.0,
        }])
