"""
The LDAP directory against a real OpenLDAP slapd (a private instance on a
loopback port with a test tree): lookups, aliases, routing, AUTH by bind, a
directory that is down, and the answer cache driven by a Clock.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.config import DirectoryConfig, DomainConfig
from smtpd.directory.interfaces import DirectoryUnavailable, IDirectory, Mailbox
from smtpd.directory.ldap import LDAPDirectory, address_value, server_for
from smtpd.directory.ldapclient import Entry
from smtpd.directory.ldapfilter import FilterTemplate
from smtpd.directory.resolve import RecipientResolver
from tests.inbound import make_config
from tests.slapd import SLAPD_MISSING, SUFFIX, free_port, start_slapd

SERVICE_DN = f"cn=smtpd,ou=services,{SUFFIX}"


def directory_config(url: str, **overrides) -> DirectoryConfig:
    """A [directory] section for the test tree."""
    values = dict(url=url, base=SUFFIX, bind_dn=SERVICE_DN, bind_password="service-secret",
                  timeout=5.0)
    values.update(overrides)
    return DirectoryConfig(**values)


class SlapdTestCase(unittest.TestCase):
    """Starts one slapd per test; builds directories on it."""

    skip = SLAPD_MISSING

    def setUp(self):
        self.slapd = start_slapd(self)

    def directory(self, clock=None, **overrides) -> LDAPDirectory:
        """An LDAPDirectory on the test's slapd, stopped at cleanup."""
        config = directory_config(self.slapd.url, **overrides)
        directory = LDAPDirectory(config, reactor, server_for(config), clock)
        self.addCleanup(directory.stop)
        return directory


class LookupTests(SlapdTestCase):
    """Recipients, aliases and routing as the directory says."""

    @defer.inlineCallbacks
    def test_user(self):
        """A user's mail address finds the user's mailbox, with no routing."""
        directory = self.directory()
        self.assertTrue(IDirectory.providedBy(directory))
        mailbox = yield directory.lookup("alice@example.com")
        self.assertEqual(mailbox, Mailbox("alice@example.com"))
        self.assertEqual(mailbox.destinations, ("alice@example.com",))

    @defer.inlineCallbacks
    def test_alternate_address(self):
        """An alternate address (any case) finds the mailbox under its canonical address."""
        mailbox = yield self.directory().lookup("A.Example@EXAMPLE.com")
        self.assertEqual(mailbox, Mailbox("alice@example.com"))

    @defer.inlineCallbacks
    def test_unknown(self):
        """An address the directory does not have is None (the session's 550 5.1.1)."""
        self.assertIsNone((yield self.directory().lookup("nobody@example.com")))

    @defer.inlineCallbacks
    def test_filter_injection(self):
        """Filter operators in an address are escaped: '*' matches no one."""
        self.assertIsNone((yield self.directory().lookup("*@example.com")))
        self.assertIsNone((yield self.directory().lookup("*)(mail=*")))

    @defer.inlineCallbacks
    def test_alias_expansion(self):
        """
        A list expands to its members: full addresses as given, a bare local
        part at the list's domain.
        """
        mailbox = yield self.directory().lookup("sales@example.com")
        self.assertTrue(mailbox.is_alias)
        self.assertEqual(
            mailbox.destinations,
            ("alice@example.com", "bob@example.com", "partner@elsewhere.example.org"),
        )

    @defer.inlineCallbacks
    def test_group_of_dns(self):
        """
        A group whose members are DNs (as in Active Directory) expands to the
        members' mail addresses; a DN that no longer exists is left out.
        """
        directory = self.directory(alias_filter="(&(objectClass=groupOfNames)(mail=%s))",
                                   member_attribute="member")
        mailbox = yield directory.lookup("staff@example.com")
        self.assertEqual(mailbox.destinations, ("alice@example.com", "bob@example.com"))

    @defer.inlineCallbacks
    def test_routing(self):
        """mailRoutingAddress and mailHost say where the user's mail really goes."""
        directory = self.directory()
        mailbox = yield directory.lookup("bob@example.com")
        self.assertEqual(mailbox.address, "bob@example.com")
        self.assertEqual(mailbox.routing_address, "bob@branch.example.net")
        self.assertEqual(mailbox.host, "")
        self.assertEqual(mailbox.destinations, ("bob@branch.example.net",))
        self.assertEqual((yield directory.lookup("carol@example.com")).host, "b.example.test")
        self.assertEqual((yield directory.lookup("dave@example.com")).host, "a.example.test.")

    @defer.inlineCallbacks
    def test_one_connection(self):
        """Lookups share one service connection (concurrent ones too)."""
        directory = self.directory()
        answers = yield defer.gatherResults([
            directory.lookup(a) for a in ("alice@example.com", "bob@example.com",
                                          "nobody@example.com")
        ])
        self.assertEqual([bool(a) for a in answers], [True, True, False])
        first = directory._connection
        yield directory.lookup("sales@example.com")
        self.assertIs(directory._connection, first)


    @defer.inlineCallbacks
    def test_concurrent_same_address(self):
        """Concurrent lookups of one address share one search and its answer."""
        directory = self.directory()
        yield directory.lookup("bob@example.com")
        protocol = directory._connection.protocol
        before = protocol._next_id
        answers = yield defer.gatherResults(
            [directory.lookup("ALICE@example.com") for _ in range(5)])
        self.assertEqual(answers, [Mailbox("alice@example.com")] * 5)
        self.assertEqual(protocol._next_id - before, 1)

    def test_template_filled_as_values(self):
        """%s, %u and %d become assertion values: filter syntax in them stays literal."""
        template = FilterTemplate("(&(uid=%u)(|(mail=%s)(proxyAddresses=smtp:%s))(dc=%d)(x=100%%))")
        text = template.fill("a*)(b@example.com").asText()
        self.assertEqual(
            text,
            r"(&(uid=a\2a\29\28b)(|(mail=a\2a\29\28b@example.com)"
            r"(proxyAddresses=smtp:a\2a\29\28b@example.com))(dc=example.com)(x=100%))")


