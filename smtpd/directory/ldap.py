# -*- test-case-name: tests.test_directory_ldap -*-
"""
The LDAP directory ([directory] in etc/smtpd.ini): recipients, aliases and
per-user routing looked up in OpenLDAP, Active Directory or any LDAP v3
server, and AUTH checked by a simple bind as the user.

Searches go over one long-lived connection bound as the service account
(C{bind_dn}); each password check binds on a connection of its own, so a
user's bind never changes what the service connection may read. Answers are
cached (C{positive_ttl}, C{negative_ttl}); failures never are.
"""

from __future__ import annotations

from ldaptor.protocols import pureldap
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from smtpd.config import DirectoryConfig
from smtpd.config.ldap import ldap_url_parts
from smtpd.directory.cache import MISSING, AnswerCache
from smtpd.directory.interfaces import DirectoryUnavailable, IDirectory, Mailbox
from smtpd.directory.ldapfilter import FilterTemplate
from smtpd.directory.ldapclient import (
    INVALID_CREDENTIALS,
    SUCCESS,
    Entry,
    LDAPConnection,
    LDAPServer,
    connect,
)

log = Logger()

_MAX_MEMBERS = 1000  # a list bigger than this is cut, and the cut is logged


def server_for(config: DirectoryConfig) -> LDAPServer:
    """
    The L{LDAPServer} that C{config} names, with its TLS options (reads the
    C{ca_certificates} file).
    """
    tls, host, port = ldap_url_parts(config.url)
    options = None
    if tls or config.starttls:
        trust = None
        if config.ca_certificates:
            with open(config.ca_certificates, "rb") as f:
                trust = ssl.trustRootFromCertificates(
                    [ssl.Certificate.loadPEM(pem) for pem in _pem_blocks(f.read())]
                )
        options = ssl.optionsForClientTLS(host, trustRoot=trust)
    return LDAPServer(host, port, tls, config.starttls, options)


def _pem_blocks(data: bytes) -> list[bytes]:
    """Each certificate of a PEM bundle."""
    end = b"-----END CERTIFICATE-----"
    return [block + end for block in data.split(end) if b"-----BEGIN" in block]


def address_value(value: str) -> tuple[str, bool] | None:
    """
    An address attribute value as C{(address, primary)}: Active Directory's
    C{SMTP:} marks the primary address, C{smtp:} an alternate; values of other
    types (C{X500:}, C{sip:}) are L{None}. Plain values are not primary.
    """
    kind, colon, rest = value.partition(":")
    if colon and "@" not in kind:
        if kind.lower() != "smtp":
            return None
        return rest.strip().lower(), kind == "SMTP"
    return value.strip().lower(), False


