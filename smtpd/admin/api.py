# -*- test-case-name: tests.test_admin -*-
"""
The administration API (SPEC 7): the C{admin} object of the manhole, and the
one source of truth behind the control socket (C{smtpctl}) and the status
page. Every result is plain data (dicts and lists of str, int, float, bool)
or a Deferred of such data. Every action that changes something is logged
with the operator's name (IIS "Operators").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from smtpd.admin import listing
from smtpd.admin.reverse import ReverseNames
from smtpd.admin.shape import QueueShape

log = Logger(namespace="smtpd.admin")


class AdminError(Exception):
    """A request the server cannot carry out (unknown id, ...); the message says why."""


class Server:
    """
    What the administration API acts on, as wired by the service tree.

    @param clock: an C{IReactorTime}.
    @param qmgr: the L{smtpd.queue.manager.QueueManager}.
    @param queue: the L{smtpd.queue.store.Queue}.
    @param inbound: the L{Inbound} registry of sessions.
    @param run_blocking: C{run_blocking(f, *args)}: a Deferred of C{f(*args)} in a thread.
    @param reloader: an object with C{reload()} returning the reload report, or L{None}.
    @param config: the L{Config} the server started with (a reload replaces it).
    @param resolver: an C{IResolver} for the peers' reverse names, or None.
    """

    def __init__(self, clock, qmgr, queue, inbound, run_blocking: Callable[..., Deferred],
                 config, reloader=None, resolver=None):
        self.clock = clock
        self.qmgr = qmgr
        self.queue = queue
        self.inbound = inbound
        self.run_blocking = run_blocking
        self.reloader = reloader
        self.config = config
        self.started = clock.seconds()
        self.reverse_names = ReverseNames(resolver)
        # The qshape table's domains, kept per entry across requests.
        self.shape = QueueShape(qmgr, queue, run_blocking)

    def reload(self) -> dict:
        """
        Re-read the configuration and the accounts through the reloader; the
        report (see L{smtpd.admin.reload.Reloader.reload}).

        @raise AdminError: when this server has no reloader.
        """
        if self.reloader is None:
            raise AdminError("this server cannot reload")
        report = self.reloader.reload()
        if report.get("ok"):
            self.config = self.reloader.config
        return report


class Admin:
    """
    Administration of the running server, acting as operator C{operator}.

        admin.status()                     counters, queue summary, uptime
        admin.queue(limit=100, offset=0, after=None)
                                           a page of queue entries with their recipients
        admin.queue_position(after=None)   where a page starts, and the queue's size
        admin.qshape()                     deferred entries by domain and age
        admin.show(id)                     one entry with its DSN data and headers
        admin.retry(id=None)               attempt now (every entry when no id)
        admin.hold(id) / admin.release(id) stop / resume attempts of an entry
        admin.delete(id, bounce=False)     remove an entry (bounce: NDR first)
        admin.sessions()                   current inbound sessions
        admin.terminate(id)                close a session with 421 4.3.2
        admin.terminate_all()              close every session with 421 4.3.2
        admin.reload()                     re-read smtpd.ini and the accounts
        admin.reload_accounts()            re-read only the accounts file
        admin.config                       the configuration in force

    Results are plain data; those that wait for the disk are Deferreds (the
    manhole prints them when they fire).
    """

    def __init__(self, server: Server, operator: str):
        self._server = server
        self.operator = operator

    def __repr__(self) -> str:
        return f"<smtpd admin as {self.operator!r}: help(admin) lists what it does>"

    @property
    def config(self):
        """The parsed, validated configuration in force (read-only)."""
        return self._server.config

    def _did(self, action: str, **details: Any) -> None:
        """Log an administrative action with who did it."""
        said = " ".join(f"{k}={v}" for k, v in details.items())
        log.info("admin: {operator} {action} {details}", operator=self.operator,
                 action=action, details=said)

    # -- reading

    def status(self) -> dict:
        """
        The server at a glance: C{uptime} (seconds), C{sessions} (open now),
        C{queue} (C{{"queued": n, "deferred": n, "held": n}}), and since start
        C{received} (messages), C{delivered}, C{deferred}, C{bounced}
        (recipient results).
        """
        s = self._server
        counters = s.qmgr.counters
        return {
            "uptime": round(s.clock.seconds() - s.started, 3),
            "sessions": len(s.inbound.sessions),
            "queue": dict(s.qmgr.summary()),
            "received": counters["received"],
            "delivered": counters["delivered"],
            "deferred": counters["deferred"],
            "bounced": counters["bounced"],
        }

    def queue(self, limit: int | None = listing.DEFAULT_PAGE, offset: int = 0,
              after: str | None = None) -> Deferred[list[dict]]:
        """
        One page of the queue in queue id order (ids begin with the arrival
        second, so oldest first): C{id}, C{sender}, C{state} (queued,
        deferred, held), C{attempts}, C{next_attempt} and C{arrival} (Unix
        times), C{size} and C{recipients} (C{address}, C{state},
        C{last_reply}). At most C{limit} entries (L{None}: all of them; by
        default 100), after skipping C{offset}, starting after the id
        C{after} (give the last id of a page to get the next one: no entry is
        missed or repeated while others come and go). A Deferred: the page's
        envelopes are read from disk in a thread.
        """
        limit, offset, after = _page_arguments(limit, offset, after)
        return Deferred.fromCoroutine(self._page(limit, offset, after))

    async def _page(self, limit: int | None, offset: int, after: str | None) -> list[dict]:
        # The ids come from the scheduler's index (no disk, no scan); an entry
        # gone before its envelope is read is replaced by the next one, so a
        # page shorter than the limit is the last.
        s = self._server
        found: list[dict] = []
        while True:
            wanted = None if limit is None else limit - len(found)
            chosen = s.qmgr.page(wanted, offset, after)
            found.extend(await s.run_blocking(listing.entries, s.queue, chosen))
            if wanted is None or len(chosen) < wanted or len(found) >= limit:
                return found
            after, offset = chosen[-1][0], 0

    def queue_position(self, after: str | None = None) -> dict:
        """
        C{{"position": n, "total": m}}: how many entries sort up to and
        including the id C{after} in the order of L{queue} (0 for L{None}),
        and how many there are; from memory, no envelope is read.
        """
        _page_arguments(0, 0, after)
        position, total = self._server.qmgr.position(after)
        return {"position": position, "total": total}

    def qshape(self) -> Deferred[dict]:
        """
        Deferred entries by destination domain of their pending recipients
        and by age (Postfix's qshape): C{buckets} (column titles, minutes)
        and C{rows} of C{[domain, total, counts...]}, a C{TOTAL} row first.
        Each entry's envelope is read once and its domains kept, read again
        only after an attempt changed its next attempt time.
        """
        s = self._server
        return s.shape.shape(s.clock.seconds())

    def show(self, id: str) -> Deferred[dict]:
        """
        Entry C{id} in full: what L{queue} gives, plus its DSN parameters,
        each recipient's status and remote host, and the message's header
        fields as C{[name, value]} pairs.
        """
        s = self._server
        queue_id = self._known(id)
        d = s.queue.read_envelope(queue_id)
        d.addCallback(lambda e: s.run_blocking(
            listing.detail, e, s.queue.data_path(queue_id)))
        d.addErrback(self._gone, queue_id)
        return d

    def _known(self, id: object) -> str:
        try:
            return listing.check_id(id)
        except KeyError as e:
            raise AdminError(e.args[0]) from None

    def _gone(self, failure, queue_id: str):
        failure.trap(OSError, KeyError)
        raise AdminError(f"no queue entry {queue_id!r}")

    # -- queue control

    def retry(self, id: str | None = None) -> dict:
        """
        Attempt entry C{id} now, or every entry that is not held when C{id}
        is None; C{{"retried": n}} says how many were made due (a held entry
        or one being attempted is not).
        """
        if id is not None:
            self._known(id)
        count = self._queue_call(self._server.qmgr.retry, id)
        self._did("retry", id=id or "all", count=count)
        return {"retried": count}

    def hold(self, id: str) -> Deferred[dict]:
        """Stop attempting entry C{id} until released (kept across restarts)."""
        return self._change("hold", id, self._server.qmgr.hold)

    def release(self, id: str) -> Deferred[dict]:
        """Attempt a held entry C{id} again, at once."""
        return self._change("release", id, self._server.qmgr.release)

    def delete(self, id: str, bounce: bool = False) -> Deferred[dict]:
        """
        Remove entry C{id}; with C{bounce=True} its sender first gets a
        non-delivery report (5.0.0) for the recipients still pending.
        """
        return self._change("delete", id, self._server.qmgr.delete, bool(bounce))

    def _change(self, action: str, id: str, call, *args) -> Deferred[dict]:
        queue_id = self._known(id)
        d = maybeDeferred(self._queue_call, call, queue_id, *args)
        self._did(action, id=queue_id, **({"bounce": args[0]} if args else {}))
        d.addCallback(lambda _: {"id": queue_id, "done": action})
        return d

    def _queue_call(self, call, *args):
        try:
            return call(*args)
        except KeyError as e:
            raise AdminError(e.args[0]) from None

    # -- sessions

    def sessions(self) -> list[dict]:
        """
        The inbound sessions open now (IIS Current Sessions), oldest first:
        C{id}, C{peer}, C{reverse_name} (once looked up in the background;
        "" until then), C{helo}, C{user}, C{tls}, C{started}, C{bytes_in},
        C{bytes_out}, C{messages}, C{command} (the last one received).
        """
        inbound = self._server.inbound
        listed = [describe_session(inbound.sessions[k]) for k in sorted(inbound.sessions)]
        names = self._server.reverse_names
        for session in listed:
            session["reverse_name"] = names.name(session["peer"])
        return listed

    def access(self) -> list[dict]:
        """
        The limits kept per client address across sessions ([access]): one
        dict per address (an IPv6 /64) with C{address},
        C{connections_per_minute}, C{messages_per_minute}, C{auth_failures}
        (in the window) and C{blocked_until} (a time, or None).
        """
        return self._server.inbound.access_counters()

    def terminate(self, id: int) -> dict:
        """Close session C{id} with C{421 4.3.2}."""
        session = self._session(id)
        self._did("terminate", session=session.session_id, peer=session.peer_ip)
        session.terminate(TERMINATED)
        return {"terminated": [session.session_id]}

    def terminate_all(self) -> dict:
        """Close every inbound session with C{421 4.3.2}."""
        sessions = list(self._server.inbound.sessions.values())
        self._did("terminate_all", count=len(sessions))
        for session in sessions:
            session.terminate(TERMINATED)
        return {"terminated": [s.session_id for s in sessions]}

    def _session(self, id: object):
        try:
            return self._server.inbound.sessions[int(id)]  # type: ignore[arg-type]
        except (KeyError, ValueError, TypeError):
            raise AdminError(f"no session {id!r}") from None

    # -- configuration

    def reload(self) -> dict:
        """
        Re-read etc/smtpd.ini and the accounts file; new sessions and later
        delivery attempts use them, open sessions and listeners are left as
        they are. The result says what changed and what needs a restart, or
        lists the errors (and then nothing changed).
        """
        self._did("reload")
        return self._server.reload()

    def reload_accounts(self) -> dict:
        """Re-read only the accounts file (C{smtpctl user add/del} asks for this)."""
        reloader = self._server.reloader
        if reloader is None:
            raise AdminError("this server cannot reload")
        self._did("reload_accounts")
        return reloader.reload_accounts()


def _page_arguments(limit, offset, after) -> tuple[int | None, int, str | None]:
    """The arguments of L{Admin.queue}, checked; L{AdminError} says what is wrong."""
    if limit is not None and (type(limit) is not int or limit < 0):
        raise AdminError(f"limit: expected a number from 0 or None, not {limit!r}")
    if type(offset) is not int or offset < 0:
        raise AdminError(f"offset: expected a number from 0, not {offset!r}")
    if after is not None and not isinstance(after, str):
        raise AdminError(f"after: expected a queue id, not {after!r}")
    return limit, offset, after


# The reply sent to a session closed by the administrator.
TERMINATED = "4.3.2 Session terminated by the administrator"


def describe_session(session) -> dict:
    """One inbound session as plain data (see L{Admin.sessions})."""
    info = getattr(session, "info", None)
    if callable(info):
        return info()
    return {
        "id": session.session_id,
        "peer": session.peer_ip,
        "helo": session.helo or "",
        "user": session.user or "",
    }
