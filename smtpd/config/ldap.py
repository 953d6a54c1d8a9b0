# -*- test-case-name: tests.test_config_directory -*-
"""
The values of the C{[directory]} section: LDAP URLs, search filter templates,
and the presets of attribute names and filters per directory schema.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ldaptor import ldapfilter

SCHEMAS = ("rfc2307bis", "activedirectory")
# How mail for a mailbox held by another host (the host attribute) travels there.
HOST_TRANSPORTS = ("smtp", "lmtp")

# Per schema: the filters and attributes a site gets when it leaves the key empty.
# rfc2307bis: inetOrgPerson users with the Netscape/Sun mail routing attributes
# (OpenLDAP's misc.schema names mailAlternateAddress "mailLocalAddress"), and
# nisMailAlias lists whose cn is the list address. activedirectory: users and
# groups found by proxyAddresses ("smtp:" alternates, "SMTP:" the primary).
PRESETS: dict[str, dict[str, str]] = {
    "rfc2307bis": {
        "recipient_filter": "(&(objectClass=inetOrgPerson)(|(mail=%s)(mailAlternateAddress=%s)))",
        "alias_filter": "(&(objectClass=nisMailAlias)(cn=%s))",
        "mail_attribute": "mail",
        "alternate_attribute": "mailAlternateAddress",
        "routing_attribute": "mailRoutingAddress",
        "host_attribute": "mailHost",
        "member_attribute": "rfc822MailMember",
    },
    "activedirectory": {
        "recipient_filter": "(&(objectClass=user)(|(mail=%s)(proxyAddresses=smtp:%s)))",
        "alias_filter": "(&(objectClass=group)(|(mail=%s)(proxyAddresses=smtp:%s)))",
        "mail_attribute": "mail",
        "alternate_attribute": "proxyAddresses",
        "routing_attribute": "targetAddress",
        "host_attribute": "",
        "member_attribute": "member",
    },
}

_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
_PLACEHOLDER = re.compile(r"%(.)", re.DOTALL)
_FILTER_SPECIALS = {"\\": r"\5c", "*": r"\2a", "(": r"\28", ")": r"\29", "\0": r"\00"}


def parse_ldap_url(text: str) -> str:
    """
    C{ldap://host[:port]} or C{ldaps://host[:port]} (no path: the base is its
    own key), or "" for no directory.
    """
    text = text.strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    if parts.scheme.lower() not in ("ldap", "ldaps"):
        raise ValueError(f"{text!r} is not an ldap:// or ldaps:// URL")
    if not parts.hostname:
        raise ValueError(f"{text!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r} has more than scheme, host and port")
    if port == 0:
        raise ValueError(f"{text!r}: port 0")
    return text


def ldap_url_parts(url: str) -> tuple[bool, str, int]:
    """C{(implicit TLS, host, port)} of a URL that L{parse_ldap_url} accepted."""
    parts = urlsplit(url)
    tls = parts.scheme.lower() == "ldaps"
    return tls, parts.hostname or "", parts.port or (636 if tls else 389)


def escape_filter_value(value: str) -> str:
    """C{value} escaped for an LDAP filter (RFC 4515 3): never an operator."""
    return "".join(_FILTER_SPECIALS.get(c, c) for c in value)


def fill_filter(template: str, address: str) -> str:
    """
    The filter C{template} with C{%s} (the address), C{%u} (its local part),
    C{%d} (its domain) and C{%%} replaced; values escaped.
    """
    local, _, domain = address.rpartition("@")
    values = {"s": address, "u": local, "d": domain, "%": "%"}

    def replace(match: re.Match) -> str:
        key = match[1]
        return "%" if key == "%" else escape_filter_value(values[key])

    return _PLACEHOLDER.sub(replace, template)


def parse_ldap_filter(text: str) -> str:
    """An LDAP search filter template (RFC 4515) using %s, %u, %d; "" for the preset."""
    text = text.strip()
    if not text:
        return ""
    for match in _PLACEHOLDER.finditer(text):
        if match[1] not in "sud%":
            raise ValueError(f"%{match[1]} is not a placeholder")
    if "%s" not in text and "%u" not in text:
        raise ValueError("names no address (%s) or local part (%u)")
    try:
        ldapfilter.parseFilter(fill_filter(text, "user@example.com"))
    except ldapfilter.InvalidLDAPFilter as e:
        raise ValueError(f"not an LDAP filter ({e.msg})") from None
    return text


def parse_attribute(text: str) -> str:
    """An LDAP attribute name, or "" for the preset."""
    text = text.strip()
    if text and not _ATTRIBUTE.match(text):
        raise ValueError(f"{text!r} is not an attribute name")
    return text


def parse_dn(text: str) -> str:
    """A distinguished name (kept as written), or ""."""
    text = text.strip()
    if any(ord(c) < 32 for c in text):
        raise ValueError("control characters")
    if text and "=" not in text:
        raise ValueError(f"{text!r} is not a DN such as dc=example,dc=com")
    return text
