# -*- test-case-name: tests.test_config -*-
"""
Value parsers of the configuration: each takes the text of one INI value and
returns the typed value or raises ValueError saying what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable

from OpenSSL import SSL

from smtpd.config.model import Network, SmartHost
from smtpd.mail import intl
from smtpd.mail.address import ip_literal

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)", re.IGNORECASE | re.ASCII)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"(\d+)([km]?)", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}
_BOOLEANS = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", re.IGNORECASE | re.ASCII)


def parse_duration(text: str) -> float:
    """
    A duration in seconds: C{600} or C{600s} (seconds), C{15m}, C{4h}, C{2d}.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text.strip()!r} is not a duration")
    return float(match[1]) * _DURATION_UNITS[match[2].lower()]


def parse_size(text: str) -> int:
    """
    A size in bytes: C{1234}, C{2048K} (K = 1024 bytes), C{10M} (M = 1024K).
    C{0} stays 0, which the callers read as unlimited.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text.strip()!r} is not a size")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def parse_bool(text: str) -> bool:
    """A yes/no value: yes, no, true, false, on, off, 1, 0 (any case)."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text.strip()!r} is not yes or no") from None


def parse_list(text: str) -> list[str]:
    """The items of a comma or whitespace separated list; empty text is []."""
    return [item for item in re.split(r"[\s,]+", text) if item]


