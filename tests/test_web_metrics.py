"""
/metrics on a real server: Prometheus text that moves by exactly what the
server did (messages accepted, delivered, deferred by a 451, bounced by a 550).
"""

from __future__ import annotations

import base64
import os

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from smtpd.admin.api import Admin
from smtpd.directory.accounts import hash_password
from smtpd.queue.stats import DeliveryStats, Histogram
from tests import support
from tests.admin_support import RunningServer, eventually, short_root, write_ini
from tests.admin_support import write_operators
from tests.inbound import RawClient, connect
from tests.web_support import Browser, base_url, send, start_web_server, web_ini


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition by C{(name, sorted labels)}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class MetricsTests(unittest.TestCase):
    """The counters of /metrics against what happened."""

    timeout = 30

    async def test_counters_move_by_what_happened(self):
        """
        After one message delivered, one deferred (451) and one bounced
        (550), each counter moved by exactly that, the queue holds the
        deferred one, its domain is the most deferred and the delivery
        latency histogram counted the delivered recipient.
        """
        script = support.SinkScript(rcpt={"busy@remote.test": "451 4.2.0 mailbox busy",
                                          "gone@remote.test": "550 5.1.1 no such user"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        server = start_web_server(self, sink.port)
        browser = Browser(self)
        url = base_url(server) + "/metrics"
        code, headers, before = await browser.get(url)
        self.assertEqual(code, 200)
        self.assertIn("text/plain", headers.getRawHeaders("content-type")[0])
        before = samples(before.decode())

        await send(self, server.smtp_port(), b"a@localhost", b"ok@remote.test")
        await send(self, server.smtp_port(), b"a@localhost", b"busy@remote.test")
        await send(self, server.smtp_port(), b"", b"gone@remote.test")
        admin = Admin(server.top.admin.server, "tester")

        def settled():
            status = admin.status()
            return ((status["delivered"], status["deferred"], status["bounced"]) == (1, 1, 1)
                    and status["queue"] == {"queued": 0, "deferred": 1, "held": 0})

        await eventually(settled)
        after = samples((await browser.get(url))[2].decode())

        def moved(name, **labels):
            key = (name, tuple(sorted(labels.items())))
            return after[key] - before.get(key, 0.0)

        self.assertEqual(moved("smtpd_messages_received_total"), 3)
        self.assertEqual(moved("smtpd_recipients_received_total"), 3)
        self.assertGreater(moved("smtpd_received_bytes_total"), 3 * len(b"body\r\n"))
        self.assertEqual(moved("smtpd_inbound_messages_total", tls="no"), 3)
        self.assertEqual(moved("smtpd_inbound_messages_total", tls="yes"), 0)
        self.assertEqual(moved("smtpd_recipients_delivered_total", transport="remote",
                               status_class="2xx"), 1)
        self.assertEqual(moved("smtpd_recipients_deferred_total", transport="remote",
                               status_class="4xx"), 1)
        self.assertEqual(moved("smtpd_recipients_bounced_total", transport="remote",
                               status_class="5xx"), 1)
        self.assertEqual(moved("smtpd_outbound_delivered_total", tls="no"), 1)
        self.assertEqual(moved("smtpd_delivery_latency_seconds_count"), 1)
        self.assertEqual(moved("smtpd_delivery_latency_seconds_bucket", le="+Inf"), 1)
        self.assertEqual(after[("smtpd_deferred_domain_recipients",
                                (("domain", "remote.test"),))], 1)
        # The deferred one is minutes old: the first age column, every other is empty.
        queue = {labels: value for (name, labels), value in after.items()
                 if name == "smtpd_queue_messages"}
        self.assertEqual(len(queue), 3 * 10)
        self.assertEqual(queue[(("age", "0-5m"), ("state", "deferred"))], 1)
        self.assertEqual(sum(queue.values()), 1)
        self.assertEqual(moved("smtpd_auth_total", result="failure"), 0)
        self.assertIn(("smtpd_sessions_open", ()), after)
        self.assertIn(("smtpd_reactor_lag_seconds", ()), after)
        self.assertGreaterEqual(after[("smtpd_reactor_lag_max_seconds", ())],
                                after[("smtpd_reactor_lag_seconds", ())])
        self.assertGreater(after[("process_resident_memory_bytes", ())], 0)
        self.assertGreater(after[("process_open_fds", ())], 0)
        self.assertEqual(len(sink.messages), 1)


    async def test_refusals_and_auth(self):
        """
        A connection over max_connections_per_ip counts as refused by the
        limit, one from a denied address as refused by deny; a wrong AUTH
        password counts one failure and a right one one success.
        """
        root = short_root(self)
        write_operators(root)
        with open(os.path.join(root, "etc", "users"), "w") as f:
            f.write(f"bob@localhost:{hash_password('secret', rounds=4).decode()}\n")
        write_ini(root, web_ini(9).replace(
            "listen = tcp:0:interface=127.0.0.1\n[delivery]",
            "listen = tcp:0:interface=127.0.0.1\n"
            "max_connections_per_ip = 1\n[access]\ndeny = 127.0.0.2\n"
            "[auth]\nallow_plaintext = yes\n[delivery]"))
        server = RunningServer(self, root)
        port = server.smtp_port()
        first = await connect(self, port)
        over = await connect(self, port)
        self.assertTrue((await over.wait(1))[0].startswith("421 4.7.0"))
        # From 127.0.0.2, the denied address.
        denied = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port,
                                                 bindAddress=("127.0.0.2", 0)), denied)
        self.addCleanup(denied.transport.loseConnection)
        self.assertTrue((await denied.wait(1))[0].startswith("554 5.7.1"))
        await first.command(b"EHLO client.test\r\n")
        for password, code in ((b"wrong", "535"), (b"secret", "235")):
            token = base64.b64encode(b"\0bob@localhost\0" + password)
            reply = await first.command(b"AUTH PLAIN " + token + b"\r\n")
            self.assertTrue(reply.startswith(code), reply)
        after = samples((await Browser(self).get(base_url(server) + "/metrics"))[2].decode())
        self.assertEqual(after[("smtpd_connections_refused_total", (("reason", "limit"),))], 1)
        self.assertEqual(after[("smtpd_connections_refused_total", (("reason", "deny"),))], 1)
        self.assertEqual(after[("smtpd_auth_total", (("result", "failure"),))], 1)
        self.assertEqual(after[("smtpd_auth_total", (("result", "success"),))], 1)
        self.assertEqual(after[("smtpd_sessions_open", ())], 2)


    async def test_throttled_connection(self):
        """
        A connection over [access] connection_rate (from an address outside
        the relay networks) counts as refused by throttling.
        """
        root = short_root(self)
        write_operators(root)
        write_ini(root, web_ini(9).replace(
            "listen = tcp:0:interface=127.0.0.1\n[delivery]",
            "listen = tcp:0:interface=127.0.0.1\n"
            "[access]\nrelay = 127.0.0.1\nconnection_rate = 1\n[delivery]"))
        server = RunningServer(self, root)
        url = base_url(server) + "/metrics"
        before = samples((await Browser(self).get(url))[2].decode())
        replies = []
        for _ in range(2):
            client = RawClient()
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.smtp_port(),
                                                     bindAddress=("127.0.0.3", 0)), client)
            self.addCleanup(client.transport.loseConnection)
            replies.append((await client.wait(1))[0])
        self.assertTrue(replies[0].startswith("220"), replies)
        self.assertTrue(replies[1].startswith("421 4.7.0"), replies)
        after = samples((await Browser(self).get(url))[2].decode())
        key = ("smtpd_connections_refused_total", (("reason", "throttle"),))
        self.assertEqual(after[key] - before[key], 1)
        for reason in ("limit", "deny", "shutdown"):
            key = ("smtpd_connections_refused_total", (("reason", reason),))
            self.assertEqual(after[key], 0)


