# -*- test-case-name: tests.test_directory_reload -*-
"""
The LDAP directory a running server uses ([directory]), and its replacement
on reload: a changed section builds a new directory (new connection, empty
cache) and hands it to every part that asks it (RCPT, SMTP AUTH, POP3
logins, the queue's routing), then closes the old one; a section that
cannot be used (its CA file unreadable) changes nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from smtpd.config import Config
from smtpd.directory.ldap import LDAPDirectory, server_for
from smtpd.directory.resolve import EVERYONE, RecipientResolver

log = Logger(namespace="smtpd.admin")


class DirectoryError(Exception):
    """The new [directory] cannot be used; C{problems} are its lines."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class DirectorySwitch:
    """
    Owns the server's L{LDAPDirectory} (or none, while C{url} is empty).

    @param reactor: for the directory's connections and clock.
    @param inbound: the L{smtpd.inbound.registry.Inbound} (C{directory},
        C{recipients}, C{users}).
    @param qmgr: the queue manager (C{users}: who it routes as local).
    @param pop3: the L{smtpd.pop3.server.POP3Server} (C{directory}), or None.
    @ivar current: the directory in use, or None.
    """

    def __init__(self, reactor: Any, inbound: Any, qmgr: Any, pop3: Any = None):
        self.reactor = reactor
        self.inbound = inbound
        self.qmgr = qmgr
        self.pop3 = pop3
        self.current: LDAPDirectory | None = None

    def prepare(self, config: Config) -> LDAPDirectory | None:
        """
        A new directory for C{config}'s [directory], not yet in use (None when
        C{url} is empty).

        @raise DirectoryError: it cannot be built (its CA file unreadable).
        """
        section = config.directory
        if not section.enabled:
            return None
        try:
            server = server_for(section)
        except (OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or str(e)
            raise DirectoryError(
                [f"{config.path}: [directory] ca_certificates: cannot use "
                 f"{section.ca_certificates}: {why}"]) from None
        return LDAPDirectory(section, self.reactor, server)

    def use(self, directory: LDAPDirectory | None, config: Config) -> None:
        """
        Hand C{directory} to every part that asks the directory (None: the
        accounts file answers again), then close the one it replaces.
        """
        old, self.current = self.current, directory
        self.inbound.directory = directory
        if self.pop3 is not None:
            self.pop3.directory = directory
        if directory is None:
            self.inbound.recipients = None
            self.qmgr.users = self.inbound.users
        else:
            self.inbound.recipients = RecipientResolver(config, directory)
            self.qmgr.users = EVERYONE
        if old is not None:
            old.stop()

    def flush(self) -> None:
        """Forget the cached answers of the directory in use."""
        if self.current is not None:
            self.current.cache.clear()

    def stop(self) -> None:
        """Close the directory's connection (the server stops)."""
        if self.current is not None:
            self.current.stop()
