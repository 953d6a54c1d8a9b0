# -*- test-case-name: tests.test_config -*-
"""
The configuration of an smtpd deployment: C{etc/smtpd.ini}, validated against a
schema of every section and key, into one frozen dataclass per section.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import cast

from smtpd.address import ip_literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SmartHost:
    """
    A relay host: C{host[:port]} is looked up by MX, C{[host-or-ip][:port]} is not.
    """

    host: str
    port: int | None
    mx_lookup: bool

    def __str__(self) -> str:
        name = self.host if self.mx_lookup else f"[{self.host}]"
        return name if self.port is None else f"{name}:{self.port}"


@dataclass(frozen=True)
class ServerConfig:
    """[server]: the virtual server's identity, listeners and connection limits."""

    hostname: str = "localhost"
    listen: tuple[str, ...] = ("tcp:2525:interface=127.0.0.1",)
    submission: tuple[str, ...] = ()
    smtps: tuple[str, ...] = ()
    mailroot: str = "mailroot"
    max_connections: int = 2000
    max_connections_per_ip: int = 100
    connection_timeout: float = 600.0
    banner: str = "ESMTP"


@dataclass(frozen=True)
class TLSConfig:
    """[tls]: the certificate for STARTTLS and implicit TLS."""

    certificate: str = "etc/tls/smtpd.pem"
    key: str = "etc/tls/smtpd.key"
    require: bool = False


@dataclass(frozen=True)
class AuthConfig:
    """[auth]: accounts and SMTP AUTH."""

    users: str = "etc/users"
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    allow_plaintext: bool = False
    anonymous: bool = True


@dataclass(frozen=True)
class AccessConfig:
    """[access]: who may connect, who may relay, how many errors are tolerated."""

    allow: tuple[Network, ...] = (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )
    deny: tuple[Network, ...] = ()
    relay: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    relay_authenticated: bool = True
    max_errors: int = 10
    auth_failures: int = 3


@dataclass(frozen=True)
class MessagesConfig:
    """[messages]: limits on what one message and one session may carry."""

    max_message_size: int = 2048 * 1024
    max_session_size: int = 10 * 1024 * 1024
    max_recipients: int = 100
    max_hop_count: int = 100
    ndr_copy_to: str = ""
    bare_newlines: str = "reject"


@dataclass(frozen=True)
class DeliveryConfig:
    """[delivery]: how mail for other domains leaves this server."""

    retry: tuple[float, ...] = (900.0, 1800.0, 3600.0, 14400.0)
    delay_notification: float = 43200.0
    expiration: float = 172800.0
    smart_host: SmartHost | None = None
    smart_host_fallback: bool = False
    smart_host_user: str = ""
    smart_host_password: str = ""
    outbound_tls: str = "may"
    outbound_connections: int = 1000
    outbound_connections_per_domain: int = 100
    max_messages_per_connection: int = 20
    outbound_timeout: float = 600.0
    remote_port: int = 25
    masquerade_domain: str = ""
    dns_servers: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class DomainConfig:
    """
    One [domain:NAME] section. C{name} is lower case and may start with C{*.}
    (a wildcard, for remote domains). Per-domain overrides are L{None} when unset.
    """

    name: str
    type: str = "local"
    alias_of: str = ""
    relay: bool = False
    smart_host: SmartHost | None = None
    outbound_tls: str | None = None
    remote_port: int | None = None


@dataclass(frozen=True)
class ManholeConfig:
    """[manhole]: the administration shell inside the live process."""

    telnet: str = ""
    ssh: str = ""
    users: str = "etc/manhole.passwd"
    ssh_key_dir: str = "etc/ssh"


@dataclass(frozen=True)
class LoggingConfig:
    """[logging]: where the per-command and per-delivery log lines go."""

    path: str = "-"
    format: str = "w3c"


