"""
The [directory] section: LDAP URL, filters, attributes, presets per schema,
cache lifetimes; bad values are one problem line each.
"""

from __future__ import annotations

from smtpd.config.ldap import PRESETS, escape_filter_value, fill_filter, ldap_url_parts
from tests.test_config import ConfigTestCase


class DirectorySectionTests(ConfigTestCase):
    """[directory] keys as etc/smtpd.ini gives them."""

    def test_default_off(self):
        """Without [directory], no LDAP directory: the accounts file answers."""
        config = self.load("[server]\n")
        self.assertFalse(config.directory.enabled)
        self.assertEqual(config.directory.recipient_filter,
                         PRESETS["rfc2307bis"]["recipient_filter"])

    def test_full(self):
        """Every key parses; empty filters and attributes take the schema's preset."""
        config = self.load("""
            [directory]
            url = ldaps://ldap.example.com
            bind_dn = cn=smtpd,dc=example,dc=com
            bind_password = s3cret
            base = dc=example,dc=com
            schema = activedirectory
            member_attribute = memberOf2
            positive_ttl = 10m
            negative_ttl = 0
            timeout = 3s
            """)
        d = config.directory
        self.assertTrue(d.enabled)
        self.assertEqual(ldap_url_parts(d.url), (True, "ldap.example.com", 636))
        self.assertEqual(d.alternate_attribute, "proxyAddresses")
        self.assertEqual(d.member_attribute, "memberOf2")
        self.assertEqual((d.positive_ttl, d.negative_ttl, d.timeout), (600.0, 0.0, 3.0))

    def test_url_port(self):
        """ldap:// defaults to port 389; an explicit port is kept."""
        self.assertEqual(ldap_url_parts("ldap://127.0.0.1"), (False, "127.0.0.1", 389))
        self.assertEqual(ldap_url_parts("ldap://127.0.0.1:3389"), (False, "127.0.0.1", 3389))

    def test_bad_url(self):
        """A URL that is not ldap:// or ldaps:// with a host is one problem line."""
        self.assertIn("[directory] url = http://x: 'http://x' is not an ldap:// or ldaps:// URL",
                      self.problem("[directory]\nurl = http://x\nbase = dc=x\n"))
        self.assertIn("has more than scheme, host and port",
                      self.problem("[directory]\nurl = ldap://h/dc=x??sub\nbase = dc=x\n"))

    def test_base_required(self):
        """A url without a base is a problem."""
        self.assertIn("[directory] base: missing",
                      self.problem("[directory]\nurl = ldap://127.0.0.1\n"))

    def test_starttls_in_ldaps(self):
        """StartTLS inside ldaps:// is refused."""
        self.assertIn("ldaps:// is already encrypted", self.problem(
            "[directory]\nurl = ldaps://h\nbase = dc=x\nstarttls = yes\n"))

    def test_bad_filter(self):
        """A filter that does not parse, or names no address, is one problem line."""
        self.assertIn("not an LDAP filter", self.problem(
            "[directory]\nurl = ldap://h\nbase = dc=x\nrecipient_filter = (mail=%s\n"))
        self.assertIn("names no address", self.problem(
            "[directory]\nurl = ldap://h\nbase = dc=x\nalias_filter = (objectClass=*)\n"))

    def test_secret_not_shown(self):
        """A bad bind_password is never echoed."""
        line = self.problem("[directory]\nbind_password = a\x01b\n")
        self.assertIn("bind_password = ***", line)

    def test_bad_schema(self):
        """An unknown schema preset names the accepted ones."""
        self.assertIn("expected rfc2307bis or activedirectory",
                      self.problem("[directory]\nschema = novell\n"))


class FilterTests(ConfigTestCase):
    """Filter templates filled with an address."""

    def test_placeholders(self):
        """%s, %u, %d and %% are replaced."""
        self.assertEqual(fill_filter("(&(uid=%u)(dc=%d)(mail=%s)(x=100%%))", "ann@example.com"),
                         "(&(uid=ann)(dc=example.com)(mail=ann@example.com)(x=100%))")

    def test_escaping(self):
        """Filter operators in a value are escaped (RFC 4515), never operators."""
        self.assertEqual(escape_filter_value("*)(uid=*\\\0"), r"\2a\29\28uid=\2a\5c\00")
        self.assertEqual(fill_filter("(mail=%s)", "a*b@x"), r"(mail=a\2ab@x)")


class ProxyConfigTests(ConfigTestCase):
    """haproxy: listeners and [access] proxy_from."""

    def test_proxied_listener(self):
        """A haproxy:tcp: listener loads when proxy_from names the proxies."""
        config = self.load("""
            [server]
            listen = haproxy:tcp:2525:interface=127.0.0.1 tcp:2526:interface=127.0.0.1
            [access]
            proxy_from = 10.0.0.0/24
            """)
        self.assertEqual(config.server.listen[0], "haproxy:tcp:2525:interface=127.0.0.1")
        self.assertEqual([str(n) for n in config.access.proxy_from], ["10.0.0.0/24"])

    def test_needs_proxy_from(self):
        """A haproxy: listener with an empty proxy_from is a problem."""
        self.assertIn("speaks the PROXY protocol but [access] proxy_from is empty", self.problem(
            "[server]\nlisten = haproxy:tcp:2525:interface=127.0.0.1\n"))

    def test_only_tcp(self):
        """haproxy: wraps plain tcp: endpoints only, once, and not smtps."""
        self.assertIn("haproxy: is for tcp: endpoints", self.problem(
            "[server]\nlisten = haproxy:unix:/tmp/s\n[access]\nproxy_from = 127.0.0.1\n"))
        self.assertIn("haproxy: is for tcp: endpoints", self.problem(
            "[server]\nlisten = haproxy:haproxy:tcp:25\n[access]\nproxy_from = 127.0.0.1\n"))
        self.assertIn("is not a plain tcp: (or systemd:) endpoint", self.problem(
            "[server]\nsmtps = haproxy:tcp:465\n[access]\nproxy_from = 127.0.0.1\n"))

    def test_same_port_through_proxy(self):
        """A haproxy: listener and a plain one on the same port clash."""
        self.assertIn("binds the port of", self.problem(
            "[server]\nlisten = haproxy:tcp:2525 tcp:2525\n[access]\nproxy_from = 127.0.0.1\n"))

    def test_pop3_needs_proxy_from(self):
        """A haproxy: POP3 listener also needs proxy_from."""
        self.assertIn("[pop3] listen = haproxy:tcp:1110: haproxy:tcp:1110 speaks the PROXY",
                      self.problem("[pop3]\nlisten = haproxy:tcp:1110\n"))
