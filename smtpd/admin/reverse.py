# -*- test-case-name: tests.test_admin -*-
"""
Reverse DNS names of session peers for the sessions list: looked up in the
background the first time an address is listed, shown once known (IIS
Current Sessions shows the client's name the same way). Nothing is looked up
on the mail path: sessions are never delayed by a PTR query.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from twisted.names import dns

# Addresses remembered (names and failures), oldest forgotten first.
CACHE_SIZE = 4096
TIMEOUT = (2,)


class ReverseNames:
    """
    PTR names by address, from C{resolver} (an C{IResolver}).

    @ivar known: address -> name ("" when the lookup failed or found none).
    """

    def __init__(self, resolver):
        self.resolver = resolver
        self.known: OrderedDict[str, str] = OrderedDict()
        self._asking: set[str] = set()

    def name(self, address: str) -> str:
        """The name of C{address} when known, else "" (and a lookup starts)."""
        if address in self.known:
            self.known.move_to_end(address)
            return self.known[address]
        if address not in self._asking and self.resolver is not None:
            self._ask(address)
        return ""

    def _ask(self, address: str) -> None:
        try:
            query = ipaddress.ip_address(address).reverse_pointer
        except ValueError:
            self._remember(address, "")
            return
        self._asking.add(address)
        d = self.resolver.lookupPointer(query, timeout=TIMEOUT)
        d.addCallback(_first_name)
        d.addErrback(lambda failure: "")
        d.addCallback(lambda name: self._remember(address, name))

    def _remember(self, address: str, name: str) -> None:
        self._asking.discard(address)
        self.known[address] = name
        while len(self.known) > CACHE_SIZE:
            self.known.popitem(last=False)


def _first_name(result) -> str:
    """The first PTR name of an answer, printable, without the final dot."""
    answers = result[0]
    for record in answers:
        if record.type == dns.PTR:
            name = record.payload.name.name.decode("ascii", "replace").rstrip(".")
            return "".join(c if c.isprintable() and c != " " else "?" for c in name[:253])
    return ""
