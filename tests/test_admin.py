"""
The admin API (SPEC 7) on a real server in this process: sessions and
terminate over real sockets, reload of the configuration and the accounts,
and (with a Clock) held messages that are never attempted when due.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from smtpd.admin.api import Admin, AdminError, Server
from smtpd.directory.accounts import add
from tests.admin_support import RunningServer, eventually, short_root, write_ini
from tests.inbound import connect
from tests.test_qmgr import HOUR, DAY, QueueManagerMixin

INI = (
    "[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
    "[domain:localhost]\ntype = local\n"
)


class SessionsTests(unittest.TestCase):
    """admin.sessions() and admin.terminate() over real sockets."""

    timeout = 20

    async def test_sessions_and_terminate(self):
        """
        A connected client is listed with its HELO name, peer, byte counts and
        last command; terminate(id) makes it read 421 4.3.2 and it is gone.
        """
        root = short_root(self)
        write_ini(root, INI)
        server = RunningServer(self, root)
        admin = Admin(server.top.admin.server, "tester")
        client = await connect(self, server.smtp_port())
        await client.command(b"EHLO client.example\r\n")
        other = await connect(self, server.smtp_port())
        [first, second] = admin.sessions()
        self.assertEqual((first["helo"], first["peer"], first["command"], first["tls"]),
                         ("client.example", "127.0.0.1", "EHLO", ""))
        self.assertEqual(first["bytes_in"], len(b"EHLO client.example\r\n"))
        self.assertGreater(first["bytes_out"], 0)
        self.assertEqual((second["helo"], second["messages"]), ("", 0))
        self.assertEqual(admin.status()["sessions"], 2)

        self.assertEqual(admin.terminate(first["id"]), {"terminated": [first["id"]]})
        reply = (await client.wait(3))[2]  # after the greeting and the EHLO reply
        self.assertTrue(reply.startswith("421 4.3.2 "), reply)
        await eventually(lambda: [s["id"] for s in admin.sessions()] == [second["id"]])
        self.assertRaises(AdminError, admin.terminate, first["id"])
        self.assertRaises(AdminError, admin.terminate, "nonsense")

        self.assertEqual(admin.terminate_all(), {"terminated": [second["id"]]})
        replies = await other.wait(2)
        self.assertTrue(replies[-1].startswith("421 4.3.2 "), replies)


class AccessCountersTests(unittest.TestCase):
    """admin.access(): the per-address counters of the running server."""

    timeout = 20

    async def test_counters_listed(self):
        """Two connections from 127.0.0.1 show as two connections this minute."""
        root = short_root(self)
        write_ini(root, INI)
        server = RunningServer(self, root)
        admin = Admin(server.top.admin.server, "tester")
        await connect(self, server.smtp_port())
        await connect(self, server.smtp_port())
        [entry] = admin.access()
        self.assertEqual(entry["address"], "127.0.0.1")
        self.assertEqual(entry["connections_per_minute"], 2)
        self.assertIsNone(entry["blocked_until"])


class ReverseNameTests(unittest.TestCase):
    """Reverse names of session peers, looked up in the background."""

    timeout = 20

    async def test_reverse_name_once_known(self):
        """The first listing has no name; once the PTR answer is in, the peer's name shows."""
        from twisted.names import dns

        from tests import support

        server_dns = support.start_dns_server(self, {"127.in-addr.arpa": {
            "1.0.0.127.in-addr.arpa": [dns.Record_PTR("client.example.test")]}})
        root = short_root(self)
        write_ini(root, INI + f"[delivery]\ndns_servers = 127.0.0.1:{server_dns[1]}\n")
        server = RunningServer(self, root)
        admin = Admin(server.top.admin.server, "tester")
        client = await connect(self, server.smtp_port())
        await client.command(b"EHLO client.example\r\n")
        [first] = admin.sessions()
        self.assertEqual(first["reverse_name"], "")
        await eventually(lambda: admin.sessions()[0]["reverse_name"] == "client.example.test")
        self.assertEqual(server_dns.query_count("PTR"), 1)


