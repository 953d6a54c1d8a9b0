"""
Tests for the mail authentication keys of the configuration:
C{[domain:NAME] dkim} and the C{[checks]} section.
"""

from __future__ import annotations

import os

from smtpd.config import ChecksConfig, ConfigError, DKIMSelector, load_config
from smtpd.mailauth.keys import ED25519_SHA256, RSA_SHA256, generate_key
from tests.test_config import ConfigTestCase

RSA_PEM = generate_key(RSA_SHA256)
ED_PEM = generate_key(ED25519_SHA256)


class DKIMKeyTests(ConfigTestCase):
    """C{[domain:NAME] dkim = "selector:keyfile ..."}."""

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "etc", "dkim"))
        for name, pem in (("rsa", RSA_PEM), ("ed", ED_PEM), ("junk", b"hello\n")):
            with open(os.path.join(self.root, "etc", "dkim", name), "wb") as f:
                f.write(pem)

    def problem_in_root(self, text: str) -> str:
        """The one problem line of C{text} written under this test's root."""
        path = self.write(text, self.root)
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(len(error.problems), 1, error.problems)
        return error.problems[0][len(path) + 2 :]

    def test_pairs_and_algorithms(self) -> None:
        """Each pair names a selector and a key; the key type gives the algorithm; paths are from the root."""
        path = self.write(
            "[domain:example.com]\ndkim = s1:etc/dkim/rsa, e1:etc/dkim/ed\n"
            "[domain:alias.example]\ntype = alias\nalias_of = example.com\ndkim = a1:etc/dkim/ed\n",
            self.root,
        )
        config = load_config(path)
        self.assertEqual(config.domain("example.com").dkim, (
            DKIMSelector("s1", os.path.join(self.root, "etc/dkim/rsa"), RSA_SHA256),
            DKIMSelector("e1", os.path.join(self.root, "etc/dkim/ed"), ED25519_SHA256),
        ))
        self.assertEqual(config.domain("alias.example").dkim[0].algorithm, ED25519_SHA256)

    def test_missing_key_file(self) -> None:
        """A key file that cannot be read is one problem line naming it."""
        line = self.problem_in_root("[domain:example.com]\ndkim = s1:etc/dkim/nothere\n")
        self.assertTrue(line.startswith("[domain:example.com] dkim = s1:etc/dkim/nothere: cannot read "),
                        line)
        self.assertIn("No such file or directory", line)
        self.assertIn('expected "selector:keyfile" pairs', line)

    def test_not_a_key(self) -> None:
        """A file that is no PEM private key is refused."""
        line = self.problem_in_root("[domain:example.com]\ndkim = s1:etc/dkim/junk\n")
        self.assertIn("etc/dkim/junk: not a PEM private key", line)

    def test_bad_pair(self) -> None:
        """A pair without a colon, or with a selector that is no DNS label, is refused."""
        self.assertIn("is not selector:keyfile",
                      self.problem_in_root("[domain:example.com]\ndkim = etc/dkim/rsa\n"))
        self.assertIn("is not a selector",
                      self.problem_in_root("[domain:example.com]\ndkim = s_1:etc/dkim/rsa\n"))

    def test_not_for_remote_domains(self) -> None:
        """Only local and alias domains sign: dkim in a remote domain is an unknown key."""
        line = self.problem_in_root("[domain:example.com]\ntype = remote\ndkim = s1:etc/dkim/rsa\n")
        self.assertTrue(line.startswith("[domain:example.com] dkim: unknown key for type remote"),
                        line)


    def test_arc_seal(self) -> None:
        """[checks] arc_seal takes one RSA pair; arc_domain defaults to the default domain."""
        path = self.write("[domain:example.com]\n[checks]\narc_seal = arc1:etc/dkim/rsa\n", self.root)
        config = load_config(path)
        self.assertEqual(config.checks.arc_seal,
                         DKIMSelector("arc1", os.path.join(self.root, "etc/dkim/rsa"), RSA_SHA256))
        self.assertEqual(config.arc_domain, "example.com")

    def test_arc_seal_rsa_only(self) -> None:
        """An Ed25519 sealing key is refused: ARC allows rsa-sha256 only."""
        line = self.problem_in_root("[checks]\narc_seal = e1:etc/dkim/ed\n")
        self.assertIn("is not an RSA key", line)


class ChecksSectionTests(ConfigTestCase):
    """The C{[checks]} section."""

    def test_defaults(self) -> None:
        """Every check defaults to tag; the authserv-id defaults to [server] hostname."""
        config = self.load("[server]\nhostname = mx.example.com\n")
        self.assertEqual(config.checks, ChecksConfig("tag", "tag", "tag", ""))
        self.assertEqual(config.authserv_id, "mx.example.com")

    def test_values(self) -> None:
        """off, tag and enforce are accepted, and an explicit authserv-id wins."""
        config = self.load("[checks]\nspf = enforce\ndkim = off\ndmarc = ENFORCE\n"
                           "authserv_id = auth.example.com\n")
        self.assertEqual(config.checks, ChecksConfig("enforce", "off", "enforce", "auth.example.com"))
        self.assertEqual(config.authserv_id, "auth.example.com")

    def test_bad_mode(self) -> None:
        """Another value is one problem line saying what is accepted."""
        self.assertEqual(
            self.problem("[checks]\nspf = strict\n"),
            "[checks] spf = strict: 'strict' is not one of them; "
            "expected off, tag (Authentication-Results only) or enforce",
        )