def parse_count(text: str, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number in C{minimum..maximum} (no upper bound when L{None})."""
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"{text!r} is not a whole number")
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{value} is out of range")
    return value


def parse_port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    text = text.strip()
    if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{text!r} is not a port number")
    return int(text)


def parse_networks(text: str) -> tuple[Network, ...]:
    """
    IP networks (C{127.0.0.0/8}, C{::1}); host bits are ignored, a bare
    address is a one-address network.
    """
    networks = []
    for item in parse_list(text):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network") from None
    return tuple(networks)


def _domain_problem(name: str) -> str | None:
    """What makes C{name} not a domain name (RFC 1035 host syntax), or L{None}."""
    if not name:
        return "empty name"
    if len(name) > 253:
        return "name longer than 253 characters"
    labels = name.split(".")
    for label in labels:
        if not label:
            return f"{name!r} has an empty label"
        if len(label) > 63:
            return f"label {label[:20]!r}... is longer than 63 characters"
        if not label.isascii() or _LABEL.fullmatch(label) is None:
            return (
                f"label {label!r} has characters other than letters, digits "
                "and inner hyphens (international names go in their xn-- form)"
            )
    if labels[-1].isdigit():
        return f"{name!r} is an IP address, not a domain name"
    return None


def parse_domain_name(text: str) -> str:
    """
    A domain name, lower-cased, without a trailing dot. An internationalized
    name may be written with U-labels (C{bücher.example}, kept so) or
    A-labels (C{xn--bcher-kva.example}); mail to either form finds it.
    """
    name = text.strip().lower()
    name = name[:-1] if name.endswith(".") else name
    if not name.isascii():
        try:
            unicode_name = intl.u_label_domain(name)
        except intl.IDNAError:
            raise ValueError(f"{name!r} is not a valid internationalized domain name "
                             "(IDNA 2008)") from None
        problem = _domain_problem(intl.a_label_domain(unicode_name))
        if problem is not None:
            raise ValueError(problem)
        return unicode_name
    problem = _domain_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def parse_domain_pattern(text: str) -> str:
    """
    A domain name as in L{parse_domain_name}, or a wildcard C{*.example.com}
    that matches every name below C{example.com}.
    """
    name = text.strip().lower()
    if name.startswith("*."):
        return "*." + parse_domain_name(name[2:])
    if "*" in name:
        raise ValueError(f"{name!r}: a wildcard must be the whole first label")
    return parse_domain_name(name)


def parse_hostname(text: str) -> str:
    """
    This server's fully qualified name, as written, without a trailing dot;
    ASCII (it goes in the greeting and EHLO: RFC 6531 3.7.1).
    """
    if not text.isascii():
        raise ValueError("the host name must be ASCII: write an international "
                         "name in its xn-- form")
    parse_domain_name(text)
    name = text.strip()
    return name[:-1] if name.endswith(".") else name


def parse_address(text: str) -> str:
    """
    One mail address C{local@domain} (angle brackets optional), or "" when
    empty. No spaces, control characters or brackets in the local part.
    """
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        return ""
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise ValueError(f"{text!r} is not local@domain")
    if len(local) > 64:
        raise ValueError("the local part is longer than 64 characters")
    if any(not c.isprintable() or c.isspace() or c in '<>@"' for c in local):
        raise ValueError(f"local part {local!r} has spaces, controls, quotes or brackets")
    return f"{local}@{parse_domain_name(domain)}"


def _host_port(text: str) -> tuple[str, str | None, bool]:
    """
    Split C{host[:port]} or C{[host][:port]} into (host, port text or None,
    bracketed).
    """
    match = re.fullmatch(r"\[([^\[\]]*)\](?::(.*))?", text)
    if match is not None:
        return match[1], match[2], True
    if "[" in text or "]" in text:
        raise ValueError(f"{text!r} has unbalanced brackets")
    if text.count(":") > 1:
        raise ValueError(f"{text!r}: an IPv6 address goes in brackets, as [::1]:25")
    host, colon, port = text.partition(":")
    return host, (port if colon else None), False


def parse_smart_host(text: str) -> SmartHost | None:
    """
    A smart host: C{host[:port]} (MX lookup for host) or C{[host-or-ip][:port]}
    (no MX lookup); L{None} when empty.
    """
    text = text.strip()
    if not text:
        return None
    host, port_text, bracketed = _host_port(text)
    port = None if port_text is None else parse_port(port_text)
    if bracketed:
        literal = ip_literal(host)
        return SmartHost(literal or parse_domain_name(host), port, False)
    if ip_literal(host) is not None:
        raise ValueError(f"{host!r}: an IP address goes in brackets, as [{host}]")
    return SmartHost(parse_domain_name(host), port, True)


def parse_dns_servers(text: str) -> tuple[tuple[str, int], ...]:
    """
    DNS servers as C{(ip, port)} pairs from C{ip[:port]} items (port 53 by
    default; IPv6 as C{[::1]:53} or a bare C{::1}).
    """
    servers = []
    for item in parse_list(text):
        literal = ip_literal(item)
        if literal is not None:
            servers.append((literal, 53))
            continue
        host, port_text, _ = _host_port(item)
        address = ip_literal(host)
        if address is None:
            raise ValueError(f"{host!r} is not an IP address")
        servers.append((address, 53 if port_text is None else parse_port(port_text)))
    return tuple(servers)


def parse_text(text: str) -> str:
    """A one-line text value without control characters."""
    text = text.strip()
    if any(not c.isprintable() for c in text):
        raise ValueError("control characters (a line break?) in the value")
    return text


def parse_path(text: str, root: str) -> str:
    """A file or folder path; relative paths are taken from C{root}."""
    text = parse_text(text)
    if not text:
        raise ValueError("empty path")
    return os.path.normpath(os.path.join(root, text))


def choice(*allowed: str) -> Callable[[str], str]:
    """A parser accepting one of C{allowed} (any case), returned in lower case."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"{text.strip()!r} is not one of them")
        return value

    return parse


def parse_cipher_string(text: str) -> str:
    """
    An OpenSSL cipher string (TLS 1.2 and below), or empty for the defaults;
    OpenSSL itself decides whether it selects any cipher.
    """
    text = parse_text(text)
    if not text:
        return ""
    try:
        SSL.Context(SSL.TLS_SERVER_METHOD).set_cipher_list(text.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise ValueError("OpenSSL selects no cipher with it") from None
    return text
