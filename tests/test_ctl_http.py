"""
smtpctl through the JSON API of [http]: when the control socket cannot be
reached it reads status, the queue, one message and the sessions from the
first [http] listen; with --http URL it asks there; a login-only site needs
an operator's name and password; https trusts the server's own certificate.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.internet.ssl import PrivateCertificate
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from smtpd.admin.control import socket_path
from smtpd.admin.webclient import WebAPI, WebError, endpoint_url
from tests import support
from tests.admin_support import OPERATOR, PASSWORD, RunningServer, short_root, write_ini
from tests.admin_support import write_operators
from tests.inbound import connect
from tests.test_tap import spawn
from tests.web_support import base_url, send, web_ini


async def smtpctl(testcase, config: str, *argv: str, env: dict[str, str] | None = None):
    """Run smtpctl in its own process: C{(exit status, output)}."""
    process = spawn(testcase, ["smtpctl", "--config", config, *argv], env)
    process.transport.closeStdin()
    code = await process.ended
    return code, process.output.decode()


def json_part(output: str):
    """The JSON document of an output (stderr lines such as warnings before it are skipped)."""
    return json.loads(output[min(i for i in (output.find("{"), output.find("[")) if i >= 0):])


class FallbackTests(unittest.TestCase):
    """smtpctl against a running server whose control socket is not reachable."""

    # Each smtpctl is a new Python process: slow on a loaded machine.
    timeout = 120

    async def test_reads_through_http_without_socket(self):
        """
        With the control socket gone, status, queue list, queue show and
        sessions come from the [http] listen of the configuration (loopback:
        no login), the same data as the socket gives; a change is refused
        without touching the queue.
        """
        script = support.SinkScript(rcpt={"busy@remote.test": "451 4.2.0 mailbox busy"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        root = short_root(self)
        write_operators(root)
        write_ini(root, web_ini(sink.port))
        server = RunningServer(self, root)
        queue_id = await send(self, server.smtp_port(), b"a@localhost", b"busy@remote.test")
        idle = await connect(self, server.smtp_port())
        await idle.command(b"EHLO idle.test\r\n")
        port = server.listener(Site).address()[1]
        # The configuration smtpctl reads names the port the listener got.
        config = os.path.join(root, "etc", "ctl.ini")
        with open(os.path.join(root, "etc", "smtpd.ini")) as f, open(config, "w") as out:
            out.write(f.read().replace("[http]\nlisten = tcp:0:", f"[http]\nlisten = tcp:{port}:"))
        # The socket moved away (back before the server stops and removes it).
        control = socket_path(server.config.server.mailroot)
        os.rename(control, control + ".away")
        self.addCleanup(os.rename, control + ".away", control)

        code, out = await smtpctl(self, config, "status", "--json")
        self.assertEqual(code, 0, out)
        status = json_part(out)
        self.assertTrue(status["running"])
        self.assertEqual(status["queue"]["deferred"] + status["queue"]["queued"], 1)
        self.assertEqual(status["sessions"], 1)
        code, out = await smtpctl(self, config, "queue", "list", "--json")
        self.assertEqual(code, 0, out)
        [entry] = json_part(out)
        self.assertEqual((entry["id"], entry["recipients"][0]["address"]),
                         (queue_id, "busy@remote.test"))
        code, out = await smtpctl(self, config, "queue", "show", queue_id, "--json")
        self.assertEqual(code, 0, out)
        self.assertEqual(json_part(out)["id"], queue_id)
        code, out = await smtpctl(self, config, "sessions", "--json")
        self.assertEqual(code, 0, out)
        [session] = json_part(out)
        self.assertEqual(session["helo"], "idle.test")
        code, out = await smtpctl(self, config, "queue", "hold", queue_id)
        self.assertEqual(code, 1, out)
        self.assertIn("nothing changed", out)
        self.assertNotEqual(server.top.qmgr.scheduler.state(queue_id), "held")

    async def test_login_with_user_and_password(self):
        """
        A site with [http] login = yes: without --user smtpctl says how to
        log in; a wrong password is one line; the operator's name with the
        password in SMTPCTL_PASSWORD reads the status (--http URL).
        """
        root = short_root(self)
        write_operators(root)
        config = write_ini(root, web_ini(9, "login = yes\n"))
        server = RunningServer(self, root)
        url = base_url(server)
        with self.assertRaises(WebError) as caught:
            await deferToThread(WebAPI(url, timeout=10).call, "status")
        self.assertIn("asks for a login: give --user NAME", str(caught.exception))
        with self.assertRaises(WebError) as caught:
            await deferToThread(WebAPI(url, OPERATOR, "wrong", timeout=10).call, "status")
        self.assertIn(f"wrong name or password for {OPERATOR}", str(caught.exception))
        with self.assertRaises(WebError) as caught:
            await deferToThread(WebAPI(url, OPERATOR, PASSWORD, timeout=10).call, "show",
                                id="NOSUCHID")
        self.assertIn("no queue entry", str(caught.exception))
        code, out = await smtpctl(self, config, "--http", url, "--user", OPERATOR, "status",
                                  "--json", env={"SMTPCTL_PASSWORD": PASSWORD})
        self.assertEqual(code, 0, out)
        self.assertEqual(json_part(out)["sessions"], 0)
        code, out = await smtpctl(self, config, "--http", url, "--user", OPERATOR,
                                  "queue", "retry", env={"SMTPCTL_PASSWORD": PASSWORD})
        self.assertEqual(code, 1, out)
        self.assertIn("retry needs the control socket", out)

    async def test_stopped_server_read_offline(self):
        """
        With neither the socket nor the [http] port answering, queue list
        reads the mailroot as before (the server is stopped).
        """
        root = short_root(self)
        write_operators(root)
        free = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        port = free.getHost().port
        await free.stopListening()
        config = write_ini(root, web_ini(9).replace("[http]\nlisten = tcp:0:",
                                                    f"[http]\nlisten = tcp:{port}:"))
        code, out = await smtpctl(self, config, "queue", "list", "--json")
        self.assertEqual(code, 0, out)
        self.assertEqual(json_part(out), [])


class EndpointURLTests(unittest.TestCase):
    """Where smtpctl looks for the JSON API of an [http] listen endpoint."""

    def test_urls(self):
        """Loopback is plain http, other interfaces https; port 0 and UNIX sockets have none."""
        self.assertEqual(endpoint_url("tcp:8025:interface=127.0.0.1"), "http://127.0.0.1:8025")
        self.assertEqual(endpoint_url(r"tcp:port=8025:interface=\:\:1"), "http://[::1]:8025")
        self.assertEqual(endpoint_url("tcp:8025"), "https://127.0.0.1:8025")
        self.assertEqual(endpoint_url("tcp:8025:interface=192.0.2.1"), "https://192.0.2.1:8025")
        self.assertIsNone(endpoint_url("tcp:0:interface=127.0.0.1"))
        self.assertIsNone(endpoint_url("unix:/run/smtpd.sock"))


class PinnedTLSTests(unittest.TestCase):
    """Over https the client trusts exactly the server certificate of its configuration."""

    def serve(self, key: bytes, cert: bytes) -> str:
        root = Resource()
        api = Resource()
        root.putChild(b"api", api)
        api.putChild(b"status", Data(b'{"uptime": 1}', "application/json"))
        options = PrivateCertificate.loadPEM(key + cert).options()
        port = reactor.listenTCP(0, TLSMemoryBIOFactory(options, False, Site(root)),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"https://127.0.0.1:{port.getHost().port}"

    async def test_pinned_certificate(self):
        """
        The server's own certificate (issued by a CA the client does not
        know, for another name) is accepted; any other certificate is not.
        """
        ca = support.CertificateAuthority()
        key, cert = ca.server_pem("mx.local.test")
        url = self.serve(key, cert)
        result = await deferToThread(WebAPI(url, certificate=cert, timeout=10).call, "status")
        self.assertEqual(result, {"uptime": 1})
        _, other = ca.server_pem("mx.local.test")
        with self.assertRaises(WebError) as caught:
            await deferToThread(WebAPI(url, certificate=other, timeout=10).call, "status")
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(caught.exception))
