# -*- test-case-name: tests.test_web -*-
"""
The status page as server-rendered HTML (no scripts needed, nothing fetched
from elsewhere): overview, sessions, queue search, one message, qshape.
Every form that changes something carries the session's CSRF token.
"""

from __future__ import annotations

import time
from html import escape
from urllib.parse import quote, urlencode

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}
th{background:#eee} form.inline{display:inline} nav a{margin-right:1em}
.num{text-align:right} h1{font-size:1.4em} h2{font-size:1.15em}
"""


def _e(value) -> str:
    return escape(str(value), quote=True)


def when(seconds: float) -> str:
    """A Unix time as UTC text."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) if seconds else ""


def document(title: str, body: str, operator: str, csrf: str) -> bytes:
    """A whole page around C{body}."""
    logout = (f'<form class="inline" method="post" action="/logout">{hidden(csrf)}'
              f'<button>Log out {_e(operator)}</button></form>')
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)} - smtpd</title><style>{STYLE}</style></head><body>"
        '<nav><a href="/">Overview</a><a href="/queue">Queue</a>'
        f'<a href="/metrics">Metrics</a>{logout}</nav><h1>{_e(title)}</h1>{body}</body></html>'
    ).encode("utf-8")


def login_form(message: str = "") -> bytes:
    """The login page."""
    note = f'<p role="alert">{_e(message)}</p>' if message else ""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Log in - smtpd</title>"
        f"<style>{STYLE}</style></head><body><h1>smtpd: log in</h1>{note}"
        '<form method="post" action="/login"><p><label>Name <input name="name" id="name">'
        '</label></p><p><label>Password <input type="password" name="password" id="password">'
        '</label></p><p><button id="login">Log in</button></p></form></body></html>'
    ).encode("utf-8")


def hidden(csrf: str) -> str:
    """The CSRF token field of a form."""
    return f'<input type="hidden" name="csrf" value="{_e(csrf)}">'


def action(csrf: str, name: str, target: str, back: str, label: str | None = None) -> str:
    """A one-button form posting C{name} on C{target} (a queue id or session id)."""
    return (f'<form class="inline" method="post" action="/action">{hidden(csrf)}'
            f'<input type="hidden" name="action" value="{_e(name)}">'
            f'<input type="hidden" name="id" value="{_e(target)}">'
            f'<input type="hidden" name="back" value="{_e(back)}">'
            f'<button id="{_e(name)}-{_e(target)}">{_e(label or name)}</button></form>')


