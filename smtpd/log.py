# -*- test-case-name: tests.test_log -*-
"""
The activity log: one line per SMTP command (IIS W3C extended format, or JSON)
and one line per delivery attempt and recipient.

W3C lines share one field list, so delivery lines use the same columns:
C{cs-method} is C{DELIVER}, C{c-ip} the relay host, C{cs-username} the
recipient, C{cs-uri-query} the queue id, status and delay.
"""

from __future__ import annotations

import json
import time
from typing import IO

from twisted.logger import Logger

_FIELDS = (
    "date time c-ip cs-username s-computername s-ip s-port x-session "
    "cs-method cs-uri-query sc-status"
)

_log = Logger(namespace="smtpd.activity")


def _w3c(value: object) -> str:
    """A W3C field: '-' when empty, spaces as '+', no control characters."""
    text = str(value) if value not in (None, "") else "-"
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return text.replace(" ", "+")


class ActivityLog:
    """
    Writes activity lines to a file, or to twistd's log when C{path} is "-".

    @param fmt: C{"w3c"} or C{"json"}.
    @param clock: an L{IReactorTime}; timestamps come from C{clock.seconds()}.
    """

    def __init__(self, fmt: str, path: str, clock, hostname: str):
        self.fmt = fmt
        self.path = path
        self.clock = clock
        self.hostname = hostname
        self._file: IO[str] | None = None
        self._header_written = False

    def open(self) -> None:
        """Open the log file (append); nothing to do for twistd's log."""
        if self.path != "-" and self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
            self._header_written = self._file.tell() > 0

    def close(self) -> None:
        """Close the log file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def command(self, session, verb: str, argument: str, code: int) -> None:
        """One SMTP command of an inbound session and the reply code it got."""
        host = session.transport.getHost() if session.transport else None
        self._emit(
            {
                "event": "command",
                "client": session.peer_ip,
                "user": session.user or "",
                "server_ip": getattr(host, "host", ""),
                "server_port": getattr(host, "port", ""),
                "session": session.session_id,
                "command": verb,
                "argument": argument,
                "status": code,
            }
        )

    def delivery(
        self,
        queue_id: str,
        recipient: str,
        relay: str,
        code: int,
        status: str,
        delay: float,
        tls: bool = False,
    ) -> None:
        """One delivery attempt for one recipient."""
        self._emit(
            {
                "event": "delivery",
                "client": relay,
                "user": recipient,
                "server_ip": "",
                "server_port": "",
                "session": queue_id,
                "command": "DELIVER",
                "argument": f"id={queue_id} status={status} delay={delay:.1f}"
                + (" tls" if tls else ""),
                "status": code,
                "queue_id": queue_id,
                "dsn": status,
                "delay": round(delay, 3),
                "tls": tls,
            }
        )

    def _emit(self, record: dict) -> None:
        now = self.clock.seconds()
        if self.fmt == "json":
            record = {"time": round(now, 3), **record}
            line = json.dumps(record, separators=(",", ":"))
        else:
            line = self._w3c_line(now, record)
        if self._file is None:
            _log.info("{line}", line=line)
            return
        self._file.write(line + "\n")
        self._file.flush()

    def _w3c_line(self, now: float, r: dict) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
        if self._file is not None and not self._header_written:
            self._header_written = True
            self._file.write(
                f"#Software: smtpd\n#Version: 1.0\n#Date: {stamp}\n#Fields: {_FIELDS}\n"
            )
        fields = (
            r["client"],
            r["user"],
            self.hostname,
            r["server_ip"],
            r["server_port"],
            r["session"],
            r["command"],
            r["argument"],
            r["status"],
        )
        return stamp + " " + " ".join(_w3c(f) for f in fields)
