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
import weakref

from twisted.logger import Logger

from smtpd.util.logfiles import LogWriter

_FIELDS = (
    "date time c-ip cs-username s-computername s-ip s-port x-session "
    "cs-method cs-uri-query sc-status"
)

_log = Logger(namespace="smtpd.activity")

# Lines for twistd's log gathered before one event is emitted with all of them,
# and how long (seconds) a line may wait for its batch.
BATCH_LINES = 256
BATCH_DELAY = 0.2


def _w3c(value: object) -> str:
    """A W3C field: '-' when empty, spaces as '+', no control characters."""
    if value.__class__ is str:
        # The common case (a verb, an address, an id): nothing to change.
        if value and " " not in value and value.isprintable():
            return value
        text = value or "-"
    elif value.__class__ is int:
        return str(value)
    else:
        text = str(value) if value is not None and value != "" else "-"
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return text.replace(" ", "+")


def _server_address(session) -> tuple[str, int | str]:
    """
    The (ip, port) a session's client connected to: the session's own
    C{server_address} when it keeps one, else asked of its transport;
    ("", "") when there is none (any more).
    """
    try:
        address = getattr(session, "server_address", None)
        if address is not None:
            return address
        host = session.transport.getHost() if session.transport else None
    except (AttributeError, OSError):
        return "", ""
    return getattr(host, "host", ""), getattr(host, "port", "")


