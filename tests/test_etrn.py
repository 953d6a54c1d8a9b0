"""
ETRN (RFC 1985): the whole server over real sockets, a real DNS server and an
SMTP sink on 127.0.0.2; and the session's replies.
"""

from __future__ import annotations

import ipaddress
import os

from twisted.internet import reactor
from twisted.trial import unittest

from smtpd.config import load_config
from smtpd.tap import build
from tests import support
from tests.inbound import connect
from tests.test_e2e import MESSAGE, eventually
from tests.test_protocol import SessionTestsMixin


class EtrnDeliveryTests(unittest.TestCase):
    """ETRN makes the deferred mail for a domain leave at once."""

    timeout = 30

    def start(self, dns_port: int, remote_port: int):
        """Write a deployment and start the whole service tree; returns it."""
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        path = os.path.join(root, "etc", "smtpd.ini")
        with open(path, "w") as f:
            f.write(
                "[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
                f"[delivery]\ndns_servers = 127.0.0.1:{dns_port}\nremote_port = {remote_port}\n"
                "outbound_tls = none\noutbound_timeout = 10s\n"
                "[logging]\npath = activity.log\nformat = json\n"
                "[domain:localhost]\ntype = local\n"
            )
        top = build(load_config(path), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        [listener] = top.listeners.listeners
        self.port = listener.address()[1]
        return top

    async def test_etrn_sends_deferred_mail_now(self):
        """
        A message for remote.test deferred by a 451 (next try in 15 minutes)
        leaves at once after C{ETRN remote.test}: 250, then the sink has it
        and the queue is empty. ETRN for a domain with nothing waiting: 251.
        """
        [sink] = support.start_smtp_sinks(self, ["127.0.0.2"])
        sink.script.rcpt = {"user@remote.test": "451 4.3.0 Try again later"}
        dns = support.start_dns_server(
            self, {"remote.test": {"remote.test": [support.mx(10, "mx.remote.test")],
                                   "mx.remote.test": [support.a("127.0.0.2")]}}
        )
        top = self.start(dns[1], sink.port)
        client = await connect(self, self.port)
        await client.command(b"EHLO client.test\r\n")
        client.send(b"MAIL FROM:<sender@localhost>\r\nRCPT TO:<user@remote.test>\r\nDATA\r\n")
        await client.wait(5)
        reply = await client.command(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        await eventually(lambda: top.qmgr.summary().get("deferred") == 1)
        self.assertEqual(sink.messages, [])
        sink.script.rcpt = {}
        self.assertEqual(await client.command(b"ETRN other.test\r\n"),
                         "251 2.0.0 OK, no messages waiting for node other.test")
        self.assertEqual(await client.command(b"ETRN remote.test\r\n"),
                         "250 2.0.0 OK, queuing for node remote.test started")
        await eventually(lambda: sink.messages and not top.qmgr.summary().get("deferred"),
                         timeout=5)
        [message] = sink.messages
        self.assertEqual(message.recipients, ["user@remote.test"])
        self.assertTrue(message.data.endswith(MESSAGE))


    async def test_etrn_subdomains_counts(self):
        """
        C{ETRN @remote.test} with two deferred messages, for a.remote.test
        and b.remote.test: 253 with the count (RFC 1985 5), and both leave.
        """
        [sink] = support.start_smtp_sinks(self, ["127.0.0.2"])
        zone = {name: [support.mx(10, "mx.remote.test")]
                for name in ("a.remote.test", "b.remote.test")}
        zone["mx.remote.test"] = [support.a("127.0.0.2")]
        dns = support.start_dns_server(self, {"remote.test": zone})
        sink.script.rcpt = {f"user@{d}": "451 4.3.0 Try again later"
                            for d in ("a.remote.test", "b.remote.test")}
        top = self.start(dns[1], sink.port)
        client = await connect(self, self.port)
        await client.command(b"EHLO client.test\r\n")
        for domain in (b"a.remote.test", b"b.remote.test"):
            client.send(b"MAIL FROM:<sender@localhost>\r\nRCPT TO:<user@" + domain
                        + b">\r\nDATA\r\n")
            await client.wait(len(client.replies) + 3)
            reply = await client.command(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        await eventually(lambda: top.qmgr.summary().get("deferred") == 2)
        sink.script.rcpt = {}
        self.assertEqual(await client.command(b"ETRN @remote.test\r\n"),
                         "253 2.0.0 OK, 2 pending messages for node @remote.test started")
        await eventually(lambda: len(sink.messages) == 2, timeout=5)
        self.assertEqual(sorted(m.recipients[0] for m in sink.messages),
                         ["user@a.remote.test", "user@b.remote.test"])

class EtrnSessionTests(SessionTestsMixin, unittest.TestCase):
    """The ETRN replies of the session."""

    async def test_not_allowed(self):
        """A client outside [access] etrn gets 459 4.7.1."""
        self.server(access={"etrn": (ipaddress.ip_network("10.0.0.0/8"),)})
        client = await self.client()
        self.assertEqual(await client.command(b"ETRN remote.test\r\n"),
                         "459 4.7.1 Node remote.test not allowed: access denied")

    async def test_relay_list_when_empty(self):
        """
        With [access] etrn empty the relay list decides: outside it 459; in it
        (no queue manager attached here) 458.
        """
        self.server(access={"relay": ()})
        client = await self.client()
        self.assertEqual(await client.command(b"ETRN @remote.test\r\n"),
                         "459 4.7.1 Node @remote.test not allowed: access denied")
        self.server()
        client = await self.client()
        self.assertEqual(await client.command(b"ETRN @remote.test\r\n"),
                         "458 4.3.0 Unable to queue messages for node @remote.test")

    async def test_syntax_and_sequence(self):
        """
        RFC 1985 5: no node name (or two) 500 Syntax Error; a node name that
        is not a fully qualified domain name 501 Syntax Error in Parameters;
        queue names 459; before EHLO or inside a transaction 503 5.5.1.
        """
        self.server()
        client = await self.client(ehlo=False)
        self.assertEqual(await client.command(b"ETRN remote.test\r\n"),
                         "503 5.5.1 Error: send HELO/EHLO first")
        await client.command(b"EHLO client.example\r\n")
        for bad in (b"ETRN\r\n", b"ETRN a.test b.test\r\n"):
            self.assertEqual(await client.command(bad), "500 5.5.2 Syntax Error")
        for bad in (b"ETRN bad_domain!\r\n", b"ETRN localname\r\n", b"ETRN @\r\n",
                    b"ETRN [192.0.2.1]\r\n", b"ETRN %remote.test\r\n"):
            self.assertEqual(await client.command(bad), "501 5.5.4 Syntax Error in Parameters",
                             bad)
        self.assertEqual(await client.command(b"ETRN #queue\r\n"),
                         "459 4.7.1 Node #queue not allowed: queue names not supported")
        await client.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertEqual(await client.command(b"ETRN remote.test\r\n"),
                         "503 5.5.1 Error: MAIL transaction in progress")
