# -*- test-case-name: tests.test_pop3 -*-
"""
What every POP3 session shares: the accounts (the same C{etc/users} or
C{[directory]} as SMTP AUTH, and the same per-address failure counters), the
mailboxes in use (one session per mailbox, RFC 2449 C{[IN-USE]}),
the time of each account's last login (RFC 2449 C{LOGIN-DELAY}), and the
protocol factories for C{[pop3] listen} (STLS) and C{pop3s} (implicit TLS).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory

from smtpd.config import Config
from smtpd.delivery.maildir import MailboxError, split_mailbox
from smtpd.pop3.maildir import MaildirInbox, scan
from smtpd.pop3.login import LoginRefused
from smtpd.pop3.session import POP3Session
from smtpd.directory.accounts import address_problem
from smtpd.directory.interfaces import IDirectory
from smtpd.directory.routing import is_this_host

# RFC 2449 6.8: the minimum seconds between two logins to one account.
LOGIN_DELAY = 10
# Seconds before "-ERR" after a wrong password: slows guessing down.
FAILURE_DELAY = 1.0
# RFC 1939 3: an idle timer of at least 10 minutes.
IDLE_TIMEOUT = 600.0


class POP3Server:
    """
    The POP3 service of one smtpd process.

    @param config: the L{Config} (C{[server]} hostname and mailroot, C{[auth]}
        allow_plaintext, C{[access]} auth_failures, the domains); may be
        replaced on reload, like C{users}.
    @param users: the accounts (L{smtpd.directory.accounts.Users}).
    @param clock: an C{IReactorTime}.
    @param check_passwords: C{f(callable, *args) -> Deferred} running the
        blocking bcrypt checks off the reactor thread.
    @param run_blocking: the same for disk work.
    @param tls_options: the server's TLS context factory, or L{None}.
    @param activity: the L{smtpd.util.activity.ActivityLog}.
    @param may_connect: C{may_connect(config, ip)}: whether C{[access]} lets
        a client at C{ip} in (the SMTP listeners' rule); everyone when L{None}.
    @param throttle: the SMTP listeners' per-address counters
        (L{smtpd.inbound.throttle.Throttle}: C{blocked(ip)},
        C{auth_failed(ip)}), so that failed logins over POP3 and SMTP AUTH
        add up and a block holds for both; L{None}: this server's own delay only.
    @ivar directory: the L{IDirectory} that checks passwords and finds
        mailboxes when C{[directory]} is on, else L{None} (the accounts file).
    """

    def __init__(self, config: Config, users: Any, clock: Any,
                 check_passwords: Callable[..., Deferred],
                 run_blocking: Callable[..., Deferred], tls_options: Any,
                 activity: Any, login_delay: int = LOGIN_DELAY,
                 failure_delay: float = FAILURE_DELAY,
                 idle_timeout: float = IDLE_TIMEOUT,
                 may_connect: Callable[[Config, str], bool] | None = None,
                 throttle: Any = None):
        self.config = config
        self.users = users
        self.clock = clock
        self.check_passwords = check_passwords
        self.run_blocking = run_blocking
        self.tls_options = tls_options
        self.activity = activity
        self.login_delay = login_delay
        self.failure_delay = failure_delay
        self.idle_timeout = idle_timeout
        self.may_connect = may_connect
        self.throttle = throttle
        self.directory: IDirectory | None = None
        self.sessions: dict[str, POP3Session] = {}
        self._ids = itertools.count(1)
        self._in_use: set[str] = set()
        self._last_login: dict[str, float] = {}

    def factory(self, implicit_tls: bool = False) -> Factory:
        """
        The protocol factory for one endpoint: C{[pop3] listen} (STLS offered),
        or C{pop3s} (C{implicit_tls}: the server's TLS around every session).
        """
        factory = POP3Factory(self, implicit_tls)
        if implicit_tls:
            return TLSMemoryBIOFactory(self.tls_options, False, factory)
        return factory

    def refusal(self, ip: str) -> str | None:
        """
        Why a new session from C{ip} is refused (the C{-ERR} text), or L{None}:
        C{[access]} denies it, or C{[server] max_connections} POP3 sessions
        are open already.
        """
        if self.may_connect is not None and not self.may_connect(self.config, ip):
            return "[SYS/PERM] Access denied"
        if self.throttle is not None and self.throttle.blocked(ip):
            return "[SYS/TEMP] Too many failed logins from your address, try again later"
        limit = self.config.server.max_connections
        if limit and len(self.sessions) >= limit:
            return "[SYS/TEMP] Too many connections, try again later"
        return None

    def register(self, session: POP3Session) -> str:
        """Admit a new session; its id for the log."""
        session_id = f"pop3-{next(self._ids)}"
        self.sessions[session_id] = session
        return session_id

    def unregister(self, session_id: str) -> None:
        """Forget a session that has ended."""
        self.sessions.pop(session_id, None)

    def account_name(self, login: str) -> str | None:
        """
        The account a POP3 login names: C{local@domain} of a local domain, or
        of the domain an alias domain points at; L{None} for anything else.
        """
        if address_problem(login) is not None:
            return None
        local, _, domain = login.lower().rpartition("@")
        section = self.config.domain(domain)
        if section is None or section.type not in ("local", "alias"):
            return None
        target = section.alias_of if section.type == "alias" else section.name
        return f"{local}@{target}"

    def account(self, login: str) -> str | None:
        """The account of L{account_name} when the accounts file has it."""
        account = self.account_name(login)
        return account if account is not None and account in self.users else None

    def maildir(self, account: str) -> str:
        """The Maildir folder of C{account}."""
        localpart, domain = split_mailbox(account)
        return os.path.join(os.path.abspath(self.config.server.mailroot),
                            "mailbox", domain, localpart)

    async def check(self, login: str, password: bytes) -> str | None:
        """
        The account when C{password} is its password, else L{None}. With a
        directory: a bind as the login's entry (as SMTP AUTH), and the
        account is its mailbox's canonical address.

        @raise DirectoryUnavailable: the directory cannot say now.
        @raise LoginRefused: the password is right but the directory's host
            attribute puts the mailbox on another node (C{[SYS/PERM]}).
        """
        if self.directory is not None:
            return await self._check_directory(login, password)
        account = self.account(login)
        # An unknown login costs a bcrypt check too: timing tells nothing.
        ok = await self.check_passwords(self.users.check_password,
                                        account or login.lower(), password)
        return account if ok and account is not None else None

    async def _check_directory(self, login: str, password: bytes) -> str | None:
        """L{check} against the directory: its mailbox of a local or alias domain."""
        account = self.account_name(login)
        if account is None:
            return None
        if not await self.directory.authenticate(login.lower(), password):
            return None
        mailbox = await self.directory.lookup(account)
        if mailbox is None or mailbox.is_alias:
            return None
        if not is_this_host(self.config, mailbox.host):
            # The password was right, but the mailbox is another node's: an
            # empty mailbox here would look like lost mail.
            raise LoginRefused(f"[SYS/PERM] Your mailbox is on {mailbox.host.strip()}; "
                               "pick up your mail there")
        # An alternate address logs in to the mailbox of the canonical one.
        return self.account_name(mailbox.address) or account

    def login_failed(self, ip: str) -> tuple[float, bool]:
        """
        Count a failed login from C{ip} with SMTP AUTH's failures: the delay
        before the C{-ERR} (at least C{failure_delay}), and whether the
        address is now blocked.
        """
        if self.throttle is None:
            return self.failure_delay, False
        delay, blocked = self.throttle.auth_failed(ip)
        return max(delay, self.failure_delay), blocked

    async def open_mailbox(self, account: str) -> tuple[MaildirInbox, Callable[[], None]]:
        """
        Lock C{account}'s mailbox for one session and list it: the mailbox and
        the function that releases it.

        @raise LoginRefused: C{[IN-USE]} while another session has it,
            C{[LOGIN-DELAY]} when its last login is too recent.
        """
        if account in self._in_use:
            raise LoginRefused("[IN-USE] Mailbox is in use by another session")
        now = self.clock.seconds()
        last = self._last_login.get(account)
        if self.login_delay and last is not None and now - last < self.login_delay:
            raise LoginRefused(
                f"[LOGIN-DELAY] Wait {self.login_delay} seconds between logins")
        try:
            folder = self.maildir(account)
        except MailboxError as e:
            raise LoginRefused(f"[SYS/PERM] {e}") from None
        self._in_use.add(account)
        self._last_login[account] = now
        try:
            messages = await self.run_blocking(scan, folder)
        except BaseException:
            self._in_use.discard(account)
            raise
        return (MaildirInbox(folder, messages, self.run_blocking),
                lambda: self._in_use.discard(account))


class POP3Factory(Factory):
    """Builds a L{POP3Session} per connection for one endpoint."""

    noisy = False

    def __init__(self, server: POP3Server, implicit_tls: bool):
        self.server = server
        self.implicit_tls = implicit_tls

    def buildProtocol(self, addr: Any) -> POP3Session:
        """A session of this server."""
        session = POP3Session(self.server, self.implicit_tls)
        session.factory = self
        return session
