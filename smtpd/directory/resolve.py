# -*- test-case-name: tests.test_directory -*-
"""
Recipient validation through an L{IDirectory}: the domain rules of
L{smtpd.directory.routing.route} (local, alias, drop, remote), then, for an
address of a domain whose mailboxes are ours, the directory's answer. Used by
the inbound session at RCPT, asynchronously, so that an LDAP directory that is
down gives C{451 4.4.3} and never C{550 5.1.1}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from smtpd.config import Config
from smtpd.directory.interfaces import IDirectory
from smtpd.directory.routing import DROP, REMOTE, Destination, route


class _Everyone:
    """An account list that contains every address: the directory decides instead."""

    def __contains__(self, address: object) -> bool:
        return True


EVERYONE = _Everyone()


class RecipientResolver:
    """
    Where recipient addresses go, with the directory's word on mailboxes.

    @param config: the L{Config}; replace it on reload.
    @param directory: the L{IDirectory} (the accounts file or LDAP).
    """

    def __init__(self, config: Config, directory: IDirectory):
        self.config = config
        self.directory = directory

    def resolve(self, address: str) -> Deferred[Destination | None]:
        """
        The destination of C{address}, or L{None} when its domain is ours but
        the directory has no such mailbox (postmaster always exists). Fails
        with L{DirectoryUnavailable} when the directory cannot say.
        """
        return Deferred.fromCoroutine(self._resolve(address))

    async def _resolve(self, address: str) -> Destination | None:
        destination = route(self.config, EVERYONE, address)
        if destination is None or destination.kind in (DROP, REMOTE):
            return destination
        if destination.mailbox.partition("@")[0] == "postmaster":
            return destination
        found = await self.directory.lookup(destination.mailbox)
        return destination if found is not None else None