class AuthenticateTests(SlapdTestCase):
    """AUTH by a simple bind as the user's entry."""

    @defer.inlineCallbacks
    def test_good_password(self):
        """The right password (login any case, or an alternate address) is accepted."""
        directory = self.directory()
        self.assertTrue((yield directory.authenticate("alice@example.com", b"alice-secret")))
        self.assertTrue((yield directory.authenticate("A.EXAMPLE@example.com", b"alice-secret")))

    @defer.inlineCallbacks
    def test_bad_password(self):
        """A wrong password, another user's password, or an unknown login is refused."""
        directory = self.directory()
        self.assertFalse((yield directory.authenticate("alice@example.com", b"wrong")))
        self.assertFalse((yield directory.authenticate("alice@example.com", b"bob-secret")))
        self.assertFalse((yield directory.authenticate("nobody@example.com", b"alice-secret")))

    @defer.inlineCallbacks
    def test_empty_password(self):
        """An empty password is refused without an (unauthenticated) bind."""
        directory = self.directory()
        self.assertFalse((yield directory.authenticate("alice@example.com", b"")))

    @defer.inlineCallbacks
    def test_wrong_base(self):
        """A base that does not exist makes the directory unavailable, never 'no such user'."""
        directory = self.directory(base="dc=nowhere,dc=example")
        yield self.assertFailure(directory.lookup("alice@example.com"), DirectoryUnavailable)

    @defer.inlineCallbacks
    def test_service_bind_refused(self):
        """A wrong service password makes the directory unavailable, not 'no such user'."""
        directory = self.directory(bind_password="wrong")
        yield self.assertFailure(directory.lookup("alice@example.com"), DirectoryUnavailable)


class UnavailableTests(SlapdTestCase):
    """A directory that is down is a temporary failure, never a 'no'."""

    @defer.inlineCallbacks
    def test_stopped(self):
        """
        With slapd stopped, a lookup and an AUTH fail with DirectoryUnavailable;
        once it is back, the next lookup reconnects and answers.
        """
        directory = self.directory(positive_ttl=0, negative_ttl=0)
        self.assertTrue((yield directory.lookup("alice@example.com")))
        self.slapd.stop()
        yield self.assertFailure(directory.lookup("alice@example.com"), DirectoryUnavailable)
        yield self.assertFailure(directory.lookup("nobody@example.com"), DirectoryUnavailable)
        yield self.assertFailure(
            directory.authenticate("alice@example.com", b"alice-secret"), DirectoryUnavailable
        )
        self.slapd.start()
        self.assertEqual((yield directory.lookup("alice@example.com")),
                         Mailbox("alice@example.com"))

    @defer.inlineCallbacks
    def test_never_started(self):
        """A directory nobody listens for fails its first lookup with DirectoryUnavailable."""
        config = directory_config(f"ldap://127.0.0.1:{free_port()}")
        directory = LDAPDirectory(config, reactor, server_for(config))
        failure = yield self.assertFailure(directory.lookup("alice@example.com"),
                                           DirectoryUnavailable)
        self.assertIn("cannot connect", str(failure))

    @defer.inlineCallbacks
    def test_no_answer(self):
        """A server that accepts and never answers times out (on the clock) as unavailable."""
        received: defer.Deferred = defer.Deferred()

        class Silent(Protocol):
            """Accepts and never answers."""

            def dataReceived(self, data):
                if not received.called:
                    received.callback(None)

        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Silent))
        self.addCleanup(port.stopListening)
        clock = Clock()
        config = directory_config(f"ldap://127.0.0.1:{port.getHost().port}", timeout=7.0)
        directory = LDAPDirectory(config, reactor, server_for(config), clock)
        self.addCleanup(directory.stop)
        d = directory.lookup("alice@example.com")
        yield received
        clock.advance(7)
        failure = yield self.assertFailure(d, DirectoryUnavailable)
        self.assertIn("no answer in 7s", str(failure))


