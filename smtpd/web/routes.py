# -*- test-case-name: tests.test_web -*-
"""
One HTTP request of the [http] site: who asks (L{smtpd.web.login}), then the
answer, read from and acted on through the admin API (L{smtpd.admin.api.Admin},
which logs every action with the operator's name).
"""

from __future__ import annotations

import json

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.web import http

from smtpd.admin.api import Admin, AdminError
from smtpd.mail.envelope import valid_queue_id
from smtpd.web import page, queuelist, views
from smtpd.web.health import readiness
from smtpd.web.login import LOOPBACK_OPERATOR, WebSession, csrf_ok, set_cookie

log = Logger(namespace="smtpd.web")

ACTIONS = ("retry", "hold", "release", "delete", "terminate")

# The largest page of /api/queue.
MAX_PER_PAGE = 500


class Refused(Exception):
    """The request is answered with C{code} and C{text} (a plain-text reply)."""

    def __init__(self, code: int, text: str):
        Exception.__init__(self, text)
        self.code = code
        self.text = text


class Handler:
    """Answers one request of a site (C{need_login}: the endpoint asks for a login)."""

    def __init__(self, shared, need_login: bool, request):
        self.shared = shared
        self.need_login = need_login
        self.request = request
        self.path = request.path.decode("utf-8", "replace")
        self.method = request.method.decode("ascii", "replace")

    def arg(self, name: str, default: str = "") -> str:
        """A query or form field as text."""
        values = self.request.args.get(name.encode("ascii"))
        return values[0].decode("utf-8", "replace") if values else default

    async def handle(self) -> None:
        """Route the request and send the answer."""
        try:
            await self.route()
        except Refused as e:
            self.send(e.code, "text/plain; charset=utf-8", (e.text + "\n").encode("utf-8"))
        except AdminError as e:
            self.send(http.BAD_REQUEST, "text/plain; charset=utf-8", f"{e}\n".encode("utf-8"))

    def failed(self, failure) -> None:
        """Something unexpected: logged, and a 500 without details."""
        log.failure("web request {path} failed", failure, path=self.path)
        self.send(http.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", b"internal error\n")

    def send(self, code: int, content_type: str, body: bytes) -> None:
        """Finish the request (unless the client is gone)."""
        if self.request.finished or self.request.channel is None:
            return
        self.request.setResponseCode(code)
        self.request.setHeader("content-type", content_type)
        self.request.setHeader("cache-control", "no-store")
        self.request.setHeader("x-frame-options", "DENY")
        self.request.write(body)
        self.request.finish()

    def json(self, data, code: int = http.OK) -> None:
        """Send C{data} as JSON."""
        self.send(code, "application/json", json.dumps(data, indent=1).encode("utf-8") + b"\n")

    def html(self, title: str, body: str, session: WebSession) -> None:
        """Send a status page."""
        self.send(http.OK, "text/html; charset=utf-8",
                  page.document(title, body, session.operator, session.csrf))

    def redirect(self, location: str) -> None:
        """See other: C{location} (a path on this site)."""
        self.request.setHeader("location", location)
        self.send(http.SEE_OTHER, "text/plain; charset=utf-8", b"")

    # -- who asks

    async def reader(self) -> str:
        """The operator reading (session, HTTP basic, or loopback); else 401."""
        session = self.shared.sessions.find(self.request)
        if session is not None:
            return self.who(session.operator)
        if not self.need_login:
            return self.who(LOOPBACK_OPERATOR)
        name = await self.shared.sessions.basic(self.request)
        if name is None:
            self.request.setHeader("www-authenticate", 'Basic realm="smtpd"')
            raise Refused(http.UNAUTHORIZED, "login required")
        return self.who(name)

    def who(self, operator: str) -> str:
        """C{operator} makes this request (for the access log); returns it."""
        self.shared.identify(self.request, operator)
        return operator

    def page_session(self) -> WebSession | None:
        """The browser's session; on a loopback site without login, a new one."""
        session = self.shared.sessions.find(self.request)
        if session is None and not self.need_login:
            token, session = self.shared.sessions.start(LOOPBACK_OPERATOR)
            set_cookie(self.request, token)
        if session is not None:
            self.who(session.operator)
        return session

    # -- routes

    async def route(self) -> None:
        """Dispatch on method and path."""
        if self.method == "POST":
            return await self.post()
        if self.method not in ("GET", "HEAD"):
            raise Refused(http.NOT_ALLOWED, "GET or POST only")
        if self.path == "/healthz":
            return self.json({"ok": True})
        if self.path == "/readyz":
            return await self.readyz()
        if self.path == "/login":
            return self.send(http.OK, "text/html; charset=utf-8", page.login_form())
        if self.path == "/metrics":
            await self.reader()
            return self.send(http.OK, CONTENT_TYPE_LATEST, generate_latest(self.shared.metrics))
        if self.path.startswith("/api/"):
            operator = await self.reader()
            return await self.api(Admin(self.shared.server, operator))
        session = self.page_session()
        if session is None:
            return self.redirect("/login")
        await self.status_page(Admin(self.shared.server, session.operator), session)

    async def readyz(self) -> None:
        shared = self.shared
        # The floor of the configuration in force (a reload changes it).
        floor = shared.server.config.http.min_free_space
        report = await shared.run_blocking(readiness, shared.listeners,
                                           shared.config.server.mailroot, floor)
        self.json(report, http.OK if report["ready"] else http.SERVICE_UNAVAILABLE)

    def number(self, name: str, default: int, low: int) -> int:
        """The query field C{name} as a whole number from C{low}; else 400."""
        text = self.arg(name, str(default))
        try:
            value = int(text)
        except ValueError:
            raise Refused(http.BAD_REQUEST, f"{name}: a number from {low}") from None
        return max(low, value)

    def asked(self, per_page: int = views.PAGE_SIZE) -> queuelist.Request:
        """The queue page asked for: C{q}, C{page}, C{after} and C{offset}."""
        after = self.arg("after") or None
        if after is not None and not valid_queue_id(after):
            raise Refused(http.BAD_REQUEST, "after: a queue id")
        offset = self.number("offset", 0, 0) if self.arg("offset") else None
        return queuelist.Request(self.arg("q"), self.number("page", 1, 1), per_page,
                                 after, offset, self.shared.search_window)

    async def api(self, admin: Admin) -> None:
        """The JSON API."""
        name = self.path[len("/api/"):]
        if name == "status":
            return self.json(admin.status())
        if name == "sessions":
            return self.json(admin.sessions())
        if name == "qshape":
            return self.json(await admin.qshape())
        if name == "queue":
            size = min(MAX_PER_PAGE, self.number("per_page", views.PAGE_SIZE, 1))
            return self.json(await queuelist.listing(admin, self.asked(size)))
        if name.startswith("message/"):
            return self.json(await admin.show(name[len("message/"):]))
        raise Refused(http.NOT_FOUND, "no such API")

    async def status_page(self, admin: Admin, session: WebSession) -> None:
        """The HTML pages."""
        csrf = session.csrf
        if self.path == "/":
            body = page.overview(admin.status(), admin.sessions(), await admin.qshape(), csrf)
            return self.html("Overview", body + "<h2>Last hour</h2>"
                             + self.shared.history.charts(), session)
        if self.path == "/queue":
            asked = self.asked()
            listing = await queuelist.listing(admin, asked)
            return self.html("Queue", page.queue_page(listing, asked, csrf), session)
        if self.path.startswith("/message/"):
            entry = await admin.show(self.path[len("/message/"):])
            return self.html(f"Message {entry['id']}", page.message_page(entry, csrf), session)
        raise Refused(http.NOT_FOUND, "not found")

    # -- changes

    async def post(self) -> None:
        """Log in, log out, or an action (session and CSRF token required)."""
        if self.path == "/login":
            return await self.login()
        session = self.shared.sessions.find(self.request)
        if session is None:
            raise Refused(http.FORBIDDEN, "login required")
        self.who(session.operator)
        if not csrf_ok(session, self.arg("csrf")):
            log.warn("web: {operator} posted {path} without the right CSRF token",
                     operator=session.operator, path=self.path)
            raise Refused(http.FORBIDDEN, "missing or wrong CSRF token")
        if self.path == "/logout":
            token = (self.request.getCookie(b"smtpd_session") or b"").decode("ascii", "replace")
            self.shared.sessions.end(token)
            return self.redirect("/login")
        if self.path != "/action":
            raise Refused(http.NOT_FOUND, "not found")
        await self.act(Admin(self.shared.server, session.operator))

    async def act(self, admin: Admin) -> None:
        name, target = self.arg("action"), self.arg("id")
        if name not in ACTIONS:
            raise Refused(http.BAD_REQUEST, f"action: one of {', '.join(ACTIONS)}")
        if name == "terminate":
            admin.terminate(target)
        elif name == "retry":
            admin.retry(target)
        else:
            await getattr(admin, name)(target)
        back = self.arg("back", "/")
        self.redirect(back if back.startswith("/") and not back.startswith("//") else "/")

    async def login(self) -> None:
        name, password = self.arg("name"), self.arg("password")
        try:
            operator = await self.shared.sessions.check(name, password)
        except UnauthorizedLogin:
            # The checker logged it ("web login failed for ...").
            return self.send(http.FORBIDDEN, "text/html; charset=utf-8",
                             page.login_form("Wrong name or password."))
        token, _session = self.shared.sessions.start(operator)
        set_cookie(self.request, token)
        self.who(operator)
        log.info("web login: {operator}", operator=operator)
        self.redirect("/")

