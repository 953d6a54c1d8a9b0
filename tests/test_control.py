"""
smtpctl against a real running server (C{twistd -n smtpd} in its own
process) through the control socket, and without one.
"""

from __future__ import annotations

import json
import os
import stat

from twisted.trial import unittest

from smtpd.admin.control import socket_path
from smtpd.directory.accounts import add
from tests import support
from tests.admin_support import NOISE, eventually, short_root, write_ini
from tests.inbound import connect
from tests.test_manhole import send
from tests.test_tap import spawn


def ini(sink_port: int) -> str:
    return (
        "[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
        f"[delivery]\nsmart_host = [127.0.0.1]:{sink_port}\noutbound_tls = none\n"
        "retry = 1h\n"
        "[domain:localhost]\ntype = local\n[logging]\nformat = json\n"
    )


class Ctl:
    """Runs smtpctl processes against one deployment."""

    def __init__(self, testcase, config: str):
        self.testcase = testcase
        self.config = config

    async def __call__(self, *argv: str, stdin: str | None = None) -> tuple[int, str]:
        process = spawn(self.testcase, ["smtpctl", "--config", self.config, *argv])
        if stdin is not None:
            process.transport.write(stdin.encode())
            process.transport.closeStdin()
        code = await process.ended
        return code, process.output.decode()

    async def queue(self) -> dict[str, dict]:
        code, out = await self("queue", "list", "--json")
        self.testcase.assertEqual(code, 0, out)
        return {e["id"]: e for e in json.loads(out)}


async def start(testcase, root: str):
    """twistd smtpd on C{root}; the process and its SMTP port."""
    config = os.path.join(root, "etc", "smtpd.ini")
    process = spawn(testcase, ["twistd", "-n", "--pidfile=", "--logfile=-", "smtpd",
                               "--config", config])
    match = await process.wait_for(rb"Listening on \S+ \(127\.0\.0\.1:(\d+)\)")
    await process.wait_for(rb"Control socket ")
    return process, int(match.group(1))


def on_disk(root: str, queue_id: str) -> str | None:
    """The state stored in an entry's envelope file (None when there is none)."""
    try:
        with open(os.path.join(root, "mailroot", "queue", queue_id + ".json"), "rb") as f:
            return json.load(f)["state"]
    except (FileNotFoundError, ValueError):
        return None


