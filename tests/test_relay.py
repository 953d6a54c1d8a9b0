"""
Tests for L{smtpd.relay.RelayManager}: delivery over real loopback sockets to
recording SMTP sinks on 127.0.0.x, with MX records from a real twisted.names
server.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from smtpd.util import tls
from smtpd.config import Config, DeliveryConfig, DomainConfig, ServerConfig, SmartHost
from smtpd.mail.envelope import DeliveryStatus, Envelope, Recipient
from smtpd.delivery.mx import MXResolver, make_resolver
from smtpd.delivery.relay import LocalAddresses, RelayManager, bindable
from smtpd.mail.source import BytesSource
from tests.support import (
    CertificateAuthority,
    SinkScript,
    a,
    broken_tls_options,
    mx,
    start_dns_server,
    start_smtp_sinks,
)

MESSAGE = b"From: a@ours.test\r\nSubject: hello\r\n\r\n.dot line\r\nbody\r\n"

ZONES = {
    "test": {
        "example.test": [mx(10, "mx1.example.test"), mx(20, "mx2.example.test")],
        "mx1.example.test": [a("127.0.0.2")],
        "mx2.example.test": [a("127.0.0.3")],
        "other.test": [mx(10, "mx.other.test")],
        "mx.other.test": [a("127.0.0.4")],
        "same.test": [mx(10, "mx1.example.test")],
        "backup.test": [mx(10, "mx2.example.test"), mx(20, "mx1.example.test")],
        "self.test": [mx(10, "smtp.ours.test")],
        "nomail.test": [mx(0, "")],
        "smart.test": [mx(10, "relay.smart.test")],
        "relay.smart.test": [a("127.0.0.5")],
        "relay.test": [a("127.0.0.5")],
        # An address of this machine by another name (TEST-NET-2: the tests
        # declare it ours and never connect to it).
        "mine.test": [mx(10, "mx.mine.test")],
        "mx.mine.test": [a("198.51.100.25")],
    },
}

# The addresses of the sinks (127.0.0.9 only holds the shared port when the
# MX hosts of a test are meant to be down).
MX1, MX2, OTHER, SMART, SPARE = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.9"


class RelayTests(unittest.TestCase):
    """L{RelayManager.deliver} end to end."""

    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONES, servfail=("broken.test",))

    def sinks(self, **scripts: SinkScript | None) -> dict:
        """Sinks on the named addresses (C{MX1=SinkScript(...)}), sharing one port."""
        names = list(scripts)
        hosts = [globals()[name] for name in names]
        started = start_smtp_sinks(self, hosts, [scripts[n] for n in names])
        self.port = started[0].port
        return dict(zip(names, started))

    def relay(self, *, domains=(), hostname="smtp.ours.test", local=frozenset(),
              network=reactor, **kw):
        delivery = {"remote_port": self.port, "outbound_tls": "none"}
        delivery.update(kw.pop("delivery", {}))
        config = Config(
            path="/srv/mail/etc/smtpd.ini",
            root="/srv/mail",
            server=ServerConfig(hostname=hostname),
            delivery=DeliveryConfig(**delivery),
            domains=tuple(domains),
        )
        resolver = MXResolver(make_resolver([self.dns], reactor), reactor, hostname)
        relay = RelayManager(config, network, resolver, local_endpoints=lambda: set(local),
                             **kw)
        self.addCleanup(relay.stop)
        return relay

    async def send(self, relay, *addresses, sender="a@ours.test", data=MESSAGE, **env):
        recipients = [r if isinstance(r, Recipient) else Recipient(r) for r in addresses]
        envelope = Envelope(id="0A1B2C", sender=sender, recipients=recipients, arrival=0.0,
                            **env)
        statuses = await relay.deliver(envelope, [(r, None) for r in recipients],
                                       BytesSource(data))
        self.assertEqual([s.address for s in statuses], [r.address for r in recipients])
        return statuses

    def codes(self, statuses: list[DeliveryStatus]) -> list[tuple[int, str]]:
        return [(s.code, s.status) for s in statuses]

    async def test_quoted_local_part(self) -> None:
        """
        A quoted local part with a space ("john smith"@..., accepted inbound)
        is relayed as received, sender and recipient; a space outside quotes
        is never put on the wire.
        """
        sinks = self.sinks(MX1=None)
        statuses = await self.send(self.relay(), '"john smith"@example.test',
                                   "bad address@example.test", sender='"jane doe"@ours.test')
        self.assertEqual([s.code for s in statuses], [250, 553])
        [got] = sinks["MX1"].messages
        self.assertEqual((got.mail, got.rcpt),
                         ('MAIL FROM:<"jane doe"@ours.test>',
                          ['RCPT TO:<"john smith"@example.test>']))

    async def test_best_mx(self) -> None:
        """The message goes to the most preferred MX with the exact envelope and body."""
        sinks = self.sinks(MX1=None, MX2=None)
        [status] = await self.send(self.relay(), "b@example.test")
        self.assertEqual(
            status,
            DeliveryStatus("b@example.test", 250, "2.0.0", "250 2.0.0 Ok: queued",
                           "mx1.example.test [127.0.0.2]"),
        )
        [got] = sinks["MX1"].messages
        self.assertEqual((got.sender, got.recipients, got.data),
                         ("a@ours.test", ["b@example.test"], MESSAGE))
        self.assertIn(b"\r\n..dot line\r\n", got.raw)
        self.assertEqual(sinks["MX2"].connections, 0)

    async def test_next_mx_when_refused(self) -> None:
        """When the best MX refuses connections the next one gets the mail."""
        sinks = self.sinks(MX2=None)
        [status] = await self.send(self.relay(), "b@example.test")
        self.assertEqual(status.remote_mta, "mx2.example.test [127.0.0.3]")
        self.assertEqual(len(sinks["MX2"].messages), 1)

    async def test_next_mx_on_4xx(self) -> None:
        """A 4xx greeting, EHLO or MAIL moves on to the next MX host."""
        for script in (SinkScript(greeting="421 4.3.2 busy"), SinkScript(ehlo="421 4.3.2 busy"),
                       SinkScript(mail="451 4.3.0 later")):
            sinks = self.sinks(MX1=script, MX2=None)
            [status] = await self.send(self.relay(), "b@example.test")
            self.assertEqual((status.code, status.remote_mta),
                             (250, "mx2.example.test [127.0.0.3]"))
            self.assertEqual((len(sinks["MX1"].messages), len(sinks["MX2"].messages)), (0, 1))

    async def test_all_hosts_down(self) -> None:
        """With every MX unreachable all recipients get 4.4.1 with the last error."""
        self.sinks(SPARE=None)
        statuses = await self.send(self.relay(), "b@example.test", "c@example.test")
        self.assertEqual(self.codes(statuses), [(451, "4.4.1")] * 2)
        for status in statuses:
            self.assertEqual(status.remote_mta, "mx2.example.test [127.0.0.3]")
            self.assertIn("connection refused", status.reply)
            self.assertIn("127.0.0.3", status.reply)

    async def test_permanent_from_last_host(self) -> None:
        """A 5xx to MAIL from the last MX host fails every recipient permanently."""
        refuse = SinkScript(mail="550 5.7.1 we do not like you")
        self.sinks(MX1=SinkScript(greeting="421 4.3.2 busy"), MX2=refuse)
        statuses = await self.send(self.relay(), "b@example.test", "c@example.test")
        self.assertEqual(self.codes(statuses), [(550, "5.7.1")] * 2)
        self.assertEqual(statuses[0].reply, "550 5.7.1 we do not like you")

    async def test_mail_refused_is_final(self) -> None:
        """
        A 5xx to MAIL from the best MX is final for the route (as Postfix):
        the next MX is not tried, and the sender gets that 5xx, whether the
        backup is up or down (not the backup's connection error).
        """
        refuse = SinkScript(mail="550 5.7.1 we do not like you")
        for backup in (True, False):
            sinks = self.sinks(MX1=refuse, MX2=None) if backup else self.sinks(MX1=refuse)
            statuses = await self.send(self.relay(), "b@example.test", "c@example.test")
            self.assertEqual(self.codes(statuses), [(550, "5.7.1")] * 2)
            self.assertEqual(statuses[0].reply, "550 5.7.1 we do not like you")
            self.assertEqual(statuses[0].remote_mta, "mx1.example.test [127.0.0.2]")
            if backup:
                self.assertEqual(sinks["MX2"].connections, 0)

    async def test_5xx_greeting_skips(self) -> None:
        """
        A 5xx greeting, or 5xx to both EHLO and HELO, moves on to the next MX
        (Postfix smtp_skip_5xx_greeting).
        """
        for script in (SinkScript(greeting="554 5.7.1 go away"),
                       SinkScript(ehlo="550 5.7.1 no", helo="550 5.7.1 no")):
            sinks = self.sinks(MX1=script, MX2=None)
            [status] = await self.send(self.relay(), "b@example.test")
            self.assertEqual((status.code, status.remote_mta),
                             (250, "mx2.example.test [127.0.0.3]"))
            self.assertEqual(len(sinks["MX2"].messages), 1)

    async def test_5xx_greetings_everywhere(self) -> None:
        """
        When every MX refuses with a 5xx greeting the recipients fail
        permanently with the last one; when one more host could not be
        reached the mail is deferred instead.
        """
        self.sinks(MX1=SinkScript(greeting="554 5.7.1 go away"),
                   MX2=SinkScript(greeting="554 5.3.2 not today"))
        [status] = await self.send(self.relay(), "b@example.test")
        self.assertEqual((status.code, status.status, status.reply, status.remote_mta),
                         (554, "5.3.2", "554 5.3.2 not today", "mx2.example.test [127.0.0.3]"))
        self.sinks(MX2=SinkScript(greeting="554 5.3.2 not today"))
        [status] = await self.send(self.relay(), "b@example.test")
        self.assertEqual((status.code, status.status), (451, "4.4.1"))
        self.assertEqual(status.remote_mta, "mx1.example.test [127.0.0.2]")

    async def test_size_limit(self) -> None:
        """
        A host whose SIZE limit is below the message is skipped; when every
        host is too small the mail fails permanently with 5.3.4.
        """
        sinks = self.sinks(MX1=SinkScript(size=10), MX2=SinkScript(size=100000))
        [status] = await self.send(self.relay(), "b@example.test")
        self.assertEqual((status.code, status.remote_mta), (250, "mx2.example.test [127.0.0.3]"))
        sinks["MX2"].script.size = 10
        [status] = await self.send(self.relay(), "c@example.test")
        self.assertEqual((status.code, status.status), (552, "5.3.4"))
        self.assertEqual(len(sinks["MX2"].messages), 1)

    async def test_recipient_refused(self) -> None:
        """A 550 for one recipient fails that one only; a 4xx defers that one only."""
        sinks = self.sinks(MX1=SinkScript(rcpt={"bad@example.test": "550 5.1.1 unknown",
                                                "full@example.test": "452 4.2.2 full"}))
        statuses = await self.send(self.relay(), "bad@example.test", "good@example.test",
                                   "full@example.test")
        self.assertEqual(self.codes(statuses), [(550, "5.1.1"), (250, "2.0.0"), (452, "4.2.2")])
        self.assertEqual(sinks["MX1"].messages[0].recipients, ["good@example.test"])

    async def test_one_transaction_per_route(self) -> None:
        """Recipients are grouped by domain: one transaction per route, all at once."""
        sinks = self.sinks(MX1=None, OTHER=None)
        statuses = await self.send(self.relay(), "b@example.test", "d@other.test",
                                   "c@example.test")
        self.assertEqual([s.code for s in statuses], [250, 250, 250])
        self.assertEqual([s.remote_mta.split()[0] for s in statuses],
                         ["mx1.example.test", "mx.other.test", "mx1.example.test"])
        self.assertEqual([m.recipients for m in sinks["MX1"].messages],
                         [["b@example.test", "c@example.test"]])
        self.assertEqual([m.recipients for m in sinks["OTHER"].messages], [["d@other.test"]])

    async def test_dns_failures(self) -> None:
        """NXDOMAIN, null MX and SERVFAIL give 5.1.2, 5.1.10 and 4.4.3 statuses."""
        self.sinks(MX1=None)
        statuses = await self.send(self.relay(), "x@nowhere.test", "x@nomail.test",
                                   "x@broken.test", "b@example.test")
        self.assertEqual(self.codes(statuses),
                         [(550, "5.1.2"), (550, "5.1.10"), (451, "4.4.3"), (250, "2.0.0")])
        self.assertTrue(statuses[1].reply.startswith("550 5.1.10 "))

    async def test_address_literal(self) -> None:
        """A recipient at an address literal goes to that address without DNS."""
        sinks = self.sinks(MX2=None)
        [status] = await self.send(self.relay(), "x@[127.0.0.3]")
        self.assertEqual((status.code, status.remote_mta), (250, "127.0.0.3 [127.0.0.3]"))
        self.assertEqual(sinks["MX2"].messages[0].recipients, ["x@[127.0.0.3]"])
        self.assertEqual(self.dns.queries, [])

    async def test_local_part_tricks(self) -> None:
        """
        C{%}, C{!} and a quoted C{@} in the local part never route: the mail
        goes to the recipient domain's MX with the address unchanged.
        """
        sinks = self.sinks(MX1=None)
        addresses = ["user%other.test@example.test", "other.test!user@example.test",
                     '"user@other.test"@example.test']
        statuses = await self.send(self.relay(), *addresses)
        self.assertEqual([s.code for s in statuses], [250] * 3)
        self.assertEqual(sinks["MX1"].messages[0].recipients, addresses)
        self.assertNotIn("other.test", [name for name, _ in self.dns.queries])

    async def test_bracketed_smart_host_ip(self) -> None:
        """A bracketed IP smart host takes every domain with no DNS query at all."""
        sinks = self.sinks(SMART=None)
        relay = self.relay(delivery={"smart_host": SmartHost("127.0.0.5", None, False)})
        statuses = await self.send(relay, "b@example.test", "x@nowhere.test")
        self.assertEqual([s.code for s in statuses], [250, 250])
        self.assertEqual(sinks["SMART"].messages[0].recipients,
                         ["b@example.test", "x@nowhere.test"])
        self.assertEqual(self.dns.queries, [])

    async def test_bracketed_smart_host_name(self) -> None:
        """A bracketed host name is looked up by A/AAAA only, never by MX."""
        sinks = self.sinks(SMART=None)
        relay = self.relay(delivery={"smart_host": SmartHost("relay.test", None, False)})
        [status] = await self.send(relay, "b@example.test")
        self.assertEqual((status.code, status.remote_mta), (250, "relay.test [127.0.0.5]"))
        self.assertEqual(len(sinks["SMART"].messages), 1)
        self.assertEqual(sorted(t for _, t in self.dns.queries), ["A", "AAAA"])

    async def test_smart_host_by_mx(self) -> None:
        """An unbracketed smart host is found by the MX of its own name."""
        sinks = self.sinks(SMART=None)
        relay = self.relay(delivery={"smart_host": SmartHost("smart.test", None, True)})
        [status] = await self.send(relay, "b@example.test")
        self.assertEqual(status.remote_mta, "relay.smart.test [127.0.0.5]")
        self.assertEqual(len(sinks["SMART"].messages), 1)
        self.assertEqual([q for q in self.dns.queries if q[1] == "MX"], [("smart.test", "MX")])

    async def test_smart_host_not_found(self) -> None:
        """A smart host that does not resolve defers the mail instead of bouncing it."""
        self.sinks(SPARE=None)
        relay = self.relay(delivery={"smart_host": SmartHost("gone.test", None, False)})
        [status] = await self.send(relay, "b@example.test")
        self.assertEqual((status.code, status.status), (451, "4.4.3"))

    async def test_smart_host_fallback(self) -> None:
        """
        With C{smart_host_fallback} the MX is tried first; the smart host gets
        the mail when the MX hosts are down or the domain is not found.
        """
        sinks = self.sinks(OTHER=None, SMART=None)
        relay = self.relay(delivery={"smart_host": SmartHost("127.0.0.5", None, False),
                                     "smart_host_fallback": True})
        statuses = await self.send(relay, "b@example.test", "d@other.test", "x@nowhere.test",
                                   "x@nomail.test")
        self.assertEqual(
            [(s.code, s.remote_mta) for s in statuses],
            [(250, "127.0.0.5 [127.0.0.5]"), (250, "mx.other.test [127.0.0.4]"),
             (250, "127.0.0.5 [127.0.0.5]"), (550, "")],
        )
        self.assertEqual(sorted(r for m in sinks["SMART"].messages for r in m.recipients),
                         ["b@example.test", "x@nowhere.test"])

    async def test_smart_host_auth(self) -> None:
        """AUTH is done toward the [delivery] smart host when smart_host_user is set."""
        sinks = self.sinks(SMART=SinkScript(auth={"relayuser": "pw"}))
        relay = self.relay(delivery={"smart_host": SmartHost("127.0.0.5", None, False),
                                     "smart_host_user": "relayuser",
                                     "smart_host_password": "pw"})
        [status] = await self.send(relay, "b@example.test")
        self.assertEqual(status.code, 250)
        self.assertEqual(sinks["SMART"].messages[0].auth, "relayuser")

    async def test_domain_smart_host(self) -> None:
        """A [domain:*.wild.test] smart host (with its port) serves matching domains only."""
        sinks = self.sinks(MX1=None, OTHER=None)
        wild = DomainConfig("*.wild.test", type="remote",
                            smart_host=SmartHost("127.0.0.4", self.port, False))
        relay = self.relay(domains=[wild], delivery={"remote_port": 1})
        statuses = await self.send(relay, "x@a.wild.test", "b@example.test")
        self.assertEqual([s.code for s in statuses], [250, 451])
        self.assertEqual(sinks["OTHER"].messages[0].recipients, ["x@a.wild.test"])

    async def test_domain_remote_port(self) -> None:
        """A domain's remote_port overrides [delivery] remote_port."""
        sinks = self.sinks(MX1=None)
        domain = DomainConfig("example.test", type="remote", remote_port=self.port)
        relay = self.relay(domains=[domain], delivery={"remote_port": 1})
        statuses = await self.send(relay, "b@example.test", "x@same.test")
        self.assertEqual([s.code for s in statuses], [250, 451])
        self.assertEqual(len(sinks["MX1"].messages), 1)

    async def test_dsn_parameters(self) -> None:
        """RET, ENVID, NOTIFY and ORCPT from the envelope go to a host offering DSN."""
        sinks = self.sinks(MX1=SinkScript(dsn=True), OTHER=None)
        recipients = [Recipient("b@example.test", notify=("FAILURE",),
                                orcpt="rfc822;b@example.test"),
                      Recipient("d@other.test", notify=("FAILURE",))]
        await self.send(self.relay(), *recipients, ret="FULL", envid="Q1")
        self.assertEqual(sinks["MX1"].messages[0].mail, "MAIL FROM:<a@ours.test> RET=FULL ENVID=Q1")
        self.assertEqual(sinks["MX1"].messages[0].rcpt,
                         ["RCPT TO:<b@example.test> NOTIFY=FAILURE ORCPT=rfc822;b@example.test"])
        self.assertEqual(sinks["OTHER"].messages[0].mail, "MAIL FROM:<a@ours.test>")
        self.assertEqual(sinks["OTHER"].messages[0].rcpt, ["RCPT TO:<d@other.test>"])

    async def test_8bit_body(self) -> None:
        """An 8-bit message is sent with BODY=8BITMIME to a host that offers it."""
        sinks = self.sinks(MX1=None)
        await self.send(self.relay(), "b@example.test", data=b"Subject: \xc3\xa9\r\n\r\n")
        self.assertEqual(sinks["MX1"].messages[0].mail, "MAIL FROM:<a@ours.test> BODY=8BITMIME")

    async def test_connection_reuse(self) -> None:
        """Two deliveries to the same domain share one TCP connection, with RSET."""
        sinks = self.sinks(MX1=None)
        relay = self.relay()
        await self.send(relay, "b@example.test")
        await self.send(relay, "c@example.test")
        self.assertEqual((sinks["MX1"].connections, len(sinks["MX1"].messages)), (1, 2))
        self.assertIn("RSET", sinks["MX1"].commands)

    async def test_max_messages_per_connection(self) -> None:
        """After max_messages_per_connection messages a new connection is used."""
        sinks = self.sinks(MX1=None)
        relay = self.relay(delivery={"max_messages_per_connection": 1})
        await self.send(relay, "b@example.test")
        await self.send(relay, "c@example.test")
        self.assertEqual(sinks["MX1"].connections, 2)
        self.assertNotIn("RSET", sinks["MX1"].commands)

    async def test_idle_connection_closed(self) -> None:
        """An idle pooled connection is closed (with QUIT) after the idle time."""
        sinks = self.sinks(MX1=None)
        await self.send(self.relay(idle_timeout=0.01), "b@example.test")
        self.assertEqual(len(sinks["MX1"].sessions), 1)
        await sinks["MX1"].all_closed()
        self.assertEqual(sinks["MX1"].commands[-1], "QUIT")

    async def test_stop_closes_idle(self) -> None:
        """C{stop} closes the idle pooled connections."""
        sinks = self.sinks(MX1=None)
        relay = self.relay()
        await self.send(relay, "b@example.test")
        await relay.stop()
        await sinks["MX1"].all_closed()
        self.assertEqual(sinks["MX1"].commands[-1], "QUIT")

    async def test_dead_pooled_connection(self) -> None:
        """A pooled connection the host has closed is replaced by a fresh one."""
        sinks = self.sinks(MX1=None)
        relay = self.relay()
        await self.send(relay, "b@example.test")
        await sinks["MX1"].close_all()
        [status] = await self.send(relay, "c@example.test")
        self.assertEqual(status.code, 250)
        self.assertEqual((sinks["MX1"].connections, len(sinks["MX1"].messages)), (2, 2))

    async def test_pooled_connection_gone_bad(self) -> None:
        """A pooled connection answering 421 to RSET is replaced by a fresh one."""
        sinks = self.sinks(MX1=SinkScript(rset="421 4.4.2 idle too long"))
        relay = self.relay()
        await self.send(relay, "b@example.test")
        [status] = await self.send(relay, "c@example.test")
        self.assertEqual(status.code, 250)
        self.assertEqual((sinks["MX1"].connections, len(sinks["MX1"].messages)), (2, 2))

    async def test_per_domain_limit(self) -> None:
        """
        With outbound_connections_per_domain = 1 concurrent deliveries to one
        domain wait for each other (and reuse the connection); with 2 they
        open two connections.
        """
        for limit, connections in ((1, 1), (2, 2)):
            sinks = self.sinks(MX1=None)
            relay = self.relay(delivery={"outbound_connections_per_domain": limit})
            results = await gatherResults(
                [relay.deliver(Envelope("A1", "a@ours.test", [], 0.0), [(Recipient(r), None)],
                               BytesSource(MESSAGE))
                 for r in ("b@example.test", "c@example.test")]
            )
            self.assertEqual([s.code for [s] in results], [250, 250])
            self.assertEqual(sinks["MX1"].connections, connections)

    async def test_global_limit(self) -> None:
        """
        With outbound_connections = 1 a delivery to another domain waits until
        the first connection is closed; with more, both run at once.
        """
        for limit in (1, 2):
            sinks = self.sinks(MX1=None)
            relay = self.relay(delivery={"outbound_connections": limit})
            await gatherResults(
                [relay.deliver(Envelope("A1", "a@ours.test", [], 0.0), [(Recipient(r), None)],
                               BytesSource(MESSAGE))
                 for r in ("b@example.test", "c@same.test")]
            )
            commands = sinks["MX1"].commands
            second_mail = [i for i, c in enumerate(commands) if c.startswith("MAIL")][1]
            self.assertEqual("QUIT" in commands[:second_mail], limit == 1)
            self.assertEqual(len(sinks["MX1"].messages), 2)

    async def test_loop_by_local_endpoint(self) -> None:
        """
        An MX at one of our listening endpoints is ourselves: with no better
        MX it is a loop (554 5.4.6, no connection); a better MX is used; the
        same address on another port is an ordinary host.
        """
        sinks = self.sinks(MX1=None, MX2=None)
        relay = self.relay(local={(MX1, self.port)})
        statuses = await self.send(relay, "b@example.test", "c@backup.test")
        self.assertEqual(self.codes(statuses), [(554, "5.4.6"), (250, "2.0.0")])
        self.assertEqual(statuses[1].remote_mta, "mx2.example.test [127.0.0.3]")
        self.assertEqual(sinks["MX1"].connections, 0)
        other_port = self.relay(local={(MX1, self.port + 1), ("0.0.0.0", self.port + 1)})
        [status] = await self.send(other_port, "b@example.test")
        self.assertEqual(status.remote_mta, "mx1.example.test [127.0.0.2]")

    async def test_loop_wildcard_listener(self) -> None:
        """Listening on 0.0.0.0 makes a loopback MX on that port ourselves."""
        self.sinks(MX1=None)
        relay = self.relay(local={("0.0.0.0", self.port)})
        [status] = await self.send(relay, "x@same.test")
        self.assertEqual((status.code, status.status), (554, "5.4.6"))

    async def test_loop_own_address(self) -> None:
        """
        Listening on 0.0.0.0:P, an MX at another (non-loopback) address of
        this machine, port P, is ourselves too: 554 5.4.6, and no
        connection is attempted.
        """
        self.sinks(SPARE=None)
        network = MemoryReactorClock()  # records connection attempts, makes none
        mine = "198.51.100.25"
        relay = self.relay(local={("0.0.0.0", self.port)}, network=network,
                           is_local_address=lambda ip: ip == mine)
        [status] = await self.send(relay, "x@mine.test")
        self.assertEqual((status.code, status.status), (554, "5.4.6"))
        self.assertEqual(network.tcpClients, [])

    test_loop_own_address.timeout = 10  # type: ignore[attr-defined]

    async def test_loop_by_hostname(self) -> None:
        """An MX named as our hostname is a loop, 554 5.4.6."""
        self.sinks(MX1=None)
        [status] = await self.send(self.relay(), "x@self.test")
        self.assertEqual((status.code, status.status, status.remote_mta), (554, "5.4.6", ""))

    async def test_smart_host_loop(self) -> None:
        """A smart host at one of our endpoints is a loop, not a deferral."""
        self.sinks(SMART=None)
        relay = self.relay(delivery={"smart_host": SmartHost("127.0.0.5", None, False)},
                           local={(SMART, self.port)})
        [status] = await self.send(relay, "b@example.test")
        self.assertEqual((status.code, status.status), (554, "5.4.6"))

    async def test_masquerade(self) -> None:
        """masquerade_domain rewrites senders in local and alias domains only."""
        sinks = self.sinks(MX1=None)
        domains = [DomainConfig("ours.test"), DomainConfig("alias.test", type="alias",
                                                           alias_of="ours.test")]
        relay = self.relay(domains=domains, delivery={"masquerade_domain": "mail.ours.test"})
        for sender in ("a@ours.test", "b@alias.test", "c@elsewhere.test", ""):
            await self.send(relay, "b@example.test", sender=sender)
        self.assertEqual([m.sender for m in sinks["MX1"].messages],
                         ["a@mail.ours.test", "b@mail.ours.test", "c@elsewhere.test", ""])

    def self_signed(self, hostname: str):
        """Server TLS options made by L{smtpd.tls}, as a peer running smtpd has."""
        cert, key = self.mktemp(), self.mktemp()
        tls.ensure_certificate(cert, key, hostname, reactor.seconds())
        return tls.server_tls_options(cert, key)

    async def test_tls_encrypt(self) -> None:
        """outbound_tls = encrypt uses TLS, and defers (4.7.5) when no MX offers it."""
        sinks = self.sinks(MX1=SinkScript(tls=self.self_signed("mx1.example.test")),
                           OTHER=None)
        relay = self.relay(delivery={"outbound_tls": "encrypt"})
        statuses = await self.send(relay, "b@example.test", "d@other.test")
        self.assertEqual(self.codes(statuses), [(250, "2.0.0"), (451, "4.7.5")])
        self.assertTrue(sinks["MX1"].messages[0].tls)
        self.assertEqual(sinks["OTHER"].messages, [])

    async def test_tls_may(self) -> None:
        """outbound_tls = may uses TLS when offered and plain text otherwise."""
        sinks = self.sinks(MX1=SinkScript(tls=self.self_signed("whatever.test")), OTHER=None)
        relay = self.relay(delivery={"outbound_tls": "may"})
        statuses = await self.send(relay, "b@example.test", "d@other.test")
        self.assertEqual([s.code for s in statuses], [250, 250])
        self.assertEqual([sinks["MX1"].messages[0].tls, sinks["OTHER"].messages[0].tls],
                         [True, False])

    async def test_tls_may_plaintext_fallback(self) -> None:
        """
        outbound_tls = may: a host whose TLS handshake fails gets the mail in
        plain text on a second connection (as Postfix at level may).
        """
        sinks = self.sinks(OTHER=SinkScript(tls=broken_tls_options()))
        relay = self.relay(delivery={"outbound_tls": "may"})
        [status] = await self.send(relay, "d@other.test")
        self.assertEqual((status.code, status.remote_mta), (250, "mx.other.test [127.0.0.4]"))
        self.assertEqual([m.tls for m in sinks["OTHER"].messages], [False])
        self.assertEqual(sinks["OTHER"].connections, 2)
        self.assertEqual(sinks["OTHER"].commands.count("STARTTLS"), 1)

    async def test_tls_required_no_fallback(self) -> None:
        """outbound_tls = encrypt or verify never falls back to plain text: 4.7.5."""
        ca = CertificateAuthority()
        for policy in ("encrypt", "verify"):
            sinks = self.sinks(OTHER=SinkScript(tls=broken_tls_options()))
            relay = self.relay(delivery={"outbound_tls": policy}, client_tls=ca.trust_root())
            [status] = await self.send(relay, "d@other.test")
            self.assertEqual((status.code, status.status), (451, "4.7.5"))
            self.assertEqual((sinks["OTHER"].connections, sinks["OTHER"].messages), (1, []))

    async def test_tls_verify(self) -> None:
        """outbound_tls = verify checks the certificate against the MX host name."""
        ca = CertificateAuthority()
        sinks = self.sinks(MX1=SinkScript(tls=ca.server_options("mx1.example.test")),
                           OTHER=SinkScript(tls=ca.server_options("wrong.test")))
        relay = self.relay(delivery={"outbound_tls": "verify"}, client_tls=ca.trust_root())
        statuses = await self.send(relay, "b@example.test", "d@other.test")
        self.assertEqual(self.codes(statuses), [(250, "2.0.0"), (451, "4.7.5")])
        self.assertEqual(len(sinks["MX1"].messages), 1)

    async def test_reconfigure(self) -> None:
        """C{reconfigure} closes idle connections and routes by the new config."""
        sinks = self.sinks(MX1=None, SMART=None)
        relay = self.relay()
        await self.send(relay, "b@example.test")
        config = relay._config
        relay.reconfigure(replace(config, delivery=replace(
            config.delivery, smart_host=SmartHost("127.0.0.5", None, False))))
        await sinks["MX1"].all_closed()
        [status] = await self.send(relay, "c@example.test")
        self.assertEqual(status.remote_mta, "127.0.0.5 [127.0.0.5]")
        self.assertEqual(len(sinks["SMART"].messages), 1)

    async def test_no_recipients(self) -> None:
        """Delivering to nobody opens no connection and returns no status."""
        sinks = self.sinks(MX1=None)
        self.assertEqual(await self.send(self.relay()), [])
        self.assertEqual(sinks["MX1"].connections, 0)


class LocalAddressesTests(unittest.TestCase):
    """L{LocalAddresses}: is an IP address one of this machine's own."""

    def test_own_and_foreign(self) -> None:
        """
        Loopback addresses are ours (all of 127/8 on Linux), also written as
        IPv4-mapped IPv6; a TEST-NET address and a non-address are not.
        """
        local = LocalAddresses()
        self.assertTrue(local("127.0.0.1"))
        self.assertTrue(local("::ffff:127.0.0.1"))
        self.assertEqual(local("127.0.0.5"), sys.platform.startswith("linux"))
        self.assertFalse(local("192.0.2.1"))
        self.assertFalse(local("mx.example.test"))

    def test_answers_remembered_bounded(self) -> None:
        """Each address is tested once, and at most C{limit} answers are kept."""
        calls: list[str] = []

        def bind(address: str) -> bool:
            calls.append(address)
            return bindable(address)

        local = LocalAddresses(bind, limit=2)
        for _ in range(3):
            self.assertTrue(local("127.0.0.1"))
        self.assertEqual(calls, ["192.0.2.1", "127.0.0.1"])
        for address in ("192.0.2.7", "192.0.2.8", "192.0.2.9"):
            self.assertFalse(local(address))
        self.assertEqual(len(local), 2)

    def test_nonlocal_bind(self) -> None:
        """
        Where any address can be bound (Linux ip_nonlocal_bind) the test
        proves nothing: no address counts as ours.
        """
        local = LocalAddresses(lambda address: True)
        self.assertFalse(local("198.51.100.25"))
        self.assertFalse(local("127.0.0.1"))