def table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    """An HTML table; the cells are HTML already."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def overview(status: dict, sessions: list[dict], shape: dict, csrf: str) -> str:
    """The overview: counters, sessions (with terminate) and the qshape table."""
    queue = status["queue"]
    counters = [["uptime (s)", status["uptime"]], ["sessions open", status["sessions"]],
                *([f"queue: {k}", v] for k, v in sorted(queue.items())),
                *([f"{k} since start", status[k]]
                  for k in ("received", "delivered", "deferred", "bounced"))]
    rows = [[_e(k), f'<span class="num">{_e(v)}</span>'] for k, v in counters]
    session_rows = [[_e(s["id"]), _e(s["peer"]), _e(s["reverse_name"]), _e(s["helo"]),
                     _e(s["user"]), _e(s["tls"]), _e(when(s["started"])), _e(s["messages"]),
                     _e(s["command"] or ""), action(csrf, "terminate", str(s["id"]), "/")]
                    for s in sessions]
    shape_rows = [[_e(c) for c in row] for row in shape["rows"]]
    return (
        "<h2>Counters</h2>" + table(["", "value"], rows, "counters")
        + "<h2>Current sessions</h2>"
        + table(["id", "peer", "name", "HELO", "user", "TLS", "since", "messages",
                 "command", ""], session_rows, "sessions")
        + "<h2>Deferred by destination and age (minutes)</h2>"
        + table(["domain", "total", *shape["buckets"]], shape_rows, "qshape")
    )


def queue_page(listing: dict, asked, csrf: str) -> str:
    """
    One page of the queue (see L{smtpd.web.queuelist.listing}), the search
    form, each entry's actions, and the links to other pages; C{asked} is
    the L{smtpd.web.queuelist.Request} it answers.
    """
    query = asked.query
    here = "/queue?" + urlencode({k: v for k, v in (
        ("q", query), ("page", listing["page"]), ("after", asked.after or ""),
        ("offset", asked.offset or "")) if v})
    rows = []
    for e in listing["entries"]:
        buttons = "".join(action(csrf, a, e["id"], here) for a in (
            ("release",) if e["state"] == "held" else ("hold", "retry")))
        buttons += action(csrf, "delete", e["id"], here)
        rows.append([f'<a href="/message/{quote(e["id"])}">{_e(e["id"])}</a>',
                     _e(e["sender"] or "<>"), _e(e["state"]), _e(when(e["arrival"])),
                     _e(e["attempts"]),
                     "<br>".join(_e(r["address"]) for r in e["recipients"]), buttons])
    return (
        '<form method="get" action="/queue"><input name="q" id="q" value="'
        f'{_e(query)}" placeholder="id, sender, recipient or domain">'
        f'<button id="search">Search</button></form>{pager(listing, asked)}'
        + table(["id", "sender", "state", "arrival", "attempts", "recipients", ""], rows,
                "queue")
    )


def _queue_link(text: str, link_id: str, **fields) -> str:
    """A link to the queue page with the query fields C{fields} (empty ones left out)."""
    target = urlencode({k: v for k, v in fields.items() if v})
    return f'<a id="{link_id}" href="/queue?{_e(target)}">{_e(text)}</a>'


def pager(listing: dict, asked) -> str:
    """
    What the page shows and the links to the others: page numbers near this
    one, first and last; the next page by cursor (it stays right while
    entries come and go); for a search, the next window of the queue.
    """
    number, pages, query = listing["page"], listing["pages"], asked.query
    # A search's pages are of the window it looked at, which starts after C{after}.
    window = asked.after if "scanned" in listing else None
    shown = sorted({1, pages, *range(max(1, number - 5), min(pages, number + 5) + 1)})
    links, previous = [], 0
    for n in shown:
        if n > previous + 1:
            links.append("...")
        links.append(f"<b>{n}</b>" if n == number
                     else _queue_link(str(n), f"page-{n}", q=query, page=n, after=window))
        previous = n
    if "scanned" in listing:
        text = (f'<p id="found">{listing["total"]} matches among the {listing["scanned"]} '
                f"entries searched{' (the queue goes on)' if listing['partial'] else ''}. "
                f"Page {' '.join(links)}</p>")
        if listing["next"]:
            text += "<p>" + _queue_link("Search the next entries", "next", q=query,
                                        after=listing["next"]) + "</p>"
        return text
    text = f'<p id="found">{listing["total"]} entries. Page {" ".join(links)}</p>'
    if listing["next"]:
        text += "<p>" + _queue_link("Next page", "next", after=listing["next"]) + "</p>"
    return text


def message_page(entry: dict, csrf: str) -> str:
    """One queue entry: its envelope, each recipient's state, and its header."""
    back = f"/message/{quote(entry['id'])}"
    facts = [["id", entry["id"]], ["sender", entry["sender"] or "<>"],
             ["state", entry["state"]], ["arrival", when(entry["arrival"])],
             ["attempts", entry["attempts"]], ["next attempt", when(entry["next_attempt"])],
             ["size", entry["size"]], ["client", entry.get("client", "")]]
    recipients = [[_e(r["address"]), _e(r["state"]), _e(r.get("status", "")),
                   _e(r.get("remote_mta", "")), _e(r["last_reply"])]
                  for r in entry["recipients"]]
    headers = [[_e(n), _e(v)] for n, v in entry.get("headers", [])]
    buttons = "".join(action(csrf, a, entry["id"], back)
                      for a in ("retry", "hold", "release", "delete"))
    return (
        table(["", ""], [[_e(k), _e(v)] for k, v in facts], "envelope") + buttons
        + "<h2>Recipients</h2>"
        + table(["address", "state", "status", "remote host", "last reply"], recipients,
                "recipients")
        + "<h2>Header</h2>" + table(["field", "value"], headers, "header")
    )
