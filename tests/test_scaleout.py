"""
Scale-out, end to end with real engines: two smtpd nodes (real twistd
processes on two loopback addresses, one port) behind two equal-preference MX
records served by a test DNS server, a real Postfix as the sending MTA, one
real OpenLDAP directory and one real Dovecot store that both nodes deliver to
by LMTP. One node is killed with SIGKILL in the middle of the load and later
restarted on the same mailroot; every message that got a 250 from either node
must be in Dovecot, once.

Postfix resolves MX records through the system resolver, which reads only
/etc/resolv.conf and always asks port 53; so Postfix runs in a mount
namespace of its own in which /etc/resolv.conf names the test DNS server,
listening on port 53 of a random private loopback address. Nothing else on
the machine sees that resolv.conf. (Postfix's transport maps or a relayhost
with two addresses would skip the MX lookup, which is what is under test.)
"""

from __future__ import annotations

import os
import random
import smtplib
import time

from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.trial import unittest

from tests import support
from tests.dovecot import DOVECOT_MISSING, start_dovecot
from tests.engines import skip_unless
from tests.postfix import POSTFIX_MISSING
from tests.scaleout import (
    common_free_port,
    make_node,
    namespaced_postfix,
    private_loopback,
    tally,
)
from tests.slapd import SLAPD_MISSING, start_slapd
from tests.test_e2e import eventually

log = Logger()

MESSAGES = 150
RECIPIENT = "alice@example.com"


def root_reason() -> str | None:
    """Postfix's master and a DNS server on port 53 need root."""
    if os.geteuid() != 0:
        return "needs root: a private Postfix instance and a DNS server on port 53"
    return None


def message(number: int) -> bytes:
    """Message C{number}, with a Message-ID of its own."""
    return (f"From: <sender@postfix.test>\r\nTo: <{RECIPIENT}>\r\n"
            f"Subject: scale-out {number}\r\nMessage-ID: <scale-{number}@postfix.test>\r\n"
            f"\r\nmessage {number}\r\n").encode()


def inject(port: int, count: int, pause: float) -> int:
    """Submit C{count} messages to Postfix over SMTP, C{pause} seconds apart; how many it took."""
    taken = 0
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for number in range(count):
            client.sendmail("sender@postfix.test", [RECIPIENT], message(number))
            taken += 1
            time.sleep(pause)
    return taken


async def sleep(seconds: float) -> None:
    """Wait on the reactor."""
    await deferLater(reactor, seconds, lambda: None)


class ScaleOutTests(unittest.TestCase):
    """Two nodes behind equal MX records, Postfix sending, one node SIGKILLed."""

    skip = (POSTFIX_MISSING or SLAPD_MISSING or DOVECOT_MISSING or skip_unless("unshare")
            or root_reason())
    timeout = 240

    async def test_two_nodes_sigkill(self):
        """
        Postfix spreads 150 messages over mx1 and mx2 (equal MX preference,
        found through the test DNS server); mx1 is SIGKILLed once it has
        given 20 250s; Postfix's later attempts go to mx2 (and its deferred
        ones are retried there); mx1 restarted on the same mailroot delivers
        what its queue held. Every Message-ID Postfix got a 250 for is in
        Dovecot, and none twice unless Postfix itself logged that delivery
        as in doubt (the connection lost after the data: RFC 1047).
        """
        rng = random.Random()
        slapd = start_slapd(self)
        dovecot = start_dovecot(self, {RECIPIENT: ""})
        dns_address = private_loopback(rng)
        node_addresses = [private_loopback(rng) for _ in range(2)]
        port = common_free_port(node_addresses)
        support.start_dns_server(self, {"example.com": {
            "example.com": [support.mx(10, "mx1.example.com"), support.mx(10, "mx2.example.com")],
            "mx1.example.com": [support.a(node_addresses[0])],
            "mx2.example.com": [support.a(node_addresses[1])],
        }}, interface=dns_address, port=53)
        nodes = [make_node(self, f"mx{i + 1}.example.com", address, port, slapd.url,
                           dovecot.port) for i, address in enumerate(node_addresses)]
        for node in nodes:
            await node.start(self)
        postfix = await threads.deferToThread(namespaced_postfix, self, dns_address, settings={
            "smtp_tcp_port": str(port),
            "smtp_tls_security_level": "none",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "queue_run_delay": "1s",
            "smtp_connect_timeout": "2s",
            "default_destination_concurrency_limit": "5",
            # Each delivery picks one of the equal MX hosts afresh: with its
            # connection cache Postfix may keep sending through whichever node
            # it reached first, and mx1 may never see its 20 messages.
            "smtp_connection_cache_on_demand": "no",
        })

        injected = threads.deferToThread(inject, postfix.port, MESSAGES, 0.02)
        first = nodes[0]
        await eventually(lambda: tally(postfix.log(), [], 0).accepted_by
                         .get("mx1.example.com", 0) >= 20, timeout=120)
        first.kill()
        await first.process.ended
        unfinished = first.queued_message_ids()
        sent = await injected

        async def postfix_done() -> bool:
            await threads.deferToThread(postfix.flush)
            return "Mail queue is empty" in await threads.deferToThread(postfix.queue)

        for _ in range(120):
            if await postfix_done():
                break
            await sleep(1)
        else:
            self.fail(f"Postfix still has mail queued:\n{postfix.queue()}")
        await first.start(self)
        await eventually(lambda: first.queued() == 0 and nodes[1].queued() == 0, timeout=60)
        await sleep(1)

        result = tally(postfix.log(), dovecot.messages(RECIPIENT), sent)
        result.unfinished = unfinished
        summary = (f"scale-out: sent {sent}, 250s {len(result.accepted)} "
                   f"(mx1 {result.accepted_by.get('mx1.example.com', 0)}, "
                   f"mx2 {result.accepted_by.get('mx2.example.com', 0)}), "
                   f"in doubt at Postfix {len(result.in_doubt)}, queued on mx1 at the kill "
                   f"{len(unfinished)}, delivered {len(result.delivered)} distinct / "
                   f"{sum(result.delivered.values())} copies, duplicates "
                   f"{len(result.duplicates)} (in doubt at Postfix "
                   f"{len(set(result.duplicates) & result.in_doubt)}, unfinished on mx1 "
                   f"{len(set(result.duplicates) & unfinished)}), lost {len(result.lost)}")
        log.info(summary)
        print(summary)
        self.assertEqual(sent, MESSAGES)
        self.assertEqual(len(result.accepted), MESSAGES, summary)
        self.assertGreater(result.accepted_by.get("mx2.example.com", 0), 0, summary)
        self.assertEqual(result.lost, [], summary)
        self.assertEqual(result.unexplained_duplicates, [], summary)
