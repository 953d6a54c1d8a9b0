# -*- test-case-name: tests.test_directory -*-
"""
The directory: who has a mailbox here, where their mail goes, and whose
password is right. L{IDirectory} is the seam between the parts that ask
(the inbound session at RCPT and AUTH, the queue's dispatcher) and the parts
that know (the accounts file, an LDAP server).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Interface


class DirectoryUnavailable(Exception):
    """
    The directory cannot answer now (server down, timeout, bad service bind).
    Not an answer about the address: the session says C{451 4.4.3}, never 550.
    """


@dataclass(frozen=True)
class Mailbox:
    """
    What the directory knows about one address.

    @ivar address: the canonical address of the mailbox (lower case), e.g. the
        C{mail} attribute when the lookup matched an alternate address.
    @ivar routing_address: where mail for it is really sent instead
        (C{mailRoutingAddress}), or "".
    @ivar host: the host that holds the mailbox (C{mailHost}), or "" for here.
    @ivar members: for an alias (a list), the addresses it expands to; empty
        for a mailbox.
    """

    address: str
    routing_address: str = ""
    host: str = ""
    members: tuple[str, ...] = ()

    @property
    def is_alias(self) -> bool:
        """Whether this address is a list that expands to other addresses."""
        return bool(self.members)

    @property
    def destinations(self) -> tuple[str, ...]:
        """The addresses a message for this one is delivered to."""
        if self.members:
            return self.members
        return (self.routing_address or self.address,)


class IDirectory(Interface):
    """
    Recipient lookup and password checks, answered asynchronously.
    """

    def lookup(address: str) -> Deferred[Mailbox | None]:
        """
        The mailbox or alias for C{address} (any case), or L{None} when the
        directory says there is none. Fails with L{DirectoryUnavailable} when
        it cannot say.
        """

    def authenticate(login: str, password: bytes) -> Deferred[bool]:
        """
        Whether C{password} is the password of C{login}. An empty password is
        never right. Fails with L{DirectoryUnavailable} when the directory
        cannot say.
        """
