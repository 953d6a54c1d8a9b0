# -*- test-case-name: tests.test_tables -*-
"""
What C{smtpctl} prints: the admin API's plain data as aligned columns with
human sizes and ages (like C{mailq}), for a terminal. Text from the network
(addresses, replies, header fields) is stripped of control characters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence


def printable(text: object) -> str:
    """C{text} with every non-printable character (terminal escapes) as C{?}."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def human_size(size: int) -> str:
    """C{512B}, C{1.5K}, C{12M}: octets in powers of 1024, at most 4 characters."""
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    return f"{size}B"  # not reached


def human_age(seconds: float) -> str:
    """C{45s}, C{12m}, C{3h}, C{2d}: a duration rounded down to its largest unit."""
    seconds = max(0, int(seconds))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


# The columns of C{queue list} and their widths: fixed, so that pages printed
# as they arrive line up (a longer cell pushes only its own row).
QUEUE_COLUMNS = (("ID", 24), ("SIZE", 5), ("AGE", 4), ("STATE", 8), ("TRIES", 5),
                 ("NEXT", 7), ("SENDER", 0))


class QueueTable:
    """
    The lines of C{queue list}, a page at a time: L{header} before the first
    row, L{lines} per page (each message, its recipients below it), L{total}
    at the end.
    """

    def __init__(self, now: float):
        self.now = now
        self.count = 0
        self.size = 0

    def header(self) -> str:
        """The column titles."""
        return _fixed([title for title, _ in QUEUE_COLUMNS])

    def lines(self, entries: Sequence[dict]) -> list[str]:
        """The rows of C{entries}, counted for the total."""
        out = []
        for e in entries:
            self.count += 1
            self.size += e.get("size", 0)
            out.append(_fixed([e["id"], human_size(e.get("size", 0)),
                               human_age(self.now - e["arrival"]), e["state"],
                               str(e["attempts"]), _next(e, self.now),
                               printable(f"<{e['sender']}>")]))
            for r in e["recipients"]:
                reply = f"  ({r['last_reply']})" if r["last_reply"] else ""
                out.append(printable(f"    {r['address']}  {r['state']}{reply}"))
        return out

    def total(self) -> str:
        """The last line: how many messages of what size, or that there are none."""
        if not self.count:
            return "queue is empty"
        return (f"-- {human_size(self.size)} in {self.count} "
                f"message{'s' if self.count != 1 else ''}")


def _fixed(cells: Sequence[str]) -> str:
    return "  ".join(printable(c).ljust(w) for c, (_, w) in zip(cells, QUEUE_COLUMNS)).rstrip()


def queue_table(entries: Sequence[dict], now: float) -> list[str]:
    """The lines of C{queue list}: one row per message, its recipients below it."""
    if not entries:
        return ["queue is empty"]
    table = QueueTable(now)
    return [table.header(), *table.lines(entries), table.total()]


def _next(entry: dict, now: float) -> str:
    if entry["state"] == "held":
        return "held"
    due = entry["next_attempt"] - now
    return "now" if due <= 0 else f"in {human_age(due)}"


def _attempts(entry: dict) -> str:
    n = entry["attempts"]
    tried = f"{n} attempt{'s' if n != 1 else ''}"
    if entry["state"] == "held":
        return f"{tried}; not attempted until released"
    due = entry["next_attempt"]
    return f"{tried}; next {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(due))}"


def show_lines(entry: dict, now: float) -> list[str]:
    """The lines of C{queue show ID}: envelope, recipients, header fields."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry["arrival"]))
    lines = [
        f"id:        {entry['id']}",
        f"state:     {entry['state']} ({_attempts(entry)})",
        f"arrival:   {when} ({human_age(now - entry['arrival'])} ago)",
        f"size:      {entry.get('size', 0)} octets",
        f"sender:    <{entry['sender']}>",
        f"client:    {entry.get('client', '')}",
    ]
    dsn = [f"{k.upper()}={entry[k]}" for k in ("ret", "envid") if entry.get(k)]
    if dsn:
        lines.append(f"dsn:       {' '.join(dsn)}")
    lines.append("recipients:")
    for r in entry["recipients"]:
        lines.append(f"  <{r['address']}>  {r['state']}"
                     + (f"  via {r['remote_mta']}" if r.get("remote_mta") else ""))
        if r["last_reply"]:
            lines.append(f"      {r['last_reply']}")
    lines.append("headers:")
    lines.extend(f"  {name}: {value}" for name, value in entry.get("headers", []))
    return [printable(line) for line in lines]


def sessions_table(sessions: Sequence[dict], now: float) -> list[str]:
    """The lines of C{sessions}: one row per inbound session."""
    if not sessions:
        return ["no sessions"]
    rows = [("ID", "PEER", "HELO", "USER", "TLS", "AGE", "IN", "OUT", "MSGS", "COMMAND")]
    for s in sessions:
        peer = s.get("peer", "")
        if s.get("reverse_name"):
            peer = f"{peer} ({s['reverse_name']})"
        started = s.get("started")
        rows.append(tuple(printable(c) for c in (
            str(s["id"]), peer, s.get("helo") or "-", s.get("user") or "-",
            s.get("tls") or "-", human_age(now - started) if started else "-",
            human_size(s.get("bytes_in", 0)), human_size(s.get("bytes_out", 0)),
            str(s.get("messages", 0)), s.get("command") or "-")))
    return columns(rows)


def status_lines(status: dict) -> list[str]:
    """The lines of C{status}."""
    queue = status["queue"]
    return [
        f"uptime:    {human_age(status['uptime'])}",
        f"sessions:  {status['sessions']}",
        f"queue:     {queue.get('queued', 0)} queued, {queue.get('deferred', 0)} deferred, "
        f"{queue.get('held', 0)} held",
        f"received:  {status['received']} messages",
        f"delivered: {status['delivered']}, deferred: {status['deferred']}, "
        f"bounced: {status['bounced']} (recipients)",
    ]


def reload_lines(report: dict) -> list[str]:
    """The lines of C{reload}: what changed and what needs a restart, or the errors."""
    if not report.get("ok"):
        return ["reload refused, nothing changed:", *report.get("errors", [])]
    lines = []
    if "changed" in report:
        lines.append(f"reloaded: {', '.join(report['changed']) or 'nothing changed'}")
    if report.get("at_restart"):
        lines.append(f"changed but applied only at restart: {', '.join(report['at_restart'])}")
    lines.append(f"accounts: {report.get('accounts', 0)}")
    if "filters" in report:
        lines.append(f"mail authentication filters: {', '.join(report['filters']) or 'none'}")
    return lines
