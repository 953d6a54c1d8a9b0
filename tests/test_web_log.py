"""
What the [http] part writes to twistd's log and to its access log: no line
per request in twistd's log (a scrape, a page view), one line per login and
per action with the operator's name; with [http] access_log, one Combined
Log Format line per request naming the operator.
"""

from __future__ import annotations

import os
import re

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from tests import support
from tests.admin_support import OPERATOR, PASSWORD, eventually
from tests.web_support import Browser, base_url, basic, send, start_web_server


def capture(testcase) -> list[str]:
    """The text of every log event from now to the end of the test."""
    lines: list[str] = []

    def observer(event):
        lines.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return lines


class WebLogTests(unittest.TestCase):
    """The log lines of page views, scrapes, logins and actions."""

    timeout = 30

    async def test_lines_per_action_not_per_request(self):
        """
        A scrape with basic credentials, a wrong password, a form login, a
        page view and a hold: twistd's log has no request line and no line
        for the scrape's credentials, one for the failed login, one for the
        form login and one for the hold, each with the name; the access log
        has a line per request, with the operator's name once known.
        """
        script = support.SinkScript(rcpt={"busy@remote.test": "451 4.2.0 mailbox busy"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        lines = capture(self)
        server = start_web_server(self, sink.port, "login = yes\naccess_log = etc/http.log\n")
        queue_id = await send(self, server.smtp_port(), b"a@localhost", b"busy@remote.test")
        url = base_url(server)
        reader = Browser(self)
        self.assertEqual((await reader.get(url + "/metrics", basic()))[0], 200)
        self.assertEqual((await reader.get(url + "/api/status", basic(password="no")))[0], 401)
        browser = Browser(self)
        code, _, _ = await browser.post(url + "/login", {"name": OPERATOR, "password": PASSWORD})
        self.assertEqual(code, 303)
        code, _, page = await browser.get(url + "/queue")
        self.assertEqual(code, 200)
        csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
        code, _, _ = await browser.post(url + "/action",
                                        {"csrf": csrf, "action": "hold", "id": queue_id})
        self.assertEqual(code, 303)

        noise = [l for l in lines if "HTTP/1.1" in l or ("Starting factory" in l and "Site" in l)]
        self.assertEqual(noise, [])
        self.assertEqual([l for l in lines if "login" in l],
                         [f"web login failed for '{OPERATOR}'", f"web login: {OPERATOR}"])
        self.assertEqual([l for l in lines if l.startswith("admin:")],
                         [f"admin: {OPERATOR} hold id={queue_id}"])

        path = os.path.join(server.root, "etc", "http.log")
        server.top.web.access.writer.flush()
        with open(path) as f:
            access = f.read().splitlines()
        self.assertEqual(len(access), 5, access)
        pattern = re.compile(r'127\.0\.0\.1 - (\S+) \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
                             r'"(\w+) (\S+) HTTP/1\.1" (\d{3}) (\d+|-) "-" "[^"]*"$')
        seen = [pattern.match(line).groups()[:4] for line in access]
        self.assertEqual(seen, [
            (OPERATOR, "GET", "/metrics", "200"),
            ("-", "GET", "/api/status", "401"),
            (OPERATOR, "POST", "/login", "303"),
            (OPERATOR, "GET", "/queue", "200"),
            (OPERATOR, "POST", "/action", "303"),
        ])
        await eventually(lambda: server.top.qmgr.scheduler.state(queue_id) == "held")

        # logrotate renames the file, SIGUSR1 reopens: the next line is in a new file.
        os.rename(path, path + ".1")
        server.top.web.reopen()
        self.assertEqual((await reader.get(url + "/healthz"))[0], 200)
        server.top.web.access.writer.flush()
        with open(path) as f:
            self.assertIn('"GET /healthz HTTP/1.1" 200', f.read())
