"""
Tests for L{smtpd.config}: the value parsers, the schema validation with its
one-line problem reports, path resolution against the deployment root, and
the shipped C{etc/smtpd.ini}.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import textwrap

from twisted.trial import unittest

from smtpd.config import (
    AuthConfig,
    Config,
    ConfigError,
    DomainConfig,
    ManholeConfig,
    ServerConfig,
    SmartHost,
    TLSConfig,
    load_config,
)
from smtpd.config.endpoints import parse_endpoint, parse_endpoints, parse_plain_tcp_endpoints
from smtpd.config.schema import DOMAIN_SCHEMA, SCHEMA
from smtpd.config.values import (
    parse_address,
    parse_bool,
    parse_dns_servers,
    parse_domain_pattern,
    parse_duration,
    parse_hostname,
    parse_list,
    parse_networks,
    parse_size,
    parse_smart_host,
)

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPOSITORY, "etc", "smtpd.ini")
SECTIONS = ("server, tls, auth, access, messages, delivery, checks, tlsrpt, directory, manhole, "
            "pop3, http, logging, domain:NAME")


class ConfigTestCase(unittest.TestCase):
    """Helpers to write a config file into a fresh deployment root and load it."""

    def write(self, text: str, root: str | None = None) -> str:
        """Write C{text} to C{<root>/etc/smtpd.ini}; return that path."""
        root = root or os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"), exist_ok=True)
        path = os.path.join(root, "etc", "smtpd.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
        return path

    def load(self, text: str) -> Config:
        """Load C{text} as a config file."""
        return load_config(self.write(text))

    def problems(self, text: str) -> tuple[str, list[str]]:
        """The path and the problem lines of C{text}, which must not load."""
        path = self.write(text)
        error = self.assertRaises(ConfigError, load_config, path)
        for line in error.problems:
            self.assertNotIn("\n", line)
            self.assertTrue(line.startswith(path + ": "), line)
        return path, error.problems

    def problem(self, text: str) -> str:
        """The one problem line of C{text}, without the leading file name."""
        path, lines = self.problems(text)
        self.assertEqual(len(lines), 1, lines)
        return lines[0][len(path) + 2 :]


class ShippedConfigTests(ConfigTestCase):
    """The shipped etc/smtpd.ini runs as is and documents everything."""

    def test_defaults(self) -> None:
        """
        It loads without a problem and gives the SPEC defaults, paths in the
        repository, and the one local domain localhost.
        """
        config = load_config(SHIPPED)
        root = REPOSITORY
        expected = Config(
            path=SHIPPED,
            root=root,
            server=ServerConfig(mailroot=os.path.join(root, "mailroot")),
            tls=TLSConfig(
                certificate=os.path.join(root, "etc/tls/smtpd.pem"),
                key=os.path.join(root, "etc/tls/smtpd.key"),
            ),
            auth=AuthConfig(users=os.path.join(root, "etc/users")),
            domains=(DomainConfig(name="localhost", type="local"),),
            manhole=ManholeConfig(
                users=os.path.join(root, "etc/manhole.passwd"),
                ssh_key_dir=os.path.join(root, "etc/ssh"),
            ),
        )
        self.assertEqual(config, expected)
        self.assertEqual(config.server.listen, ("tcp:2525:interface=127.0.0.1",))
        self.assertEqual(config.messages.max_message_size, 2097152)
        self.assertEqual(config.delivery.retry, (900.0, 1800.0, 3600.0, 14400.0))
        self.assertEqual(config.default_domain, "localhost")

    def test_every_key_present(self) -> None:
        """Every section and key of the schema is written out in the shipped file."""
        parser = configparser.ConfigParser(
            interpolation=None, inline_comment_prefixes=(";", "#")
        )
        parser.read(SHIPPED, encoding="utf-8")
        for section, (_, keys) in SCHEMA.items():
            self.assertEqual(sorted(parser[section]), sorted(keys), section)
        self.assertEqual(list(parser["domain:localhost"]), ["type", "dkim"])

    def test_documents_iis_names_and_domain_types(self) -> None:
        """
        The comments name every IIS property of the schema, every domain key,
        and every domain type.
        """
        with open(SHIPPED, encoding="utf-8") as f:
            text = f.read()
        for _, keys in SCHEMA.values():
            for key in keys.values():
                if key.iis:
                    self.assertIn(key.iis, text)
        for word in [*DOMAIN_SCHEMA, "type = alias", "type = drop", "type = remote"]:
            self.assertIn(word, text)
        self.assertIn("smtpctl manhole-user add NAME", text)

    def test_schema_matches_dataclasses(self) -> None:
        """The schema knows exactly the fields of each section's dataclass."""
        for cls, keys in SCHEMA.values():
            self.assertEqual(list(keys), [f.name for f in dataclasses.fields(cls)])
        domain_fields = [f.name for f in dataclasses.fields(DomainConfig)]
        self.assertEqual(["name", *DOMAIN_SCHEMA], domain_fields)

    def test_empty_file(self) -> None:
        """An empty file is a valid pure relay: every default, no domain."""
        config = self.load("")
        self.assertEqual(config.domains, ())
        self.assertEqual(config.server, ServerConfig(mailroot=config.server.mailroot))
        self.assertEqual(config.default_domain, "localhost")


