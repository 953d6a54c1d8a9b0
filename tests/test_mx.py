"""
Tests for L{smtpd.mx}: MX resolution against a real twisted.names server on
127.0.0.1.
"""

from __future__ import annotations

import os
import random

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial import unittest

from smtpd.delivery.hostsfile import HostsFile
from smtpd.delivery.mx import (
    MXHost,
    MXResolver,
    PermanentDNSError,
    TemporaryDNSError,
    make_resolver,
    resolv_conf_servers,
)
from tests.support import a, aaaa, mx, start_dns_server, start_silent_dns_server

ZONE = {
    "example.test": {
        "example.test": [mx(20, "mx2.example.test"), mx(10, "mx1.example.test"),
                         mx(30, "mx3.example.test")],
        "mx1.example.test": [a("127.0.0.2"), aaaa("::1")],
        "mx2.example.test": [a("127.0.0.3")],
        "mx3.example.test": [a("127.0.0.4"), a("127.0.0.5")],
        "equal.example.test": [mx(10, f"e{i}.example.test") for i in range(6)]
        + [mx(5, "first.example.test")],
        "first.example.test": [a("127.0.1.1")],
        **{f"e{i}.example.test": [a(f"127.0.2.{i}")] for i in range(6)},
        "implicit.example.test": [a("127.0.0.9"), aaaa("::1")],
        "nomail.example.test": [mx(0, "")],
        "empty.example.test": [dns.Record_TXT(b"no mail here", ttl=300)],
        "ghost.example.test": [mx(10, "missing.example.test"), mx(20, "mx2.example.test")],
        "self.example.test": [mx(10, "smtp.ours.test"), mx(20, "mx2.example.test")],
        "backup.example.test": [mx(10, "mx1.example.test"), mx(20, "smtp.ours.test"),
                                mx(30, "mx3.example.test")],
        "short.example.test": [mx(10, "mx1.example.test", ttl=30)],
        "relay.example.test": [a("127.0.0.7")],
    },
}


