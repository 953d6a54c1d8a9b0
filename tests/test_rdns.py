"""
Tests for L{smtpd.inbound.rdns}: forward-confirmed reverse lookups against a
real twisted.names server on loopback.
"""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.names import client, dns
from twisted.trial import unittest

from smtpd.inbound.rdns import ReverseDNS, reverse_name
from tests.support import a, aaaa, start_dns_server, start_silent_dns_server


def ptr(name: str) -> dns.Record_PTR:
    """A PTR record."""
    return dns.Record_PTR(name.encode("ascii"))


def reverse_zones(**extra) -> dict:
    """
    PTR records: 127.0.0.1 -> mail.example.test (whose A is 127.0.0.1),
    127.0.0.2 -> liar.example.test (whose A is 192.0.2.1), 127.0.0.3 ->
    nothing; ::1 -> six.example.test (AAAA ::1).
    """
    return {
        "in-addr.arpa": {
            "1.0.0.127.in-addr.arpa": [ptr("mail.example.test")],
            "2.0.0.127.in-addr.arpa": [ptr("liar.example.test")],
            "4.0.0.127.in-addr.arpa": [ptr("gone.example.test"), ptr("mail2.example.test")],
            "5.0.0.127.in-addr.arpa": [dns.Record_PTR(b"evil\r\nX-Bad: 1.example.test")],
        },
        "ip6.arpa": {reverse_name("::1"): [ptr("six.example.test")]},
        "example.test": {
            "mail.example.test": [a("127.0.0.1")],
            "mail2.example.test": [a("127.0.0.4")],
            "evil\r\nX-Bad: 1.example.test": [a("127.0.0.5")],
            "liar.example.test": [a("192.0.2.1")],
            "six.example.test": [aaaa("::1")],
        },
        **extra,
    }


class ReverseDNSTests(unittest.TestCase):
    """PTR, then A/AAAA of the name must hold the address."""

    def lookup(self, ip: str, server=None, timeout: float = 2.0):
        server = server or start_dns_server(self, reverse_zones())
        resolver = client.Resolver(servers=[server], reactor=reactor)
        return ReverseDNS(resolver, reactor).lookup(ip, timeout)

    async def test_confirmed(self):
        """A PTR name whose A record holds the address is the client's name."""
        self.assertEqual(await self.lookup("127.0.0.1"), "mail.example.test")

    async def test_ipv6_confirmed(self):
        """IPv6: the PTR under ip6.arpa, confirmed by AAAA."""
        self.assertEqual(await self.lookup("::1"), "six.example.test")

    async def test_not_confirmed(self):
        """A PTR name whose A record does not lead back is not trusted."""
        self.assertIsNone(await self.lookup("127.0.0.2"))

    async def test_second_name_confirmed(self):
        """Of several PTR names, the first that leads back counts (NXDOMAIN on the others)."""
        self.assertEqual(await self.lookup("127.0.0.4"), "mail2.example.test")

    async def test_not_a_host_name(self):
        """A PTR target that is not a host name (CR LF in a label) never becomes the name."""
        self.assertIsNone(await self.lookup("127.0.0.5"))

    async def test_no_ptr(self):
        """No PTR record (NXDOMAIN): no name."""
        self.assertIsNone(await self.lookup("127.0.0.3"))

    async def test_servfail(self):
        """A failing DNS server: no name, no error."""
        server = start_dns_server(self, reverse_zones(), servfail=("in-addr.arpa",))
        self.assertIsNone(await self.lookup("127.0.0.1", server))

    async def test_timeout(self):
        """A server that never answers: no name after the timeout, not later."""
        started = time.monotonic()
        result = await self.lookup("127.0.0.1", start_silent_dns_server(self), timeout=0.3)
        self.assertIsNone(result)
        self.assertLess(time.monotonic() - started, 1.0)