@implementer(IDirectory)
class LDAPDirectory:
    """
    L{IDirectory} over an LDAP server.

    @param config: the [directory] section.
    @param reactor: provides C{IReactorTCP}/C{IReactorTime} (and the clock
        the cache reads).
    @param server: where to connect (L{server_for} C{config}).
    @param clock: the C{IReactorTime} for cache lifetimes and request
        timeouts; the reactor by default.
    """

    def __init__(self, config: DirectoryConfig, reactor, server: LDAPServer, clock=None):
        self.config = config
        self.reactor = reactor
        self.server = server
        self.clock = clock or reactor
        self.cache: AnswerCache[Mailbox] = AnswerCache(
            self.clock, config.positive_ttl, config.negative_ttl
        )
        self._connection: LDAPConnection | None = None
        self._connecting: list[Deferred[LDAPConnection]] | None = None
        self._templates: dict[str, FilterTemplate] = {}
        self._inflight: dict[str, list[Deferred[Mailbox | None]]] = {}

    # -- IDirectory --------------------------------------------------------

    def lookup(self, address: str) -> Deferred[Mailbox | None]:
        """The mailbox or alias of C{address}, or L{None}; see L{IDirectory}."""
        return Deferred.fromCoroutine(self._lookup(address.lower()))

    def authenticate(self, login: str, password: bytes) -> Deferred[bool]:
        """Whether a simple bind as C{login}'s entry with C{password} succeeds."""
        return Deferred.fromCoroutine(self._authenticate(login.lower(), password))

    def stop(self) -> None:
        """Close the service connection."""
        if self._connection is not None and self._connection.open:
            self._connection.close()
        self._connection = None

    # -- lookups -----------------------------------------------------------

    async def _lookup(self, address: str) -> Mailbox | None:
        cached = self.cache.get(address)
        if cached is not MISSING:
            return cached  # type: ignore[return-value]
        waiting = self._inflight.get(address)
        if waiting is not None:
            # The same address is being looked up already: share its answer.
            d: Deferred[Mailbox | None] = Deferred()
            waiting.append(d)
            return await d
        self._inflight[address] = []
        try:
            mailbox = await self._find_mailbox(address)
            if mailbox is None:
                mailbox = await self._find_alias(address)
        except BaseException as e:
            for d in self._inflight.pop(address):
                d.errback(e)
            raise
        self.cache.put(address, mailbox)
        for d in self._inflight.pop(address):
            d.callback(mailbox)
        return mailbox

    async def _search(self, template: str, address: str,
                      attributes: tuple[str, ...]) -> list[Entry]:
        """The entries under the base matching C{template} filled with C{address}."""
        compiled = self._templates.get(template)
        if compiled is None:
            compiled = self._templates[template] = FilterTemplate(template)
        filter_object = compiled.fill(address)
        connection = await self._service()
        return await connection.search(self.config.base, filter_object, attributes, limit=2)

    async def _find_mailbox(self, address: str) -> Mailbox | None:
        c = self.config
        wanted = tuple(a for a in (c.mail_attribute, c.alternate_attribute,
                                   c.routing_attribute, c.host_attribute) if a)
        entries = await self._search(c.recipient_filter, address, wanted)
        if not entries:
            return None
        if len(entries) > 1:
            log.warn("directory: {address} matches more than one entry; using {dn}",
                     address=address, dn=entries[0].dn)
        return self._mailbox(entries[0], address)

    def _mailbox(self, entry: Entry, address: str) -> Mailbox:
        """The L{Mailbox} an entry describes."""
        c = self.config
        canonical = _canonical(entry, c.mail_attribute, c.alternate_attribute) or address
        routing = ""
        if c.routing_attribute:
            found = [address_value(v) for v in entry.values(c.routing_attribute)]
            routing = next((a for a, _ in filter(None, found) if a), "")
        host = next(iter(entry.values(c.host_attribute)), "") if c.host_attribute else ""
        return Mailbox(canonical, routing if routing != canonical else "", host.strip().lower())

    async def _find_alias(self, address: str) -> Mailbox | None:
        c = self.config
        if not c.alias_filter:
            return None
        entries = await self._search(c.alias_filter, address, (c.member_attribute,))
        if not entries:
            return None
        members: list[str] = []
        domain = address.rpartition("@")[2]
        values = entries[0].values(c.member_attribute)
        if len(values) > _MAX_MEMBERS:
            log.warn("directory: list {address} has {n} members; only the first {max} get mail",
                     address=address, n=len(values), max=_MAX_MEMBERS)
        for value in values[:_MAX_MEMBERS]:
            member = await self._member_address(value.strip(), domain)
            if member and member not in members:
                members.append(member)
        if not members:
            return None
        return Mailbox(address, members=tuple(members))

    async def _member_address(self, value: str, domain: str) -> str:
        """A list member as an address: as given, C{local} at the list's domain, or a DN's mail."""
        if "@" in value:
            found = address_value(value)
            return found[0] if found else ""
        if "=" not in value:
            return f"{value.lower()}@{domain}" if value else ""
        c = self.config
        connection = await self._service()
        entries = await connection.search(
            value, pureldap.LDAPFilter_present("objectClass"),
            (c.mail_attribute, c.alternate_attribute), scope=pureldap.LDAP_SCOPE_baseObject,
        )
        if not entries:
            return ""
        return _canonical(entries[0], c.mail_attribute, c.alternate_attribute)

    # -- authentication ----------------------------------------------------

    async def _authenticate(self, login: str, password: bytes) -> bool:
        # RFC 4513 5.1.2: an empty password would be an unauthenticated bind,
        # which servers answer with success. Never send one.
        if not password or b"\0" in password:
            return False
        try:
            secret = password.decode("utf-8")
        except UnicodeDecodeError:
            return False
        entries = await self._search(self.config.recipient_filter, login, ())
        if len(entries) != 1:
            return False  # unknown, or ambiguous: never guess whose password it is
        connection = await connect(self.reactor, self.server, self.config.timeout, self.clock)
        try:
            result = await connection.bind(entries[0].dn, secret)
        finally:
            connection.close()
        if result.code == SUCCESS:
            return True
        if result.code == INVALID_CREDENTIALS:
            return False
        raise DirectoryUnavailable(
            f"{self.server.url}: bind as {entries[0].dn} answered {result.code} {result.message}"
        )

    # -- the service connection --------------------------------------------

    async def _service(self) -> LDAPConnection:
        """The open service connection, connected and bound when needed."""
        if self._connection is not None and self._connection.open:
            return self._connection
        if self._connecting is not None:
            waiting: Deferred[LDAPConnection] = Deferred()
            self._connecting.append(waiting)
            return await waiting
        self._connecting = []
        try:
            connection = await self._open_service()
        except BaseException as e:
            waiters, self._connecting = self._connecting, None
            for d in waiters:
                d.errback(e)
            raise
        self._connection = connection
        waiters, self._connecting = self._connecting, None
        for d in waiters:
            d.callback(connection)
        return connection

    async def _open_service(self) -> LDAPConnection:
        connection = await connect(self.reactor, self.server, self.config.timeout, self.clock)
        if self.config.bind_dn:
            result = await connection.bind(self.config.bind_dn, self.config.bind_password)
            if result.code != SUCCESS:
                connection.close()
                raise DirectoryUnavailable(
                    f"{self.server.url}: service bind as {self.config.bind_dn} answered "
                    f"{result.code} {result.message}"
                )
        return connection


def _canonical(entry: Entry, mail_attribute: str, alternate_attribute: str) -> str:
    """
    The canonical address of an entry: an C{SMTP:} primary address when there
    is one, else the first C{mail_attribute} value.
    """
    for value in entry.values(alternate_attribute) if alternate_attribute else ():
        found = address_value(value)
        if found and found[1]:
            return found[0]
    for value in entry.values(mail_attribute):
        found = address_value(value)
        if found:
            return found[0]
    return ""

