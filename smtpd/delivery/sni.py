# -*- test-case-name: tests.test_relay_dane_mx -*-
"""
Server Name Indication (RFC 6066 3) for outbound TLS that does not check the
peer's name itself: opportunistic TLS and DANE (RFC 7672 8.1: the client
sends the MX host name, the TLSA base domain, as SNI). Twisted's own client
options send SNI only together with a PKIX check of the name.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from smtpd.mail.address import ip_literal


@implementer(IOpenSSLClientConnectionCreator)
class ServerNameOptions:
    """
    Client TLS options that send C{name} as SNI, and otherwise are C{options}
    (a L{twisted.internet.ssl.CertificateOptions}, whose context is shared).

    @param options: the options the connection is made with.
    @param name: the host name to send (an IP literal is never sent, RFC 6066 3).
    """

    def __init__(self, options: Any, name: str):
        self.options = options
        self.name = name

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        """A client connection of C{options}, with the server name set."""
        connection = self.options.clientConnectionForTLS(tlsProtocol)
        server_name = sni_name(self.name)
        if server_name:
            connection.set_tlsext_host_name(server_name)
        return connection


def sni_name(name: str) -> bytes:
    """C{name} as the SNI C{HostName} (ASCII, no trailing dot); b"" for an IP literal or ""."""
    name = name.strip().strip("[]").rstrip(".").lower()
    if not name or ip_literal(name) is not None:
        return b""
    try:
        return name.encode("idna")
    except UnicodeError:
        return b""