class ReloadTests(unittest.TestCase):
    """admin.reload() on a running server."""

    timeout = 20

    async def rcpt(self, port: int, address: bytes) -> str:
        client = await connect(self, port)
        await client.command(b"EHLO client.example\r\n")
        await client.command(b"MAIL FROM:<a@example.org>\r\n")
        return await client.command(b"RCPT TO:<" + address + b">\r\n")

    async def test_reload_accounts_and_limits(self):
        """
        After an account is added and a limit changed, reload() reports the
        changes and the next session sees both; a listener change is reported
        as needing a restart, and the old listener keeps serving.
        """
        root = short_root(self)
        config = write_ini(root, INI)
        server = RunningServer(self, root)
        admin = Admin(server.top.admin.server, "tester")
        port = server.smtp_port()
        self.assertTrue((await self.rcpt(port, b"new@localhost")).startswith("550 5.1.1"))
        add(os.path.join(root, "etc", "users"), "new@localhost", "pw", rounds=4)
        write_ini(root, INI.replace("tcp:0:", "tcp:1:") +
                  "[messages]\nmax_recipients = 7\n")
        report = admin.reload()
        self.assertEqual(report, {"ok": True, "changed": ["messages.max_recipients"],
                                  "at_restart": ["server.listen"], "accounts": 1,
                                  "filters": ["auth-results"]})
        self.assertEqual(admin.config.messages.max_recipients, 7)
        self.assertEqual(await self.rcpt(port, b"new@localhost"), "250 2.1.5 Ok")
        self.assertEqual(config, admin.config.path)

    async def test_broken_config_changes_nothing(self):
        """A reload of a config with errors returns them and keeps the old one."""
        root = short_root(self)
        write_ini(root, INI)
        server = RunningServer(self, root)
        admin = Admin(server.top.admin.server, "tester")
        before = admin.config
        write_ini(root, INI + "[messages]\nmax_recipients = lots\nbogus = 1\n")
        add(os.path.join(root, "etc", "users"), "new@localhost", "pw", rounds=4)
        report = admin.reload()
        self.assertFalse(report["ok"])
        self.assertEqual(len(report["errors"]), 2, report)
        self.assertIn("[messages] max_recipients = lots", report["errors"][0])
        self.assertIs(admin.config, before)
        self.assertTrue((await self.rcpt(server.smtp_port(), b"new@localhost"))
                        .startswith("550 5.1.1"))
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class HeldTests(QueueManagerMixin, unittest.TestCase):
    """Held messages through the admin API, on a Clock."""

    def admin(self) -> Admin:
        server = Server(self.clock, self.qmgr, self.queue, _NoSessions(), defer.maybeDeferred,
                        self.config)
        return Admin(server, "tester")

    def test_held_message_not_attempted_when_due(self):
        """
        A deferred message held through admin.hold() is not attempted when
        its retry time comes, nor by admin.retry(); release() attempts it.
        """
        self.relay.scripts["bob@remote.example"] = [451, 451, 250]
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.clock.advance(0)
        self.assertEqual(len(self.relay.for_entry(queue_id)), 1)
        admin = self.admin()
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertEqual(self.successResultOf(admin.hold(queue_id)),
                         {"id": queue_id, "done": "hold"})
        # Every action is logged with the operator's name (IIS "Operators").
        self.assertIn(f"admin: tester hold id={queue_id}", [formatEvent(e) for e in events])
        [listed] = self.successResultOf(admin.queue())
        self.assertEqual((listed["id"], listed["state"]), (queue_id, "held"))
        self.clock.advance(DAY)
        self.assertEqual(admin.retry(), {"retried": 0})
        self.assertEqual(admin.retry(queue_id), {"retried": 0})
        self.clock.advance(HOUR)
        self.assertEqual(len(self.relay.for_entry(queue_id)), 1)
        self.assertEqual(admin.status()["queue"], {"queued": 0, "deferred": 0, "held": 1})
        self.successResultOf(admin.release(queue_id))
        self.assertEqual(len(self.relay.for_entry(queue_id)), 2)

    def test_unknown_ids(self):
        """Unknown or malformed ids are an AdminError naming the id."""
        self.qmgr.startService()
        admin = self.admin()
        for call in (admin.hold, admin.release, admin.delete, admin.retry):
            self.assertRaises(AdminError, call, "../etc")
        self.failureResultOf(admin.hold("NOSUCH"), AdminError)
        self.assertRaises(AdminError, admin.retry, "NOSUCH")

    def test_show(self):
        """show(id) gives the envelope, recipient details and header fields."""
        self.relay.scripts["bob@remote.example"] = [451]
        self.qmgr.startService()
        queue_id = self.store(["bob@remote.example"])
        self.clock.advance(0)
        shown = self.successResultOf(self.admin().show(queue_id))
        self.assertEqual(shown["state"], "deferred")
        self.assertEqual(shown["recipients"][0]["address"], "bob@remote.example")
        self.assertTrue(shown["headers"], shown)


