# -*- test-case-name: tests.test_web -*-
"""
The [http] listeners: one C{twisted.web} site per C{listen} endpoint, in the
server's reactor. Routes:

    GET  /healthz /readyz                  JSON, no login
    GET  /metrics                          Prometheus text
    GET  / /queue /message/ID              the status page (HTML)
    GET  /api/status /api/queue /api/sessions /api/qshape /api/message/ID   JSON
    GET  /login, POST /login /logout       the login form
    POST /action                           retry, hold, release, delete, terminate

A loopback endpoint is plain HTTP; any other is TLS with the server's
certificate and always asks for a login (L{smtpd.web.login} says the rule).
HTTP basic credentials are accepted for reading (scrapers, C{curl}); the forms
that change something need the session cookie and its CSRF token.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import resource, server as web_server

from smtpd.admin.api import Admin
from smtpd.admin.operators import OperatorChecker, OperatorsError, is_loopback
from smtpd.admin.operators import read_operators
from smtpd.web.access import AccessLog, QuietSite
from smtpd.web.history import History
from smtpd.web.login import WebSessions
from smtpd.web.metrics import DNSLatency, ReactorLag, registry
from smtpd.web.queuelist import SEARCH_WINDOW
from smtpd.web.routes import Handler


class WebError(Exception):
    """The [http] listeners cannot start; the message is one config error line."""


def check(config) -> list[str]:
    """
    The problems that stop [http] from starting, one line each: an endpoint
    beyond loopback while C{[manhole] users} names nobody (no one could log in),
    or a users file that cannot be read.
    """
    outside = [e for e in config.http.listen if not is_loopback(e)]
    if not outside:
        return []
    try:
        operators = read_operators(config.manhole.users)
    except OperatorsError as e:
        return [f"{config.path}: [manhole] users: {e}"]
    if operators:
        return []
    return [f"{config.path}: [http] listen = {e}: listens beyond loopback and "
            f"{config.manhole.users} names no users; expected an interface=127.0.0.1 "
            "endpoint, or users added with smtpctl manhole-user add NAME" for e in outside]


class WebService(service.Service):
    """
    The [http] part of the service tree: samples the reactor's lag and the
    charts' history while the server runs. Its listeners (L{listening}) are bound with the others.

    @param dns_lookups: the L{smtpd.delivery.dnstiming.DNSLookups} of the
        server's resolver: the DNS latency histogram subscribes to it while
        the service runs (None: no DNS metrics).
    @param search_window: how many queue entries one search request looks
        at, at most (L{smtpd.web.queuelist.SEARCH_WINDOW}).
    @ivar listening: C{(endpoint, factory)} pairs, one per C{[http] listen}.
    @raise WebError: see L{check}.
    """

    def __init__(self, config, server, clock, run_blocking, tls_options, listeners,
                 dns_lookups=None, search_window: int = SEARCH_WINDOW):
        problems = check(config)
        if problems:
            raise WebError("\n".join(problems))
        self.access = None
        if config.http.access_log:
            self.access = AccessLog(config.http.access_log, clock, config.logging.rotate,
                                    config.logging.rotate_size)
        self.lag = ReactorLag(clock)
        self.history = History(clock, Admin(server, "web").status)
        metrics = registry(server, self.lag)
        self.dns_latency = DNSLatency(metrics)
        self.dns_lookups = dns_lookups
        shared = Shared(config, server, clock, run_blocking, listeners,
                        WebSessions(OperatorChecker(config.manhole.users, run_blocking,
                                                    kind="web", log_success=False), clock),
                        metrics, self.history, self.access, search_window)
        self.shared = shared
        self.listening = []
        for description in config.http.listen:
            loopback = is_loopback(description)
            site = QuietSite(Root(shared, need_login=config.http.login or not loopback),
                             self.access)
            site.displayTracebacks = False
            factory = site if loopback else TLSMemoryBIOFactory(tls_options, False, site)
            self.listening.append((description, factory))

    def startService(self):
        """
        Start sampling the reactor's lag and the charts, and observing DNS
        lookups (only when there is a listener).
        """
        service.Service.startService(self)
        if self.listening and self.access is not None:
            self.access.open()
        if self.listening and self.dns_lookups is not None:
            self.dns_lookups.subscribe(self.dns_latency.observe)
        if self.listening:
            self.lag.start()
            self.history.start()

    def reopen(self) -> None:
        """Go on in a new access log file (SIGUSR1, after logrotate renamed it)."""
        if self.access is not None and self.running:
            self.access.reopen()

    def stopService(self):
        """Stop sampling."""
        service.Service.stopService(self)
        if self.dns_lookups is not None:
            self.dns_lookups.unsubscribe(self.dns_latency.observe)
        self.lag.stop()
        self.history.stop()
        if self.access is not None:
            self.access.close()


class Shared:
    """
    What every [http] site reads: the admin server, sessions, metrics,
    readiness inputs, the access log (or None), and how many entries a
    search looks at.
    """

    def __init__(self, config, server, clock, run_blocking, listeners, sessions, metrics,
                 history, access=None, search_window: int = SEARCH_WINDOW):
        self.config = config
        self.server = server
        self.clock = clock
        self.run_blocking = run_blocking
        self.listeners = listeners
        self.sessions = sessions
        self.metrics = metrics
        self.history = history
        self.access = access
        self.search_window = search_window

    def identify(self, request, operator: str) -> None:
        """C{request} is made by C{operator}: its access log line says so."""
        if self.access is not None:
            self.access.identify(request, operator)


class Root(resource.Resource):
    """Every path of one site; each request is handled by a L{Handler}."""

    isLeaf = True

    def __init__(self, shared: Shared, need_login: bool):
        resource.Resource.__init__(self)
        self.shared = shared
        self.need_login = need_login

    def render(self, request):
        """Answer C{request} (asynchronously)."""
        handler = Handler(self.shared, self.need_login, request)
        d = Deferred.fromCoroutine(handler.handle())
        d.addErrback(handler.failed)
        return web_server.NOT_DONE_YET
