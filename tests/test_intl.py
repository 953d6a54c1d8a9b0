"""
Internationalized mail below the session: IDNA equivalence of domains in the
configuration and routing, account lookup, the on-disk Maildir names of UTF-8
local parts, the RFC 6533 address encodings, and local copies of BINARYMIME
messages kept byte for byte.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from smtpd.config import Config, DomainConfig, ServerConfig
from smtpd.config.values import parse_domain_name, parse_hostname
from smtpd.delivery.drop import DropDelivery
from smtpd.delivery.maildir import MailboxError, MaildirDelivery, split_mailbox
from smtpd.directory.accounts import Users
from smtpd.directory.routing import LOCAL, REMOTE, route
from smtpd.mail import intl
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource

HASH = b"$2b$04$" + b"a" * 53
# NUL, a bare CR, a bare LF, CRLF, a CR at the very end, 8-bit octets.
BINARY = b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\r\x0a\n\r\n\xff\xfe\r"


def config(*domains: DomainConfig) -> Config:
    return Config(path="/srv/etc/smtpd.ini", root="/srv", server=ServerConfig(),
                  domains=domains)


class DomainFormTests(unittest.TestCase):
    """A-labels and U-labels name the same domain everywhere."""

    def test_forms(self) -> None:
        """a_label_domain gives the lower-case xn-- form; ASCII names are only lower-cased."""
        self.assertEqual(intl.a_label_domain("B\u00fccher.Example."), "xn--bcher-kva.example")
        self.assertEqual(intl.a_label_domain("XN--BCHER-KVA.example"), "xn--bcher-kva.example")
        self.assertEqual(intl.a_label_domain("*.b\u00fccher.example"), "*.xn--bcher-kva.example")
        self.assertEqual(intl.u_label_domain("xn--bcher-kva.EXAMPLE"), "b\u00fccher.example")
        self.assertRaises(intl.IDNAError, intl.u_label_domain, "xn--zz.example")

    def test_config_names(self) -> None:
        """A [domain:...] name may be written with U-labels; the host name stays ASCII."""
        self.assertEqual(parse_domain_name("B\u00fccher.Example."), "b\u00fccher.example")
        self.assertEqual(parse_domain_name("xn--bcher-kva.example"), "xn--bcher-kva.example")
        for bad in ("b\u00fc_cher.example", "\u00fc" * 70 + ".example"):
            self.assertRaises(ValueError, parse_domain_name, bad)
        self.assertRaises(ValueError, parse_hostname, "b\u00fccher.example")

    def test_config_lookup_both_ways(self) -> None:
        """
        Config.domain finds a section written in A-labels by the U-label name
        and the other way round, wildcards too.
        """
        c = config(DomainConfig("xn--bcher-kva.example"), DomainConfig("\u4f8b\u5b50.test"),
                   DomainConfig("*.m\u00fcnchen.test", type="remote"))
        self.assertEqual(c.domain("B\u00dcCHER.example").name, "xn--bcher-kva.example")
        self.assertEqual(c.domain("xn--fsqu00a.test").name, "\u4f8b\u5b50.test")
        self.assertEqual(c.domain("mx.xn--mnchen-3ya.test").name, "*.m\u00fcnchen.test")
        self.assertIsNone(c.domain("bucher.example"))

    def test_route_and_accounts(self) -> None:
        """
        A recipient in any spelling routes to the account's mailbox under the
        configured domain name, its local part in NFC; etc/users may be
        written in either form.
        """
        users = Users({"ren\u00e9@xn--bcher-kva.example": HASH})
        c = config(DomainConfig("b\u00fccher.example"))
        for spelling in ("ren\u00e9@b\u00fccher.example", "RENE\u0301@XN--BCHER-KVA.example"):
            dest = route(c, users, spelling)
            self.assertEqual((dest.kind, dest.mailbox), (LOCAL, "ren\u00e9@b\u00fccher.example"))
        self.assertIsNone(route(c, users, "rene@b\u00fccher.example"))
        self.assertEqual(route(c, users, "x@\u4f8b\u5b50.test").kind, REMOTE)

    def test_address_forms(self) -> None:
        """ascii_address keeps ASCII, turns an IDN domain into A-labels, refuses a UTF-8 local part."""
        self.assertEqual(intl.ascii_address("a@b.test"), "a@b.test")
        self.assertEqual(intl.ascii_address("a@b\u00fccher.example"), "a@xn--bcher-kva.example")
        self.assertIsNone(intl.ascii_address("ren\u00e9@b.test"))
        self.assertTrue(intl.needs_smtputf8("ren\u00e9@b.test"))
        self.assertFalse(intl.needs_smtputf8("a@b\u00fccher.example"))

    def test_rfc6533_encodings(self) -> None:
        """unitext escapes only the specials, addr_xtext every non-ASCII character too."""
        self.assertEqual(intl.unitext("a+b=c\\d \u00e9"), "a\\x{2B}b\\x{3D}c\\x{5C}d\\x{20}\u00e9")
        self.assertEqual(intl.addr_xtext("ren\u00e9@\u4f8b.test"), "ren\\x{E9}@\\x{4F8B}.test")
        for text in ("ren\u00e9+x@\u4f8b.test", "a b"):
            self.assertEqual(intl.decode_embedded(intl.addr_xtext(text)), text)
            self.assertEqual(intl.decode_embedded(intl.unitext(text)), text)


class LocalCopyTests(unittest.TestCase):
    """Maildir folders for UTF-8 local parts; binary messages copied exactly."""

    def setUp(self) -> None:
        self.mailroot = os.path.abspath(self.mktemp())
        os.makedirs(self.mailroot)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.agent = MaildirDelivery(self.mailroot, "mx.test", self.clock, defer.maybeDeferred)

    def test_utf8_folder(self) -> None:
        """
        The Maildir of a UTF-8 local part is its NFC, lower-case name in
        UTF-8 under the configured domain: NFD and NFC spellings share it.
        """
        envelope = Envelope("0ABC", "a@b.test", [Recipient("x")], 1.0)
        for mailbox in ("RENE\u0301@b\u00fccher.example", "ren\u00e9@b\u00fccher.example"):
            self.successResultOf(self.agent.write(envelope, mailbox, BytesSource(b"S: x\r\n")))
            envelope = Envelope("0ABD", "a@b.test", [Recipient("x")], 1.0)
        folder = os.path.join(self.mailroot, "mailbox", "b\u00fccher.example")
        self.assertEqual(os.listdir(os.fsencode(folder)), ["ren\u00e9".encode("utf-8")])
        self.assertEqual(len(os.listdir(os.path.join(folder, "ren\u00e9", "new"))), 2)

    def test_unsafe_utf8_names(self) -> None:
        """Bidi overrides, line separators, controls and slashes never become folders."""
        for mailbox in ("a\u202eb@x.test", "a\u2028b@x.test", "a\u0085@x.test", "a\u2215/b@x.test",
                        "a@x\u200f.test"):
            self.assertRaises(MailboxError, split_mailbox, mailbox)
        self.assertEqual(split_mailbox("\u7528\u200c\u6237@x.test"), ("\u7528\u200c\u6237", "x.test"))

    def test_binary_maildir_copy(self) -> None:
        """
        A BINARYMIME message goes into the Maildir byte for byte, CRLF kept
        (no LF conversion, which would change the binary content), with the
        two fields we prepend also ending in CRLF; S= and W= agree.
        """
        envelope = Envelope("0ABC", "a@b.test", [Recipient("bob@b.test")], 1.0,
                            body="BINARYMIME")
        path = self.successResultOf(self.agent.write(envelope, "bob@b.test", BytesSource(BINARY)))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"Return-Path: <a@b.test>\r\nDelivered-To: bob@b.test\r\n"
                             + BINARY)
        size = len(BINARY) + 51
        self.assertTrue(path.endswith(f",S={size},W={size}"), path)

    def test_binary_drop_copy(self) -> None:
        """A BINARYMIME message in a drop file: byte for byte after the x- lines."""
        agent = DropDelivery(self.mailroot, self.clock, defer.maybeDeferred)
        envelope = Envelope("0ABC", "a@b.test", [Recipient("c@drop.test")], 1.0,
                            body="BINARYMIME")
        self.successResultOf(agent.drop(envelope, ["c@drop.test"], BytesSource(BINARY)))
        [name] = os.listdir(os.path.join(self.mailroot, "drop"))
        with open(os.path.join(self.mailroot, "drop", name), "rb") as f:
            self.assertEqual(f.read(), b"x-sender: a@b.test\r\nx-receiver: c@drop.test\r\n"
                             + BINARY)
