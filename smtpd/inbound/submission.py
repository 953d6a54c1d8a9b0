# -*- test-case-name: tests.test_submission -*-
"""
The sender rules of the submission and implicit-TLS endpoints (RFC 6409 6.1,
C{[auth] sender_login_match}): an authenticated user sends only as an address
it owns, and the null sender, which only bounces use, is refused there.
"""

from __future__ import annotations

from smtpd.config import Config
from smtpd.mail.intl import domain_key, normalize_local


def canonical_domain(config: Config, domain: str) -> str:
    """
    C{domain} in lower-case A-label form, an alias domain replaced by the
    domain it aliases.
    """
    domain = domain.lower().rstrip(".")
    section = config.domain(domain)
    if section is not None and section.type == "alias" and section.alias_of:
        return domain_key(section.alias_of)
    return domain_key(domain)


def owns(config: Config, login: str, sender: str) -> bool:
    """
    Whether account C{login} owns C{sender}: the same local part (accounts
    are case-insensitive, UTF-8 ones compared in NFC) at the same domain
    (either spelling of an internationalized one) or one of its alias domains.
    """
    local, at, domain = sender.rpartition("@")
    login_local, _, login_domain = login.rpartition("@")
    if not at or normalize_local(local).lower() != normalize_local(login_local).lower():
        return False
    return canonical_domain(config, domain) == canonical_domain(config, login_domain)


def sender_refusal(config: Config, login: str | None, sender: str) -> str | None:
    """
    The C{553} text for MAIL FROM C{sender} on a submission or implicit-TLS
    endpoint, or L{None} when it may be used.
    """
    if not config.auth.sender_login_match:
        return None
    if not sender:
        return "5.7.1 <>: Sender address rejected: the null sender is not used for submission"
    if login is not None and not owns(config, login, sender):
        return f"5.7.1 <{sender}>: Sender address rejected: not owned by user {login}"
    return None
