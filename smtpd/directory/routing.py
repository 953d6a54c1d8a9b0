# -*- test-case-name: tests.test_policy -*-
"""
Where a recipient address goes: a local Maildir, the drop folder, or another
host. One pure function of the configuration and the accounts, shared by the
inbound session (to accept or refuse at RCPT) and the queue (to pick a
delivery agent), so both always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpd.config import Config, DomainConfig
from smtpd.mail.address import split_address
from smtpd.mail.intl import normalize_local

LOCAL = "local"
DROP = "drop"
REMOTE = "remote"
LMTP = "lmtp"


@dataclass(frozen=True)
class Destination:
    """
    Where mail for one recipient goes.

    @ivar kind: L{LOCAL} (a Maildir here), L{DROP} (an .eml in drop/),
        L{REMOTE} (relayed) or L{LMTP} (a mail store reached by LMTP).
    @ivar domain: the recipient's domain, lower case.
    @ivar mailbox: for L{LOCAL} and L{LMTP}, the account C{local@localdomain} after alias
        mapping; "" otherwise.
    @ivar section: the governing C{[domain:...]} section, if any.
    @ivar host: the other host that holds the mailbox (the directory's host
        attribute), or "": L{REMOTE} then relays to it by SMTP, L{LMTP}
        delivers to it by LMTP, on C{port}.
    @ivar port: the port on C{host}.
    """

    kind: str
    domain: str
    mailbox: str = ""
    section: DomainConfig | None = None
    host: str = ""
    port: int = 0


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
    # The configured spelling of the domain (U-labels or A-labels), the
    # local part in NFC: the account's folder whatever form the mail used.
    mailbox = f"{normalize_local(local).lower()}@{target}"
    if mailbox in users or local.lower() == "postmaster":
        kind = LMTP if section.type == LMTP else LOCAL
        return Destination(kind, domain, mailbox, section)
    return None


LMTP_PORT = 24  # RFC 2033 4: the port LMTP servers conventionally use


def is_this_host(config: Config, host: str) -> bool:
    """
    Whether C{host} (a value of the directory's host attribute) names this
    node: empty, C{[server] hostname}, or one of C{[directory] local_hosts}.
    """
    name = host.strip().lower().rstrip(".")
    if not name:
        return True
    return name == config.server.hostname.lower().rstrip(".") or \
        name in config.directory.local_hosts


def routed_to_host(config: Config, destination: Destination | None, address: str,
                   host: str) -> Destination | None:
    """
    C{destination} of C{address}, sent on to C{host} instead when the
    directory said at RCPT that the mailbox is held there (and C{host} is not
    this node under C{config} now): by SMTP (L{REMOTE}) or LMTP
    (C{[directory] host_transport}), on C{host_port}.
    """
    if not host or is_this_host(config, host):
        return destination
    directory = config.directory
    domain = split_address(address)[1].lower()
    mailbox = destination.mailbox if destination is not None else ""
    if directory.host_transport == LMTP:
        port = directory.host_port or LMTP_PORT
        return Destination(LMTP, domain, mailbox or address.lower(), None, host, port)
    port = directory.host_port or config.delivery.remote_port
    return Destination(REMOTE, domain, "", None, host, port)
