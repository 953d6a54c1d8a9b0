# -*- test-case-name: tests.test_config -*-
"""
The configuration of an smtpd deployment: C{etc/smtpd.ini}, validated against a
schema of every section and key, into one frozen dataclass per section.

    model      the dataclasses (L{Config} and one per section), L{ConfigError}
    values     parsers of single values (durations, sizes, networks, ...)
    endpoints  Twisted endpoint strings, checked without opening them
    schema     every section and key: parser, accepted values, IIS name
    dkimkeys   the C{[domain:NAME] dkim} pairs, key files checked
    load       L{load_config}: read, validate, collect every problem
"""

from smtpd.config.load import load_config
from smtpd.config.model import (
    AccessConfig,
    AuthConfig,
    ChecksConfig,
    Config,
    ConfigError,
    DeliveryConfig,
    DKIMSelector,
    DirectoryConfig,
    DomainConfig,
    HTTPConfig,
    LoggingConfig,
    ManholeConfig,
    MessagesConfig,
    Network,
    POP3Config,
    ServerConfig,
    SmartHost,
    TLSConfig,
    TLSRPTConfig,
)

__all__ = [
    "AccessConfig",
    "AuthConfig",
    "ChecksConfig",
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "DKIMSelector",
    "DirectoryConfig",
    "DomainConfig",
    "HTTPConfig",
    "LoggingConfig",
    "ManholeConfig",
    "MessagesConfig",
    "Network",
    "POP3Config",
    "ServerConfig",
    "SmartHost",
    "TLSConfig",
    "TLSRPTConfig",
    "load_config",
]
