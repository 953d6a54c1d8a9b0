"""
The manhole over real sockets: telnet and ssh logins against the operators
file, the C{admin} namespace driving a real server whose relay goes to a
scripted SMTP sink.
"""

from __future__ import annotations

import os
import stat

from twisted.conch.ssh import keys
from twisted.internet import defer, reactor
from twisted.trial import unittest

from smtpd.admin import manhole, operators
from smtpd.admin.operators import add_operator, read_operators
from smtpd.config import load_config
from tests import support
from tests.admin_support import (
    OPERATOR,
    PASSWORD,
    RefusingTelnetClient,
    RunningServer,
    eventually,
    run,
    short_root,
    ssh_client_factory,
    telnet_login,
    write_ini,
    write_operators,
)
from tests.inbound import connect


def ini(sink_port: int, manhole: str) -> str:
    return (
        "[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
        f"[delivery]\nsmart_host = [127.0.0.1]:{sink_port}\noutbound_tls = none\n"
        "outbound_timeout = 10s\n"
        "[domain:localhost]\ntype = local\n"
        f"[manhole]\n{manhole}\n"
    )


async def send(testcase, port: int, rcpt: bytes) -> str:
    """One message from a relay client (127.0.0.1 may relay); its queue id."""
    client = await connect(testcase, port)
    for line in (b"EHLO client.test\r\n", b"MAIL FROM:<a@localhost>\r\n",
                 b"RCPT TO:<" + rcpt + b">\r\n", b"DATA\r\n"):
        reply = await client.command(line)
        testcase.assertIn(reply[:3], ("250", "354"), reply)
    reply = await client.command(b"Subject: manhole\r\n\r\nbody\r\n.\r\n")
    testcase.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
    await client.command(b"QUIT\r\n")
    return reply.rsplit(" ", 1)[1]