class MXResolverTests(unittest.TestCase):
    """L{MXResolver.lookup} over real DNS."""

    def setUp(self) -> None:
        self.dns = start_dns_server(self, ZONE, servfail=("broken.test",))
        self.clock = Clock()
        self.mx = self.resolver()

    def resolver(self, **kw) -> MXResolver:
        return MXResolver(make_resolver([self.dns], reactor), self.clock, "smtp.ours.test", **kw)

    async def _failure(self, d, kind):
        try:
            await d
        except kind as e:
            return e
        self.fail(f"{kind.__name__} not raised")

    async def test_preference_order(self) -> None:
        """MX hosts come sorted by preference with their addresses, IPv4 first."""
        hosts = await self.mx.lookup("example.test")
        self.assertEqual(
            hosts,
            [
                MXHost("mx1.example.test", 10, ("127.0.0.2", "::1")),
                MXHost("mx2.example.test", 20, ("127.0.0.3",)),
                MXHost("mx3.example.test", 30, ("127.0.0.4", "127.0.0.5")),
            ],
        )

    async def test_equal_preference_shuffled(self) -> None:
        """
        Hosts of equal preference come in an order drawn from the injected
        random source: the same seed gives the same order, different seeds
        give different orders, and preference groups never mix.
        """
        orders = set()
        for seed in range(12):
            first = await self.resolver(rng=random.Random(seed)).lookup("equal.example.test")
            again = await self.resolver(rng=random.Random(seed)).lookup("equal.example.test")
            self.assertEqual(first, again)
            self.assertEqual(first[0].name, "first.example.test")
            names = [h.name for h in first[1:]]
            self.assertEqual(sorted(names), [f"e{i}.example.test" for i in range(6)])
            orders.add(tuple(names))
        self.assertGreater(len(orders), 1)

    async def test_implicit_mx(self) -> None:
        """A domain without MX records is its own mail host (RFC 5321 5.1)."""
        hosts = await self.mx.lookup("implicit.example.test")
        self.assertEqual(hosts, [MXHost("implicit.example.test", 0, ("127.0.0.9", "::1"))])

    async def test_no_mx_no_address(self) -> None:
        """A domain with neither MX nor address records is permanent 5.4.4."""
        e = await self._failure(self.mx.lookup("empty.example.test"), PermanentDNSError)
        self.assertEqual((e.code, e.status), (550, "5.4.4"))

    async def test_null_mx(self) -> None:
        """A null MX ("0 .") is a permanent 5.1.10 failure (RFC 7505)."""
        e = await self._failure(self.mx.lookup("nomail.example.test"), PermanentDNSError)
        self.assertEqual((e.code, e.status), (550, "5.1.10"))
        self.assertIn("null MX", e.reply)

    async def test_nxdomain(self) -> None:
        """A domain that does not exist is permanent 5.1.2."""
        e = await self._failure(self.mx.lookup("nowhere.example.test"), PermanentDNSError)
        self.assertEqual((e.code, e.status), (550, "5.1.2"))
        self.assertTrue(e.reply.startswith("550 5.1.2 "))

    async def test_invalid_domain(self) -> None:
        """A malformed domain is permanent 5.1.2 without any query."""
        e = await self._failure(self.mx.lookup("bad..domain"), PermanentDNSError)
        self.assertEqual(e.status, "5.1.2")
        self.assertEqual(self.dns.queries, [])

    async def test_servfail(self) -> None:
        """SERVFAIL is temporary 4.4.3."""
        e = await self._failure(self.mx.lookup("broken.test"), TemporaryDNSError)
        self.assertEqual((e.code, e.status), (451, "4.4.3"))
        self.assertIn("SERVFAIL", e.reply)

    async def test_timeout(self) -> None:
        """A DNS server that never answers is temporary 4.4.3."""
        silent = start_silent_dns_server(self)
        resolver = MXResolver(make_resolver([silent], reactor), self.clock, "smtp.ours.test",
                              timeout=(0.2,))
        e = await self._failure(resolver.lookup("example.test"), TemporaryDNSError)
        self.assertEqual((e.code, e.status), (451, "4.4.3"))
        self.assertIn("timeout", e.reply)

    async def test_mx_without_address_skipped(self) -> None:
        """An MX host whose name does not resolve is left out; the others remain."""
        hosts = await self.mx.lookup("ghost.example.test")
        self.assertEqual(hosts, [MXHost("mx2.example.test", 20, ("127.0.0.3",))])

    async def test_mx_is_ourselves(self) -> None:
        """An MX list whose best host is our hostname is a mail loop, 554 5.4.6."""
        e = await self._failure(self.mx.lookup("self.example.test"), PermanentDNSError)
        self.assertEqual((e.code, e.status), (554, "5.4.6"))

    async def test_backup_mx(self) -> None:
        """When we are a backup MX, only the more preferred hosts are used."""
        hosts = await self.mx.lookup("backup.example.test")
        self.assertEqual([h.name for h in hosts], ["mx1.example.test"])

    async def test_cache_until_ttl(self) -> None:
        """A repeated lookup sends no query until the shortest TTL has passed."""
        first = await self.mx.lookup("short.example.test")
        sent = len(self.dns.queries)
        self.assertEqual(sent, 3)  # MX, then A and AAAA of the MX host
        self.clock.advance(29)
        self.assertEqual(await self.mx.lookup("short.example.test"), first)
        self.assertEqual(len(self.dns.queries), sent)
        self.clock.advance(2)
        self.assertEqual(await self.mx.lookup("short.example.test"), first)
        self.assertEqual(self.dns.query_count("MX"), 2)

    async def test_cache_bounded(self) -> None:
        """The cache holds at most C{cache_size} answers, dropping the oldest."""
        resolver = self.resolver(cache_size=2)
        await resolver.lookup_host("relay.example.test")  # A and AAAA: cache full
        await resolver.lookup_host("mx2.example.test")  # pushes both out
        await resolver.lookup_host("relay.example.test")
        self.assertEqual(self.dns.query_count("A"), 3)

    async def test_lookup_host_no_mx(self) -> None:
        """C{lookup_host} asks only for A and AAAA records, never MX."""
        hosts = await self.mx.lookup_host("relay.example.test")
        self.assertEqual(hosts, [MXHost("relay.example.test", 0, ("127.0.0.7",))])
        self.assertEqual(sorted(t for _, t in self.dns.queries), ["A", "AAAA"])

    async def test_lookup_host_literal(self) -> None:
        """C{lookup_host} of an IP address sends no query at all."""
        self.assertEqual(
            await self.mx.lookup_host("192.0.2.7"), [MXHost("192.0.2.7", 0, ("192.0.2.7",))]
        )
        self.assertEqual(
            await self.mx.lookup_host("IPv6:2001:db8::1"),
            [MXHost("2001:db8::1", 0, ("2001:db8::1",))],
        )
        self.assertEqual(self.dns.queries, [])

    async def test_lookup_host_unknown(self) -> None:
        """C{lookup_host} of a name without addresses is permanent."""
        e = await self._failure(self.mx.lookup_host("nowhere.example.test"), PermanentDNSError)
        self.assertEqual(e.status, "5.4.4")


