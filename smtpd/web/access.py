# -*- test-case-name: tests.test_web_log -*-
"""
What the [http] listeners log. Nothing per request goes to twistd's log (a
scrape every 15 seconds would bury the lines that matter there); a login, a
refused login and every action are one line each with the operator's name
(L{smtpd.web.routes}, L{smtpd.admin.api}). With C{[http] access_log} every
request is one line of that file in the Combined Log Format, with the
operator's name in the user field (C{-} before a login).
"""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

from twisted.web import server as web_server

from smtpd.util.logfiles import LogWriter


def quoted(text: str) -> str:
    """C{text} safe between double quotes on one line (no quote, backslash or control)."""
    return "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}"
                   for c in text)


class AccessLog:
    """
    The access log file of the [http] listeners.

    @param path: the file.
    @param clock: an C{IReactorTime}: the time of each line and the flush timer.
    @param rotate: C{daily}, C{size} or C{none} (as C{[logging] rotate}).
    @param rotate_size: the size that starts a new file with C{size}.
    """

    def __init__(self, path: str, clock, rotate: str = "none", rotate_size: int = 0):
        self.clock = clock
        self.writer = LogWriter(path, clock, rotate, rotate_size)
        self.operators: WeakKeyDictionary = WeakKeyDictionary()

    def open(self) -> None:
        """Open (append to) the file."""
        self.writer.open()

    def close(self) -> None:
        """Write what is buffered and close the file."""
        self.writer.close()

    def reopen(self) -> None:
        """Go on in a new file at the same path (after logrotate renamed it)."""
        self.writer.reopen()

    def identify(self, request, operator: str) -> None:
        """C{request} is made by C{operator} (its line names them)."""
        self.operators[request] = operator

    def line(self, request) -> str:
        """The Combined Log Format line of a finished request."""
        address = request.getClientAddress()
        host = getattr(address, "host", "-")
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(self.clock.seconds()))
        operator = quoted(self.operators.get(request, "-"))
        first = " ".join(part.decode("latin-1") for part in
                         (request.method, request.uri, request.clientproto))
        referrer = request.getHeader("referer") or "-"
        agent = request.getHeader("user-agent") or "-"
        return (f'{host} - {operator} [{stamp}] "{quoted(first)}" {request.code} '
                f'{request.sentLength or "-"} "{quoted(referrer)}" "{quoted(agent)}"')

    def request(self, request) -> None:
        """Write the line of a finished request."""
        self.writer.write(self.line(request).encode("utf-8"))


class QuietSite(web_server.Site):
    """
    A site that writes a line per request only to its L{AccessLog}, if it
    has one, and does not announce itself in twistd's log.
    """

    noisy = False

    def __init__(self, resource, access: AccessLog | None = None):
        web_server.Site.__init__(self, resource)
        self.access = access

    def log(self, request) -> None:
        """The request is finished: its access log line, if there is an access log."""
        if self.access is not None:
            self.access.request(request)