class CacheTests(SlapdTestCase):
    """Answers are remembered for their TTL, on the injected clock."""

    @defer.inlineCallbacks
    def test_positive_ttl(self):
        """A found mailbox is answered from the cache until positive_ttl has passed."""
        clock = Clock()
        directory = self.directory(clock, positive_ttl=300, negative_ttl=60)
        yield directory.lookup("alice@example.com")
        self.slapd.stop()
        clock.advance(299)
        self.assertEqual((yield directory.lookup("ALICE@example.com")),
                         Mailbox("alice@example.com"))
        clock.advance(1)
        yield self.assertFailure(directory.lookup("alice@example.com"), DirectoryUnavailable)

    @defer.inlineCallbacks
    def test_negative_ttl(self):
        """'No such address' is answered from the cache until negative_ttl has passed."""
        clock = Clock()
        directory = self.directory(clock, positive_ttl=300, negative_ttl=60)
        self.assertIsNone((yield directory.lookup("nobody@example.com")))
        self.slapd.stop()
        clock.advance(59)
        self.assertIsNone((yield directory.lookup("nobody@example.com")))
        clock.advance(1)
        yield self.assertFailure(directory.lookup("nobody@example.com"), DirectoryUnavailable)

    @defer.inlineCallbacks
    def test_failures_not_cached(self):
        """A lookup that failed is asked again next time, not remembered."""
        clock = Clock()
        directory = self.directory(clock)
        self.slapd.stop()
        yield self.assertFailure(directory.lookup("alice@example.com"), DirectoryUnavailable)
        self.slapd.start()
        self.assertTrue((yield directory.lookup("alice@example.com")))


class TLSTests(unittest.TestCase):
    """StartTLS and ldaps:// with a certificate from a CA named in ca_certificates."""

    skip = SLAPD_MISSING

    def setUp(self):
        self.slapd = start_slapd(self, tls=True)

    def directory(self, url: str, **overrides) -> LDAPDirectory:
        """An LDAPDirectory for C{url} on the TLS slapd, stopped at cleanup."""
        config = directory_config(url, **overrides)
        directory = LDAPDirectory(config, reactor, server_for(config))
        self.addCleanup(directory.stop)
        return directory

    @defer.inlineCallbacks
    def test_starttls(self):
        """With starttls = yes, lookups and AUTH run over StartTLS."""
        directory = self.directory(f"ldap://localhost:{self.slapd.port}", starttls=True,
                                   ca_certificates=self.slapd.ca_file)
        self.assertEqual((yield directory.lookup("alice@example.com")),
                         Mailbox("alice@example.com"))
        self.assertTrue(directory.server.starttls)
        self.assertTrue((yield directory.authenticate("alice@example.com", b"alice-secret")))

    @defer.inlineCallbacks
    def test_ldaps(self):
        """An ldaps:// URL speaks TLS from the first byte."""
        directory = self.directory(f"ldaps://localhost:{self.slapd.tls_port}",
                                   ca_certificates=self.slapd.ca_file)
        self.assertTrue(directory.server.tls)
        self.assertEqual((yield directory.lookup("carol@example.com")).host,
                         "b.example.test")

    @defer.inlineCallbacks
    def test_untrusted_certificate(self):
        """A server certificate from a CA not trusted makes the directory unavailable."""
        directory = self.directory(f"ldap://localhost:{self.slapd.port}", starttls=True)
        yield self.assertFailure(directory.lookup("alice@example.com"), DirectoryUnavailable)


