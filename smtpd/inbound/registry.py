# -*- test-case-name: tests.test_protocol -*-
"""
What every inbound session shares (L{Inbound}): configuration, accounts, the
cleanup stage, the live sessions and their counters, and the factory that
makes sessions for an endpoint.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from twisted.internet import defer
from twisted.internet.protocol import ServerFactory

from smtpd.inbound.rdns import ReverseDNS
from smtpd.inbound.sasl import DEFAULT_QUEUE, PasswordPool, make_portal
from smtpd.inbound.session import LISTEN, SMTPSession
from smtpd.inbound.throttle import Throttle

# Password checks running or waiting at once: the server's four bcrypt
# threads and those that may queue behind them.
AUTH_LIMIT = 4 + DEFAULT_QUEUE


class Inbound:
    """
    What every inbound session shares. One per server process; C{config} and
    C{users} may be swapped at run time (reload) and sessions see the new ones
    at their next command.

    @param cleanup: the L{smtpd.cleanup.stage.Cleanup} every message goes
        through on its way to the queue.
    @param run_blocking: runs password checks (bcrypt) in a thread pool.
    @param resolver: the L{IResolver} for reverse lookups of clients (those
        of C{[delivery] dns_servers}); L{None}: no lookups.
    @param auth_limit: password checks running or waiting at once, beyond
        which AUTH gets C{454 4.7.0}.
    @ivar throttle: the per-address counters (L{Throttle}).
    @ivar sessions: the live sessions by id (for the admin API).
    @ivar per_ip: live sessions per client address.
    @ivar received: messages accepted since start.
    @ivar events: since start: C{refused_limit}, C{refused_shutdown},
        C{refused_throttle} (connection rate, blocked AUTH guesser) and
        C{refused_deny} (connections refused), C{auth_success},
        C{auth_failure}, C{messages_tls} and C{messages_plain} (accepted
        messages by whether the session was encrypted).
    """

    def __init__(
        self,
        config,
        users,
        cleanup,
        clock,
        run_blocking: Callable[..., defer.Deferred],
        tls_options=None,
        command_log=None,
        resolver=None,
        auth_limit: int = AUTH_LIMIT,
    ):
        self.config = config
        self.users = users
        # With [directory] url set: the IDirectory for AUTH and the
        # RecipientResolver for RCPT (None: etc/users, answered at once).
        self.directory = None
        self.recipients = None
        # ETRN (RFC 1985): etrn(domain, subdomains) -> Deferred[int], the
        # queue manager's flush_domain (None: ETRN is answered 458).
        self.etrn: Callable[[str, bool], defer.Deferred[int]] | None = None
        self.cleanup = cleanup
        self.clock = clock
        self.run_blocking = run_blocking
        self.tls_options = tls_options
        self.command_log = command_log
        self.throttle = Throttle(clock, lambda: self.config.access)
        self.password_pool = PasswordPool(run_blocking, auth_limit)
        self.portal = make_portal(lambda: self.users, self.password_pool, lambda: self.directory)
        self.reverse_dns = ReverseDNS(resolver, clock) if resolver is not None else None
        self.sessions: dict[int, SMTPSession] = {}
        self.per_ip: Counter[str] = Counter()
        self.received = 0
        self.events: Counter[str] = Counter()
        self._next_id = 0
        self._stopping = False
        self._on_empty: tuple[defer.Deferred[None], object] | None = None

    def factory(self, kind: str = LISTEN) -> SMTPFactory:
        """A protocol factory for one kind of endpoint (L{LISTEN}, ...)."""
        return SMTPFactory(self, kind)

    def register(self, session: SMTPSession) -> str | None:
        """
        Admit a new session, or say why not: the C{421} reply text when a
        connection limit is reached or the server is stopping.
        """
        server = self.config.server
        if self._stopping:
            self.events["refused_shutdown"] += 1
            return "4.3.2 Service shutting down"
        if server.max_connections and len(self.sessions) >= server.max_connections:
            self.events["refused_limit"] += 1
            return "4.7.0 Error: too many connections"
        limit = server.max_connections_per_ip
        if limit and self.per_ip[session.peer_ip] >= limit:
            self.events["refused_limit"] += 1
            return "4.7.0 Error: too many connections from your address"
        refusal = self.throttle.connect(session.peer_ip)
        if refusal is not None:
            self.events["refused_throttle"] += 1
            return refusal
        self._next_id += 1
        session.session_id = self._next_id
        self.sessions[session.session_id] = session
        self.per_ip[session.peer_ip] += 1
        return None

    def reload_tls(self, config) -> list[str]:
        """
        Re-read the certificate, key and policy of C{config}'s [tls] section
        for new connections; the problems, one line each (the old ones stay).
        """
        if self.tls_options is None or not hasattr(self.tls_options, "reload"):
            return ["[tls] the server was started without reloadable TLS options"]
        return self.tls_options.reload(config.tls)

    def access_counters(self) -> list[dict]:
        """The per-address counters, as plain data (for the admin API)."""
        return self.throttle.snapshot()

    def unregister(self, session: SMTPSession) -> None:
        """Forget a session whose connection is gone."""
        if self.sessions.pop(session.session_id, None) is not None:
            self.per_ip[session.peer_ip] -= 1
            if not self.per_ip[session.peer_ip]:
                del self.per_ip[session.peer_ip]
        if not self.sessions and self._on_empty is not None:
            self._closed_all()

    def shutdown(self, grace: float, flush: float = 2.0) -> defer.Deferred[None]:
        """
        Stop admitting sessions; close every session not in the middle of a
        message with C{421 4.3.2} at once; let sessions in DATA finish for up
        to C{grace} seconds (each is closed with the 421 as soon as its
        message is answered), then close the rest with the 421 too. Fires once
        every connection is closed (the 421s written: the reactor's shutdown
        would drop unwritten replies), at most C{flush} seconds after that.
        """
        self._stopping = True
        done: defer.Deferred[None] = defer.Deferred()
        deadline = self.clock.seconds() + grace
        why = "4.3.2 Service shutting down"

        def check() -> None:
            busy = False
            for s in list(self.sessions.values()):
                if s.in_transfer:
                    busy = True
                else:
                    s.terminate(why)
            if busy and self.clock.seconds() < deadline:
                self.clock.callLater(0.1, check)
                return
            for s in list(self.sessions.values()):
                s.terminate(why)
            self._wait_closed(done, flush)

        check()
        return done

    def _wait_closed(self, done: defer.Deferred[None], flush: float) -> None:
        """Fire C{done} when no session is left, or after C{flush} seconds."""
        if not self.sessions:
            done.callback(None)
            return
        timer = self.clock.callLater(flush, self._closed_all)
        self._on_empty = (done, timer)

    def _closed_all(self) -> None:
        done, timer = self._on_empty or (None, None)
        self._on_empty = None
        if timer is not None and timer.active():
            timer.cancel()
        if done is not None and not done.called:
            done.callback(None)


class SMTPFactory(ServerFactory):
    """Builds L{SMTPSession}s of one kind for an endpoint."""

    noisy = False

    def __init__(self, inbound: Inbound, kind: str):
        self.inbound = inbound
        self.kind = kind

    def buildProtocol(self, addr):
        """A new session for a connection from C{addr}."""
        session = SMTPSession(self.inbound, self.kind)
        session.factory = self
        return session
