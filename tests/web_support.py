"""
Fixtures for the [http] tests: a whole server in this process with an
[http] listener, and a small HTTP client (real sockets, no connection reuse).
"""

from __future__ import annotations

import base64
from io import BytesIO
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from tests.admin_support import OPERATOR, PASSWORD, RunningServer, short_root, write_ini
from tests.admin_support import write_operators
from tests.inbound import connect


def web_ini(sink_port: int, http: str = "") -> str:
    """A server relaying every remote domain to a sink, with an [http] listener."""
    return (
        "[server]\nhostname = mx.local.test\nlisten = tcp:0:interface=127.0.0.1\n"
        f"[delivery]\nsmart_host = [127.0.0.1]:{sink_port}\noutbound_tls = none\n"
        "retry = 1h\n[domain:localhost]\ntype = local\n"
        f"[http]\nlisten = tcp:0:interface=127.0.0.1\n{http}"
    )


def start_web_server(testcase, sink_port: int, http: str = "") -> RunningServer:
    """A running server with operator alice in [manhole] users."""
    root = short_root(testcase)
    write_operators(root)
    write_ini(root, web_ini(sink_port, http))
    return RunningServer(testcase, root)


def base_url(server: RunningServer) -> str:
    """http://127.0.0.1:PORT of the server's [http] listener."""
    return f"http://127.0.0.1:{server.listener(Site).address()[1]}"


def basic(name: str = OPERATOR, password: str = PASSWORD) -> dict[str, str]:
    """An HTTP basic Authorization header."""
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


class Browser:
    """An HTTP client that keeps the session cookie like a browser."""

    def __init__(self, testcase):
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)
        self.cookie = ""

    async def get(self, url: str, headers: dict[str, str] | None = None):
        """GET C{url}: C{(code, headers, body)}."""
        return await self.request(b"GET", url, headers)

    async def post(self, url: str, fields: dict[str, str], headers=None):
        """POST a form to C{url}: C{(code, headers, body)}."""
        body = urlencode(fields).encode()
        headers = {"content-type": "application/x-www-form-urlencoded", **(headers or {})}
        return await self.request(b"POST", url, headers, body)

    async def request(self, method: bytes, url: str, headers=None, body: bytes | None = None):
        sent = Headers({k: [v] for k, v in (headers or {}).items()})
        if self.cookie:
            sent.addRawHeader("cookie", self.cookie)
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        response = await self.agent.request(method, url.encode(), sent, producer)
        data = await readBody(response)
        for value in response.headers.getRawHeaders("set-cookie", []):
            self.cookie = value.split(";", 1)[0]
        return response.code, response.headers, data


async def send(testcase, port: int, sender: bytes, rcpt: bytes) -> str:
    """One message through SMTP from 127.0.0.1 (may relay); its queue id."""
    client = await connect(testcase, port)
    for line in (b"EHLO client.test\r\n", b"MAIL FROM:<" + sender + b">\r\n",
                 b"RCPT TO:<" + rcpt + b">\r\n", b"DATA\r\n"):
        reply = await client.command(line)
        testcase.assertIn(reply[:3], ("250", "354"), reply)
    reply = await client.command(b"Subject: web\r\n\r\nbody\r\n.\r\n")
    testcase.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
    await client.command(b"QUIT\r\n")
    return reply.rsplit(" ", 1)[1]
