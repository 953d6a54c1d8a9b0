# -*- test-case-name: tests.test_config -*-
"""
The schema of C{etc/smtpd.ini}: every section, every key, how it parses, what
it accepts, and its IIS 6.0 metabase name where one exists. Defaults are the
dataclasses' of L{smtpd.config.model}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smtpd.config.dkimkeys import EXPECTED as _DKIM_TEXT
from smtpd.config.dkimkeys import ARC_EXPECTED, parse_arc_seal, parse_dkim
from smtpd.config.ldap import (
    HOST_TRANSPORTS,
    SCHEMAS,
    parse_attribute,
    parse_dn,
    parse_ldap_filter,
    parse_ldap_url,
)
from smtpd.config.endpoints import (
    parse_endpoints,
    parse_lmtp_target,
    parse_plain_tcp_endpoints,
)
from smtpd.config.model import (
    AccessConfig,
    AuthConfig,
    ChecksConfig,
    DeliveryConfig,
    DirectoryConfig,
    HTTPConfig,
    LoggingConfig,
    ManholeConfig,
    MessagesConfig,
    Network,
    POP3Config,
    ServerConfig,
    TLSConfig,
    TLSRPTConfig,
)
from smtpd.config.values import (
    choice,
    parse_address,
    parse_bool,
    parse_cipher_string,
    parse_count,
    parse_dns_servers,
    parse_domain_name,
    parse_duration,
    parse_hostname,
    parse_list,
    parse_networks,
    parse_path,
    parse_port,
    parse_size,
    parse_smart_host,
    parse_text,
)


@dataclass(frozen=True)
class Key:
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


def _key(parse: Callable[[str], object], expected: str, iis: str = "", **kw) -> Key:
    """A schema key for a parser that does not need the root."""
    return Key(_plain(parse), expected, iis, **kw)


def _path_key(expected: str = "a file or folder path", iis: str = "") -> Key:
    """A schema key holding a path relative to the deployment root."""
    return Key(parse_path, expected, iis, path=True)


def _positive_duration(text: str) -> float:
    """A duration that is not zero."""
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("zero duration")
    return value


def _host_names(text: str) -> tuple[str, ...]:
    """Host names (lower case, no trailing dot) that mean this node in the host attribute."""
    return tuple(parse_hostname(item).lower() for item in parse_list(text))


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


def _rotate_size(text: str) -> int:
    """A log file size that is not zero (0 would rotate after every line)."""
    value = parse_size(text)
    if value <= 0:
        raise ValueError("zero size")
    return value


def _count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A parser for whole numbers in C{minimum..maximum}."""
    return lambda text: parse_count(text, minimum, maximum)


_DURATION_TEXT = "a duration such as 600, 600s, 15m, 4h or 2d"
_SIZE_TEXT = "a size such as 0 (unlimited), 1048576 (bytes), 2048K or 10M"
_BOOL_TEXT = "yes or no (or true/false, on/off, 1/0)"
_NETWORKS_TEXT = "IP networks or addresses such as 127.0.0.0/8 ::1, space or comma separated"
_ENDPOINTS_TEXT = (
    "Twisted endpoint strings separated by spaces, such as "
    "tcp:25:interface=127.0.0.1, ssl:465:privateKey=KEY:certKey=CERT, unix:PATH or "
    "systemd:domain=INET6:index=0 (a socket inherited from systemd)"
)
_SMART_HOST_TEXT = "empty, host[:port] (MX lookup) or [host-or-ip][:port]"
_FILTER_TEXT = (
    "empty (the schema's preset) or an LDAP filter with %s (address), %u (local part), "
    "%d (domain), such as (&(objectClass=inetOrgPerson)(mail=%s))"
)
_ATTRIBUTE_TEXT = "empty (the schema's preset) or an LDAP attribute name such as mail"
_PORT_TEXT = "a port number from 1 to 65535"
_OUTBOUND_TLS = ("none", "may", "encrypt", "verify")
_CHECK_MODES = ("off", "tag", "enforce")
_CHECK_TEXT = "off, tag (Authentication-Results only) or enforce"


def _at_least(minimum: int) -> str:
    """The expectation text for a whole number of at least C{minimum}."""
    return f"a whole number of at least {minimum}"