class DurationSizeBoolListTests(unittest.TestCase):
    """The scalar parsers."""

    def test_duration(self) -> None:
        """Seconds, with an optional s, m, h or d unit."""
        cases = {"600": 600, "600s": 600, "15m": 900, "4h": 14400, "2d": 172800,
                 "0": 0, " 1.5h ": 5400, "15M": 900}
        for text, seconds in cases.items():
            self.assertEqual(parse_duration(text), seconds, text)
            self.assertIsInstance(parse_duration(text), float)

    def test_bad_duration(self) -> None:
        """Anything else is a ValueError naming the value."""
        for text in ["", "15x", "-1", "m", "1 h", "1w", "١٠"]:
            error = self.assertRaises(ValueError, parse_duration, text)
            self.assertIn("not a duration", str(error))

    def test_size(self) -> None:
        """Bytes, K = 1024 bytes, M = 1024K; 0 stays 0 (unlimited)."""
        cases = {"0": 0, "1234": 1234, "2048K": 2097152, "2048k": 2097152,
                 "10M": 10485760}
        for text, size in cases.items():
            self.assertEqual(parse_size(text), size, text)

    def test_bad_size(self) -> None:
        """Other units, fractions and signs are refused."""
        for text in ["", "10G", "1.5M", "-1", "K", "10 M", "10KB"]:
            self.assertRaises(ValueError, parse_size, text)

    def test_bool(self) -> None:
        """yes/no, true/false, on/off, 1/0, in any case."""
        for text in ["yes", "true", "on", "1", "YES", " On "]:
            self.assertIs(parse_bool(text), True, text)
        for text in ["no", "false", "off", "0", "No"]:
            self.assertIs(parse_bool(text), False, text)
        for text in ["", "y", "maybe", "2"]:
            self.assertRaises(ValueError, parse_bool, text)

    def test_list(self) -> None:
        """Commas and any whitespace separate items; empty items vanish."""
        self.assertEqual(parse_list("a, b,c  d\n\te,,"), ["a", "b", "c", "d", "e"])
        self.assertEqual(parse_list(""), [])
        self.assertEqual(parse_list(" , "), [])


class NetworkAndAddressTests(unittest.TestCase):
    """Networks, host names, addresses, smart hosts and DNS servers."""

    def test_networks(self) -> None:
        """Networks and bare addresses, host bits ignored, both families."""
        self.assertEqual(
            parse_networks("10.1.2.3/8, ::1 192.0.2.7"),
            (
                ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("::1/128"),
                ipaddress.ip_network("192.0.2.7/32"),
            ),
        )
        self.assertEqual(parse_networks(""), ())
        for text in ["10.0.0.0/33", "localhost", "300.1.1.1"]:
            self.assertRaises(ValueError, parse_networks, text)

    def test_hostname(self) -> None:
        """A domain name, kept as written but for a trailing dot."""
        self.assertEqual(parse_hostname("mail.example.com"), "mail.example.com")
        self.assertEqual(parse_hostname("Mail.Example.COM."), "Mail.Example.COM")
        self.assertEqual(parse_hostname("localhost"), "localhost")
        self.assertEqual(parse_hostname("xn--bcher-kva.example"), "xn--bcher-kva.example")

    def test_bad_hostname(self) -> None:
        """Spaces, controls, empty labels, bad hyphens, IPs, non-ASCII, long labels."""
        for text in ["", "bad host", "a..b", ".a", "-a.com", "a-.com", "1.2.3.4",
                     "bücher.example", "a\r\nb", "a_b.example", "x" * 64 + ".com",
                     ("a" * 60 + ".") * 5]:
            self.assertRaises(ValueError, parse_hostname, text)

    def test_domain_pattern(self) -> None:
        """A domain name or a *. wildcard, lower-cased, trailing dot dropped."""
        self.assertEqual(parse_domain_pattern("*.Example.COM."), "*.example.com")
        self.assertEqual(parse_domain_pattern("Example.com"), "example.com")
        for text in ["*", "a.*.com", "*example.com", "**.example.com"]:
            self.assertRaises(ValueError, parse_domain_pattern, text)

    def test_address(self) -> None:
        """Empty, or local@domain with optional angle brackets."""
        self.assertEqual(parse_address(""), "")
        self.assertEqual(parse_address("postmaster@Example.com"), "postmaster@example.com")
        self.assertEqual(parse_address("<ndr@example.com>"), "ndr@example.com")
        for text in ["nobody", "@example.com", "a b@example.com", "a@b@example.com",
                     "a@bad_domain", "a\r\n@example.com", "x" * 65 + "@example.com",
                     "a@"]:
            self.assertRaises(ValueError, parse_address, text)

    def test_smart_host(self) -> None:
        """host[:port] is looked up by MX; [host-or-ip][:port] is not."""
        cases = {
            "": None,
            "relay.example.com": SmartHost("relay.example.com", None, True),
            "Relay.Example.com:587": SmartHost("relay.example.com", 587, True),
            "[192.0.2.1]": SmartHost("192.0.2.1", None, False),
            "[192.0.2.1]:2525": SmartHost("192.0.2.1", 2525, False),
            "[relay.example.com]": SmartHost("relay.example.com", None, False),
            "[2001:db8::1]:25": SmartHost("2001:db8::1", 25, False),
            "[IPv6:2001:DB8::1]": SmartHost("2001:db8::1", None, False),
        }
        for text, expected in cases.items():
            self.assertEqual(parse_smart_host(text), expected, text)
        self.assertEqual(str(parse_smart_host("[192.0.2.1]:2525")), "[192.0.2.1]:2525")

    def test_bad_smart_host(self) -> None:
        """Bare IPs, bad ports, unbalanced brackets and bad names are refused."""
        for text in ["192.0.2.1", "::1", "2001:db8::1:25", "[relay.example.com",
                     "relay.example.com:0", "relay.example.com:65536",
                     "relay.example.com:abc", "bad_host", "[bad host]", "[a]b"]:
            self.assertRaises(ValueError, parse_smart_host, text)

    def test_dns_servers(self) -> None:
        """IP addresses with an optional port, 53 by default."""
        self.assertEqual(
            parse_dns_servers("192.0.2.53 192.0.2.54:5353, [2001:DB8::53]:53 ::1 [::2]"),
            (
                ("192.0.2.53", 53),
                ("192.0.2.54", 5353),
                ("2001:db8::53", 53),
                ("::1", 53),
                ("::2", 53),
            ),
        )
        self.assertEqual(parse_dns_servers(""), ())
        for text in ["dns.example.com", "192.0.2.1:0", "[::1]:x", "192.0.2.1:"]:
            self.assertRaises(ValueError, parse_dns_servers, text)


