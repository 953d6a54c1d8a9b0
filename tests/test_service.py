"""
The system service files: the systemd units pass C{systemd-analyze verify},
the logrotate snippet parses, and the socket-activation variant really works:
smtpd serves SMTP on a socket it inherits (Twisted's C{systemd:} endpoint),
started by systemd's own C{systemd-socket-activate}.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import signal
import socket
import subprocess
import sys

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from tests.engineproc import free_port
from tests.engines import find_engine, skip_unless
from tests.mailstore import eventually

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def installed(source: str, target: str, root: str) -> None:
    """Copy C{source} to C{target} with /srv/mail made C{root}, as docs/install.md says."""
    with open(source) as f:
        text = f.read()
    with open(target, "w") as f:
        f.write(text.replace("/srv/mail", root))


def skip_decorator(*engines: str):
    """Mark a test method skipped (naming the package) when an engine is missing."""

    def mark(method):
        method.skip = skip_unless(*engines)
        return method

    return mark


class UnitFileTests(unittest.TestCase):
    """etc/systemd and etc/logrotate.d as a Debian machine checks them."""

    @skip_decorator("systemd-analyze")
    def test_systemd_units_verify(self):
        """systemd-analyze verify accepts every unit, without a warning about it."""
        tool = find_engine("systemd-analyze")
        units = sorted(glob.glob(os.path.join(REPO, "etc", "systemd", "*.s*")))
        self.assertEqual([os.path.basename(u) for u in units],
                         ["smtpd-socket.service", "smtpd.service", "smtpd.socket"])
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        # Installed at this checkout's root, where .venv/bin/twistd exists.
        for unit in units:
            installed(unit, os.path.join(folder, os.path.basename(unit)), REPO)
        result = subprocess.run(
            [tool, "verify", *sorted(glob.glob(os.path.join(folder, "*")))],
            capture_output=True, text=True, timeout=60, check=False)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertNotIn("smtpd", output)

    @skip_decorator("logrotate")
    def test_logrotate_snippet_parses(self):
        """logrotate reads the snippet (debug mode: nothing is rotated)."""
        tool = find_engine("logrotate")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(folder, "log"))
        with open(os.path.join(folder, "log", "activity.log"), "w") as f:
            f.write("line\n")
        config = os.path.join(folder, "smtpd")
        installed(os.path.join(REPO, "etc", "logrotate.d", "smtpd"), config, folder)
        # The user of the "create" line must exist: here the test's own.
        me = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        with open(config) as f:
            text = f.read()
        self.assertIn("create 0600 smtpd smtpd", text)
        with open(config, "w") as f:
            f.write(text.replace("create 0600 smtpd smtpd", f"create 0600 {me} {group}"))
        result = subprocess.run(
            [tool, "--debug", "--state", os.path.join(folder, "state"), config],
            capture_output=True, text=True, timeout=60, check=False)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertIn(f"rotating pattern: {folder}/log/*.log", output)
        with open(config) as f:
            self.assertIn("--signal=USR1", f.read())
        self.assertNotIn("error", output.lower())


class Activated(ProcessProtocol):
    """systemd-socket-activate and the smtpd it starts."""

    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(None)


class SocketActivationTests(unittest.TestCase):
    """smtpd on a socket that systemd bound."""

    timeout = 60

    @skip_decorator("systemd-socket-activate")
    async def test_serves_on_inherited_socket(self):
        """With listen = systemd:domain=INET:index=0, smtpd answers on the inherited socket."""
        tool = find_engine("systemd-socket-activate")
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        config = os.path.join(root, "etc", "smtpd.ini")
        with open(config, "w") as f:
            f.write("[server]\nhostname = mx.activated.test\n"
                    "listen = systemd:domain=INET:index=0\n"
                    "[domain:activated.test]\ntype = local\n")
        port = free_port()
        activated = Activated()
        process = reactor.spawnProcess(
            activated, tool,
            # --fdname: systemd (227+) always names the sockets it passes;
            # Twisted ignores inherited sockets without names.
            [tool, "-l", f"127.0.0.1:{port}", "--fdname=smtp", os.path.join(BIN, "twistd"), "-n",
             "--pidfile=", "smtpd", "--config", config],
            env=dict(os.environ), path=root)

        async def stop():
            if not activated.ended.called:
                process.signalProcess(signal.SIGTERM)
                await activated.ended

        self.addCleanup(lambda: defer.Deferred.fromCoroutine(stop()))
        await eventually(lambda: b"Listening on" in activated.output or activated.ended.called)

        def banner() -> bytes:
            # The first connection starts smtpd, which then accepts it.
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                line = s.makefile("rb").readline()
                s.sendall(b"QUIT\r\n")
                return line

        self.assertEqual(await threads.deferToThread(banner), b"220 mx.activated.test ESMTP\r\n",
                         activated.output)
