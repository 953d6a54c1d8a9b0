# -*- test-case-name: tests.test_config -*-
"""
Loading C{etc/smtpd.ini}: the INI file read, every section and key validated
against the schema, every problem collected, into one L{Config}.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import fields
from typing import cast

from smtpd.config.endpoints import endpoint_parameters
from smtpd.config.model import (
    AccessConfig,
    AuthConfig,
    Config,
    ConfigError,
    DeliveryConfig,
    DirectoryConfig,
    DomainConfig,
    ServerConfig,
)
from smtpd.config.schema import (
    DOMAIN_KEYS,
    DOMAIN_PREFIX,
    DOMAIN_SCHEMA,
    _KNOWN_SECTIONS,
    _NO_DEFAULT_SECTION,
    SCHEMA,
    Key,
)
from smtpd.config.values import parse_domain_pattern
from smtpd.mail.address import ip_literal


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
    schema: dict[str, Key],
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
    cls, schema = SCHEMA[name]
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
        name = parse_domain_pattern(section[len(DOMAIN_PREFIX) :])
    except ValueError as e:
        problems.add(
            f"[{section}] {_show(str(e))}; expected [domain:NAME] with NAME a domain "
            "name such as example.com, or *.example.com for type remote"
        )
        name = None
    values = _parse_keys(section, items, DOMAIN_SCHEMA, "", problems)
    kind = values.get("type", "local" if "type" not in items else None)
    if kind is None or name is None:
        return None
    allowed = DOMAIN_KEYS[kind]
    for key_name in items:
        if key_name in DOMAIN_SCHEMA and key_name not in allowed:
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
    if kind == "lmtp" and "lmtp" not in items:
        problems.add(
            f"[{section}] lmtp: missing; expected where the LMTP server listens: "
            "unix:/path or tcp:host:port"
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
    """The (port, interface) a tcp or ssl endpoint binds, None for port 0, unix or systemd."""
    kind, bound = endpoint_parameters(endpoint)
    if kind in ("unix", "systemd") or int(bound["port"]) == 0:
        return None
    return int(bound["port"]), ip_literal(bound.get("interface") or "0.0.0.0") or ""


def _overlap(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """Whether two listening addresses would collide (same port, same or any address)."""
    wildcard = ("0.0.0.0", "::")
    return a[0] == b[0] and (a[1] == b[1] or a[1] in wildcard or b[1] in wildcard)


def _check_listeners(sections: dict[str, object], problems: _Problems) -> None:
    """Record two listeners ([server] and [pop3]) that would bind the same port."""
    seen: list[tuple[tuple[int, str], str, str]] = []
    for section, key in _LISTENER_KEYS:
        endpoints = getattr(sections[section], key)
        for endpoint in endpoints:
            address = _listen_address(endpoint)
            if address is None:
                continue
            clash = next((s for s in seen if _overlap(s[0], address)), None)
            if clash is not None:
                problems.bad(
                    section,
                    key,
                    " ".join(endpoints),
                    f"{endpoint} binds the port of {clash[2]} in {clash[1]}",
                    "each port once",
                )
            seen.append((address, f"[{section}] {key}", endpoint))


_LISTENER_KEYS = (("server", "listen"), ("server", "submission"), ("server", "smtps"),
                  ("pop3", "listen"), ("pop3", "pop3s"))


def _check_across(
    sections: dict[str, object], bad: set[tuple[str, str]], problems: _Problems
) -> None:
    """Record problems that involve more than one key."""
    server = cast(ServerConfig, sections["server"])
    auth = cast(AuthConfig, sections["auth"])
    delivery = cast(DeliveryConfig, sections["delivery"])
    if not set(_LISTENER_KEYS) & bad:
        _check_listeners(sections, problems)
    if server.submission and not auth.mechanisms and ("auth", "mechanisms") not in bad:
        problems.bad(
            "auth",
            "mechanisms",
            "",
            "empty, but [server] submission requires AUTH",
            "PLAIN and/or LOGIN",
        )
    access = cast(AccessConfig, sections["access"])
    if access.reject_unknown_client and not access.reverse_dns:
        if ("access", "reverse_dns") not in bad:
            problems.bad(
                "access",
                "reject_unknown_client",
                "yes",
                "it needs reverse_dns = yes to know client names",
                "no, or reverse_dns = yes",
            )
    _check_directory(cast(DirectoryConfig, sections["directory"]), bad, problems)
    _check_proxies(sections, bad, problems)
    if delivery.smart_host_fallback and delivery.smart_host is None:
        if ("delivery", "smart_host") not in bad:
            problems.bad(
                "delivery",
                "smart_host_fallback",
                "yes",
                "no [delivery] smart_host to fall back to",
                "no, or a smart_host",
            )


def _check_proxies(
    sections: dict[str, object], bad: set[tuple[str, str]], problems: _Problems
) -> None:
    """Record haproxy: listeners when no proxy may use them."""
    access = cast(AccessConfig, sections["access"])
    if access.proxy_from or ("access", "proxy_from") in bad:
        return
    for section, key in (("server", "listen"), ("server", "submission"), ("pop3", "listen")):
        endpoints = getattr(sections[section], key)
        proxied = [e for e in endpoints if e.startswith("haproxy:")]
        if proxied:
            problems.bad(
                section, key, " ".join(endpoints),
                f"{proxied[0]} speaks the PROXY protocol but [access] proxy_from is empty",
                "[access] proxy_from listing the load balancers' addresses",
            )


def _check_directory(
    directory: DirectoryConfig, bad: set[tuple[str, str]], problems: _Problems
) -> None:
    """Record a directory URL without a base, or StartTLS inside ldaps://."""
    if not directory.url:
        return
    if not directory.base and ("directory", "base") not in bad:
        problems.add(
            "[directory] base: missing; expected the DN to search under, "
            "such as dc=example,dc=com, when url is set"
        )
    if directory.starttls and directory.url.lower().startswith("ldaps:"):
        problems.bad(
            "directory", "starttls", "yes", "ldaps:// is already encrypted",
            "no with ldaps://, or an ldap:// url",
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
        if name in SCHEMA:
            sections[name], bad_keys = _section(name, items, root, problems)
            bad |= {(name, k) for k in bad_keys}
        elif name.startswith(DOMAIN_PREFIX):
            domain = _domain(name, items, problems)
            if domain is not None:
                domains.append((name, domain))
        else:
            problems.add(f"[{_show(name)}] unknown section; known sections: {_KNOWN_SECTIONS}")
    for name in SCHEMA:
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