class ActivityLog:
    """
    Writes activity lines to a file, or to twistd's log when C{path} is "-".

    @param fmt: C{"w3c"} or C{"json"}.
    @param clock: an L{IReactorTime}; timestamps come from C{clock.seconds()}.
    @param rotate: C{daily}, C{size} or C{none} (C{[logging] rotate}).
    @param rotate_size: the size that starts a new file with C{size}.
    """

    def __init__(self, fmt: str, path: str, clock, hostname: str, rotate: str = "none",
                 rotate_size: int = 0):
        self.fmt = fmt
        self.path = path
        self.clock = clock
        self._file: LogWriter | None = None
        self.rotate = rotate
        self.rotate_size = rotate_size
        # The W3C date and time of the current second.
        self._second: int | None = None
        self._stamp = ""
        # Lines for twistd's log ("-") not yet emitted: one event carries the
        # lines of up to BATCH_DELAY seconds (a twisted.logger event per line,
        # with its own time formatting and write, costs more than the line).
        self._batch: list[str] = []
        self._flush_call = None
        self._closed = False
        self.hostname = hostname

    @property
    def hostname(self) -> str:
        """This server's name (C{s-computername}); may be changed on reload."""
        return self._hostname

    @hostname.setter
    def hostname(self, value: str) -> None:
        self._hostname = value
        self._host = _w3c(value)
        # Session -> its W3C fields that do not change (c-ip; s-computername
        # to x-session), kept while the session lives.
        self._sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def open(self) -> None:
        """Open the log file (append); nothing to do for twistd's log."""
        self._closed = False
        if self.path != "-" and self._file is None:
            header = self._header if self.fmt == "w3c" else None
            self._file = LogWriter(self.path, self.clock, self.rotate, self.rotate_size, header)
            self._file.open()

    def _header(self) -> bytes:
        """The W3C header every new file starts with (IIS writes the same four lines)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.clock.seconds()))
        return (f"#Software: smtpd\n#Version: 1.0\n#Date: {stamp}\n#Fields: {_FIELDS}\n"
                .encode("ascii"))

    def reopen(self) -> None:
        """
        Go on in a new file at C{path} (SIGUSR1, after logrotate renamed the
        old one); the new file starts with the W3C header.
        """
        if self._file is not None:
            self._file.reopen()

    def close(self) -> None:
        """
        Write what is buffered (or gathered for twistd's log) and close the log
        file. A line that comes later (a delivery ending while the server
        stops) goes to twistd's log at once: no timer outlives the service.
        """
        self._closed = True
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def command(self, session, verb: str, argument: str, code: int) -> None:
        """One SMTP command of an inbound session and the reply code it got."""
        if self.fmt != "json":
            self._command_w3c(session, verb, argument, code)
            return
        server_ip, server_port = _server_address(session)
        self._emit(
            {
                "event": "command",
                "client": session.peer_ip,
                "user": session.user or "",
                "server_ip": server_ip,
                "server_port": server_port,
                "session": session.session_id,
                "command": verb,
                "argument": argument,
                "status": code,
            }
        )

    def _command_w3c(self, session, verb: str, argument: str, code: int) -> None:
        """L{command} in W3C format: the fields fixed for a session are made once."""
        try:
            client, server = self._sessions[session]
        except (KeyError, TypeError):
            server_ip, server_port = _server_address(session)
            client = _w3c(session.peer_ip)
            server = " ".join((self._host, _w3c(server_ip), _w3c(server_port),
                               _w3c(session.session_id)))
            try:
                self._sessions[session] = (client, server)
            except TypeError:
                pass  # not weakly referenceable: made again each time
        stamp = self._w3c_stamp(self.clock.seconds())
        self._write(" ".join((stamp, client, _w3c(session.user), server, _w3c(verb),
                              _w3c(argument), _w3c(code))))

    def delivery(
        self,
        queue_id: str,
        recipient: str,
        relay: str,
        code: int,
        status: str,
        delay: float,
        tls: bool = False,
        outcome: str = "",
        reply: str = "",
        attempt: int = 0,
        tls_policy: str = "",
    ) -> None:
        """
        One delivery attempt for one recipient, as Postfix's C{status=} lines:
        C{outcome} is sent, deferred or bounced, C{reply} the remote reply or
        the reason, C{attempt} the attempt number, C{tls_policy} the
        recipient-side TLS policy that applied (C{dane}, C{sts-enforce},
        C{sts-testing}; shown as C{policy=...}).
        """
        said = f"{outcome} ({reply})" if reply else outcome
        argument = (f"id={queue_id} relay={relay} delay={delay:.1f} attempt={attempt} "
                    f"dsn={status} status={said}" + (" tls" if tls else "")
                    + (f" policy={tls_policy}" if tls_policy else ""))
        self._emit(
            {
                "event": "delivery",
                "client": relay,
                "user": recipient,
                "server_ip": "",
                "server_port": "",
                "session": queue_id,
                "command": "DELIVER",
                "argument": argument,
                "status": code,
                "queue_id": queue_id,
                "dsn": status,
                "delay": round(delay, 3),
                "tls": tls,
                "tls_policy": tls_policy,
                "outcome": outcome,
                "reply": reply,
                "attempt": attempt,
            }
        )

    def _emit(self, record: dict) -> None:
        now = self.clock.seconds()
        if self.fmt == "json":
            record = {"time": round(now, 3), **record}
            line = json.dumps(record, separators=(",", ":"))
            self._write(line)
        else:
            self._write(self._w3c_line(self._w3c_stamp(now), record))

    def _write(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line.encode("utf-8"))
            return
        self._batch.append(line)
        if len(self._batch) >= BATCH_LINES or self._closed:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self.clock.callLater(BATCH_DELAY, self.flush)

    def flush(self) -> None:
        """
        Write the lines waiting in the file's buffer now; for twistd's log,
        emit the lines gathered as one event, one line each (continuation
        lines are indented by twistd's log, as for any event).
        """
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if self._batch:
            lines, self._batch = self._batch, []
            _log.info("{lines}", lines="\n".join(lines))
        if self._file is not None:
            self._file.flush()

    def _w3c_stamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
        return self._stamp

    def _w3c_line(self, stamp: str, r: dict) -> str:
        return " ".join((
            stamp,
            _w3c(r["client"]),
            _w3c(r["user"]),
            self._host,
            _w3c(r["server_ip"]),
            _w3c(r["server_port"]),
            _w3c(r["session"]),
            _w3c(r["command"]),
            _w3c(r["argument"]),
            _w3c(r["status"]),
        ))
