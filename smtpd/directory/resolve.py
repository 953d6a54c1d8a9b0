# -*- test-case-name: tests.test_directory -*-
"""
Recipient validation through an L{IDirectory}: the domain rules of
L{smtpd.directory.routing.route} (local, alias, drop, remote, lmtp), then, for
an address of a domain whose mailboxes are ours, the directory's answer. Used
by the inbound session at RCPT, asynchronously, so that an LDAP directory that
is down gives C{451 4.4.3} and never C{550 5.1.1}.

The answer also says which envelope recipients to queue for the address, as
Postfix's virtual alias maps rewrite them before the queue: a list's members,
a user's routing address, or the mailbox's canonical address; and, for a
mailbox whose host attribute names another host (Sendmail's LDAP routing,
the LASER draft's C{mailHost}), that host, which the queue relays the
recipient to (as its routing address when it has one) instead of delivering
it here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred

from smtpd.config import Config
from smtpd.directory.interfaces import IDirectory, Mailbox
from smtpd.directory.routing import DROP, REMOTE, Destination, is_this_host, route


class _Everyone:
    """An account list that contains every address: the directory decides instead."""

    def __contains__(self, address: object) -> bool:
        return True


MAX_DEPTH = 10  # lists of lists (Postfix: virtual_alias_recursion_limit 1000)
MAX_EXPANSION = 1000  # addresses one RCPT may become (virtual_alias_expansion_limit)

EVERYONE = _Everyone()
"""The accounts for L{route} when a directory has vouched for the recipients."""


@dataclass(frozen=True)
class Resolved:
    """
    Where an accepted recipient goes.

    @ivar destination: its L{Destination}.
    @ivar recipients: the addresses to queue in its place (itself, a list's
        members, a routing address, or its mailbox's canonical address).
    @ivar hosts: for those of C{recipients} whose mailbox another host
        holds, that host by address.
    """

    destination: Destination
    recipients: tuple[str, ...]
    hosts: dict[str, str] = field(default_factory=dict)


class RecipientResolver:
    """
    Where recipient addresses go, with the directory's word on mailboxes.

    @param config: the L{Config}; replace it on reload.
    @param directory: the L{IDirectory} (the accounts file or LDAP).
    """

    def __init__(self, config: Config, directory: IDirectory):
        self.config = config
        self.directory = directory

    def resolve(self, address: str) -> Deferred[Resolved | None]:
        """
        Where C{address} goes, or L{None} when its domain is ours but the
        directory has no such mailbox (postmaster always exists). Fails with
        L{DirectoryUnavailable} when the directory cannot say.
        """
        return Deferred.fromCoroutine(self._resolve(address))

    async def _resolve(self, address: str) -> Resolved | None:
        destination = route(self.config, EVERYONE, address)
        if destination is None:
            return None
        if destination.kind in (DROP, REMOTE):
            return Resolved(destination, (address,))
        found = await self.directory.lookup(destination.mailbox)
        if found is None:
            if destination.mailbox.partition("@")[0] != "postmaster":
                return None
            return Resolved(destination, (address,))
        host = self.elsewhere(found)
        if host:
            target = found.routing_address or found.address
            return Resolved(destination, (target,), {target: host})
        seen = {address.lower(), destination.mailbox}
        hosts: dict[str, str] = {}
        expanded = await self._expand(found.destinations, MAX_DEPTH, seen, hosts)
        kept = tuple(expanded[:MAX_EXPANSION])
        return Resolved(destination, kept, {a: hosts[a] for a in kept if a in hosts})

    def elsewhere(self, mailbox: Mailbox) -> str:
        """The other host that holds C{mailbox}, or "" when it is held here (or is a list)."""
        if mailbox.is_alias or is_this_host(self.config, mailbox.host):
            return ""
        return mailbox.host

    async def _expand(self, addresses: tuple[str, ...], depth: int, seen: set[str],
                      hosts: dict[str, str]) -> list[str]:
        """
        C{addresses} with those of our domains that the directory rewrites
        (lists, routing addresses) replaced by what they become, recursively;
        each address once, at most C{depth} levels (a loop ends there). A
        mailbox held by another host is not followed further: its address
        (or routing address) goes into C{hosts} with that host.
        """
        result: list[str] = []
        for address in addresses:
            destination = route(self.config, EVERYONE, address)
            if depth == 0 or destination is None or destination.kind in (DROP, REMOTE):
                result.append(address)
                continue
            found = await self.directory.lookup(destination.mailbox)
            host = self.elsewhere(found) if found is not None else ""
            if host:
                target = found.routing_address or found.address
                hosts.setdefault(target, host)
                result.append(target)
                continue
            if found is None or found.destinations == (destination.mailbox,):
                result.append(address if found is None else destination.mailbox)
                continue
            fresh = tuple(a for a in found.destinations if a not in seen)
            seen.update(fresh)
            result += await self._expand(fresh, depth - 1, seen, hosts)
        return list(dict.fromkeys(result))
