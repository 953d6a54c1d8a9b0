# -*- test-case-name: tests.test_control -*-
"""
The C{smtpctl} commands that act on the running server through its control
socket: status, queue list/show/retry/hold/release/delete, sessions, reload.
With the server stopped, the read-only ones read the mailroot; the others
say the server is not running (exit status 1). The reading ones also go
through the JSON API of C{[http]} (L{smtpd.admin.webclient}): with
C{--http URL}, or when the control socket cannot be reached and C{[http]
listen} is set.

The tables show ages (since arrival, until the next attempt, of a session)
against the C{clock} the commands are given: anything with C{seconds()}.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from smtpd.admin import listing, tables
from smtpd.admin.control import ControlClient, NotRunning, Refused, socket_path
from smtpd.admin.webclient import PASSWORD_VARIABLE, READS, Unreachable, WebAPI, WebError
from smtpd.admin.webclient import endpoint_url
from smtpd.config import Config
from smtpd.mail.envelope import DEFERRED, HELD, QUEUED
from smtpd.queue.records import parse_envelope
from smtpd.queue.store import Queue


class CommandError(Exception):
    """A failure to report as lines on stderr with exit status 1."""

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


def client(config: Config) -> ControlClient:
    """A control client for the server of C{config}'s mailroot."""
    return ControlClient(socket_path(config.server.mailroot))


def call(config: Config, action: str, options: argparse.Namespace | None = None,
         **arguments):
    """
    C{admin.<action>} on the running server; L{NotRunning} when it is not.
    Through the JSON API with C{options.http}, or when the control socket
    cannot be reached and C{[http] listen} gives a URL (a reading action).
    """
    if getattr(options, "http", None):
        return over_http(web_api(config, options, options.http), action, arguments)
    try:
        return client(config).call(action, **arguments)
    except Refused as e:
        raise CommandError(f"smtpctl: {e}") from None
    except NotRunning:
        api = fallback_api(config, options, action)
        if api is None:
            raise
        try:
            return api.call(action, **arguments)
        except Unreachable:
            raise NotRunning(f"no server answers on {socket_path(config.server.mailroot)} "
                             f"or at {api.url}") from None
        except WebError as e:
            raise CommandError(f"smtpctl: {e}") from None
    except OSError as e:
        api = fallback_api(config, options, action)
        if api is None:
            raise CommandError(f"smtpctl: cannot reach the server: {e.strerror or e}") from None
        return over_http(api, action, arguments)


def over_http(api: WebAPI, action: str, arguments: dict):
    """C{action} through the JSON API; its failures as L{CommandError}."""
    try:
        return api.call(action, **arguments)
    except WebError as e:
        raise CommandError(f"smtpctl: {e}") from None


def fallback_api(config: Config, options, action: str) -> WebAPI | None:
    """The JSON API of the first C{[http] listen} with a URL, for a reading action; or None."""
    if options is None or action not in READS:
        return None
    for description in config.http.listen:
        url = endpoint_url(description)
        if url is not None:
            return web_api(config, options, url)
    return None


def web_api(config: Config, options, url: str) -> WebAPI:
    """
    The JSON API at C{url} as the operator of C{--user} (or C{SMTPCTL_USER}),
    with the password of C{SMTPCTL_PASSWORD} or asked at the terminal; an
    https site is trusted when it presents the C{[tls]} certificate.
    """
    user = getattr(options, "user", None) or os.environ.get("SMTPCTL_USER") or None
    password = None
    if user is not None:
        password = os.environ.get(PASSWORD_VARIABLE)
        if password is None and sys.stdin.isatty():
            password = getpass.getpass(f"password of {user} at {url}: ")
        if password is None:
            raise CommandError(f"smtpctl: no password for {user}: set {PASSWORD_VARIABLE} "
                               "or run smtpctl at a terminal")
    return WebAPI(url, user, password, server_certificate(config))