class ActiveDirectoryValueTests(unittest.TestCase):
    """proxyAddresses values as Active Directory writes them."""

    def test_prefixes(self):
        """'SMTP:' is the primary address, 'smtp:' an alternate, other types are ignored."""
        self.assertEqual(address_value("SMTP:Ann@Example.com"), ("ann@example.com", True))
        self.assertEqual(address_value("smtp:ann.b@example.com"), ("ann.b@example.com", False))
        self.assertIsNone(address_value("X500:/o=Org/cn=ann"))
        self.assertIsNone(address_value("sip:ann@example.com"))
        self.assertEqual(address_value("ann@example.com"), ("ann@example.com", False))

    def test_canonical_is_primary(self):
        """With the activedirectory preset, the 'SMTP:' value is the mailbox's address."""
        config = DirectoryConfig(url="ldap://dc.example.com", base="dc=example,dc=com",
                                 schema="activedirectory")
        directory = LDAPDirectory(config, reactor, server_for(config))
        entry = Entry("cn=Ann,dc=example,dc=com", {
            "mail": ("ann.old@example.com",),
            "proxyaddresses": ("smtp:ann.b@example.com", "SMTP:Ann@Example.com", "X500:/o=x"),
        })
        self.assertEqual(directory._mailbox(entry, "ann.b@example.com"),
                         Mailbox("ann@example.com"))


class RecipientTests(SlapdTestCase):
    """RCPT-time validation of example.com recipients by the directory."""

    @defer.inlineCallbacks
    def test_rcpt_answers(self):
        """
        A directory user (by an alternate address: queued under its mailbox
        address), a list (queued as its members, themselves expanded) and a
        routed user (queued as the routing address) are accepted, an unknown user is not (the
        session's 550 5.1.1), and with slapd stopped the answer is
        DirectoryUnavailable (the session's 451 4.4.3), never 'unknown'.
        """
        config = make_config(self.mktemp(), domains=(DomainConfig("example.com"),))
        resolver = RecipientResolver(config, self.directory(positive_ttl=0, negative_ttl=0))
        self.assertEqual((yield resolver.resolve("A.Example@example.com")).recipients,
                         ("alice@example.com",))
        # The list's member "bob" is itself routed elsewhere: expanded again.
        self.assertEqual((yield resolver.resolve("sales@example.com")).recipients,
                         ("alice@example.com", "bob@branch.example.net",
                          "partner@elsewhere.example.org"))
        self.assertEqual((yield resolver.resolve("bob@example.com")).recipients,
                         ("bob@branch.example.net",))
        self.assertIsNone((yield resolver.resolve("nobody@example.com")))
        # Two lists naming each other: each address once, and an end.
        self.assertEqual((yield resolver.resolve("loop1@example.com")).recipients,
                         ("alice@example.com",))
        self.slapd.stop()
        yield self.assertFailure(resolver.resolve("alice@example.com"), DirectoryUnavailable)
        yield self.assertFailure(resolver.resolve("nobody@example.com"), DirectoryUnavailable)

    @defer.inlineCallbacks
    def test_mail_host(self):
        """
        A mailbox whose mailHost is another host is queued with that host (as
        its routing address when it has one, which is then not looked up
        again); one whose mailHost names this node ([server] hostname, any
        case, a trailing dot, or a local_hosts name) has none; a list's
        members each keep their own.
        """
        config = make_config(self.mktemp(), domains=(DomainConfig("example.com"),),
                             server={"hostname": "a.example.test"})
        resolver = RecipientResolver(config, self.directory())
        carol = yield resolver.resolve("carol@example.com")
        self.assertEqual((carol.recipients, carol.hosts),
                         (("carol@example.com",), {"carol@example.com": "b.example.test"}))
        dave = yield resolver.resolve("dave@example.com")
        self.assertEqual((dave.recipients, dave.hosts), (("dave@example.com",), {}))
        erin = yield resolver.resolve("erin@example.com")
        self.assertEqual((erin.recipients, erin.hosts),
                         (("erin.archive@example.com",),
                          {"erin.archive@example.com": "b.example.test"}))
        team = yield resolver.resolve("team@example.com")
        self.assertEqual((team.recipients, team.hosts),
                         (("carol@example.com", "dave@example.com", "alice@example.com"),
                          {"carol@example.com": "b.example.test"}))
        resolver.config = make_config(self.mktemp(), domains=(DomainConfig("example.com"),),
                                      server={"hostname": "a.example.test"},
                                      directory={"local_hosts": ("b.example.test",)})
        self.assertEqual((yield resolver.resolve("carol@example.com")).hosts, {})
