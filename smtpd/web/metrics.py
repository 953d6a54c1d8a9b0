# -*- test-case-name: tests.test_web_metrics -*-
"""
C{/metrics}: a Prometheus collector that reads, at scrape time, the same
objects the admin API reads (the queue manager's counters, statistics and
schedule, the inbound sessions registry), plus reactor lag and the process's
own figures; and the DNS lookup latency, observed as each query ends (the
resolver reports to L{smtpd.delivery.dnstiming.DNSLookups}, which this
subscribes to).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from twisted.internet.task import LoopingCall

from smtpd.web.views import AGE_BUCKETS

# Per-destination-domain deferred counts: at most this many label values.
TOP_DOMAINS = 20

# How often the reactor's lag is sampled (seconds).
LAG_INTERVAL = 1.0

# Upper bounds (seconds) of the DNS lookup latency buckets.
DNS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
               30.0, 60.0)


def age_labels(bounds_minutes: tuple[int, ...] = AGE_BUCKETS) -> list[str]:
    """The C{age} label values of the queue gauge: C{0-5m}, C{5-10m}, ..., C{1280m+}."""
    lows = (0, *bounds_minutes)
    return [f"{lo}-{hi}m" for lo, hi in zip(lows, bounds_minutes)] + [f"{lows[-1]}m+"]


class ReactorLag:
    """
    How late a timer asked for every L{LAG_INTERVAL} seconds fires: the
    reactor's lag (the last sample and the largest since start).
    """

    def __init__(self, clock, interval: float = LAG_INTERVAL):
        self.clock = clock
        self.interval = interval
        self.last = 0.0
        self.worst = 0.0
        self._expected: float | None = None
        self._call = LoopingCall(self._tick)
        self._call.clock = clock

    def start(self) -> None:
        """Begin sampling."""
        self._expected = self.clock.seconds()
        self._call.start(self.interval, now=True)

    def stop(self) -> None:
        """Stop sampling."""
        if self._call.running:
            self._call.stop()

    def _tick(self) -> None:
        now = self.clock.seconds()
        if self._expected is not None:
            self.last = max(0.0, now - self._expected)
            self.worst = max(self.worst, self.last)
        self._expected = now + self.interval


class SMTPDCollector:
    """
    The server's metrics, read from the admin API's L{smtpd.admin.api.Server}
    each time Prometheus scrapes.
    """

    def __init__(self, server, lag: ReactorLag | None = None):
        self.server = server
        self.lag = lag

    def describe(self):
        """Nothing up front: the families depend on what happened (checked at scrape)."""
        return []

    def collect(self):
        """Every metric family, read now."""
        yield from self._received()
        yield from self._results()
        yield from self._inbound()
        yield from self._queue()
        if self.lag is not None:
            lag = GaugeMetricFamily("smtpd_reactor_lag_seconds",
                                    "How late the last periodic reactor timer fired.")
            lag.add_metric([], self.lag.last)
            yield lag
            worst = GaugeMetricFamily("smtpd_reactor_lag_max_seconds",
                                      "The latest a periodic reactor timer fired since start.")
            worst.add_metric([], self.lag.worst)
            yield worst

    def _stats(self):
        return self.server.qmgr.results.stats

    def _received(self):
        received = self._stats().received
        for name, key, text in (
            ("smtpd_messages_received", "messages", "Messages accepted (one per message)."),
            ("smtpd_recipients_received", "recipients", "Recipients of the accepted messages."),
            ("smtpd_received_bytes", "bytes", "Octets of the accepted messages."),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], received[key])
            yield family

    def _results(self):
        stats = self._stats()
        families = {
            result: CounterMetricFamily(
                f"smtpd_recipients_{result}", f"Recipient results {result}, by transport "
                "and status class.", labels=["transport", "status_class"])
            for result in ("delivered", "deferred", "bounced")
        }
        for (result, transport, status_class), count in sorted(stats.results.items()):
            families[result].add_metric([transport, status_class + "xx"], count)
        yield from families.values()
        relayed = CounterMetricFamily("smtpd_outbound_delivered", "Recipients relayed to "
                                      "remote hosts, by encryption.", labels=["tls"])
        for tls, count in sorted(stats.remote_delivered.items()):
            relayed.add_metric([tls == "tls" and "yes" or "no"], count)
        yield relayed
        latency = HistogramMetricFamily("smtpd_delivery_latency_seconds",
                                        "Seconds from arrival to delivery, per recipient.")
        latency.add_metric([], [(_bound(b), c) for b, c in stats.latency.cumulative()],
                           stats.latency.sum)
        yield latency
        domains = GaugeMetricFamily(
            "smtpd_deferred_domain_recipients",
            f"Deferred recipient results since start of the {TOP_DOMAINS} most deferred "
            "destination domains.", labels=["domain"])
        for domain, count in stats.top_deferred(TOP_DOMAINS):
            domains.add_metric([domain], count)
        yield domains

    def _inbound(self):
        inbound = self.server.inbound
        events = inbound.events
        sessions = GaugeMetricFamily("smtpd_sessions_open", "Inbound SMTP sessions open now.")
        sessions.add_metric([], len(inbound.sessions))
        yield sessions
        refused = CounterMetricFamily("smtpd_connections_refused", "Inbound connections "
                                      "refused, by reason.", labels=["reason"])
        for reason in ("limit", "deny", "throttle", "shutdown"):
            refused.add_metric([reason], events[f"refused_{reason}"])
        yield refused
        auth = CounterMetricFamily("smtpd_auth", "AUTH attempts, by result.",
                                   labels=["result"])
        auth.add_metric(["success"], events["auth_success"])
        auth.add_metric(["failure"], events["auth_failure"])
        yield auth
        tls = CounterMetricFamily("smtpd_inbound_messages", "Messages accepted over SMTP, "
                                  "by whether the session was encrypted.", labels=["tls"])
        tls.add_metric(["yes"], events["messages_tls"])
        tls.add_metric(["no"], events["messages_plain"])
        yield tls

    def _queue(self):
        depth = GaugeMetricFamily(
            "smtpd_queue_messages", "Queue entries now, by state and time since arrival "
            "(the qshape age columns; sum by state for the totals).", labels=["state", "age"])
        labels = age_labels()
        shape = self.server.qmgr.ages(tuple(60.0 * m for m in AGE_BUCKETS))
        for state, counts in sorted(shape.items()):
            for age, count in zip(labels, counts):
                depth.add_metric([state, age], count)
        yield depth


class DNSLatency:
    """
    C{smtpd_dns_lookup_seconds}: a histogram of DNS query durations by query
    type and outcome, fed by L{observe} (a L{DNSLookups} subscriber).
    """

    def __init__(self, registry: CollectorRegistry):
        self.histogram = Histogram(
            "smtpd_dns_lookup_seconds", "Seconds each DNS query took, by query type and "
            "outcome (answer, nxdomain, servfail, refused, timeout, error).",
            labelnames=["type", "outcome"], buckets=DNS_BUCKETS, registry=registry)

    def observe(self, qtype: str, outcome: str, seconds: float) -> None:
        """Count one query of type C{qtype} that ended with C{outcome} after C{seconds}."""
        self.histogram.labels(qtype, outcome).observe(max(0.0, seconds))


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def registry(server, lag: ReactorLag | None = None) -> CollectorRegistry:
    """A registry of the server's metrics and the process's (RSS, open descriptors, CPU)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SMTPDCollector(server, lag))
    ProcessCollector(registry=reg)
    return reg
