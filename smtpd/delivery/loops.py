# -*- test-case-name: tests.test_relay -*-
"""
Mail loops (SPEC 6): whether a host the relay would connect to is this server
itself, at one of its listening endpoints or at one of this machine's own
addresses behind a wildcard listener.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable

from smtpd.mail.address import parse_ip

# How many answers L{LocalAddresses} remembers.
LOCAL_ADDRESS_CACHE = 1024

# RFC 5737 / RFC 3849 documentation addresses: never assigned to a host, so a
# system that lets us bind them binds anything (Linux ip_nonlocal_bind).
_NEVER_LOCAL = {4: "192.0.2.1", 6: "2001:db8::1"}


def bindable(address: str) -> bool:
    """Whether a UDP socket can be bound to C{address}: the system's test for its own."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


class LocalAddresses:
    """
    Whether an IP address is one of this machine's own, as a callable:
    C{is_local("192.0.2.7")}. An address is ours when a socket can be bound
    to it; when the system lets us bind an address that is never assigned
    (non-local binding is enabled) the test proves nothing and no address
    counts as ours. Answers are remembered, at most C{limit} of them.

    @param bind: the bind test (L{bindable}).
    @param limit: how many answers to remember.
    """

    def __init__(self, bind: Callable[[str], bool] = bindable, limit: int = LOCAL_ADDRESS_CACHE):
        self._bind = bind
        self._limit = limit
        self._answers: dict[str, bool] = {}
        self._trustworthy: dict[int, bool] = {}

    def __call__(self, address: str) -> bool:
        """Whether C{address} (an IP address, IPv4 or IPv6) is ours."""
        try:
            ip = unmapped(parse_ip(address))
        except ValueError:
            return False
        key = str(ip)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._trusted(ip.version) and self._bind(key)
            if len(self._answers) >= self._limit:
                del self._answers[next(iter(self._answers))]
            self._answers[key] = answer
        return answer

    def __len__(self) -> int:
        """How many answers are remembered."""
        return len(self._answers)

    def _trusted(self, version: int) -> bool:
        if version not in self._trustworthy:
            self._trustworthy[version] = not self._bind(_NEVER_LOCAL[version])
        return self._trustworthy[version]




def unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
    """C{::ffff:a.b.c.d} as C{a.b.c.d}."""
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def is_listener(address: str, port: int, endpoints: set[tuple[str, int]],
                is_local_address: Callable[[str], bool]) -> bool:
    """
    Whether C{address}:C{port} is one of our listeners (C{endpoints}): a
    listener on that address, or a wildcard one (0.0.0.0 for IPv4, :: for
    both) when the address is loopback or one of this machine's own.
    """
    try:
        ip = unmapped(parse_ip(address))
    except ValueError:
        return False
    wildcard = False
    for local_address, local_port in endpoints:
        if local_port != port:
            continue
        try:
            local = unmapped(parse_ip(local_address))
        except ValueError:
            continue
        if local == ip:
            return True
        if local.is_unspecified and (local.version == 6 or ip.version == 4):
            wildcard = True
    return wildcard and (ip.is_loopback or is_local_address(str(ip)))
