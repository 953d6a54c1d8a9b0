# -*- test-case-name: tests.test_policy -*-
"""
Who may do what: where a recipient address goes, who may relay, who may connect.

These are pure functions of the configuration and the accounts, shared by the
inbound session (to accept or refuse at RCPT) and the queue manager (to pick a
delivery agent), so both always agree.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from smtpd.address import split_address
from smtpd.config import Config, DomainConfig, Network

LOCAL = "local"
DROP = "drop"
REMOTE = "remote"


@dataclass(frozen=True)
class Destination:
    """
    Where mail for one recipient goes.

    @ivar kind: L{LOCAL} (a Maildir here), L{DROP} (an .eml in drop/) or
        L{REMOTE} (relayed).
    @ivar domain: the recipient's domain, lower case.
    @ivar mailbox: for L{LOCAL}, the account C{local@localdomain} after alias
        mapping; "" otherwise.
    @ivar section: the governing C{[domain:...]} section, if any.
    """

    kind: str
    domain: str
    mailbox: str = ""
    section: DomainConfig | None = None


def route(config: Config, users, address: str) -> Destination | None:
    """
    The destination of C{address}, or L{None} when it names a local domain but no
    account there (RFC 5321 4.5.1: C{postmaster} always exists).

    Local parts are never interpreted: C{a%b@local}, C{a!b@local} and
    C{"a@b"@local} are local parts of the local domain like any other, so they
    can never turn into a relay.
    """
    local, domain = split_address(address)
    if not domain:
        if local.lower() != "postmaster":
            return None
        domain = config.default_domain
    section = config.domain(domain)
    if section is None or section.type == REMOTE:
        return Destination(REMOTE, domain, "", section)
    if section.type == DROP:
        return Destination(DROP, domain, "", section)
    target = section.alias_of if section.type == "alias" else section.name
    mailbox = f"{local.lower()}@{target}"
    if mailbox in users or local.lower() == "postmaster":
        return Destination(LOCAL, domain, mailbox, section)
    return None


def in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    """Whether the textual address C{ip} lies in any of C{networks}."""
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
