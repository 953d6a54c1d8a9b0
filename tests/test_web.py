"""
The [http] site on a real server: health checks, login (form and HTTP basic),
the JSON API, the status page, and actions that need the CSRF token.
"""

from __future__ import annotations

import json
import re

from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest
from twisted.web.server import Site

from smtpd.admin.api import Admin
from smtpd.config import load_config
from smtpd.web.health import free_space
from smtpd.web.site import WebError, WebService
from smtpd.web.views import qshape, search
from tests import support
from tests.admin_support import OPERATOR, PASSWORD, eventually, short_root, write_ini
from tests.admin_support import write_operators
from tests.inbound import connect
from tests.web_support import Browser, base_url, basic, send, start_web_server, web_ini


def csrf_of(html: bytes) -> str:
    """The CSRF token in a page's forms."""
    return re.search(rb'name="csrf" value="([^"]+)"', html).group(1).decode()


class HealthTests(unittest.TestCase):
    """/healthz and /readyz."""

    timeout = 20

    async def test_healthz_and_readyz(self):
        """Both answer JSON without a login, even where the page asks for one."""
        server = start_web_server(self, 9, "login = yes\nmin_free_space = 0\n")
        browser = Browser(self)
        code, _, body = await browser.get(base_url(server) + "/healthz")
        self.assertEqual((code, json.loads(body)), (200, {"ok": True}))
        code, _, body = await browser.get(base_url(server) + "/readyz")
        report = json.loads(body)
        self.assertEqual((code, report["ready"]), (200, True), report)
        self.assertEqual({k: v["ok"] for k, v in report["checks"].items()},
                         {"listeners": True, "mailroot": True, "disk": True})

    async def test_not_ready_below_the_floor(self):
        """A floor above the mailroot's free space: 503, and the disk check says why."""
        root = short_root(self)
        floor = free_space(root) + 1024 ** 4
        server = start_web_server(self, 9, f"min_free_space = {floor}\n")
        code, _, body = await Browser(self).get(base_url(server) + "/readyz")
        report = json.loads(body)
        self.assertEqual((code, report["ready"]), (503, False), report)
        self.assertFalse(report["checks"]["disk"]["ok"])
        self.assertIn(f"floor {floor}", report["checks"]["disk"]["detail"])
        self.assertTrue(report["checks"]["mailroot"]["ok"])


