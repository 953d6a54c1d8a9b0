"""RFC 5321 path and ESMTP parameter parsing."""

from twisted.trial import unittest

from smtpd.mail import address


class PathTests(unittest.TestCase):
    """parse_path."""

    def test_plain(self):
        """A mailbox in angle brackets; the domain is lower-cased, a final dot dropped."""
        self.assertEqual(
            address.parse_path("<User@Example.COM.> SIZE=1", False),
            ("User@example.com", "SIZE=1"),
        )

    def test_null_sender(self):
        """<> only where the null path is allowed."""
        self.assertEqual(address.parse_path("<>", True), ("", ""))
        self.assertRaises(address.AddressError, address.parse_path, "<>", False)

    def test_source_route_ignored(self):
        """RFC 5321 4.1.2: the source route is dropped."""
        self.assertEqual(
            address.parse_path("<@a.test,@b.test:u@c.test>", False)[0], "u@c.test"
        )

    def test_quoted_local_part(self):
        """A quoted local part may hold @ and spaces; the last @ splits."""
        self.assertEqual(
            address.parse_path('<"a@b c"@x.test>', False)[0], '"a@b c"@x.test'
        )

    def test_postmaster_alone(self):
        """<Postmaster> without a domain is accepted (RFC 5321 4.5.1)."""
        self.assertEqual(address.parse_path("<Postmaster>", False)[0], "postmaster")
        self.assertRaises(address.AddressError, address.parse_path, "<bob>", False)

    def test_rejects(self):
        """Control characters, bad syntax, over-long parts."""
        for bad in (
            "a@b.test", "<a@b.test", "<a\rb@c.test>", "<a\x00@c.test>", "<a\n@c.test>",
            "<a..b@c.test>", "<.a@c.test>", "<a@-b.test>", "<a@b_c.test>",
            "<" + "x" * 65 + "@c.test>", "<a@" + "b" * 250 + ".test>",
            "<a@b.test>junk", "<é@b.test>", "<@bad route:a@b.test>",
        ):
            self.assertRaises(address.AddressError, address.parse_path, bad, False)

    def test_address_literal(self):
        """Address literals are domains."""
        self.assertEqual(address.parse_path("<a@[127.0.0.1]>", False)[0], "a@[127.0.0.1]")


class ParamTests(unittest.TestCase):
    """mail_params and rcpt_params."""

    def test_mail(self):
        """SIZE, BODY, RET and ENVID (xtext) are understood; AUTH is ignored."""
        p = address.mail_params("SIZE=10 body=8bitmime RET=full ENVID=a+2Bb AUTH=<>")
        self.assertEqual((p.size, p.body, p.ret, p.envid), (10, "8BITMIME", "FULL", "a+b"))

    def test_unknown(self):
        """An unknown parameter is flagged as such (555)."""
        e = self.assertRaises(address.ParameterError, address.mail_params, "X=1")
        self.assertTrue(e.unknown)
        e = self.assertRaises(address.ParameterError, address.mail_params, "SIZE=x")
        self.assertFalse(e.unknown)

    def test_rcpt(self):
        """NOTIFY and ORCPT (RFC 3461)."""
        p = address.rcpt_params("NOTIFY=success,delay ORCPT=rfc822;a+40b.test")
        self.assertEqual(p.notify, ("SUCCESS", "DELAY"))
        self.assertEqual(p.orcpt, "rfc822;a@b.test")
        for bad in ("NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "ORCPT=nosemicolon", "ORCPT=rfc822;a+4"):
            self.assertRaises(address.ParameterError, address.rcpt_params, bad)
