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
    # The configured spelling of the domain (U-labels or A-labels), the
    # local part in NFC: the account's folder whatever form the mail used.
    mailbox = f"{normalize_local(local).lower()}@{target}"
    if mailbox in users or local.lower() == "postmaster":
        kind = LMTP if section.type == LMTP else LOCAL
        return Destination(kind, domain, mailbox, section)
    return None