class ControlSocketTests(unittest.TestCase):
    """smtpctl queue and session commands change a running server."""

    # Each smtpctl is a new Python process: slow on a loaded machine.
    timeout = 120

    async def test_hold_release_retry_delete(self):
        """
        On a running twistd: a deferred message is held (retry skips it),
        released (delivered once the remote host accepts), another is
        deleted with an NDR; status counts it all; the socket is 0600.
        """
        script = support.SinkScript(rcpt={"user@remote.test": "451 4.2.0 mailbox busy"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        root = short_root(self)
        config = write_ini(root, ini(sink.port))
        process, port = await start(self, root)
        ctl = Ctl(self, config)
        path = socket_path(os.path.join(root, "mailroot"))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

        first = await send(self, port, b"user@remote.test")
        second = await send(self, port, b"user@remote.test")
        await eventually(lambda: on_disk(root, first) == on_disk(root, second) == "deferred")
        entries = await ctl.queue()
        self.assertEqual(entries[first]["recipients"][0]["last_reply"],
                         "451 4.2.0 mailbox busy")

        self.assertEqual(await ctl("queue", "hold", first), (0, f"{first}: held\n"))
        self.assertEqual(on_disk(root, first), "held")
        script.rcpt.clear()
        code, out = await ctl("queue", "retry")
        self.assertEqual((code, out), (0, "1 message to be attempted now\n"))
        await eventually(lambda: len(sink.messages) == 1)
        await eventually(lambda: on_disk(root, second) is None)
        self.assertEqual(on_disk(root, first), "held")

        code, out = await ctl("queue", "show", first)
        self.assertEqual(code, 0, out)
        self.assertIn("state:     held", out)
        self.assertIn("  Subject: manhole", out)

        self.assertEqual(await ctl("queue", "release", first), (0, f"{first}: released\n"))
        await eventually(lambda: len(sink.messages) == 2)

        script.rcpt["user@remote.test"] = "451 4.2.0 busy again"
        third = await send(self, port, b"user@remote.test")
        await eventually(lambda: on_disk(root, third) == "deferred")
        code, out = await ctl("queue", "delete", third, "--bounce")
        self.assertEqual((code, out), (0, f"{third}: deleted (the sender gets an NDR)\n"))
        self.assertIsNone(on_disk(root, third))
        code, out = await ctl("status", "--json")
        status = json.loads(out)
        # bounced: the deleted recipient, then the NDR itself (to a@localhost,
        # no such account; from <>, so it goes to badmail).
        self.assertEqual((status["delivered"], status["bounced"]), (2, 2), status)

        code, out = await ctl("queue", "hold", "NOSUCH")
        self.assertEqual(code, 1)
        self.assertIn("no queue entry 'NOSUCH'", out)
        self.assertEqual(len(sink.messages), 2)
        # Neither the smtpctl connections nor the relay's left lines in twistd's log.
        for word in NOISE:
            self.assertNotIn(word, process.output)

        process.transport.signalProcess("TERM")
        await process.ended
        self.assertFalse(os.path.exists(path))
        code, out = await ctl("queue", "retry")
        self.assertEqual(code, 1)
        self.assertIn("the server is not running", out)
        code, out = await ctl("queue", "list")
        self.assertEqual((code, out), (0, "queue is empty\n"))


class ReloadProcessTests(unittest.TestCase):
    """Reload of a real twistd: smtpctl user add, SIGHUP, smtpctl reload."""

    timeout = 60

    async def rcpt(self, port: int, address: bytes) -> str:
        client = await connect(self, port)
        await client.command(b"EHLO client.example\r\n")
        await client.command(b"MAIL FROM:<a@example.org>\r\n")
        reply = await client.command(b"RCPT TO:<" + address + b">\r\n")
        await client.command(b"QUIT\r\n")
        return reply

    async def test_user_add_sighup_and_broken_config(self):
        """
        smtpctl user add tells the running server (the next RCPT succeeds);
        an account written to the file behind its back is known after SIGHUP;
        a broken config on SIGHUP or smtpctl reload changes nothing and the
        errors are logged and printed.
        """
        root = short_root(self)
        config = write_ini(root, ini(1))
        process, port = await start(self, root)
        ctl = Ctl(self, config)
        self.assertTrue((await self.rcpt(port, b"new@localhost")).startswith("550 5.1.1"))
        code, out = await ctl("user", "add", "new@localhost", "--password-stdin", stdin="pw\n")
        self.assertEqual(code, 0, out)
        self.assertIn("the running server now has 1 accounts", out)
        self.assertEqual(await self.rcpt(port, b"new@localhost"), "250 2.1.5 Ok")

        add(os.path.join(root, "etc", "users"), "other@localhost", "pw", rounds=4)
        self.assertTrue((await self.rcpt(port, b"other@localhost")).startswith("550 5.1.1"))
        reloaded = process.wait_for(rb"reloaded \S+smtpd.ini: changed nothing")
        process.transport.signalProcess("HUP")
        await reloaded
        self.assertEqual(await self.rcpt(port, b"other@localhost"), "250 2.1.5 Ok")

        with open(config, "a") as f:
            f.write("[messages]\nmax_recipients = lots\n")
        refused = process.wait_for(rb"reload refused: \S+ \[messages\] max_recipients = lots")
        process.transport.signalProcess("HUP")
        await refused
        # smtpctl reads the same file first and shows the same problems.
        code, out = await ctl("reload")
        self.assertEqual(code, 1)
        self.assertIn("[messages] max_recipients = lots: 'lots' is not a whole number", out)
        self.assertEqual(await self.rcpt(port, b"other@localhost"), "250 2.1.5 Ok")
        self.assertFalse(process.ended.called)


class SessionsProcessTests(unittest.TestCase):
    """smtpctl sessions against a real twistd."""

    timeout = 60

    async def test_sessions_and_kill(self):
        """smtpctl sessions lists a client with its HELO name; sessions kill gets it 421 4.3.2."""
        root = short_root(self)
        config = write_ini(root, ini(1))
        process, port = await start(self, root)
        ctl = Ctl(self, config)
        client = await connect(self, port)
        await client.command(b"EHLO client.example\r\n")
        code, out = await ctl("sessions")
        self.assertEqual(code, 0, out)
        header, row = out.splitlines()
        self.assertEqual(header.split(), ["ID", "PEER", "HELO", "USER", "TLS", "AGE", "IN", "OUT",
                                          "MSGS", "COMMAND"])
        cells = row.split()
        self.assertEqual((cells[1], cells[2], cells[3], cells[-1]),
                         ("127.0.0.1", "client.example", "-", "EHLO"))
        code, out = await ctl("sessions", "kill", cells[0])
        self.assertEqual((code, out), (0, f"session {cells[0]}: closed\n"))
        replies = await client.wait(3)
        self.assertTrue(replies[2].startswith("421 4.3.2 "), replies)
        code, out = await ctl("sessions", "--json")
        self.assertEqual(json.loads(out), [])
        code, out = await ctl("sessions", "kill", "999")
        self.assertEqual(code, 1)
        self.assertIn("no session '999'", out)


class ManholeStartTests(unittest.TestCase):
    """twistd refuses a manhole open beyond loopback with nobody to log in."""

    timeout = 60

    async def test_refused_without_users(self):
        """One config error line, exit 1, no traceback; smtpctl check says the same."""
        root = short_root(self)
        config = write_ini(root, ini(1) + "[manhole]\ntelnet = tcp:0\n")
        process = spawn(self, ["twistd", "-n", "--pidfile=", "--logfile=-", "smtpd",
                               "--config", config])
        self.assertEqual(await process.ended, 1)
        lines = process.output.decode().strip().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("[manhole] telnet = tcp:0: listens beyond loopback", lines[0])
        code, out = await Ctl(self, config)("check")
        self.assertEqual((code, out.strip()), (1, lines[0]))
