"""
Tests for L{smtpd.inbound.submission}: which senders an authenticated user
owns on the submission and implicit-TLS endpoints.
"""

from __future__ import annotations

from twisted.trial import unittest

from smtpd.inbound.submission import owns, sender_refusal
from tests.inbound import make_config


class OwnershipTests(unittest.TestCase):
    """sender_login_match: the login's own address, alias domains included."""

    def setUp(self):
        self.config = make_config("/srv/mail")

    def test_own_address(self):
        """The login address itself is owned, in any case."""
        self.assertTrue(owns(self.config, "bob@localhost", "bob@localhost"))
        self.assertTrue(owns(self.config, "bob@localhost", "Bob@LOCALHOST"))

    def test_alias_domain(self):
        """The same user at an alias domain of the login's domain is owned."""
        self.assertTrue(owns(self.config, "bob@localhost", "bob@alias.test"))

    def test_international_address(self):
        """
        A UTF-8 login owns its address in NFD, another case, and with the
        domain in either IDNA spelling.
        """
        login = "ren\u00e9@b\u00fccher.example"
        for sender in ("RENE\u0301@B\u00dcCHER.example", "ren\u00e9@xn--bcher-kva.example"):
            self.assertTrue(owns(self.config, login, sender), sender)
        self.assertFalse(owns(self.config, login, "rene@b\u00fccher.example"))

    def test_others(self):
        """Another user, another domain, or a domain merely named alike is not owned."""
        for sender in ["ann@localhost", "bob@example.com", "bob@drop.test", "bob"]:
            self.assertFalse(owns(self.config, "bob@localhost", sender), sender)

    def test_refusals(self):
        """553 texts for a foreign address and for <>; none when the rule is off."""
        self.assertIsNone(sender_refusal(self.config, "bob@localhost", "bob@alias.test"))
        self.assertEqual(
            sender_refusal(self.config, "bob@localhost", "ann@localhost"),
            "5.7.1 <ann@localhost>: Sender address rejected: not owned by user bob@localhost",
        )
        self.assertTrue(sender_refusal(self.config, "bob@localhost", "").startswith("5.7.1 <>"))
        off = make_config("/srv/mail", auth={"sender_login_match": False})
        self.assertIsNone(sender_refusal(off, "bob@localhost", "ann@localhost"))
        self.assertIsNone(sender_refusal(off, None, ""))
