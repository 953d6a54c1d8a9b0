"""
Tests for C{smtpctl dkim keygen}: the key file it writes signs mail that
dkimpy verifies with the record it prints, served by a real DNS server.
"""

from __future__ import annotations

import os
import stat

import dkim
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.names import dns as tdns

from smtpd.config import load_config
from smtpd.mailauth.signing import DKIMSigner
from tests.support import start_dns_server
from tests.test_ctl import CtlTestCase
from tests.test_mailauth_signing import MESSAGE, dnspython_lookup, run_blocking


class KeygenTests(CtlTestCase):
    """C{smtpctl dkim keygen DOMAIN}."""

    def published(self) -> tuple[str, list[bytes]]:
        """The record name and character-strings of the printed zone entry."""
        entry = next(line for line in self.stdout.getvalue().splitlines() if " IN TXT " in line)
        name = entry.split()[0].rstrip(".")
        return name, [s.encode("ascii") for s in entry.split('"')[1::2]]

    def configure(self, line: str) -> None:
        """Add the printed C{dkim = ...} line to [domain:example.com]."""
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace("[domain:example.com]\ntype = local\n",
                                 f"[domain:example.com]\ntype = local\n{line}\n"))

    @defer.inlineCallbacks
    def keygen_signs(self, *argv: str):
        """Run keygen, use its key as printed, and return dkimpy's verdict on a signed message."""
        self.assertEqual(self.run_ctl("dkim", "keygen", "example.com", *argv), 0,
                         self.stderr.getvalue())
        config_line = self.stdout.getvalue().splitlines()[-1]
        self.configure(config_line)
        self.assertEqual(self.run_ctl("check"), 0, self.stderr.getvalue())
        name, strings = self.published()
        server = start_dns_server(self, {"example.com": {name: [tdns.Record_TXT(*strings)]}})
        signer = DKIMSigner.from_config(load_config(self.config), run_blocking)
        signed = (yield defer.Deferred.fromCoroutine(signer.signature(MESSAGE, True))) + MESSAGE
        lookup = dnspython_lookup(server)
        ok = yield deferToThread(lambda: dkim.DKIM(signed).verify(dnsfunc=lookup))
        return ok, signed, config_line

    @defer.inlineCallbacks
    def test_rsa_key(self):
        """The default RSA key is written 0600 under etc/dkim and verifies with the printed record."""
        ok, signed, line = yield self.keygen_signs()
        self.assertTrue(ok)
        self.assertEqual(line, "dkim = s1:etc/dkim/example.com.rsa")
        path = os.path.join(self.root, "etc", "dkim", "example.com.rsa")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertIn(b"a=rsa-sha256", signed)
        self.assertIn("s1._domainkey.example.com. IN TXT ( \"v=DKIM1; k=rsa; p=",
                      self.stdout.getvalue())

    @defer.inlineCallbacks
    def test_ed25519_key(self):
        """--algorithm ed25519-sha256 with a selector makes a key that verifies."""
        ok, signed, line = yield self.keygen_signs("--algorithm", "ed25519-sha256",
                                                   "--selector", "ed2026")
        self.assertTrue(ok)
        self.assertEqual(line, "dkim = ed2026:etc/dkim/example.com.ed25519")
        self.assertIn(b"a=ed25519-sha256", signed)
        self.assertIn(b"s=ed2026", signed)

    def test_existing_key_kept(self):
        """A second keygen for the same domain and type refuses to overwrite the key."""
        self.assertEqual(self.run_ctl("dkim", "keygen", "example.com"), 0)
        path = os.path.join(self.root, "etc", "dkim", "example.com.rsa")
        with open(path, "rb") as f:
            before = f.read()
        self.assertEqual(self.run_ctl("dkim", "keygen", "example.com"), 1)
        self.assertIn("exists", self.stderr.getvalue())
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertNoTraceback()

    def test_bad_arguments(self):
        """A bad domain or selector is one error line and exit 1, nothing written."""
        self.assertEqual(self.run_ctl("dkim", "keygen", "not a domain"), 1)
        self.assertEqual(self.run_ctl("dkim", "keygen", "example.com", "--selector", "a_b"), 1)
        self.assertEqual(len(self.stderr.getvalue().splitlines()), 2)
        self.assertFalse(os.path.exists(os.path.join(self.root, "etc", "dkim")))
        self.assertNoTraceback()