class DNSMetricsTests(unittest.TestCase):
    """C{smtpd_dns_lookup_seconds} against the queries a real DNS server received."""

    timeout = 30

    async def test_lookups_by_type_and_outcome(self):
        """
        Relaying to a domain with an MX, to a name that does not exist and to
        a domain whose server fails counts, per query type, exactly the
        queries the DNS server received, with outcomes answer, nxdomain and
        servfail.
        """
        sink = support.start_smtp_sink(self, "127.0.0.1")
        server_dns = support.start_dns_server(self, {"remote.test": {
            "remote.test": [support.mx(10, "mx.remote.test")],
            "mx.remote.test": [support.a("127.0.0.1")],
        }}, servfail=("broken.test",))
        root = short_root(self)
        write_operators(root)
        write_ini(root, "[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
                  f"[delivery]\ndns_servers = 127.0.0.1:{server_dns[1]}\n"
                  f"remote_port = {sink.port}\noutbound_tls = none\nretry = 1h\n"
                  "[domain:localhost]\ntype = local\n"
                  "[http]\nlisten = tcp:0:interface=127.0.0.1\n")
        server = RunningServer(self, root)
        url = base_url(server) + "/metrics"
        before = samples((await Browser(self).get(url))[2].decode())
        self.assertEqual([k for k in before if k[0].startswith("smtpd_dns_")], [])
        for rcpt in (b"ok@remote.test", b"who@missing.remote.test", b"x@broken.test"):
            await send(self, server.smtp_port(), b"", rcpt)
        admin = Admin(server.top.admin.server, "tester")

        def settled():
            status = admin.status()
            return (status["delivered"], status["deferred"], status["bounced"]) == (1, 1, 1)

        await eventually(settled)
        after = samples((await Browser(self).get(url))[2].decode())

        def count(qtype, outcome=None):
            return sum(v for (name, labels), v in after.items()
                       if name == "smtpd_dns_lookup_seconds_count"
                       and dict(labels)["type"] == qtype
                       and outcome in (None, dict(labels)["outcome"]))

        received = [t for _, t in server_dns.queries]
        for qtype in set(received) | {"MX", "A"}:
            self.assertEqual(count(qtype), received.count(qtype), qtype)
        mx_queries = [name for name, t in server_dns.queries if t == "MX"]
        self.assertEqual(count("MX", "nxdomain"), mx_queries.count("missing.remote.test"))
        self.assertEqual(count("MX", "servfail"), mx_queries.count("broken.test"))
        self.assertEqual(count("MX", "answer"), mx_queries.count("remote.test"))
        self.assertGreaterEqual(count("MX", "servfail"), 1)
        total = sum(v for (name, _), v in after.items()
                    if name == "smtpd_dns_lookup_seconds_count")
        self.assertEqual(total, len(received))
        # Every query took some time, none more than the test did.
        seconds = sum(v for (name, _), v in after.items()
                      if name == "smtpd_dns_lookup_seconds_sum")
        self.assertGreater(seconds, 0)
        self.assertLess(seconds, 30)


class StatsTests(unittest.TestCase):
    """The statistics behind the metrics."""

    def test_histogram_buckets(self):
        """Observations land in the first bucket whose bound is not below them."""
        h = Histogram((1.0, 10.0))
        for value in (0.5, 1.0, 3.0, 11.0):
            h.observe(value)
        self.assertEqual(h.cumulative(), [(1.0, 2), (10.0, 3), (float("inf"), 4)])
        self.assertEqual((h.count, h.sum), (4, 15.5))

    def test_deferred_domains_bounded(self):
        """Past the limit, the least deferred domain makes room; the top N is sorted."""
        from smtpd.queue import stats

        s = DeliveryStats()
        self.patch(stats, "MAX_DOMAINS", 2)
        s.result("deferred", "remote", "4.0.0", "a@one.test", 0)
        s.result("deferred", "remote", "4.0.0", "a@one.test", 0)
        s.result("deferred", "remote", "4.0.0", "a@two.test", 0)
        s.result("deferred", "remote", "4.0.0", "a@three.test", 0)
        self.assertEqual(s.top_deferred(5), [("one.test", 2), ("three.test", 1)])
        self.assertEqual(s.results[("deferred", "remote", "4")], 4)