class TelnetManholeTests(unittest.TestCase):
    """The telnet manhole end to end."""

    timeout = 30

    async def test_deferred_message_retried_from_the_manhole(self):
        """
        An operator logs in over telnet, sees the status, finds the deferred
        message in admin.queue(), and after the remote host recovers
        admin.retry() delivers it exactly once.
        """
        script = support.SinkScript(rcpt={"user@remote.test": "451 4.2.0 mailbox busy"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        root = short_root(self)
        write_operators(root)
        write_ini(root, ini(sink.port, "telnet = tcp:0:interface=127.0.0.1"))
        server = RunningServer(self, root)
        queue_id = await send(self, server.smtp_port(), b"user@remote.test")
        await eventually(lambda: any("451" in r["last_reply"] for e in _queue(server)
                                     for r in e["recipients"]))

        client = await telnet_login(self, server.manhole_port("telnet"))
        await client.screen.wait_for(b">>> ")
        await run(client, "admin.status()", rb"'deferred': 1, 'held': 0}")
        await run(client, "admin.queue()",
                  rb"(?s)'id': '" + queue_id.encode() + rb"'.*?'state': 'deferred'.*?451 4\.2\.0")
        self.assertEqual(sink.messages, [])
        script.rcpt.clear()
        await run(client, "admin.retry()", rb"\{'retried': 1\}")
        await eventually(lambda: len(sink.messages) == 1 and not _queue(server))
        await run(client, "admin.status()", rb"'delivered': 1")
        self.assertEqual(len(sink.messages), 1)
        self.assertEqual(sink.messages[0].recipients, ["user@remote.test"])

    async def test_help_and_bad_password(self):
        """
        A wrong password is refused and the prompt comes back; help(admin)
        explains each call.
        """
        root = short_root(self)
        write_operators(root)
        write_ini(root, ini(1, "telnet = tcp:0:interface=127.0.0.1"))
        server = RunningServer(self, root)
        client = await telnet_login(self, server.manhole_port("telnet"), password="wrong")
        await client.screen.wait_for(b"Authentication failed")
        client = await telnet_login(self, server.manhole_port("telnet"))
        await client.screen.wait_for(b">>> ")
        match = await run(client, "help(admin)", rb"terminate_all\(self\)(.|\n)*>>> ")
        text = client.screen.text
        for name in ("status", "queue", "retry", "hold", "release", "delete", "sessions",
                     "terminate", "reload", "config"):
            self.assertIn(f"{name}", text)
        self.assertIn("Close every inbound session with", text)
        self.assertTrue(match)
        await run(client, "admin.hold('NOSUCHID')", rb"error: no queue entry 'NOSUCHID'")


class RefusingClientTests(unittest.TestCase):
    """A telnet client that lets the server echo nothing."""

    timeout = 20

    async def test_login_without_echo(self):
        """Refusing the server's echo does not stop the login (Twisted's own would hang)."""
        root = short_root(self)
        write_operators(root)
        write_ini(root, ini(1, "telnet = tcp:0:interface=127.0.0.1"))
        server = RunningServer(self, root)
        client = await telnet_login(self, server.manhole_port("telnet"),
                                    client=RefusingTelnetClient())
        await client.screen.wait_for_any(b">>> ")
        await run(client, "admin.status()['sessions']", rb"\b0\b")


class PlainPasswordTests(unittest.TestCase):
    """An operators file with a plain-text password (accepted, with a warning)."""

    timeout = 20

    async def test_plain_password_accepted_with_warning(self):
        """The start logs a warning naming the operator; the login works."""
        from twisted.logger import formatEvent, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        root = short_root(self)
        write_operators(root, ["bob:plain-secret"])
        write_ini(root, ini(1, "telnet = tcp:0:interface=127.0.0.1"))
        server = RunningServer(self, root)
        warnings = [formatEvent(e) for e in events if "plain-text password" in formatEvent(e)]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("manhole user bob has a plain-text password", warnings[0])
        client = await telnet_login(self, server.manhole_port("telnet"), "bob", "plain-secret")
        await client.screen.wait_for_any(b">>> ")


def _queue(server: RunningServer) -> list[dict]:
    """The queue as admin.queue() lists it, read synchronously for polling."""
    from smtpd.admin import listing

    return [listing.entry(e) for e in server.top.qmgr.queue.scan(cleanup=False)]


class OperatorsTests(unittest.TestCase):
    """The operators file and the start-up checks."""

    def test_add_operator_hashes(self):
        """manhole-user add stores a bcrypt hash, mode 0600, replacing an old password."""
        path = os.path.join(self.mktemp(), "manhole.passwd")
        add_operator(path, "bob", "first")
        add_operator(path, "bob", "second")
        [(name, stored)] = read_operators(path).items()
        self.assertEqual(name, "bob")
        self.assertTrue(stored.startswith(b"$2b$"), stored)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_beyond_loopback_needs_users(self):
        """An endpoint on all interfaces with no users is one config error line."""
        root = short_root(self)
        path = write_ini(root, ini(1, "telnet = tcp:0\nssh = tcp:0:interface=127.0.0.1"))
        [line] = operators.check(load_config(path))
        self.assertTrue(line.startswith(f"{path}: [manhole] telnet = tcp:0: listens beyond "
                                        "loopback"), line)
        write_operators(root)
        self.assertEqual(operators.check(load_config(path)), [])

    def test_loopback_without_users_allowed(self):
        """Loopback endpoints start with no users (and nobody can log in)."""
        root = short_root(self)
        path = write_ini(root, ini(1, "telnet = tcp:0:interface=127.0.0.1"))
        self.assertEqual(operators.check(load_config(path)), [])

    def test_host_key_created(self):
        """The ssh host key is made once, mode 0600, and read back after."""
        folder = os.path.join(self.mktemp(), "ssh")
        first = manhole.host_key(folder)
        path = os.path.join(folder, manhole.HOST_KEY)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(manhole.host_key(folder).fingerprint(), first.fingerprint())


class SSHManholeTests(unittest.TestCase):
    """The ssh manhole end to end, with a conch client."""

    timeout = 30

    async def test_deferred_message_retried_over_ssh(self):
        """
        Over ssh (host key made at start, checked by the client), the operator
        sees the deferred message, retries it after the remote host recovers,
        and it is delivered once.
        """
        script = support.SinkScript(rcpt={"user@remote.test": "451 4.2.0 mailbox busy"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        root = short_root(self)
        write_operators(root)
        write_ini(root, ini(sink.port, "ssh = tcp:0:interface=127.0.0.1"))
        server = RunningServer(self, root)
        key_path = os.path.join(root, "etc", "ssh", manhole.HOST_KEY)
        self.assertEqual(stat.S_IMODE(os.stat(key_path).st_mode), 0o600)
        with open(key_path, "rb") as f:
            blob = keys.Key.fromString(f.read()).public().blob()
        queue_id = await send(self, server.smtp_port(), b"user@remote.test")
        await eventually(lambda: any("451" in r["last_reply"] for e in _queue(server)
                                     for r in e["recipients"]))
        opened = defer.Deferred()
        factory = ssh_client_factory(self, OPERATOR, PASSWORD, blob, opened)
        connector = reactor.connectTCP("127.0.0.1", server.manhole_port("ssh"), factory)
        self.addCleanup(connector.disconnect)
        shell = await opened
        await shell.screen.wait_for_any(b">>> ")
        await run(shell, "admin.queue()", rb"(?s)'id': '" + queue_id.encode() +
                  rb"'.*?'state': 'deferred'")
        script.rcpt.clear()
        await run(shell, "admin.retry()", rb"\{'retried': 1\}")
        await eventually(lambda: len(sink.messages) == 1 and not _queue(server))
        await run(shell, "admin.status()", rb"'delivered': 1")
        self.assertEqual(len(sink.messages), 1)

    async def test_wrong_password_refused(self):
        """A wrong ssh password gets no shell."""
        root = short_root(self)
        write_operators(root)
        write_ini(root, ini(1, "ssh = tcp:0:interface=127.0.0.1"))
        server = RunningServer(self, root)
        with open(os.path.join(root, "etc", "ssh", manhole.HOST_KEY), "rb") as f:
            blob = keys.Key.fromString(f.read()).public().blob()
        opened = defer.Deferred()
        factory = ssh_client_factory(self, OPERATOR, "wrong", blob, opened)
        connector = reactor.connectTCP("127.0.0.1", server.manhole_port("ssh"), factory)
        self.addCleanup(connector.disconnect)
        await self.assertFailure(opened, Exception)
