# -*- test-case-name: tests.test_policy -*-
"""
Who may do what: who may connect, who may relay (SPEC 5).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from smtpd.config import Config, Network
from smtpd.directory.routing import REMOTE, Destination


@lru_cache(maxsize=4096)
def in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    """
    Whether the textual address C{ip} lies in any of C{networks}. Asked
    several times per session (connect, MAIL, RCPT, the trace header) for
    few distinct clients and one config: the answers are kept (the config's
    network tuples are immutable; a reload brings new tuples, new keys).
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


def may_connect(config: Config, ip: str) -> bool:
    """C{[access]}: allowed and not denied (deny wins)."""
    access = config.access
    return in_networks(ip, access.allow) and not in_networks(ip, access.deny)


def may_relay(config: Config, ip: str, authenticated: bool, dest: Destination) -> bool:
    """
    The relay rule (SPEC 5): a non-local recipient is accepted only from a relay
    client, an authenticated session (when C{relay_authenticated}), or for a
    remote domain configured with C{relay = yes} (backup MX).
    """
    if dest.kind != REMOTE:
        return True
    if dest.section is not None and dest.section.relay:
        return True
    if authenticated and config.access.relay_authenticated:
        return True
    return in_networks(ip, config.access.relay)