SCHEMA: dict[str, tuple[type, dict[str, Key]]] = {
    "server": (
        ServerConfig,
        {
            "hostname": _key(
                parse_hostname,
                "a fully qualified domain name such as mail.example.com",
                "FullyQualifiedDomainName",
            ),
            "listen": Key(parse_endpoints, _ENDPOINTS_TEXT, "ServerBindings"),
            "submission": Key(parse_endpoints, _ENDPOINTS_TEXT),
            "smtps": Key(
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
            "command_timeout": _key(_positive_duration, _DURATION_TEXT + ", not 0"),
            "data_timeout": _key(_positive_duration, _DURATION_TEXT + ", not 0"),
            "min_data_rate": _key(_count(0), "bytes per second, a whole number (0: none)"),
        },
    ),
    "tls": (
        TLSConfig,
        {
            "certificate": _path_key("a PEM certificate file path"),
            "key": _path_key("a PEM private key file path"),
            "require": _key(parse_bool, _BOOL_TEXT, "AccessSSL"),
            "min_version": _key(choice("1.2", "1.3"), "1.2 or 1.3"),
            "ciphers": _key(
                parse_cipher_string,
                "empty (the defaults) or an OpenSSL cipher string such as "
                "ECDHE+AESGCM:ECDHE+CHACHA20",
            ),
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
            "sender_login_match": _key(parse_bool, _BOOL_TEXT),
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
            "auth_failure_window": _key(_positive_duration, _DURATION_TEXT + ", not 0"),
            "auth_failure_limit": _key(_count(0), "a whole number (0: no block)"),
            "auth_failure_delay": _key(parse_duration, _DURATION_TEXT + ", or 0"),
            "auth_block": _key(_positive_duration, _DURATION_TEXT + ", not 0"),
            "connection_rate": _key(_count(0), "connections a minute, a whole number (0: no limit)"),
            "message_rate": _key(_count(0), "messages a minute, a whole number (0: no limit)"),
            "reverse_dns": _key(parse_bool, _BOOL_TEXT, "EnableReverseDnsLookup"),
            "reverse_dns_timeout": _key(_positive_duration, _DURATION_TEXT + ", not 0"),
            "reject_unknown_client": _key(parse_bool, _BOOL_TEXT),
            "proxy_from": _key(parse_networks, _NETWORKS_TEXT + ", or empty"),
            "etrn": _key(parse_networks, _NETWORKS_TEXT + ", or empty"),
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
            "bare_newlines": _key(choice("reject", "normalize"), "reject or normalize"),
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
            "outbound_tls": _key(choice(*_OUTBOUND_TLS), "none, may, encrypt or verify"),
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
            "mta_sts": _key(parse_bool, _BOOL_TEXT),
            "dnssec": _key(choice("no", "trust-ad"), "no or trust-ad"),
        },
    ),
    "checks": (
        ChecksConfig,
        {
            "spf": _key(choice(*_CHECK_MODES), _CHECK_TEXT),
            "dkim": _key(choice(*_CHECK_MODES), _CHECK_TEXT),
            "dmarc": _key(choice(*_CHECK_MODES), _CHECK_TEXT),
            "authserv_id": _key(
                lambda t: parse_hostname(t) if t.strip() else "",
                "empty ([server] hostname) or a name such as mx.example.com",
            ),
            "arc_seal": Key(parse_arc_seal, ARC_EXPECTED),
            "arc_domain": _key(
                lambda t: parse_domain_name(t) if t.strip() else "",
                "empty (the default domain) or a domain name such as example.com",
            ),
        },
    ),
    "tlsrpt": (
        TLSRPTConfig,
        {
            "enabled": _key(parse_bool, _BOOL_TEXT),
            "organization": _key(parse_text, "one line of text, such as Example Inc., or empty"),
            "contact": _key(
                parse_text,
                "empty (the sender) or an address or URL such as tlsrpt@example.com",
            ),
            "sender": _key(
                parse_address,
                "empty (noreply-smtp-tls-reporting@ the [server] hostname) or one address "
                "such as tlsrpt@example.com",
            ),
        },
    ),
    "directory": (
        DirectoryConfig,
        {
            "url": _key(parse_ldap_url, "empty (no directory), ldap://host[:port] or ldaps://host[:port]"),
            "starttls": _key(parse_bool, _BOOL_TEXT),
            "ca_certificates": Key(
                lambda t, root: parse_path(t, root) if t.strip() else "",
                "empty (the system's trusted CAs) or a PEM file path",
            ),
            "bind_dn": _key(parse_dn, "empty (anonymous) or a DN such as cn=smtpd,dc=example,dc=com"),
            "bind_password": _key(parse_text, "a password without control characters", secret=True),
            "base": _key(parse_dn, "a DN such as dc=example,dc=com"),
            "schema": _key(choice(*SCHEMAS), "rfc2307bis or activedirectory"),
            "recipient_filter": _key(parse_ldap_filter, _FILTER_TEXT),
            "alias_filter": _key(parse_ldap_filter, _FILTER_TEXT),
            "mail_attribute": _key(parse_attribute, _ATTRIBUTE_TEXT),
            "alternate_attribute": _key(parse_attribute, _ATTRIBUTE_TEXT),
            "routing_attribute": _key(parse_attribute, _ATTRIBUTE_TEXT),
            "host_attribute": _key(parse_attribute, _ATTRIBUTE_TEXT),
            "member_attribute": _key(parse_attribute, _ATTRIBUTE_TEXT),
            "local_hosts": _key(_host_names, "empty or host names such as mx1.example.com"),
            "host_transport": _key(choice(*HOST_TRANSPORTS), "smtp or lmtp"),
            "host_port": _key(lambda t: parse_port(t) if t.strip() else 0,
                              "empty (smtp: [delivery] remote_port, lmtp: 24) or " + _PORT_TEXT),
            "positive_ttl": _key(parse_duration, _DURATION_TEXT + ", or 0 for no caching"),
            "negative_ttl": _key(parse_duration, _DURATION_TEXT + ", or 0 for no caching"),
            "timeout": _key(_positive_duration, _DURATION_TEXT + ", not 0"),
        },
    ),
    "manhole": (
        ManholeConfig,
        {
            "telnet": Key(parse_endpoints, _ENDPOINTS_TEXT + ", or empty (off)"),
            "ssh": Key(parse_endpoints, _ENDPOINTS_TEXT + ", or empty (off)"),
            "users": _path_key("a file path"),
            "ssh_key_dir": _path_key("a folder path"),
        },
    ),
    "pop3": (
        POP3Config,
        {
            "listen": Key(parse_endpoints, _ENDPOINTS_TEXT),
            "pop3s": Key(
                parse_plain_tcp_endpoints,
                "plain tcp: endpoint strings such as tcp:995 (the server adds TLS)",
            ),
        },
    ),
    "http": (
        HTTPConfig,
        {
            "listen": Key(
                parse_plain_tcp_endpoints,
                "plain tcp: endpoint strings such as tcp:8025:interface=127.0.0.1 (the server "
                "adds TLS beyond loopback), or empty (off)",
            ),
            "login": _key(parse_bool, _BOOL_TEXT),
            "min_free_space": _key(parse_size, "a size such as 0 (no check), 104857600 (bytes), "
                                   "2048K or 100M"),
            "access_log": Key(
                lambda t, root: parse_path(t, root) if t.strip() else "",
                "empty (no access log) or a file path",
            ),
        },
    ),
    "logging": (
        LoggingConfig,
        {
            "path": Key(_log_path, "- (twistd's log) or a file path", path=True),
            "format": _key(choice("w3c", "json"), "w3c or json"),
            "rotate": _key(choice("daily", "size", "none"), "daily, size or none"),
            "rotate_size": _key(
                _rotate_size, "a size such as 1048576 (bytes), 2048K or 10M, not 0"
            ),
        },
    ),
}

DOMAIN_TYPES = ("local", "alias", "drop", "remote", "lmtp")
DOMAIN_SCHEMA: dict[str, Key] = {
    "type": _key(choice(*DOMAIN_TYPES), "local, alias, drop, remote or lmtp"),
    "alias_of": _key(parse_domain_name, "the name of a type = local domain of this file"),
    "relay": _key(parse_bool, _BOOL_TEXT),
    "smart_host": _key(parse_smart_host, _SMART_HOST_TEXT),
    "outbound_tls": _key(choice(*_OUTBOUND_TLS), "none, may, encrypt or verify"),
    "remote_port": _key(parse_port, _PORT_TEXT),
    "lmtp": _key(parse_lmtp_target, "unix:/absolute/path or tcp:host:port"),
    "dkim": Key(parse_dkim, _DKIM_TEXT),
}
DOMAIN_KEYS = {
    "local": ("type", "dkim"),
    "alias": ("type", "alias_of", "dkim"),
    "drop": ("type",),
    "remote": ("type", "relay", "smart_host", "outbound_tls", "remote_port"),
    "lmtp": ("type", "lmtp"),
}
DOMAIN_PREFIX = "domain:"
_KNOWN_SECTIONS = ", ".join([*SCHEMA, "domain:NAME"])
# A section name no INI header can produce: [DEFAULT] is an ordinary
# (unknown) section instead of configparser's implicit defaults.
_NO_DEFAULT_SECTION = "\n"