def server_certificate(config: Config) -> bytes | None:
    """The PEM of C{[tls] certificate}, or None when it cannot be read."""
    try:
        with open(config.tls.certificate, "rb") as f:
            return f.read()
    except OSError:
        return None


def change(config: Config, action: str, options: argparse.Namespace | None = None,
           **arguments):
    """Like L{call}, for actions that need the server: not running is an error."""
    try:
        return call(config, action, options, **arguments)
    except NotRunning:
        raise CommandError(
            "smtpctl: the server is not running (no control socket at "
            f"{socket_path(config.server.mailroot)}); nothing changed") from None


def emit(lines) -> None:
    """Print lines on stdout."""
    for line in lines:
        print(line, file=sys.stdout)


def emit_json(data) -> None:
    """Print data as indented JSON."""
    print(json.dumps(data, indent=2), file=sys.stdout)


def _offline_queue(config: Config) -> list[dict]:
    from twisted.internet import defer, reactor

    queue = Queue(os.path.join(config.server.mailroot, "queue"), reactor, defer.maybeDeferred)
    try:
        return [listing.entry(e) for e in queue.scan(cleanup=False)]
    except OSError as e:
        raise CommandError(f"smtpctl: cannot read {queue.directory}: {e.strerror}") from e


# How many entries C{queue list} asks for at a time.
LIST_PAGE = 1000


def queue_list(config: Config, options: argparse.Namespace, clock) -> None:
    """
    The queue entries (at most C{--limit}), printed a page at a time as they
    come from the server or (stopped) from the mailroot; ages as of
    C{clock.seconds()}.
    """
    limit = options.limit
    if limit is not None and limit < 0:
        raise CommandError(f"smtpctl: --limit {limit}: expected a number from 0")
    pages = _queue_pages(config, options, limit)
    if options.json:
        return _emit_json_stream(pages)
    table = tables.QueueTable(clock.seconds())
    for entries in pages:
        if entries and not table.count:
            emit([table.header()])
        emit(table.lines(entries))
    emit([table.total()])


def _queue_pages(config: Config, options, limit: int | None):
    """Pages of queue entries, from the server or (stopped) from the mailroot."""
    try:
        first = call(config, "queue", options, limit=_size(limit))
    except NotRunning:
        yield from _offline_pages(config, limit)
        return
    yield from _server_pages(config, options, first, limit)


def _size(remaining: int | None) -> int:
    return LIST_PAGE if remaining is None else min(LIST_PAGE, remaining)


def _server_pages(config: Config, options, page: list[dict], limit: int | None):
    """C{page} and the pages after it, each starting after the last id seen."""
    remaining = limit
    while True:
        yield page
        if remaining is not None:
            remaining -= len(page)
        if len(page) < LIST_PAGE or remaining == 0:
            return
        try:
            page = call(config, "queue", options, limit=_size(remaining),
                        after=page[-1]["id"])
        except NotRunning:
            raise CommandError("smtpctl: the server stopped during the listing") from None


def _offline_pages(config: Config, limit: int | None):
    """Pages of the entries read from the mailroot's queue folder."""
    from twisted.internet import defer, reactor

    queue = Queue(os.path.join(config.server.mailroot, "queue"), reactor, defer.maybeDeferred)
    try:
        ids = queue.entry_ids()[:limit]
    except OSError as e:
        raise CommandError(f"smtpctl: cannot read {queue.directory}: {e.strerror}") from e
    for start in range(0, len(ids), LIST_PAGE):
        yield [listing.entry(e) for e in queue.envelopes(ids[start:start + LIST_PAGE])]


def _emit_json_stream(pages) -> None:
    """Print the entries of C{pages} as one indented JSON array, a page at a time."""
    opened = False
    for entries in pages:
        for e in entries:
            text = json.dumps(e, indent=2).replace("\n", "\n  ")
            print(("[\n  " if not opened else ",\n  ") + text, end="", file=sys.stdout)
            opened = True
    print("\n]" if opened else "[]", file=sys.stdout)


