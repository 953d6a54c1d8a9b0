# -*- test-case-name: tests.test_web_history -*-
"""
The last hour of queue depth and throughput, sampled once a minute into a
ring buffer in memory, and drawn on the server as SVG line charts.
"""

from __future__ import annotations

from collections import deque
from html import escape

from twisted.internet.task import LoopingCall

# One sample per INTERVAL seconds, SAMPLES of them (an hour).
INTERVAL = 60.0
SAMPLES = 60

WIDTH, HEIGHT = 360, 90


class History:
    """
    Samples of the admin API's status: C{(time, queue depth, received and
    delivered in the interval)}.

    @param status: a callable returning L{smtpd.admin.api.Admin.status}'s dict.
    """

    def __init__(self, clock, status, interval: float = INTERVAL, size: int = SAMPLES):
        self.clock = clock
        self.status = status
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=size)
        self._last: tuple[int, int] | None = None
        self._call = LoopingCall(self.sample)
        self._call.clock = clock
        self.interval = interval

    def start(self) -> None:
        """Sample now and then every interval."""
        self._call.start(self.interval, now=True)

    def stop(self) -> None:
        """Stop sampling."""
        if self._call.running:
            self._call.stop()

    def sample(self) -> None:
        """Add one sample (the first only sets the counters' starting point)."""
        status = self.status()
        counts = (status["received"], status["delivered"])
        if self._last is not None:
            self.samples.append((self.clock.seconds(), sum(status["queue"].values()),
                                 counts[0] - self._last[0], counts[1] - self._last[1]))
        self._last = counts

    def charts(self) -> str:
        """The queue depth and throughput charts as inline SVG (empty before two samples)."""
        if len(self.samples) < 2:
            return "<p>Charts appear after two minutes of samples.</p>"
        depth = [s[1] for s in self.samples]
        received = [s[2] for s in self.samples]
        delivered = [s[3] for s in self.samples]
        return (chart("Queue depth (messages)", [("depth", depth, "#1f5fa8")])
                + chart("Messages per minute", [("received", received, "#2a8a2a"),
                                                ("delivered", delivered, "#b5651d")]))


def chart(title: str, series: list[tuple[str, list[int], str]]) -> str:
    """One SVG line chart of C{series} (name, values, colour), oldest left."""
    top = max(1, *(max(values) for _, values, _ in series))
    count = max(len(values) for _, values, _ in series)
    step = WIDTH / max(1, count - 1)
    lines = []
    for name, values, colour in series:
        points = " ".join(f"{i * step:.1f},{HEIGHT - v * HEIGHT / top:.1f}"
                          for i, v in enumerate(values))
        lines.append(f'<polyline class="{escape(name)}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.5" points="{points}"><title>{escape(name)}</title>'
                     "</polyline>")
    legend = ", ".join(f'<span style="color:{c}">{escape(n)}</span>' for n, _, c in series)
    return (f"<figure><figcaption>{escape(title)} (max {top}): {legend}, last "
            f"{count} minutes</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" "
            f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" '
            f'style="border:1px solid #ccc">{"".join(lines)}</svg></figure>')
