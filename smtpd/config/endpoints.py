# -*- test-case-name: tests.test_config -*-
"""
Twisted server endpoint strings in the configuration, checked without
building or opening them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from smtpd.config.values import parse_list, parse_path
from smtpd.mail.address import ip_literal

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
    # A socket inherited from systemd (socket activation), by position or name.
    "systemd": ("domain", "index", "name"),
}
_ENDPOINT_FILES = ("privateKey", "certKey", "extraCertChain", "dhParameters")


PROXY_PREFIX = "haproxy:"


def split_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional and named parameters of an endpoint string, split as
    Twisted's parsers split them: at unescaped colons, C{name=value} at the
    first unescaped equals sign, a backslash escaping the next character.

    @raise ValueError: for a string that ends in a lone backslash.
    """
    parts: list[list[tuple[str, bool]]] = [[]]
    escaped = False
    for char in description:
        if escaped:
            parts[-1].append((char, True))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append([])
        else:
            parts[-1].append((char, False))
    if escaped:
        raise ValueError(f"{description!r} ends in a lone backslash")
    args: list[str] = []
    kw: dict[str, str] = {}
    for part in parts:
        equals = next((i for i, (c, esc) in enumerate(part) if c == "=" and not esc), None)
        text = "".join(c for c, _ in part)
        if equals is None:
            args.append(text)
        else:
            kw["".join(c for c, _ in part[:equals])] = "".join(c for c, _ in part[equals + 1 :])
    return args, kw


def endpoint_parameters(description: str) -> tuple[str, dict[str, str]]:
    """
    The kind (tcp, ssl, unix) and the named parameters of an endpoint string,
    positional ones bound to their names as Twisted's own parsers bind them.
    A C{haproxy:} prefix (PROXY protocol) is looked through.
    """
    description = description.removeprefix(PROXY_PREFIX)
    args, kw = split_endpoint(description)
    if not args or not args[0]:
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
        "domain": lambda v: v in ("INET", "INET6", "UNIX"),
        "index": lambda v: v.isascii() and v.isdigit(),
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
    A Twisted server endpoint string of kind tcp, ssl, unix or systemd, checked without
    listening or reading anything but the existence of ssl key files.
    Relative file paths in it (unix socket, ssl files) are taken from C{root};
    the string is returned unchanged unless such a path was rewritten.
    """
    if description.startswith(PROXY_PREFIX):
        inner = parse_endpoint(description[len(PROXY_PREFIX):], root)
        if inner.startswith(PROXY_PREFIX) or endpoint_parameters(inner)[0] != "tcp":
            raise ValueError(f"{description!r}: haproxy: is for tcp: endpoints")
        return PROXY_PREFIX + inner
    kind, bound = endpoint_parameters(description)
    for name, value in bound.items():
        _check_endpoint_value(description, name, value)
    if kind == "ssl" and "privateKey" not in bound:
        raise ValueError(
            f"{description!r}: ssl needs privateKey=PATH (smtps endpoints use "
            "the [tls] certificate instead)"
        )
    if kind == "systemd" and "index" not in bound and "name" not in bound:
        raise ValueError(
            f"{description!r}: systemd needs index=N or name=NAME (the socket unit's "
            "ListenStream position or FileDescriptorName)"
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
    """
    Endpoint strings that must all be plain C{tcp:}, or sockets inherited
    from systemd (the server adds TLS).
    """
    endpoints = parse_endpoints(text, root)
    for endpoint in endpoints:
        kind = endpoint_parameters(endpoint)[0]
        if kind not in ("tcp", "systemd") or endpoint.startswith(PROXY_PREFIX):
            raise ValueError(f"{endpoint!r} is not a plain tcp: (or systemd:) endpoint")
    return endpoints


def parse_lmtp_target(text: str) -> str:
    """
    Where an LMTP server listens (RFC 2033): C{unix:/absolute/path} or
    C{tcp:host:port} (an IPv6 address in brackets). Returned as written,
    stripped; L{lmtp_target_parts} splits it.
    """
    text = text.strip()
    kind, colon, rest = text.partition(":")
    if kind == "unix" and colon:
        if not rest.startswith("/") or any(ord(c) < 32 for c in rest):
            raise ValueError(f"{text!r}: the socket path must be absolute")
        return text
    if kind == "tcp" and colon:
        host, colon, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r} is not tcp:host:port")
        if any(c.isspace() or ord(c) < 32 or c in "[]/" for c in host):
            raise ValueError(f"{text!r}: {host!r} is not a host name or address")
        return text
    raise ValueError(f"{text!r} is neither unix:/path nor tcp:host:port")


def lmtp_target_parts(target: str) -> tuple[str, str, int]:
    """C{("unix", path, 0)} or C{("tcp", host, port)} of an accepted LMTP target."""
    kind, _, rest = target.partition(":")
    if kind == "unix":
        return "unix", rest, 0
    host, _, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host
    return "tcp", host, int(port)
