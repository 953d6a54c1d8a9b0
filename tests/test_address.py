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
            "<a@b.test>junk", "<é‮@b.test>", "<a@b_é.test>",
            "<é@xn--zz.test>", "<" + "é" * 33 + "@c.test>", "<@bad route:a@b.test>",
        ):
            self.assertRaises(address.AddressError, address.parse_path, bad, False)

    def test_utf8(self):
        """
        RFC 6531 3.3: UTF-8 local parts (dot-string and quoted) and U-label
        domains parse; the domain is made lower case (UTS 46), the local
        part kept as given. The session decides whether SMTPUTF8 allows them.
        """
        self.assertEqual(address.parse_path("<Jørg@BÜCHER.example.>", False)[0],
                         "Jørg@bücher.example")
        self.assertEqual(address.parse_path('<"å b"@xn--bcher-kva.example>', False)[0],
                         '"å b"@xn--bcher-kva.example')
        self.assertEqual(address.parse_path("<用户@例子.广告>", False)[0],
                         "用户@例子.广告")

    def test_address_literal(self):
        """Address literals are domains."""
        self.assertEqual(address.parse_path("<a@[127.0.0.1]>", False)[0], "a@[127.0.0.1]")


class ParamTests(unittest.TestCase):
    """mail_params and rcpt_params."""

    def test_smtputf8_and_binarymime(self):
        """SMTPUTF8 takes no value (RFC 6531 3.4); BODY=BINARYMIME is known (RFC 3030)."""
        p = address.mail_params("SMTPUTF8 BODY=binarymime")
        self.assertEqual((p.smtputf8, p.body), (True, "BINARYMIME"))
        self.assertFalse(address.mail_params("").smtputf8)
        self.assertRaises(address.ParameterError, address.mail_params, "SMTPUTF8=yes")

    def test_utf8_orcpt(self):
        """An ORCPT of type utf-8 (RFC 6533 3): \\x{HH} escapes and raw UTF-8 decode alike."""
        for raw in ("utf-8;b\\x{F8}b@x.test", "utf-8;bøb@x.test", "UTF-8;b\\x{f8}b@x.test"):
            self.assertEqual(address.rcpt_params("ORCPT=" + raw).orcpt, "utf-8;bøb@x.test")
        for bad in ("utf-8;a+b@x.test", "utf-8;a\\x{0}b@x.test", "utf-8;a\\x{D800}@x.test"):
            self.assertRaises(address.ParameterError, address.rcpt_params, "ORCPT=" + bad)

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
