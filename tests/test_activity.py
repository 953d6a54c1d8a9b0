"""
The activity log of a whole server (real sockets), parsed back: a bounce's
line carries the remote reply, a failed AUTH the attempted login; W3C and
JSON.
"""

from __future__ import annotations

import base64
import json
import os

from twisted.trial import unittest

from tests import support
from tests.admin_support import RunningServer, eventually, short_root, write_ini
from tests.inbound import connect
from tests.test_log import parse_w3c
from tests.test_manhole import send


def ini(sink_port: int, fmt: str) -> str:
    return (
        "[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
        f"[delivery]\nsmart_host = [127.0.0.1]:{sink_port}\noutbound_tls = none\n"
        "[auth]\nallow_plaintext = yes\n"
        "[domain:localhost]\ntype = local\n"
        f"[logging]\npath = activity.log\nformat = {fmt}\n"
    )


class ActivityLogTests(unittest.TestCase):
    """Delivery and AUTH lines of a running server."""

    timeout = 20

    def start(self, fmt: str):
        script = support.SinkScript(rcpt={"gone@remote.test": "550 5.1.1 <gone@remote.test>: "
                                                              "Recipient address rejected"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        root = short_root(self)
        write_ini(root, ini(sink.port, fmt))
        self.log = os.path.join(root, "activity.log")
        return RunningServer(self, root)

    async def test_w3c_bounce_and_failed_auth(self):
        """
        The W3C file starts with its header; the bounce's DELIVER line says
        status=bounced with the remote 550 reply, the relay and the attempt;
        the failed AUTH line names the login tried.
        """
        server = self.start("w3c")
        queue_id = await send(self, server.smtp_port(), b"gone@remote.test")
        client = await connect(self, server.smtp_port())
        await client.command(b"EHLO client.example\r\n")
        token = base64.b64encode(b"\0mallory@localhost\0guess").decode()
        reply = await client.command(f"AUTH PLAIN {token}\r\n".encode())
        self.assertTrue(reply.startswith("535 5.7.8"), reply)

        def bounced():
            return [r for r in parse_w3c(self.log)[1]
                    if r.get("cs-method") == "DELIVER" and r["cs-username"] == "gone@remote.test"]

        def auth_lines():
            return [r for r in parse_w3c(self.log)[1] if r.get("cs-method") == "AUTH"]

        await eventually(lambda: os.path.exists(self.log) and bounced() and auth_lines())
        header, records = parse_w3c(self.log)
        self.assertEqual(header[0], "#Software: smtpd")
        [line] = bounced()
        self.assertEqual(line["sc-status"], "550")
        self.assertIn(f"id={queue_id}+", line["cs-uri-query"])
        self.assertIn("+attempt=1+", line["cs-uri-query"])
        self.assertIn("status=bounced+(550+5.1.1+<gone@remote.test>:+Recipient+address+rejected)",
                      line["cs-uri-query"])
        self.assertEqual(line["c-ip"], "127.0.0.1+[127.0.0.1]")  # the relay host
        [auth] = auth_lines()
        self.assertEqual((auth["cs-uri-query"], auth["sc-status"]),
                         ("login=mallory@localhost", "535"))

    async def test_json_deferred_line(self):
        """A JSON delivery line for a refused connection says deferred and why."""
        sink_port = 1  # nothing listens there
        root = short_root(self)
        write_ini(root, ini(sink_port, "json"))
        self.log = os.path.join(root, "activity.log")
        server = RunningServer(self, root)
        queue_id = await send(self, server.smtp_port(), b"someone@remote.test")

        def lines():
            with open(self.log) as f:
                return [json.loads(line) for line in f]

        await eventually(lambda: os.path.exists(self.log) and
                         any(r["event"] == "delivery" for r in lines()))
        [line] = [r for r in lines() if r["event"] == "delivery"]
        self.assertEqual((line["queue_id"], line["outcome"], line["attempt"]),
                         (queue_id, "deferred", 1))
        self.assertIn("refused", line["reply"].lower())
        self.assertIn("status=deferred (", line["argument"])
