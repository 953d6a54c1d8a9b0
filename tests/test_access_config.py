"""
The configuration keys of access control and hostile input: the per-address
limits and reverse DNS of [access], the deadlines of [server], the TLS policy
of [tls] and sender_login_match of [auth].
"""

from __future__ import annotations

from tests.test_config import SHIPPED, ConfigTestCase

from smtpd.config import load_config


class AccessKeysTests(ConfigTestCase):
    """The new keys load, default to values a small site never notices, and validate."""

    def test_shipped_defaults(self) -> None:
        """The shipped file gives the documented defaults."""
        config = load_config(SHIPPED)
        access, server = config.access, config.server
        self.assertEqual(
            (access.auth_failure_window, access.auth_failure_limit, access.auth_block),
            (600.0, 10, 900.0),
        )
        self.assertEqual((access.connection_rate, access.message_rate), (0, 0))
        self.assertEqual((access.reverse_dns, access.reject_unknown_client), (False, False))
        self.assertEqual(
            (server.command_timeout, server.data_timeout, server.min_data_rate),
            (60.0, 300.0, 500),
        )
        self.assertEqual((config.tls.min_version, config.tls.ciphers), ("1.2", ""))
        self.assertTrue(config.auth.sender_login_match)

    def test_values(self) -> None:
        """Durations, counts and yes/no parse as elsewhere."""
        config = self.load(
            "[access]\nauth_failure_window = 1h\nauth_failure_limit = 0\n"
            "auth_block = 2d\nconnection_rate = 60\nmessage_rate = 30\n"
            "reverse_dns = yes\nreverse_dns_timeout = 2s\nreject_unknown_client = yes\n"
            "[server]\ncommand_timeout = 30s\ndata_timeout = 10m\nmin_data_rate = 0\n"
            "[tls]\nmin_version = 1.3\nciphers = ECDHE+AESGCM\n"
            "[auth]\nsender_login_match = no\n"
        )
        self.assertEqual(config.access.auth_failure_window, 3600.0)
        self.assertEqual(config.access.auth_block, 172800.0)
        self.assertEqual(config.access.connection_rate, 60)
        self.assertTrue(config.access.reject_unknown_client)
        self.assertEqual(config.server.min_data_rate, 0)
        self.assertEqual(config.tls.min_version, "1.3")
        self.assertEqual(config.tls.ciphers, "ECDHE+AESGCM")
        self.assertFalse(config.auth.sender_login_match)

    def test_cipher_string_refused_by_openssl(self) -> None:
        """A cipher string OpenSSL selects nothing with is one config error line."""
        self.assertEqual(
            self.problem("[tls]\nciphers = NOSUCHCIPHER\n"),
            "[tls] ciphers = NOSUCHCIPHER: OpenSSL selects no cipher with it; expected "
            "empty (the defaults) or an OpenSSL cipher string such as "
            "ECDHE+AESGCM:ECDHE+CHACHA20",
        )

    def test_min_version_choices(self) -> None:
        """TLS 1.0 and 1.1 are not accepted as minimum versions."""
        self.assertIn("expected 1.2 or 1.3", self.problem("[tls]\nmin_version = 1.0\n"))

    def test_zero_timeouts_refused(self) -> None:
        """The deadlines cannot be zero."""
        path, lines = self.problems("[server]\ncommand_timeout = 0\ndata_timeout = 0\n")
        self.assertEqual(len(lines), 2, lines)

    def test_reject_unknown_needs_reverse_dns(self) -> None:
        """reject_unknown_client without reverse_dns is one problem line."""
        self.assertEqual(
            self.problem("[access]\nreject_unknown_client = yes\n"),
            "[access] reject_unknown_client = yes: it needs reverse_dns = yes to know "
            "client names; expected no, or reverse_dns = yes",
        )