class LoginTests(unittest.TestCase):
    """Who may read and act."""

    timeout = 20

    async def test_refused_without_login(self):
        """
        With login = yes (what every endpoint beyond loopback gets): the page
        sends to the login form, the API and metrics answer 401, a wrong
        password is refused, HTTP basic reads, and the login form gives a session.
        """
        server = start_web_server(self, 9, "login = yes\n")
        url = base_url(server)
        browser = Browser(self)
        code, headers, _ = await browser.get(url + "/")
        self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/login"]))
        for path in ("/api/status", "/api/queue", "/metrics", "/queue"):
            code, _, _ = await browser.get(url + path)
            self.assertIn(code, (401, 303), path)
        code, _, _ = await browser.get(url + "/api/status", basic(OPERATOR, "wrong"))
        self.assertEqual(code, 401)
        code, _, body = await browser.get(url + "/api/status", basic())
        self.assertEqual((code, json.loads(body)["sessions"]), (200, 0))
        code, _, body = await browser.post(url + "/login", {"name": OPERATOR,
                                                            "password": "wrong"})
        self.assertEqual(code, 403)
        code, _, _ = await browser.post(url + "/login", {"name": OPERATOR,
                                                         "password": PASSWORD})
        self.assertEqual(code, 303)
        code, _, body = await browser.get(url + "/")
        self.assertEqual(code, 200)
        self.assertIn(b"Log out alice", body)

    async def test_post_without_token_refused(self):
        """
        A logged-in POST without the CSRF token, or with another one, is
        refused (403) and changes nothing; with the token the action is done.
        """
        script = support.SinkScript(rcpt={"busy@remote.test": "451 4.2.0 mailbox busy"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        server = start_web_server(self, sink.port)
        queue_id = await send(self, server.smtp_port(), b"a@localhost", b"busy@remote.test")
        admin = Admin(server.top.admin.server, "tester")
        await eventually(lambda: admin.status()["queue"]["deferred"] == 1)
        url = base_url(server)
        browser = Browser(self)
        code, _, page = await browser.get(url + "/")
        self.assertEqual(code, 200)
        token = csrf_of(page)
        form = {"action": "hold", "id": queue_id, "back": "/queue"}
        for fields in (form, {**form, "csrf": "forged"}):
            code, _, body = await browser.post(url + "/action", fields)
            self.assertEqual(code, 403, body)
        self.assertEqual(admin.status()["queue"]["held"], 0)
        code, headers, _ = await browser.post(url + "/action", {**form, "csrf": token})
        self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/queue"]))
        self.assertEqual(admin.status()["queue"]["held"], 1)
        # Another browser (no session cookie) cannot post at all.
        code, _, _ = await Browser(self).post(url + "/action", {**form, "csrf": token})
        self.assertEqual(code, 403)

    def test_tls_beyond_loopback(self):
        """An endpoint beyond loopback is served over TLS, a loopback one is plain."""
        root = short_root(self)
        write_operators(root)
        config = load_config(write_ini(root, web_ini(9)))
        config = config.__class__(**{**config.__dict__, "http": config.http.__class__(
            listen=("tcp:8025:interface=0.0.0.0", "tcp:8026:interface=127.0.0.2"))})
        web = WebService(config, server=None, clock=None, run_blocking=None,
                         tls_options=support.CertificateAuthority().server_options("mx.local.test"),
                         listeners=[])
        [(_, outside), (_, inside)] = web.listening
        self.assertIsInstance(outside, TLSMemoryBIOFactory)
        self.assertIsInstance(inside, Site)
        self.assertTrue(outside.wrappedFactory.resource.need_login)
        self.assertFalse(inside.resource.need_login)


    def test_refused_beyond_loopback_without_users(self):
        """An endpoint beyond loopback with nobody in [manhole] users: one error line."""
        root = short_root(self)
        config = load_config(write_ini(root, web_ini(9).replace(
            "[http]\nlisten = tcp:0:interface=127.0.0.1", "[http]\nlisten = tcp:0")))
        with self.assertRaises(WebError) as caught:
            WebService(config, server=None, clock=None, run_blocking=None, tls_options=None,
                       listeners=[])
        self.assertEqual(str(caught.exception).count("\n"), 0)
        self.assertIn("[http] listen = tcp:0: listens beyond loopback", str(caught.exception))


class APITests(unittest.TestCase):
    """The JSON API and the HTML pages read the admin API."""

    timeout = 20

    async def test_queue_search_paging_message_sessions(self):
        """
        /api/queue finds entries by recipient and domain and pages them;
        /api/message/ID gives the envelope with per-recipient state;
        /api/sessions lists an open SMTP session; /api/qshape counts the deferred.
        """
        script = support.SinkScript(rcpt={"busy@remote.test": "451 4.2.0 mailbox busy",
                                          "slow@other.test": "451 4.2.0 later"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        server = start_web_server(self, sink.port)
        ids = [await send(self, server.smtp_port(), b"a@localhost", b"busy@remote.test")
               for _ in range(3)]
        other = await send(self, server.smtp_port(), b"b@localhost", b"slow@other.test")
        admin = Admin(server.top.admin.server, "tester")
        await eventually(lambda: admin.status()["queue"]["deferred"] == 4)
        url, browser = base_url(server), Browser(self)

        async def api(path):
            code, _, body = await browser.get(url + path)
            self.assertEqual(code, 200, body)
            return json.loads(body)

        found = await api("/api/queue?q=other.test")
        self.assertEqual([e["id"] for e in found["entries"]], [other])
        paged = await api("/api/queue?q=busy@&per_page=2&page=2")
        self.assertEqual((paged["total"], paged["pages"], paged["page"]), (3, 2, 2))
        self.assertEqual(len(paged["entries"]), 1)
        both = [await api(f"/api/queue?q=BUSY&per_page=2&page={p}") for p in (1, 2)]
        self.assertEqual(sorted(ids), sorted(e["id"] for p in both for e in p["entries"]))
        message = await api(f"/api/message/{other}")
        self.assertEqual((message["sender"], message["recipients"][0]["state"],
                          message["recipients"][0]["last_reply"]),
                         ("b@localhost", "pending", "451 4.2.0 later"))
        shape = await api("/api/qshape")
        self.assertEqual(shape["rows"][:2], [["TOTAL", 4, 4, *[0] * 9],
                                             ["remote.test", 3, 3, *[0] * 9]])
        client = await connect(self, server.smtp_port())
        await client.command(b"EHLO web.test\r\n")
        [session] = await api("/api/sessions")
        self.assertEqual((session["helo"], session["peer"]), ("web.test", "127.0.0.1"))
        self.assertEqual((await api("/api/status"))["sessions"], 1)
        code, _, _ = await browser.get(url + "/api/message/nonsense")
        self.assertEqual(code, 400)
        code, _, page = await browser.get(url + f"/queue?q={other}")
        self.assertIn(other.encode(), page)
        self.assertNotIn(ids[0].encode(), page)
        code, _, page = await browser.get(url + f"/message/{other}")
        self.assertIn(b"451 4.2.0 later", page)


class ViewTests(unittest.TestCase):
    """The plain-data views."""

    def test_qshape_buckets(self):
        """Deferred entries are counted by pending recipient domain and age bucket."""
        def entry(state, age_minutes, *addresses):
            return {"state": state, "arrival": 10_000 - age_minutes * 60, "id": "x",
                    "sender": "", "recipients": [{"address": a, "state": "pending"}
                                                 for a in addresses]}
        entries = [entry("deferred", 1, "a@x.test", "b@x.test"), entry("deferred", 7, "c@y.test"),
                   entry("held", 1, "d@x.test"), entry("deferred", 5000, "e@x.test")]
        shape = qshape(entries, 10_000)
        self.assertEqual(shape["buckets"][0], "5")
        self.assertEqual(shape["rows"], [["TOTAL", 3, 1, 1, *[0] * 7, 1],
                                         ["x.test", 2, 1, 0, *[0] * 7, 1],
                                         ["y.test", 1, 0, 1, *[0] * 8]])
        self.assertEqual(len(search(entries, "Y.TEST")), 1)
        self.assertIs(search(entries, " "), entries)


