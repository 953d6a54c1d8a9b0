# -*- test-case-name: tests.test_config -*-
"""
The validated configuration: one frozen dataclass per section of
C{etc/smtpd.ini}, the whole L{Config}, and L{ConfigError}.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from smtpd.config.ldap import PRESETS
from smtpd.mail.intl import domain_key

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
    command_timeout: float = 60.0
    data_timeout: float = 300.0
    min_data_rate: int = 500


@dataclass(frozen=True)
class TLSConfig:
    """[tls]: the certificate for STARTTLS and implicit TLS."""

    certificate: str = "etc/tls/smtpd.pem"
    key: str = "etc/tls/smtpd.key"
    require: bool = False
    min_version: str = "1.2"
    ciphers: str = ""


@dataclass(frozen=True)
class AuthConfig:
    """[auth]: accounts and SMTP AUTH."""

    users: str = "etc/users"
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    allow_plaintext: bool = False
    anonymous: bool = True
    sender_login_match: bool = True


@dataclass(frozen=True)
class AccessConfig:
    """
    [access]: who may connect, who may relay, how many errors are tolerated,
    the limits kept per client address across sessions, reverse DNS.
    """

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
    auth_failure_window: float = 600.0
    auth_failure_limit: int = 10
    auth_failure_delay: float = 1.0
    auth_block: float = 900.0
    connection_rate: int = 0
    message_rate: int = 0
    reverse_dns: bool = False
    reverse_dns_timeout: float = 5.0
    reject_unknown_client: bool = False
    proxy_from: tuple[Network, ...] = ()
    etrn: tuple[Network, ...] = ()


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
    mta_sts: bool = True
    dnssec: str = "no"


@dataclass(frozen=True)
class DKIMSelector:
    """
    One signing key of a domain (C{[domain:NAME] dkim}).

    @ivar selector: the DNS name under C{_domainkey} (C{s1}).
    @ivar path: the PEM private key file, absolute.
    @ivar algorithm: C{rsa-sha256} or C{ed25519-sha256}, from the key type.
    """

    selector: str
    path: str
    algorithm: str


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
    lmtp: str = ""
    dkim: tuple[DKIMSelector, ...] = ()


@dataclass(frozen=True)
class ChecksConfig:
    """
    [checks]: SPF, DKIM and DMARC on mail from clients neither authenticated
    nor in the relay list: C{off}, C{tag} (Authentication-Results only) or
    C{enforce}. An empty C{authserv_id} means [server] hostname. C{arc_seal}
    (an RSA key) makes this a forwarding host that seals (RFC 8617) as
    C{arc_domain} (empty: the default domain).
    """

    spf: str = "tag"
    dkim: str = "tag"
    dmarc: str = "tag"
    authserv_id: str = ""
    arc_seal: DKIMSelector | None = None
    arc_domain: str = ""


@dataclass(frozen=True)
class TLSRPTConfig:
    """
    [tlsrpt]: SMTP TLS Reporting (RFC 8460): the relay counts the TLS
    outcome of its connections per recipient domain, and a daily report goes
    to each domain that asks for one in C{_smtp._tls}. Empty C{sender}:
    C{noreply-smtp-tls-reporting@<[server] hostname>}; empty C{organization}:
    the sender's domain; empty C{contact}: the sender.
    """

    enabled: bool = False
    organization: str = ""
    contact: str = ""
    sender: str = ""


@dataclass(frozen=True)
class DirectoryConfig:
    """
    [directory]: an LDAP directory for recipients and AUTH; C{url} "" = off
    (the accounts file answers). Filters and attributes left "" take the
    preset of C{schema} (L{smtpd.config.ldap.PRESETS}).
    """

    url: str = ""
    starttls: bool = False
    ca_certificates: str = ""
    bind_dn: str = ""
    bind_password: str = ""
    base: str = ""
    schema: str = "rfc2307bis"
    recipient_filter: str = ""
    alias_filter: str = ""
    mail_attribute: str = ""
    alternate_attribute: str = ""
    routing_attribute: str = ""
    host_attribute: str = ""
    member_attribute: str = ""
    local_hosts: tuple[str, ...] = ()
    host_transport: str = "smtp"
    host_port: int = 0
    positive_ttl: float = 300.0
    negative_ttl: float = 60.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        preset = PRESETS.get(self.schema, PRESETS["rfc2307bis"])
        for name, value in preset.items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)

    @property
    def enabled(self) -> bool:
        """Whether an LDAP directory is configured."""
        return bool(self.url)


@dataclass(frozen=True)
class ManholeConfig:
    """[manhole]: the administration shell inside the live process."""

    telnet: tuple[str, ...] = ()
    ssh: tuple[str, ...] = ()
    users: str = "etc/manhole.passwd"
    ssh_key_dir: str = "etc/ssh"


@dataclass(frozen=True)
class POP3Config:
    """[pop3]: where recipients pick up their mail (empty = off)."""

    listen: tuple[str, ...] = ()
    pop3s: tuple[str, ...] = ()


@dataclass(frozen=True)
class HTTPConfig:
    """[http]: metrics, health checks, the status page and its JSON API (empty = off)."""

    listen: tuple[str, ...] = ()
    login: bool = False
    min_free_space: int = 100 * 1024 * 1024
    access_log: str = ""


@dataclass(frozen=True)
class LoggingConfig:
    """[logging]: where the per-command and per-delivery log lines go."""

    path: str = "-"
    format: str = "w3c"
    rotate: str = "daily"
    rotate_size: int = 10 * 1024 * 1024


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
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    tlsrpt: TLSRPTConfig = field(default_factory=TLSRPTConfig)
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    manhole: ManholeConfig = field(default_factory=ManholeConfig)
    pop3: POP3Config = field(default_factory=POP3Config)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def domain(self, name: str) -> DomainConfig | None:
        """
        The section that governs domain C{name} (compared in A-label form, so
        C{bücher.example} finds C{[domain:xn--bcher-kva.example]} and the
        other way round): an exact match first, then the
        longest matching wildcard (C{*.example.com} matches C{a.example.com} and
        C{b.a.example.com}, not C{example.com}).
        """
        # A-label and U-label spellings of a name are the same domain.
        name = domain_key(name)
        best = None
        for d in self.domains:
            pattern = domain_key(d.name)
            if pattern == name:
                return d
            if pattern.startswith("*.") and name.endswith(pattern[1:]):
                if best is None or len(d.name) > len(best.name):
                    best = d
        return best

    @property
    def local_domains(self) -> tuple[DomainConfig, ...]:
        """The domains whose mailboxes live here (type local), in file order."""
        return tuple(d for d in self.domains if d.type == "local")

    @property
    def authserv_id(self) -> str:
        """The authserv-id of our Authentication-Results fields (RFC 8601 2.5)."""
        return self.checks.authserv_id or self.server.hostname

    @property
    def arc_domain(self) -> str:
        """The C{d=} of our ARC seals."""
        return self.checks.arc_domain or self.default_domain

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