class _NoSessions:
    sessions: dict = {}


class TLSReloadTests(unittest.TestCase):
    """A new certificate applies to the next STARTTLS after reload."""

    timeout = 20

    async def peer_name(self, port: int) -> str:
        """The subject CN of the certificate the server shows after STARTTLS."""
        from twisted.internet import ssl

        client = await connect(self, port)
        await client.command(b"EHLO client.example\r\n")
        reply = await client.command(b"STARTTLS\r\n")
        self.assertTrue(reply.startswith("220 "), reply)
        client.transport.startTLS(ssl.CertificateOptions())
        await client.command(b"EHLO client.example\r\n")
        cert = ssl.Certificate.peerFromTransport(client.transport)
        client.transport.loseConnection()
        return cert.getSubject().commonName.decode()

    async def test_new_certificate(self):
        """After [tls] names a new certificate and key, reload() serves them."""
        from smtpd.util import tls

        root = short_root(self)
        write_ini(root, INI.replace("hostname = mx.local.test", "hostname = old.local.test"))
        server = RunningServer(self, root)
        admin = Admin(server.top.admin.server, "tester")
        self.assertEqual(await self.peer_name(server.smtp_port()), "old.local.test")
        cert, key = (os.path.join(root, "etc", "tls", n) for n in ("new.pem", "new.key"))
        tls.ensure_certificate(cert, key, "new.local.test", reactor.seconds())
        write_ini(root, INI.replace("hostname = mx.local.test", "hostname = old.local.test")
                  + f"[tls]\ncertificate = {cert}\nkey = {key}\n")
        report = admin.reload()
        self.assertEqual(report["changed"], ["tls.certificate", "tls.key"])
        self.assertEqual(await self.peer_name(server.smtp_port()), "new.local.test")


class ControlSocketStartTests(unittest.TestCase):
    """The control socket at start."""

    timeout = 20

    async def test_stale_socket_replaced(self):
        """A socket left by a killed server is replaced; smtpctl's client gets answers."""
        import socket

        from twisted.internet import threads

        from smtpd.admin.control import ControlClient, socket_path

        root = short_root(self)
        write_ini(root, INI)
        path = socket_path(os.path.join(root, "mailroot"))
        os.makedirs(os.path.dirname(path))
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()
        RunningServer(self, root)
        status = await threads.deferToThread(ControlClient(path).call, "status")
        self.assertEqual(status["sessions"], 0)
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))).count("smtpd.sock"), 1)


class DNSReloadTests(unittest.TestCase):
    """Reload points the MX lookups at the DNS servers of the new configuration."""

    timeout = 20

    async def test_dns_servers_reloaded(self):
        """After [delivery] dns_servers changes, reload() makes the next lookup ask the new server."""
        from tests import support

        def zone():
            return {"remote.test": {"remote.test": [support.mx(10, "mx.remote.test")],
                                    "mx.remote.test": [support.a("127.0.0.1")]}}

        old, new = support.start_dns_server(self, zone()), support.start_dns_server(self, zone())
        root = short_root(self)
        write_ini(root, INI + f"[delivery]\ndns_servers = 127.0.0.1:{old[1]}\n")
        server = RunningServer(self, root)
        admin = Admin(server.top.admin.server, "tester")
        mx = server.top.admin.server.reloader.mx
        await mx.lookup("remote.test")
        self.assertEqual((old.query_count("MX"), new.query_count("MX")), (1, 0))
        write_ini(root, INI + f"[delivery]\ndns_servers = 127.0.0.1:{new[1]}\n")
        self.assertEqual(admin.reload()["changed"], ["delivery.dns_servers"])
        await mx.lookup("remote.test")
        self.assertEqual((old.query_count("MX"), new.query_count("MX")), (1, 1))