def queue_show(config: Config, options: argparse.Namespace, clock) -> None:
    """One entry with its envelope, recipients and header fields; its age as of C{clock}."""
    try:
        entry = call(config, "show", options, id=options.id)
    except NotRunning:
        entry = _offline_show(config, options.id)
    if options.json:
        return emit_json(entry)
    emit(tables.show_lines(entry, clock.seconds()))


def _offline_show(config: Config, queue_id: str) -> dict:
    folder = os.path.join(config.server.mailroot, "queue")
    try:
        listing.check_id(queue_id)
        with open(os.path.join(folder, queue_id + ".json"), "rb") as f:
            envelope = parse_envelope(f.read(), queue_id)
    except (KeyError, FileNotFoundError, ValueError):
        raise CommandError(f"smtpctl: no queue entry {queue_id!r}") from None
    return listing.detail(envelope, os.path.join(folder, queue_id + ".eml"))


def queue_retry(config: Config, options: argparse.Namespace) -> None:
    """Attempt one entry (or all) now."""
    result = change(config, "retry", options, id=options.id)
    emit([f"{result['retried']} message{'s' if result['retried'] != 1 else ''} to be "
          "attempted now"])


def queue_hold(config: Config, options: argparse.Namespace) -> None:
    """Hold one entry."""
    change(config, "hold", options, id=options.id)
    emit([f"{options.id}: held"])


def queue_release(config: Config, options: argparse.Namespace) -> None:
    """Release one held entry."""
    change(config, "release", options, id=options.id)
    emit([f"{options.id}: released"])


def queue_delete(config: Config, options: argparse.Namespace) -> None:
    """Delete one entry, with an NDR first when asked."""
    change(config, "delete", options, id=options.id, bounce=options.bounce)
    emit([f"{options.id}: deleted" + (" (the sender gets an NDR)" if options.bounce else "")])


def status(config: Config, options: argparse.Namespace) -> None:
    """The server's counters, or that it is not running and what is queued."""
    try:
        result = call(config, "status", options)
    except NotRunning:
        entries = _offline_queue(config)
        counts = {QUEUED: 0, DEFERRED: 0, HELD: 0}
        for e in entries:
            counts[e["state"]] = counts.get(e["state"], 0) + 1
        if options.json:
            emit_json({"running": False, "queue": counts})
        else:
            emit([f"smtpd is not running (no control socket at "
                  f"{socket_path(config.server.mailroot)})",
                  f"queue:     {counts[QUEUED]} queued, {counts[DEFERRED]} deferred, "
                  f"{counts[HELD]} held"])
        raise CommandError() from None
    if options.json:
        return emit_json({"running": True, **result})
    emit(tables.status_lines(result))


def sessions(config: Config, options: argparse.Namespace, clock) -> None:
    """The inbound sessions open now; how long each has been open, as of C{clock}."""
    try:
        result = call(config, "sessions", options)
    except NotRunning:
        raise CommandError("smtpctl: the server is not running: no sessions") from None
    if options.json:
        return emit_json(result)
    emit(tables.sessions_table(result, clock.seconds()))


def sessions_kill(config: Config, options: argparse.Namespace) -> None:
    """Close one session with 421 4.3.2."""
    change(config, "terminate", options, id=options.id)
    emit([f"session {options.id}: closed"])


def reload(config: Config, options: argparse.Namespace) -> None:
    """Ask the server to re-read its configuration and accounts."""
    report = change(config, "reload", options)
    emit(tables.reload_lines(report))
    if not report.get("ok"):
        raise CommandError()


def reload_accounts(config: Config) -> str | None:
    """
    Tell a running server to re-read the accounts file; what to print, or
    None when no server runs (it reads the file when it starts).
    """
    try:
        report = call(config, "reload_accounts")
    except NotRunning:
        return None
    except CommandError as e:
        return f"the running server could not reload the accounts: {' '.join(e.lines)}"
    if not report.get("ok"):
        return ("the running server kept its accounts: " + "; ".join(report.get("errors", [])))
    return f"the running server now has {report['accounts']} accounts"