class EndpointTests(unittest.TestCase):
    """Twisted server endpoint strings, checked without listening."""

    def test_valid(self) -> None:
        """tcp and unix strings in the forms Twisted accepts come back unchanged."""
        for text in ["tcp:25", "tcp:2525:interface=127.0.0.1", "tcp:25:127.0.0.1",
                     "tcp:0", "tcp:25:interface=\\:\\:1:backlog=10",
                     "tcp:port=25", "unix:/run/smtpd.sock:mode=660:lockfile=0"]:
            self.assertEqual(parse_endpoint(text, "/srv/mail"), text)

    def test_list(self) -> None:
        """Space or comma separated strings."""
        self.assertEqual(parse_endpoints("tcp:25, tcp:587  tcp:465"),
                         ("tcp:25", "tcp:587", "tcp:465"))
        self.assertEqual(parse_endpoints(""), ())

    def test_invalid(self) -> None:
        """Each wrong string is a ValueError that quotes it."""
        for text in ["tls:465", "tcp", "tcp:abc", "tcp:65536", "tcp:25:foo=1",
                     "tcp:25:interface=localhost", "tcp:25:backlog=0",
                     "tcp:25:port=26", "tcp:25:127.0.0.1:50:extra",
                     "tcp:25\\", "unix:/x:mode=999", "unix:/x:lockfile=2",
                     "unix:", "TCP:25", "ssl:465", "stdio:", "port=25"]:
            error = self.assertRaises(ValueError, parse_endpoint, text, "/srv/mail")
            self.assertIn(repr(text), str(error), text)

    def test_unix_relative_path(self) -> None:
        """A relative socket path is taken from the root; the string is rewritten."""
        self.assertEqual(
            parse_endpoint("unix:run/smtpd.sock:mode=660", "/srv/mail"),
            "unix:/srv/mail/run/smtpd.sock:mode=660",
        )

    def test_ssl_files(self) -> None:
        """
        ssl needs privateKey, whose file (and certKey's) must exist; relative
        names are taken from the root and quoted back into the string.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc:x"))
        for name in ("k.pem", "c.pem"):
            with open(os.path.join(root, "etc:x", name), "w") as f:
                f.write("pem\n")
        endpoint = parse_endpoint(
            "ssl:465:privateKey=etc\\:x/k.pem:certKey=etc\\:x/c.pem", root
        )
        quoted = root.replace(":", "\\:")
        self.assertEqual(
            endpoint,
            f"ssl:465:privateKey={quoted}/etc\\:x/k.pem:certKey={quoted}/etc\\:x/c.pem",
        )
        error = self.assertRaises(
            ValueError, parse_endpoint, "ssl:465:privateKey=etc/none.pem", root
        )
        self.assertIn("no such file", str(error))
        self.assertRaises(ValueError, parse_endpoint, "ssl:465:sslmethod=NOPE", root)

    def test_plain_tcp(self) -> None:
        """smtps endpoints must be plain tcp."""
        self.assertEqual(parse_plain_tcp_endpoints("tcp:465"), ("tcp:465",))
        error = self.assertRaises(ValueError, parse_plain_tcp_endpoints, "tcp:465 unix:/x")
        self.assertIn("not a plain tcp: (or systemd:) endpoint", str(error))
        self.assertEqual(parse_plain_tcp_endpoints("systemd:domain=INET6:index=1"),
                         ("systemd:domain=INET6:index=1",))

    def test_systemd(self) -> None:
        """Sockets inherited from systemd: a domain and an index or a name."""
        for text in ("systemd:domain=INET6:index=0", "systemd:INET:name=smtp",
                     "systemd:domain=UNIX:index=2"):
            self.assertEqual(parse_endpoint(text), text)
        for text in ("systemd:domain=INET", "systemd:domain=IPX:index=0",
                     "systemd:domain=INET:index=x", "systemd:domain=INET:port=25"):
            error = self.assertRaises(ValueError, parse_endpoint, text)
            self.assertIn(repr(text), str(error), text)


class ProblemLineTests(ConfigTestCase):
    """Each kind of problem is one line naming section, key, value and what is accepted."""

    def test_unknown_section(self) -> None:
        """An unknown section lists the known ones."""
        self.assertEqual(
            self.problem("[bogus]\nx = 1\n"),
            f"[bogus] unknown section; known sections: {SECTIONS}",
        )

    def test_default_section(self) -> None:
        """[DEFAULT] has no special meaning: it is an unknown section."""
        self.assertEqual(
            self.problem("[DEFAULT]\nhostname = x\n"),
            f"[DEFAULT] unknown section; known sections: {SECTIONS}",
        )

    def test_unknown_key(self) -> None:
        """An unknown key lists the section's keys."""
        self.assertEqual(
            self.problem("[tls]\ncertificat = x.pem\n"),
            "[tls] certificat: unknown key; known keys: certificate, key, require, min_version, ciphers",
        )

    def test_bad_duration(self) -> None:
        """A bad duration says what a duration looks like."""
        self.assertEqual(
            self.problem("[server]\nconnection_timeout = 10x\n"),
            "[server] connection_timeout = 10x: '10x' is not a duration; "
            "expected a duration such as 600, 600s, 15m, 4h or 2d, not 0",
        )

    def test_zero_durations(self) -> None:
        """Timeouts, expiration and retries cannot be zero; delay_notification can."""
        path, lines = self.problems(
            "[server]\nconnection_timeout = 0\n"
            "[delivery]\nexpiration = 0s\nretry = 15m 0\ndelay_notification = 0\n"
        )
        self.assertEqual([line.split(" = ")[0] for line in lines], [
            f"{path}: [server] connection_timeout",
            f"{path}: [delivery] expiration",
            f"{path}: [delivery] retry",
        ])

    def test_bad_size(self) -> None:
        """A bad size says which units exist."""
        self.assertEqual(
            self.problem("[messages]\nmax_message_size = 10G\n"),
            "[messages] max_message_size = 10G: '10G' is not a size; expected a size "
            "such as 0 (unlimited), 1048576 (bytes), 2048K or 10M",
        )

    def test_bad_bool(self) -> None:
        """A bad yes/no lists the accepted words."""
        self.assertEqual(
            self.problem("[tls]\nrequire = maybe ; comment\n"),
            "[tls] require = maybe: 'maybe' is not yes or no; "
            "expected yes or no (or true/false, on/off, 1/0)",
        )

    def test_bad_network(self) -> None:
        """A bad network names the bad item."""
        line = self.problem("[access]\nrelay = 127.0.0.0/8 10.0.0.0/33\n")
        self.assertTrue(line.startswith(
            "[access] relay = 127.0.0.0/8 10.0.0.0/33: '10.0.0.0/33' is not an IP network; "
            "expected IP networks"
        ), line)

    def test_empty_allow(self) -> None:
        """An empty allow list would shut everyone out: refused."""
        self.assertIn("no client could ever connect", self.problem("[access]\nallow =\n"))

    def test_bad_endpoint(self) -> None:
        """A bad endpoint names the bad item and shows the accepted forms."""
        line = self.problem("[server]\nlisten = tcp:25 tls:465\n")
        self.assertTrue(line.startswith(
            "[server] listen = tcp:25 tls:465: 'tls:465': unknown endpoint type 'tls'; "
            "expected Twisted endpoint strings"
        ), line)

    def test_smtps_plain_tcp(self) -> None:
        """smtps takes plain tcp: endpoints only."""
        line = self.problem("[server]\nsmtps = unix:/tmp/s.sock\n")
        self.assertIn("[server] smtps = unix:/tmp/s.sock: 'unix:/tmp/s.sock' is not a plain", line)

    def test_pop3_endpoints(self) -> None:
        """[pop3] listen takes endpoint strings, pop3s plain tcp: ones; both default off."""
        self.assertEqual((self.load("").pop3.listen, self.load("").pop3.pop3s), ((), ()))
        config = self.load("[pop3]\nlisten = tcp:1110:interface=127.0.0.1\npop3s = tcp:995\n")
        self.assertEqual(config.pop3.listen, ("tcp:1110:interface=127.0.0.1",))
        self.assertEqual(config.pop3.pop3s, ("tcp:995",))
        line = self.problem("[pop3]\npop3s = unix:/tmp/p.sock\n")
        self.assertIn("[pop3] pop3s = unix:/tmp/p.sock: 'unix:/tmp/p.sock' is not a plain", line)
        line = self.problem("[pop3]\nlisten = tls:995\n")
        self.assertIn("[pop3] listen = tls:995: 'tls:995': unknown endpoint type", line)
        line = self.problem("[server]\nlisten = tcp:2525\n[pop3]\npop3s = tcp:2525:interface=127.0.0.1\n")
        self.assertIn("[pop3] pop3s = tcp:2525:interface=127.0.0.1: tcp:2525:interface=127.0.0.1 "
                      "binds the port of tcp:2525 in [server] listen", line)
        line = self.problem("[pop3]\napop = yes\n")
        self.assertIn("[pop3] apop", line)

    def test_same_port_twice(self) -> None:
        """Two listeners binding one port are refused, wildcard included."""
        line = self.problem(
            "[server]\nlisten = tcp:2525:interface=127.0.0.1\nsubmission = tcp:2525\n"
        )
        self.assertIn("[server] submission = tcp:2525: tcp:2525 binds the port of "
                      "tcp:2525:interface=127.0.0.1 in [server] listen", line)
        self.load("[server]\nlisten = tcp:25:interface=127.0.0.1 tcp:25:interface=127.0.0.2\n"
                  "submission = tcp:0 tcp:0\n")

    def test_bad_enums(self) -> None:
        """Enumerations list their values."""
        cases = {
            "[delivery]\noutbound_tls = always\n": "expected none, may, encrypt or verify",
            "[messages]\nbare_newlines = fix\n": "expected reject or normalize",
            "[logging]\nformat = xml\n": "expected w3c or json",
            "[auth]\nmechanisms = PLAIN CRAM-MD5\n": "expected PLAIN and/or LOGIN",
            "[domain:example.com]\ntype = mailbox\n": "expected local, alias, drop, remote or lmtp",
        }
        for text, expected in cases.items():
            self.assertIn(expected, self.problem(text))

    def test_bad_numbers(self) -> None:
        """Counts are whole numbers of at least 1; ports 1 to 65535."""
        self.assertEqual(
            self.problem("[server]\nmax_connections = 0\n"),
            "[server] max_connections = 0: 0 is out of range; "
            "expected a whole number of at least 1",
        )
        self.assertIn("'-5' is not a whole number", self.problem("[access]\nmax_errors = -5\n"))
        self.assertIn(
            "expected a port number from 1 to 65535",
            self.problem("[delivery]\nremote_port = 70000\n"),
        )

    def test_bad_hostname(self) -> None:
        """A host name with a space is refused."""
        self.assertIn(
            "[server] hostname = bad host: label 'bad host'",
            self.problem("[server]\nhostname = bad host\n"),
        )

    def test_mechanisms_upper_cased(self) -> None:
        """Mechanism names are upper-cased and kept once each, in order."""
        config = self.load("[auth]\nmechanisms = login, plain LOGIN\n")
        self.assertEqual(config.auth.mechanisms, ("LOGIN", "PLAIN"))

    def test_submission_needs_mechanisms(self) -> None:
        """A submission port with no AUTH mechanism could never accept mail."""
        self.assertIn(
            "[auth] mechanisms = : empty, but [server] submission requires AUTH",
            self.problem("[server]\nsubmission = tcp:0\n[auth]\nmechanisms =\n"),
        )

    def test_fallback_needs_smart_host(self) -> None:
        """smart_host_fallback = yes without a smart host is refused."""
        self.assertEqual(
            self.problem("[delivery]\nsmart_host_fallback = yes\n"),
            "[delivery] smart_host_fallback = yes: no [delivery] smart_host to fall back "
            "to; expected no, or a smart_host",
        )

    def test_alias_of_nothing(self) -> None:
        """alias_of must name a local domain of this file."""
        self.assertEqual(
            self.problem(
                "[domain:example.org]\ntype = alias\nalias_of = example.com\n"
                "[domain:example.com]\ntype = remote\n"
            ),
            "[domain:example.org] alias_of = example.com: no [domain:example.com] with "
            "type = local in this file; expected the name of a type = local domain of "
            "this file",
        )

    def test_alias_missing(self) -> None:
        """An alias domain without alias_of is refused."""
        self.assertIn(
            "[domain:example.org] alias_of: missing",
            self.problem("[domain:example.org]\ntype = alias\n"),
        )

    def test_wildcard_on_local(self) -> None:
        """Only remote domains may be wildcards; type defaults to local."""
        expected = ("[domain:*.example.com] type = local: a wildcard domain must be "
                    "type remote; expected remote")
        self.assertEqual(self.problem("[domain:*.example.com]\ntype = local\n"), expected)
        self.assertEqual(self.problem("[domain:*.example.com]\n"), expected)
        self.assertIn("type = drop", self.problem("[domain:*.example.com]\ntype = drop\n"))

    def test_key_of_another_type(self) -> None:
        """A key of another domain type is an error listing the type's keys."""
        self.assertEqual(
            self.problem("[domain:example.com]\ntype = local\nrelay = yes\n"),
            "[domain:example.com] relay: unknown key for type local; known keys: type, dkim",
        )
        self.assertEqual(
            self.problem("[domain:example.com]\ntype = remote\nalias_of = x.example\n"),
            "[domain:example.com] alias_of: unknown key for type remote; known keys: "
            "type, relay, smart_host, outbound_tls, remote_port",
        )

    def test_domain_unknown_key(self) -> None:
        """A key no domain type knows lists every domain key."""
        self.assertEqual(
            self.problem("[domain:example.com]\nmailbox = x\n"),
            "[domain:example.com] mailbox: unknown key; known keys: type, alias_of, "
            "relay, smart_host, outbound_tls, remote_port, lmtp, dkim",
        )

    def test_bad_domain_name(self) -> None:
        """A section name that is no domain name is refused."""
        line = self.problem("[domain:bad_name]\n")
        self.assertTrue(line.startswith("[domain:bad_name] label 'bad_name'"), line)
        self.assertTrue(line.endswith("expected [domain:NAME] with NAME a domain name "
                                      "such as example.com, or *.example.com for type remote"))

    def test_domain_twice(self) -> None:
        """A domain given twice, whatever the case or trailing dot, is refused."""
        self.assertEqual(
            self.problem("[domain:example.com]\n[domain:Example.COM.]\n"),
            "[domain:Example.COM.] domain example.com is also [domain:example.com]; "
            "expected each domain once",
        )

    def test_manhole_endpoints(self) -> None:
        """Manhole listeners are endpoint strings; a bad one is one problem line."""
        path = self.write(
            "[manhole]\ntelnet = tcp:2323:interface=127.0.0.1\nssh = tcp:2222:interface=\\:\\:1\n"
        )
        manhole = load_config(path).manhole
        self.assertEqual(manhole.telnet, ("tcp:2323:interface=127.0.0.1",))
        self.assertEqual(manhole.ssh, ("tcp:2222:interface=\\:\\:1",))
        line = self.problem("[manhole]\nssh = tcp:lots\n")
        self.assertTrue(line.startswith("[manhole] ssh = tcp:lots: "), line)

    def test_log_rotation(self) -> None:
        """rotate is daily, size or none; rotate_size is a non-zero size."""
        logging = load_config(self.write("[logging]\nrotate = size\nrotate_size = 2M\n")).logging
        self.assertEqual((logging.rotate, logging.rotate_size), ("size", 2 * 1024 * 1024))
        self.assertIn("expected daily, size or none", self.problem("[logging]\nrotate = weekly\n"))
        self.assertIn("rotate_size = 0: zero size", self.problem("[logging]\nrotate_size = 0\n"))

    def test_password_hidden(self) -> None:
        """A bad password is not echoed; control characters are escaped."""
        line = self.problem("[delivery]\nsmart_host_password = se\x01cret\n")
        self.assertNotIn("cret", line)
        self.assertIn("smart_host_password = ***: control characters", line)
        line = self.problem("[server]\nbanner = ESMTP\n  continued\n")
        self.assertIn("banner = ESMTP\\ncontinued: control characters", line)

    def test_missing_file(self) -> None:
        """A missing file is one problem line naming it."""
        path = os.path.join(self.mktemp(), "smtpd.ini")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(error.problems,
                         [f"{path}: cannot read the file: No such file or directory"])

    def test_syntax_errors(self) -> None:
        """INI syntax errors name the line."""
        self.assertEqual(
            self.problem("hostname = x\n"),
            "line 1: 'hostname = x' comes before any [section]; "
            "expected a [section] header first",
        )
        self.assertEqual(
            self.problem("[server]\nbanner = a\nbanner = b\n"),
            "line 3: [server] banner: given twice; expected each key once per section",
        )
        self.assertEqual(
            self.problem("[server]\nno equals sign\n"),
            "line 2: cannot parse 'no equals sign'; expected [section], key = value, "
            "or a ; comment",
        )
        self.assertIn("given twice", self.problem("[tls]\n[tls]\n"))

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is one problem line."""
        path = self.write("")
        with open(path, "wb") as f:
            f.write(b"[server]\nbanner = \xff\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(len(error.problems), 1)
        self.assertIn("not UTF-8", error.problems[0])


class MultipleProblemsTests(ConfigTestCase):
    """Every problem is found and reported at once, in file order."""

    def test_all_at_once(self) -> None:
        """
        One L{ConfigError} lists every problem of every section; its string is
        the lines joined by newlines.
        """
        path = self.write("""\
            [server]
            hostname = bad host
            max_connections = lots
            bogus = 1
            [tls]
            require = maybe
            [nonsense]
            [messages]
            max_message_size = 1G
            [domain:a.example]
            type = alias
            alias_of = nowhere.example
            [manhole]
            ssh = tcp:lots
        """)
        error = self.assertRaises(ConfigError, load_config, path)
        starts = [
            "[server] hostname = bad host:",
            "[server] max_connections = lots:",
            "[server] bogus: unknown key",
            "[tls] require = maybe:",
            "[nonsense] unknown section",
            "[messages] max_message_size = 1G:",
            "[manhole] ssh = tcp:lots:",
            "[domain:a.example] alias_of = nowhere.example:",
        ]
        self.assertEqual(len(error.problems), len(starts), error.problems)
        for line, start in zip(error.problems, starts):
            self.assertTrue(line.startswith(f"{path}: {start}"), line)
        self.assertEqual(str(error), "\n".join(error.problems))

    def test_config_error(self) -> None:
        """L{ConfigError} keeps its lines in C{problems}."""
        error = ConfigError(["a: one", "a: two"])
        self.assertEqual(error.problems, ["a: one", "a: two"])
        self.assertEqual(str(error), "a: one\na: two")


class PathTests(ConfigTestCase):
    """Relative paths resolve against the deployment root, whatever the cwd."""

    def setUp(self) -> None:
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        os.chdir(elsewhere)

    def test_relative_paths(self) -> None:
        """
        Every path key, given or defaulted, is under the parent of the folder
        holding the file; absolute paths stay; "-" stays for the log.
        """
        root = os.path.abspath(self.mktemp())
        path = self.write("""\
            [server]
            mailroot = spool
            [tls]
            certificate = /etc/ssl/mail.pem
            [auth]
            users = ../shared/users
            [manhole]
            ssh_key_dir = keys
            [logging]
            path = log/smtpd.log
        """, root)
        config = load_config(path)
        self.assertEqual(config.root, root)
        self.assertEqual(config.path, path)
        self.assertEqual(config.server.mailroot, os.path.join(root, "spool"))
        self.assertEqual(config.tls.certificate, "/etc/ssl/mail.pem")
        self.assertEqual(config.tls.key, os.path.join(root, "etc", "tls", "smtpd.key"))
        self.assertEqual(
            config.auth.users, os.path.join(os.path.dirname(root), "shared", "users")
        )
        self.assertEqual(config.manhole.users, os.path.join(root, "etc", "manhole.passwd"))
        self.assertEqual(config.manhole.ssh_key_dir, os.path.join(root, "keys"))
        self.assertEqual(config.logging.path, os.path.join(root, "log", "smtpd.log"))
        self.assertEqual(self.load("[logging]\npath = -\n").logging.path, "-")

    def test_relative_config_path(self) -> None:
        """A config path relative to the cwd gives an absolute C{Config.path}."""
        root = os.path.abspath(self.mktemp())
        self.write("[server]\nmailroot = m\n", root)
        os.chdir(root)
        config = load_config(os.path.join("etc", "smtpd.ini"))
        self.assertEqual(config.path, os.path.join(root, "etc", "smtpd.ini"))
        self.assertEqual(config.root, root)
        self.assertEqual(config.server.mailroot, os.path.join(root, "m"))

    def test_endpoint_paths(self) -> None:
        """Socket paths in endpoint strings resolve against the root too."""
        root = os.path.abspath(self.mktemp())
        config = load_config(self.write("[server]\nlisten = unix:run/smtpd.sock\n", root))
        self.assertEqual(config.server.listen, (f"unix:{root}/run/smtpd.sock",))

    def test_shipped_from_elsewhere(self) -> None:
        """The shipped file puts the mailroot in the repository from any cwd."""
        config = load_config(SHIPPED)
        self.assertEqual(config.server.mailroot, os.path.join(REPOSITORY, "mailroot"))


class ValuesTests(ConfigTestCase):
    """Non-default values arrive typed in their dataclasses."""

    def test_full(self) -> None:
        """A file setting most keys gives each parsed value."""
        config = self.load("""\
            [server]
            hostname = Mail.Example.com.
            listen = tcp:25, tcp:2526:interface=127.0.0.1
            submission = tcp:587
            smtps = tcp:465
            max_connections = 5
            connection_timeout = 90s
            banner = Mail service ready
            [tls]
            require = yes
            [auth]
            allow_plaintext = on
            anonymous = false
            [access]
            allow = 192.0.2.0/24
            deny = 192.0.2.66
            relay =
            relay_authenticated = no
            [messages]
            max_message_size = 0
            max_session_size = 0
            max_recipients = 7
            ndr_copy_to = <ndr@example.com>
            bare_newlines = Normalize
            [delivery]
            retry = 1m, 2m
            delay_notification = 0
            expiration = 5d
            smart_host = [192.0.2.25]:2525
            smart_host_fallback = yes
            smart_host_user = relayuser
            smart_host_password = p@ss word
            outbound_tls = verify
            remote_port = 2525
            masquerade_domain = Example.com
            dns_servers = 192.0.2.53 [::1]:5353
            [logging]
            format = JSON
        """)
        self.assertEqual(config.server.hostname, "Mail.Example.com")
        self.assertEqual(config.server.listen, ("tcp:25", "tcp:2526:interface=127.0.0.1"))
        self.assertEqual(config.server.submission, ("tcp:587",))
        self.assertEqual(config.server.smtps, ("tcp:465",))
        self.assertEqual(config.server.max_connections, 5)
        self.assertEqual(config.server.connection_timeout, 90.0)
        self.assertEqual(config.server.banner, "Mail service ready")
        self.assertTrue(config.tls.require)
        self.assertEqual((config.auth.allow_plaintext, config.auth.anonymous), (True, False))
        self.assertEqual(config.access.allow, (ipaddress.ip_network("192.0.2.0/24"),))
        self.assertEqual(config.access.deny, (ipaddress.ip_network("192.0.2.66/32"),))
        self.assertEqual(config.access.relay, ())
        self.assertFalse(config.access.relay_authenticated)
        self.assertEqual(config.messages.max_message_size, 0)
        self.assertEqual(config.messages.max_session_size, 0)
        self.assertEqual(config.messages.max_recipients, 7)
        self.assertEqual(config.messages.ndr_copy_to, "ndr@example.com")
        self.assertEqual(config.messages.bare_newlines, "normalize")
        delivery = config.delivery
        self.assertEqual(delivery.retry, (60.0, 120.0))
        self.assertEqual(delivery.delay_notification, 0.0)
        self.assertEqual(delivery.expiration, 5 * 86400.0)
        self.assertEqual(delivery.smart_host, SmartHost("192.0.2.25", 2525, False))
        self.assertTrue(delivery.smart_host_fallback)
        self.assertEqual(delivery.smart_host_user, "relayuser")
        self.assertEqual(delivery.smart_host_password, "p@ss word")
        self.assertEqual(delivery.outbound_tls, "verify")
        self.assertEqual(delivery.remote_port, 2525)
        self.assertEqual(delivery.masquerade_domain, "example.com")
        self.assertEqual(delivery.dns_servers, (("192.0.2.53", 53), ("::1", 5353)))
        self.assertEqual(config.logging.format, "json")


class DomainTests(ConfigTestCase):
    """[domain:NAME] sections."""

    DOMAINS = """\
        [domain:Example.COM.]
        type = local
        [domain:example.org]
        type = alias
        alias_of = EXAMPLE.com
        [domain:drop.example.com]
        type = drop
        [domain:*.partner.example]
        type = remote
        relay = yes
        smart_host = relay.partner.example:587
        outbound_tls = encrypt
        remote_port = 2525
        [domain:*.b.partner.example]
        type = remote
        [domain:exact.b.partner.example]
        type = remote
        [domain:second.example]
    """

    def test_types_in_file_order(self) -> None:
        """Each type with its keys, names normalised, in file order."""
        config = self.load(self.DOMAINS)
        self.assertEqual(config.domains, (
            DomainConfig("example.com", "local"),
            DomainConfig("example.org", "alias", alias_of="example.com"),
            DomainConfig("drop.example.com", "drop"),
            DomainConfig(
                "*.partner.example", "remote", relay=True,
                smart_host=SmartHost("relay.partner.example", 587, True),
                outbound_tls="encrypt", remote_port=2525,
            ),
            DomainConfig("*.b.partner.example", "remote"),
            DomainConfig("exact.b.partner.example", "remote"),
            DomainConfig("second.example", "local"),
        ))
        self.assertEqual(config.default_domain, "example.com")
        self.assertEqual([d.name for d in config.local_domains],
                         ["example.com", "second.example"])

    def test_lookup(self) -> None:
        """
        L{Config.domain}: exact names first, then the longest wildcard; a
        wildcard does not match its own base name; any case, trailing dot.
        """
        config = self.load(self.DOMAINS)
        lookups = {
            "EXAMPLE.com.": "example.com",
            "a.partner.example": "*.partner.example",
            "x.y.partner.example": "*.partner.example",
            "c.b.partner.example": "*.b.partner.example",
            "exact.b.partner.example": "exact.b.partner.example",
            "partner.example": None,
            "b.partner.example": "*.partner.example",
            "other.example": None,
            "notpartner.example": None,
        }
        for name, expected in lookups.items():
            found = config.domain(name)
            self.assertEqual(found.name if found else None, expected, name)