@dataclass(frozen=True)
class Config:
    """
    A whole validated configuration. Paths in every section are absolute,
    resolved against C{root}, the parent of the folder that holds the file.
    """

    path: str
    root: str
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    messages: MessagesConfig = field(default_factory=MessagesConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    domains: tuple[DomainConfig, ...] = ()
    manhole: ManholeConfig = field(default_factory=ManholeConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def domain(self, name: str) -> DomainConfig | None:
        """
        The section that governs domain C{name}: an exact match first, then the
        longest matching wildcard (C{*.example.com} matches C{a.example.com} and
        C{b.a.example.com}, not C{example.com}).
        """
        name = name.lower().rstrip(".")
        best = None
        for d in self.domains:
            if d.name == name:
                return d
            if d.name.startswith("*.") and name.endswith(d.name[1:]):
                if best is None or len(d.name) > len(best.name):
                    best = d
        return best

    @property
    def local_domains(self) -> tuple[DomainConfig, ...]:
        """The domains whose mailboxes live here (type local), in file order."""
        return tuple(d for d in self.domains if d.type == "local")

    @property
    def default_domain(self) -> str:
        """The first local domain: where postmaster and bare local parts go."""
        local = self.local_domains
        return local[0].name if local else self.server.hostname


class ConfigError(Exception):
    """
    A configuration that cannot be used. C{problems} holds one line per problem,
    each naming the file, the section, the key, the bad value and what is
    accepted; C{str()} joins them with newlines.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


# ---------------------------------------------------------------------------
# Value parsers. Each takes the text of one INI value and returns the typed
# value or raises ValueError saying what is wrong with it.

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
    """A domain name, lower-cased, without a trailing dot."""
    name = text.strip().lower()
    name = name[:-1] if name.endswith(".") else name
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
    """This server's fully qualified name, as written, without a trailing dot."""
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


def _choice(*allowed: str) -> Callable[[str], str]:
    """A parser accepting one of C{allowed} (any case), returned in lower case."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"{text.strip()!r} is not one of them")
        return value

    return parse


# ---------------------------------------------------------------------------
# Twisted server endpoint strings, checked without building or opening them.

_ENDPOINT_PARAMETERS = {
    "tcp": ("port", "interface", "backlog"),
    "ssl": (
        "port",
        "privateKey",
        "certKey",
        "sslmethod",
        "interface",
        "backlog",
        "extraCertChain",
        "dhParameters",
    ),
    "unix": ("address", "mode", "backlog", "lockfile"),
}
_ENDPOINT_FILES = ("privateKey", "certKey", "extraCertChain", "dhParameters")


def _endpoint_parameters(description: str) -> tuple[str, dict[str, str]]:
    """
    The kind (tcp, ssl, unix) and the named parameters of an endpoint string,
    positional ones bound to their names as Twisted's own parsers bind them.
    """
    from twisted.internet.endpoints import _parse

    try:
        args, kw = _parse(description)
    except RuntimeError:
        raise ValueError(f"{description!r} ends in a lone backslash") from None
    if not args:
        raise ValueError(f"{description!r}: no endpoint type")
    kind, positional = args[0], args[1:]
    names = _ENDPOINT_PARAMETERS.get(kind)
    if names is None:
        raise ValueError(f"{description!r}: unknown endpoint type {kind!r}")
    if len(positional) > len(names):
        raise ValueError(f"{description!r}: too many parameters")
    bound = dict(zip(names, positional))
    for name, value in kw.items():
        if name not in names:
            raise ValueError(
                f"{description!r}: unknown parameter {name!r} for {kind} "
                f"(known: {', '.join(names)})"
            )
        if name in bound:
            raise ValueError(f"{description!r}: {name} given twice")
        bound[name] = value
    if names[0] not in bound:
        raise ValueError(f"{description!r}: no {names[0]}")
    return kind, bound


def _check_endpoint_value(description: str, name: str, value: str) -> None:
    """Raise ValueError when C{value} is not acceptable for parameter C{name}."""
    checks: dict[str, Callable[[str], bool]] = {
        "port": lambda v: v.isascii() and v.isdigit() and int(v) <= 65535,
        "interface": lambda v: v == "" or ip_literal(v) is not None,
        "backlog": lambda v: v.isascii() and v.isdigit() and 1 <= int(v) <= 65535,
        "mode": lambda v: re.fullmatch(r"0?[0-7]{1,3}", v) is not None,
        "lockfile": lambda v: v in ("0", "1"),
        "sslmethod": _is_ssl_method,
    }
    check = checks.get(name, lambda v: bool(v) and v.isprintable())
    if not check(value):
        raise ValueError(f"{description!r}: bad {name} {value!r}")


def _is_ssl_method(name: str) -> bool:
    """Whether C{name} names a pyOpenSSL method constant (C{TLS_METHOD})."""
    from OpenSSL import SSL

    return name.endswith("_METHOD") and isinstance(getattr(SSL, name, None), int)


def parse_endpoint(description: str, root: str = "") -> str:
    """
    A Twisted server endpoint string of kind tcp, ssl or unix, checked without
    listening or reading anything but the existence of ssl key files.
    Relative file paths in it (unix socket, ssl files) are taken from C{root};
    the string is returned unchanged unless such a path was rewritten.
    """
    kind, bound = _endpoint_parameters(description)
    for name, value in bound.items():
        _check_endpoint_value(description, name, value)
    if kind == "ssl" and "privateKey" not in bound:
        raise ValueError(
            f"{description!r}: ssl needs privateKey=PATH (smtps endpoints use "
            "the [tls] certificate instead)"
        )
    paths = [n for n in ("address", *_ENDPOINT_FILES) if n in bound]
    resolved = {n: parse_path(bound[n], root or os.getcwd()) for n in paths}
    for name in paths:
        if name != "address" and not os.path.isfile(resolved[name]):
            raise ValueError(f"{description!r}: {name}: no such file {resolved[name]}")
    if all(resolved[n] == bound[n] for n in paths):
        return description
    return _endpoint_string(kind, {**bound, **resolved})


def _endpoint_string(kind: str, bound: dict[str, str]) -> str:
    """An endpoint string for C{kind} with the parameters C{bound}, quoted."""
    from twisted.internet.endpoints import quoteStringArgument

    names = _ENDPOINT_PARAMETERS[kind]
    parts = [kind, quoteStringArgument(bound[names[0]])]
    for name in names[1:]:
        if name in bound:
            parts.append(f"{name}={quoteStringArgument(bound[name])}")
    return ":".join(parts)


def parse_endpoints(text: str, root: str = "") -> tuple[str, ...]:
    """A list of endpoint strings as in L{parse_endpoint}, space or comma separated."""
    return tuple(parse_endpoint(item, root) for item in parse_list(text))


def parse_plain_tcp_endpoints(text: str, root: str = "") -> tuple[str, ...]:
    """Endpoint strings that must all be plain C{tcp:} (the server adds TLS)."""
    endpoints = parse_endpoints(text, root)
    for endpoint in endpoints:
        if _endpoint_parameters(endpoint)[0] != "tcp":
            raise ValueError(f"{endpoint!r} is not a plain tcp: endpoint")
    return endpoints


# ---------------------------------------------------------------------------
# The schema: every section, every key, how it parses, what it accepts, and
# its IIS 6.0 metabase name where one exists. Defaults are the dataclasses'.


@dataclass(frozen=True)
class _Key:
    """
    One key of the schema: C{parse(text, root)} gives the value or raises
    ValueError; C{expected} says what is accepted; C{path} marks values
    resolved against the root (defaults too); C{secret} values are never shown.
    """

    parse: Callable[[str, str], object]
    expected: str
    iis: str = ""
    path: bool = False
    secret: bool = False


def _plain(parse: Callable[[str], object]) -> Callable[[str, str], object]:
    """Adapt a parser that does not need the root to the schema's signature."""
    return lambda text, root: parse(text)


def _key(parse: Callable[[str], object], expected: str, iis: str = "", **kw) -> _Key:
    """A schema key for a parser that does not need the root."""
    return _Key(_plain(parse), expected, iis, **kw)


def _path_key(expected: str = "a file or folder path", iis: str = "") -> _Key:
    """A schema key holding a path relative to the deployment root."""
    return _Key(parse_path, expected, iis, path=True)


def _positive_duration(text: str) -> float:
    """A duration that is not zero."""
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("zero duration")
    return value


def _retry(text: str) -> tuple[float, ...]:
    """A non-empty list of non-zero durations."""
    items = parse_list(text)
    if not items:
        raise ValueError("empty list")
    return tuple(_positive_duration(item) for item in items)


def _mechanisms(text: str) -> tuple[str, ...]:
    """SASL mechanism names out of PLAIN and LOGIN, upper-cased, each once."""
    names: list[str] = []
    for item in parse_list(text):
        name = item.upper()
        if name not in ("PLAIN", "LOGIN"):
            raise ValueError(f"{item!r} is not a supported mechanism")
        if name not in names:
            names.append(name)
    return tuple(names)


def _allow(text: str) -> tuple[Network, ...]:
    """The networks that may connect: at least one."""
    networks = parse_networks(text)
    if not networks:
        raise ValueError("empty, so no client could ever connect")
    return networks


def _log_path(text: str, root: str) -> str:
    """C{-} for twistd's log, else a file path from the root."""
    return "-" if text.strip() == "-" else parse_path(text, root)


def _not_yet(text: str) -> str:
    """A manhole listener: must be empty until the manhole exists."""
    if text.strip():
        raise ValueError("not supported yet")
    return ""


def _count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A parser for whole numbers in C{minimum..maximum}."""
    return lambda text: parse_count(text, minimum, maximum)


_DURATION_TEXT = "a duration such as 600, 600s, 15m, 4h or 2d"
_SIZE_TEXT = "a size such as 0 (unlimited), 1048576 (bytes), 2048K or 10M"
_BOOL_TEXT = "yes or no (or true/false, on/off, 1/0)"
_NETWORKS_TEXT = "IP networks or addresses such as 127.0.0.0/8 ::1, space or comma separated"
_ENDPOINTS_TEXT = (
    "Twisted endpoint strings separated by spaces, such as "
    "tcp:25:interface=127.0.0.1, ssl:465:privateKey=KEY:certKey=CERT or unix:PATH"
)
_SMART_HOST_TEXT = "empty, host[:port] (MX lookup) or [host-or-ip][:port]"
_PORT_TEXT = "a port number from 1 to 65535"
_OUTBOUND_TLS = ("none", "may", "encrypt", "verify")


def _at_least(minimum: int) -> str:
    """The expectation text for a whole number of at least C{minimum}."""
    return f"a whole number of at least {minimum}"


_SCHEMA: dict[str, tuple[type, dict[str, _Key]]] = {
    "server": (
        ServerConfig,
        {
            "hostname": _key(
                parse_hostname,
                "a fully qualified domain name such as mail.example.com",
                "FullyQualifiedDomainName",
            ),
            "listen": _Key(parse_endpoints, _ENDPOINTS_TEXT, "ServerBindings"),
            "submission": _Key(parse_endpoints, _ENDPOINTS_TEXT),
            "smtps": _Key(
                parse_plain_tcp_endpoints,
                "plain tcp: endpoint strings such as tcp:465 (the server adds TLS)",
            ),
            "mailroot": _path_key("a folder path"),
            "max_connections": _key(_count(1), _at_least(1), "MaxConnections"),
            "max_connections_per_ip": _key(_count(1), _at_least(1)),
            "connection_timeout": _key(
                _positive_duration, _DURATION_TEXT + ", not 0", "ConnectionTimeout"
            ),
            "banner": _key(parse_text, "one line of text without control characters"),
        },
    ),
    "tls": (
        TLSConfig,
        {
            "certificate": _path_key("a PEM certificate file path"),
            "key": _path_key("a PEM private key file path"),
            "require": _key(parse_bool, _BOOL_TEXT, "AccessSSL"),
        },
    ),
    "auth": (
        AuthConfig,
        {
            "users": _path_key("a file path"),
            "mechanisms": _key(
                _mechanisms, "PLAIN and/or LOGIN, or empty for no AUTH", "AuthBasic"
            ),
            "allow_plaintext": _key(parse_bool, _BOOL_TEXT),
            "anonymous": _key(parse_bool, _BOOL_TEXT, "AuthAnonymous"),
        },
    ),
    "access": (
        AccessConfig,
        {
            "allow": _key(_allow, _NETWORKS_TEXT + ", at least one", "IPSecurity"),
            "deny": _key(parse_networks, _NETWORKS_TEXT + ", or empty", "IPSecurity"),
            "relay": _key(parse_networks, _NETWORKS_TEXT + ", or empty", "RelayIpList"),
            "relay_authenticated": _key(parse_bool, _BOOL_TEXT, "RelayForAuth"),
            "max_errors": _key(_count(1), _at_least(1)),
            "auth_failures": _key(_count(1), _at_least(1)),
        },
    ),
    "messages": (
        MessagesConfig,
        {
            "max_message_size": _key(parse_size, _SIZE_TEXT, "MaxMessageSize"),
            "max_session_size": _key(parse_size, _SIZE_TEXT, "MaxSessionSize"),
            "max_recipients": _key(_count(1), _at_least(1), "MaxRecipients"),
            "max_hop_count": _key(_count(1), _at_least(1), "HopCount"),
            "ndr_copy_to": _key(
                parse_address, "empty or one address such as postmaster@example.com", "SendNdrTo"
            ),
            "bare_newlines": _key(_choice("reject", "normalize"), "reject or normalize"),
        },
    ),
    "delivery": (
        DeliveryConfig,
        {
            "retry": _key(
                _retry,
                "one or more non-zero durations such as 15m 30m 1h 4h",
                "SmtpRemoteProgressiveRetry",
            ),
            "delay_notification": _key(
                parse_duration, _DURATION_TEXT + ", or 0 for never", "SmtpRemoteDelayExpireMinutes"
            ),
            "expiration": _key(
                _positive_duration, _DURATION_TEXT + ", not 0", "SmtpRemoteNDRExpireMinutes"
            ),
            "smart_host": _key(parse_smart_host, _SMART_HOST_TEXT, "SmartHost"),
            "smart_host_fallback": _key(parse_bool, _BOOL_TEXT, "SmartHostType"),
            "smart_host_user": _key(
                parse_text, "a user name without control characters", "RouteUserName"
            ),
            "smart_host_password": _key(
                parse_text, "a password without control characters", "RoutePassword", secret=True
            ),
            "outbound_tls": _key(_choice(*_OUTBOUND_TLS), "none, may, encrypt or verify"),
            "outbound_connections": _key(_count(1), _at_least(1), "MaxOutConnections"),
            "outbound_connections_per_domain": _key(
                _count(1), _at_least(1), "MaxOutConnectionsPerDomain"
            ),
            "max_messages_per_connection": _key(_count(1), _at_least(1), "MaxBatchedMessages"),
            "outbound_timeout": _key(
                _positive_duration, _DURATION_TEXT + ", not 0", "RemoteTimeout"
            ),
            "remote_port": _key(parse_port, _PORT_TEXT, "RemoteSmtpPort"),
            "masquerade_domain": _key(
                lambda t: parse_domain_name(t) if t.strip() else "",
                "empty or a domain name such as example.com",
                "MasqueradeDomain",
            ),
            "dns_servers": _key(
                parse_dns_servers,
                "empty (/etc/resolv.conf) or IP addresses with an optional port, "
                "such as 192.0.2.53 192.0.2.54:5353 [2001:db8::53]:53",
            ),
        },
    ),
    "manhole": (
        ManholeConfig,
        {
            "telnet": _key(_not_yet, "empty"),
            "ssh": _key(_not_yet, "empty"),
            "users": _path_key("a file path"),
            "ssh_key_dir": _path_key("a folder path"),
        },
    ),
    "logging": (
        LoggingConfig,
        {
            "path": _Key(_log_path, "- (twistd's log) or a file path", path=True),
            "format": _key(_choice("w3c", "json"), "w3c or json"),
        },
    ),
}

_DOMAIN_TYPES = ("local", "alias", "drop", "remote")
_DOMAIN_SCHEMA: dict[str, _Key] = {
    "type": _key(_choice(*_DOMAIN_TYPES), "local, alias, drop or remote"),
    "alias_of": _key(parse_domain_name, "the name of a type = local domain of this file"),
    "relay": _key(parse_bool, _BOOL_TEXT),
    "smart_host": _key(parse_smart_host, _SMART_HOST_TEXT),
    "outbound_tls": _key(_choice(*_OUTBOUND_TLS), "none, may, encrypt or verify"),
    "remote_port": _key(parse_port, _PORT_TEXT),
}
_DOMAIN_KEYS = {
    "local": ("type",),
    "alias": ("type", "alias_of"),
    "drop": ("type",),
    "remote": ("type", "relay", "smart_host", "outbound_tls", "remote_port"),
}
_DOMAIN_PREFIX = "domain:"
_KNOWN_SECTIONS = ", ".join([*_SCHEMA, "domain:NAME"])
# A section name no INI header can produce: [DEFAULT] is an ordinary
# (unknown) section instead of configparser's implicit defaults.
_NO_DEFAULT_SECTION = "\n"


# ---------------------------------------------------------------------------
# Loading.


class _Problems:
    """The problem lines found in one file, in the shape SPEC section 3 gives."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        """Record a problem about the whole file or a section."""
        self.lines.append(f"{self.path}: {text}")

    def bad(self, section: str, key: str, value: str, wrong: str, expected: str) -> None:
        """Record a bad value."""
        self.add(f"[{section}] {key} = {_show(value)}: {_show(wrong)}; expected {expected}")


def _show(text: str) -> str:
    """C{text} on one line: control characters written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _read(path: str, problems: _Problems) -> configparser.ConfigParser | None:
    """The INI file parsed, or L{None} after recording why it cannot be."""
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        default_section=_NO_DEFAULT_SECTION,
        empty_lines_in_values=False,
    )
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        problems.add(f"cannot read the file: {e.strerror or e}")
        return None
    except UnicodeDecodeError as e:
        problems.add(f"not UTF-8 text (byte {e.start}); expected a UTF-8 INI file")
        return None
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        _syntax_problems(e, text.splitlines(), problems)
        return None
    return parser


def _syntax_problems(
    error: configparser.Error, lines: list[str], problems: _Problems
) -> None:
    """Record an INI syntax error in the file of C{lines}, one line per bad line."""
    if isinstance(error, configparser.DuplicateOptionError):
        problems.add(
            f"line {error.lineno}: [{error.section}] {error.option}: given twice; "
            "expected each key once per section"
        )
    elif isinstance(error, configparser.DuplicateSectionError):
        problems.add(
            f"line {error.lineno}: [{error.section}] given twice; expected each section once"
        )
    elif isinstance(error, configparser.MissingSectionHeaderError):
        problems.add(
            f"line {error.lineno}: {_show(error.line.strip())!r} comes before any "
            "[section]; expected a [section] header first"
        )
    elif isinstance(error, configparser.ParsingError):
        for lineno, _ in error.errors:
            problems.add(
                f"line {lineno}: cannot parse {_show(lines[lineno - 1].strip())!r}; "
                "expected [section], key = value, or a ; comment"
            )
    else:
        problems.add(f"{_show(str(error))}; expected an INI file")


def _parse_keys(
    section: str,
    items: dict[str, str],
    schema: dict[str, _Key],
    root: str,
    problems: _Problems,
) -> dict[str, object]:
    """The values of the known keys of one section that parse; problems recorded."""
    values: dict[str, object] = {}
    for name, text in items.items():
        key = schema.get(name)
        if key is None:
            problems.add(f"[{section}] {name}: unknown key; known keys: {', '.join(schema)}")
            continue
        try:
            values[name] = key.parse(text, root)
        except ValueError as e:
            shown = "***" if key.secret else text.strip()
            problems.bad(section, name, shown, str(e), key.expected)
    return values


def _section(
    name: str,
    items: dict[str, str],
    root: str,
    problems: _Problems,
) -> tuple[object, set[str]]:
    """One fixed section's dataclass (defaults where absent or bad), and its bad keys."""
    cls, schema = _SCHEMA[name]
    values = _parse_keys(name, items, schema, root, problems)
    bad = {k for k in items if k in schema and k not in values}
    defaults = {f.name: getattr(cls(), f.name) for f in fields(cls)}
    for key_name, key in schema.items():
        if key_name not in values and key.path:
            values[key_name] = key.parse(defaults[key_name], root)
    return cls(**values), bad


def _domain(
    section: str,
    items: dict[str, str],
    problems: _Problems,
) -> DomainConfig | None:
    """One [domain:NAME] section, or L{None} when its name or type is bad."""
    try:
        name = parse_domain_pattern(section[len(_DOMAIN_PREFIX) :])
    except ValueError as e:
        problems.add(
            f"[{section}] {_show(str(e))}; expected [domain:NAME] with NAME a domain "
            "name such as example.com, or *.example.com for type remote"
        )
        name = None
    values = _parse_keys(section, items, _DOMAIN_SCHEMA, "", problems)
    kind = values.get("type", "local" if "type" not in items else None)
    if kind is None or name is None:
        return None
    allowed = _DOMAIN_KEYS[kind]
    for key_name in items:
        if key_name in _DOMAIN_SCHEMA and key_name not in allowed:
            problems.add(
                f"[{section}] {key_name}: unknown key for type {kind}; "
                f"known keys: {', '.join(allowed)}"
            )
    if name.startswith("*.") and kind != "remote":
        problems.bad(section, "type", kind, "a wildcard domain must be type remote", "remote")
    if kind == "alias" and "alias_of" not in items:
        problems.add(
            f"[{section}] alias_of: missing; expected the name of a type = local "
            "domain of this file"
        )
    values = {k: v for k, v in values.items() if k in allowed}
    return DomainConfig(name=name, **values)


def _check_domains(
    domains: list[tuple[str, DomainConfig]], problems: _Problems
) -> None:
    """Record domains named twice and aliases that point to no local domain."""
    seen: dict[str, str] = {}
    for section, domain in domains:
        if domain.name in seen:
            problems.add(
                f"[{section}] domain {domain.name} is also [{seen[domain.name]}]; "
                "expected each domain once"
            )
        else:
            seen[domain.name] = section
    local = {d.name for _, d in domains if d.type == "local"}
    for section, domain in domains:
        if domain.type == "alias" and domain.alias_of and domain.alias_of not in local:
            problems.bad(
                section,
                "alias_of",
                domain.alias_of,
                f"no [domain:{domain.alias_of}] with type = local in this file",
                "the name of a type = local domain of this file",
            )


def _listen_address(endpoint: str) -> tuple[int, str] | None:
    """The (port, interface) a tcp or ssl endpoint binds, None for port 0 or unix."""
    kind, bound = _endpoint_parameters(endpoint)
    if kind == "unix" or int(bound["port"]) == 0:
        return None
    return int(bound["port"]), ip_literal(bound.get("interface") or "0.0.0.0") or ""


def _overlap(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """Whether two listening addresses would collide (same port, same or any address)."""
    wildcard = ("0.0.0.0", "::")
    return a[0] == b[0] and (a[1] == b[1] or a[1] in wildcard or b[1] in wildcard)


def _check_listeners(server: ServerConfig, problems: _Problems) -> None:
    """Record two listeners of [server] that would bind the same port."""
    seen: list[tuple[tuple[int, str], str, str]] = []
    for key in ("listen", "submission", "smtps"):
        for endpoint in getattr(server, key):
            address = _listen_address(endpoint)
            if address is None:
                continue
            clash = next((s for s in seen if _overlap(s[0], address)), None)
            if clash is not None:
                problems.bad(
                    "server",
                    key,
                    " ".join(getattr(server, key)),
                    f"{endpoint} binds the port of {clash[2]} in [server] {clash[1]}",
                    "each port once",
                )
            seen.append((address, key, endpoint))


def _check_across(
    sections: dict[str, object], bad: set[tuple[str, str]], problems: _Problems
) -> None:
    """Record problems that involve more than one key."""
    server = cast(ServerConfig, sections["server"])
    auth = cast(AuthConfig, sections["auth"])
    delivery = cast(DeliveryConfig, sections["delivery"])
    if not {("server", "listen"), ("server", "submission"), ("server", "smtps")} & bad:
        _check_listeners(server, problems)
    if server.submission and not auth.mechanisms and ("auth", "mechanisms") not in bad:
        problems.bad(
            "auth",
            "mechanisms",
            "",
            "empty, but [server] submission requires AUTH",
            "PLAIN and/or LOGIN",
        )
    if delivery.smart_host_fallback and delivery.smart_host is None:
        if ("delivery", "smart_host") not in bad:
            problems.bad(
                "delivery",
                "smart_host_fallback",
                "yes",
                "no [delivery] smart_host to fall back to",
                "no, or a smart_host",
            )


def load_config(path: str) -> Config:
    """
    Read and validate the INI file at C{path} (SPEC section 3) into a L{Config}.
    Relative paths resolve against the parent of the folder holding the file.

    @raise ConfigError: listing every problem found, one line each.
    """
    absolute = os.path.abspath(path)
    root = os.path.dirname(os.path.dirname(absolute))
    problems = _Problems(path)
    parser = _read(path, problems)
    if parser is None:
        raise ConfigError(problems.lines)
    sections: dict[str, object] = {}
    bad: set[tuple[str, str]] = set()
    domains: list[tuple[str, DomainConfig]] = []
    for name in parser.sections():
        items = dict(parser.items(name))
        if name in _SCHEMA:
            sections[name], bad_keys = _section(name, items, root, problems)
            bad |= {(name, k) for k in bad_keys}
        elif name.startswith(_DOMAIN_PREFIX):
            domain = _domain(name, items, problems)
            if domain is not None:
                domains.append((name, domain))
        else:
            problems.add(f"[{_show(name)}] unknown section; known sections: {_KNOWN_SECTIONS}")
    for name in _SCHEMA:
        if name not in sections:
            sections[name] = _section(name, {}, root, problems)[0]
    _check_domains(domains, problems)
    _check_across(sections, bad, problems)
    if problems.lines:
        raise ConfigError(problems.lines)
    return Config(
        path=absolute,
        root=root,
        domains=tuple(d for _, d in domains),
        **sections,  # type: ignore[arg-type]
    )
