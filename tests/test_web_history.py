"""The status page's charts: a ring buffer sampled on a Clock, drawn as SVG."""

from __future__ import annotations

import re

from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.web.history import History


class HistoryTests(unittest.TestCase):
    """Queue depth and throughput samples."""

    def test_samples_and_svg(self):
        """
        Each minute adds the queue depth and the messages received and
        delivered since the last sample; at most the buffer's size are kept,
        and the SVG has one polyline point per sample.
        """
        clock = Clock()
        status = {"received": 0, "delivered": 0, "queue": {"queued": 0, "deferred": 0}}
        history = History(clock, lambda: status, interval=60, size=3)
        history.start()
        self.addCleanup(history.stop)
        self.assertIn("after two minutes", history.charts())
        for minute in range(1, 5):
            status = {"received": 10 * minute, "delivered": 7 * minute,
                      "queue": {"queued": minute, "deferred": 1}}
            clock.advance(60)
        self.assertEqual(list(history.samples), [(120.0, 3, 10, 7), (180.0, 4, 10, 7),
                                                 (240.0, 5, 10, 7)])
        svg = history.charts()
        points = re.findall(r'class="depth"[^>]*points="([^"]*)"', svg)[0].split()
        self.assertEqual(len(points), 3)
        self.assertEqual(points[-1], "360.0,0.0")
        self.assertIn('class="delivered"', svg)