class HostsFileTests(unittest.TestCase):
    """L{HostsFile}: the hosts file read once, and again only when it changes."""

    def write(self, path: str, text: str, mtime: float) -> None:
        with open(path, "w") as f:
            f.write(text)
        os.utime(path, (mtime, mtime))

    async def test_read_once_reloaded_on_change(self) -> None:
        """
        Many A and AAAA lookups read the file once; after it changes the
        next lookup reads it again and sees the new address; a name in no
        line is a DomainError (the chain then asks DNS).
        """
        path = self.mktemp()
        self.write(path, "127.0.0.7 relay.hosts.test Relay # comment\n::7 relay.hosts.test\n",
                   1_700_000_000)
        hosts = HostsFile(path)
        for _ in range(20):
            [record], _, _ = await hosts.lookupAddress("RELAY.hosts.test")
            self.assertEqual(record.payload.dottedQuad(), "127.0.0.7")
            [record], _, _ = await hosts.lookupIPV6Address("relay.hosts.test")
        self.assertEqual(hosts.loads, 1)
        self.write(path, "127.0.0.8 relay.hosts.test\n", 1_700_000_100)
        [record], _, _ = await hosts.lookupAddress("relay.hosts.test")
        self.assertEqual((record.payload.dottedQuad(), hosts.loads), ("127.0.0.8", 2))
        with self.assertRaises(dns.DomainError):
            await hosts.lookupAddress("other.hosts.test")
        self.assertEqual(hosts.loads, 2)

    async def test_missing_file(self) -> None:
        """A missing hosts file answers nothing and breaks nothing."""
        hosts = HostsFile(self.mktemp())
        with self.assertRaises(dns.DomainError):
            await hosts.lookupAddress("relay.hosts.test")

    async def test_chain_uses_it(self) -> None:
        """make_resolver asks the hosts file first, then DNS."""
        path = self.mktemp()
        self.write(path, "127.0.0.8 relay.example.test\n", 1_700_000_000)
        server = start_dns_server(self, ZONE)
        resolver = make_resolver([server], reactor, hosts_file=path)
        [record], _, _ = await resolver.lookupAddress("relay.example.test")
        self.assertEqual(record.payload.dottedQuad(), "127.0.0.8")
        [record], _, _ = await resolver.lookupAddress("mx2.example.test")
        self.assertEqual(record.payload.dottedQuad(), "127.0.0.3")


class ResolvConfTests(unittest.TestCase):
    """The name servers of /etc/resolv.conf, read by us (no background re-reading)."""

    def test_nameservers(self):
        """nameserver lines in order, port 53; other lines and bad addresses skipped."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# comment\nsearch example.test\nnameserver 192.0.2.53\n"
                    "nameserver not-an-ip\nnameserver fe80::1%eth0\noptions ndots:1\n")
        self.assertEqual(resolv_conf_servers(path), [("192.0.2.53", 53), ("fe80::1", 53)])

    def test_missing_or_empty(self):
        """No usable nameserver line: the local server, as the C resolver does."""
        self.assertEqual(resolv_conf_servers(self.mktemp()), [("127.0.0.1", 53)])
