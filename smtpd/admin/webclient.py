# -*- test-case-name: tests.test_ctl_http -*-
"""
C{smtpctl} through the server's JSON API (C{[http]}), for the commands that
read: C{status}, C{queue list}, C{queue show}, C{sessions}. Used when
C{--http URL} says so, or when the control socket cannot be reached (the
server's user and root only may open it) and C{[http] listen} is set.

Who asks: an operator of C{[manhole] users}, by HTTP basic authentication
(C{--user NAME}, the password in C{SMTPCTL_PASSWORD} or typed at the prompt);
a loopback endpoint without C{[http] login = yes} needs none. Changes
(hold, release, retry, delete, kill, reload) are not made this way: the page's
forms need a browser session and its CSRF token, and HTTP basic credentials
are for reading only.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from smtpd.admin.operators import is_loopback
from smtpd.config.endpoints import endpoint_parameters

# The environment variable that carries the operator's password.
PASSWORD_VARIABLE = "SMTPCTL_PASSWORD"

# Entries per request of a listing (the API's largest page).
PAGE = 500

# What smtpctl reads this way (the admin action of the control socket).
READS = ("status", "queue", "show", "sessions")


class WebError(Exception):
    """The API said no, or cannot be reached; the message is one line for stderr."""


class Unreachable(WebError):
    """Nothing answers at the URL (the server is not running)."""


class NotReadable(WebError):
    """The action changes something: the JSON API does not do it for smtpctl."""


def endpoint_url(description: str) -> str | None:
    """
    The URL to reach an C{[http] listen} endpoint from this host, or None
    (a UNIX socket, or port 0: chosen when bound): http for a loopback
    interface, https (the server's certificate) for any other; an endpoint
    on every interface is asked on 127.0.0.1.
    """
    kind, bound = endpoint_parameters(description)
    if kind not in ("tcp", "ssl") or bound.get("port", "0") in ("", "0"):
        return None
    host = bound.get("interface", "") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "http" if is_loopback(description) else "https"
    return f"{scheme}://{host}:{bound.get('port', '')}"


@dataclass
class WebAPI:
    """
    The JSON API of one server.

    @param url: the site, e.g. C{http://127.0.0.1:8025}.
    @param user: the operator's name, or None (no credentials sent).
    @param password: the operator's password.
    @param certificate: PEM of the server's own certificate ([tls]
        certificate): an https site presenting exactly it is trusted
        without a name check (it is this server); None: the system's CAs.
    @param timeout: seconds per request.
    """

    url: str
    user: str | None = None
    password: str | None = None
    certificate: bytes | None = None
    timeout: float = 30.0

    def call(self, action: str, **arguments):
        """The result of C{admin.<action>(**arguments)}, as the control socket gives it."""
        if action not in READS:
            raise NotReadable(f"{action} needs the control socket: over HTTP smtpctl "
                              "only reads (status, queue list, queue show, sessions)")
        if action == "queue":
            return self.queue_page(**arguments)
        if action == "show":
            return self.get("/api/message/" + urllib.parse.quote(arguments["id"], safe=""))
        return self.get(f"/api/{action}")

    def queue_page(self, limit: int | None = None, offset: int = 0,
                   after: str | None = None) -> list[dict]:
        """
        The page C{admin.queue(limit, offset, after)} gives, read from
        C{/api/queue} at most L{PAGE} entries per request, each request
        starting after the last id of the one before (entries that come and
        go meanwhile neither shift nor repeat it).
        """
        entries: list[dict] = []
        while limit is None or len(entries) < limit:
            size = PAGE if limit is None else min(PAGE, limit - len(entries))
            fields = {"per_page": size, "offset": offset}
            if after is not None:
                fields["after"] = after
            page = self.get("/api/queue?" + urllib.parse.urlencode(fields))["entries"]
            entries.extend(page)
            if len(page) < size:
                break
            after, offset = page[-1]["id"], 0
        return entries

    def get(self, path: str):
        """GET C{path} of the site as JSON."""
        request = urllib.request.Request(self.url.rstrip("/") + path,
                                         headers={"accept": "application/json"})
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            request.add_header("authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self.tls_context()) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise WebError(self.refusal(e)) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):
                raise Unreachable(f"no server answers at {self.url}") from None
            raise WebError(f"cannot reach {self.url}: {reason(e.reason)}") from None
        except (OSError, ValueError) as e:
            raise WebError(f"{self.url}: {reason(e)}") from None

    def refusal(self, e: urllib.error.HTTPError) -> str:
        """One line for an HTTP error answer."""
        text = e.read().decode("utf-8", "replace").strip().splitlines()
        said = text[0] if text else e.reason
        if e.code == 401 and self.user is None:
            return (f"{self.url} asks for a login: give --user NAME (an operator of "
                    f"[manhole] users) and the password in {PASSWORD_VARIABLE} or at the prompt")
        if e.code == 401:
            return f"{self.url}: wrong name or password for {self.user}"
        return f"{self.url}: {said}"

    def tls_context(self) -> ssl.SSLContext | None:
        """For https: the server's own certificate pinned, else the system's CAs."""
        if not self.url.startswith("https:"):
            return None
        if self.certificate is None:
            return ssl.create_default_context()
        return pinned_context(self.certificate)


def pinned_context(pem: bytes) -> ssl.SSLContext:
    """
    A client context that trusts only the certificate C{pem} (the first of
    the file, the server's own), whatever name the server is reached by.
    """
    context = ssl.create_default_context(cadata=first_certificate(pem))
    context.check_hostname = False
    # The leaf itself is the trust anchor (it need not be a CA's).
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def first_certificate(pem: bytes) -> str:
    """
    The first PEM certificate block of C{pem}.

    @raise ValueError: when there is none.
    """
    text = pem.decode("ascii", "replace")
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        raise ValueError("no PEM certificate")
    return text[begin:end + len("-----END CERTIFICATE-----")] + "\n"


def reason(e: object) -> str:
    """A short text for a network failure."""
    return getattr(e, "strerror", None) or str(e) or e.__class__.__name__
