"""
Tests for L{smtpd.inbound.deadline}: the command-line and DATA deadlines on a
L{Clock}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.config import ServerConfig
from smtpd.inbound.deadline import Deadlines


class DeadlineTests(unittest.TestCase):
    """Slow clients run out of time whatever they trickle; real ones do not."""

    def setUp(self):
        self.clock = Clock()
        self.server = ServerConfig(command_timeout=60, data_timeout=300, min_data_rate=500)
        self.fired = []
        self.deadlines = Deadlines(self.clock, lambda: self.server, lambda: self.fired.append(1))

    def test_line_deadline_not_reset_by_bytes(self):
        """A partial line must be complete a command_timeout after its first byte."""
        for _ in range(59):
            self.deadlines.partial_line(True)
            self.clock.advance(1)
        self.assertEqual(self.fired, [])
        self.deadlines.partial_line(True)
        self.clock.advance(1)
        self.assertEqual(self.fired, [1])

    def test_line_taken_ends_deadline(self):
        """A whole line ends its deadline; the next line gets a new one."""
        self.deadlines.partial_line(True)
        self.clock.advance(59)
        self.deadlines.line_taken()
        self.deadlines.partial_line(True)
        self.clock.advance(59)
        self.assertEqual(self.fired, [])
        self.deadlines.partial_line(False)
        self.clock.advance(3600)
        self.assertEqual(self.fired, [])

    def test_data_trickle_cut(self):
        """One byte every few seconds earns almost nothing: DATA ends at about data_timeout."""
        self.deadlines.data_started()
        while not self.fired:
            self.deadlines.data_received(1)
            self.clock.advance(5)
        self.assertTrue(300 <= self.clock.seconds() <= 310, self.clock.seconds())

    def test_data_slow_link_passes(self):
        """A 2 MB message at 1 KB/s (8 kbit/s, far past data_timeout) is not cut."""
        self.deadlines.data_started()
        for _ in range(2048):
            self.deadlines.data_received(1024)
            self.clock.advance(1)
        self.deadlines.data_ended()
        self.clock.advance(10000)
        self.assertEqual(self.fired, [])

    def test_data_without_rate(self):
        """min_data_rate = 0: data_timeout is the whole of DATA."""
        self.server = ServerConfig(data_timeout=300, min_data_rate=0)
        self.deadlines.data_started()
        self.deadlines.data_received(10**9)
        self.clock.advance(300)
        self.assertEqual(self.fired, [1])

    def test_stop(self):
        """stop() cancels every timer."""
        self.deadlines.partial_line(True)
        self.deadlines.data_started()
        self.deadlines.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
