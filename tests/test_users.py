"""
Tests for L{smtpd.users}: the accounts file.
"""

from __future__ import annotations

import os
import stat
import time

import bcrypt
from twisted.trial import unittest

from smtpd.directory import accounts as users
from smtpd.directory.accounts import Users, UsersError

FAST = 4  # bcrypt rounds for tests


def hashed(password: bytes, rounds: int = FAST) -> str:
    """A bcrypt hash of C{password}."""
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds)).decode("ascii")


class UsersTestCase(unittest.TestCase):
    """A folder for an accounts file."""

    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, "users")

    def write(self, text: str) -> None:
        """Write the accounts file."""
        with open(self.path, "w") as f:
            f.write(text)

    def read(self) -> str:
        """The accounts file."""
        with open(self.path) as f:
            return f.read()


class LoadTests(UsersTestCase):
    """L{Users.load} and the read-only view."""

    def test_missing_file(self) -> None:
        """A missing file means no accounts."""
        loaded = Users.load(self.path)
        self.assertEqual(loaded.addresses(), [])
        self.assertNotIn("bob@example.com", loaded)

    def test_load(self) -> None:
        """Comments and blank lines are skipped; addresses match in any case."""
        self.write(f"# accounts\n\nBob@Example.com:{hashed(b'pw')}\n"
                   f"  alice@example.com : {hashed(b'pw2')}  \n")
        loaded = Users.load(self.path)
        self.assertEqual(loaded.addresses(), ["alice@example.com", "bob@example.com"])
        self.assertIn("BOB@example.COM", loaded)
        self.assertIn("alice@example.com", loaded)
        self.assertNotIn("carol@example.com", loaded)

    def test_malformed(self) -> None:
        """Every malformed line is reported with file and line number."""
        self.write(f"bob@example.com:{hashed(b'pw')}\n"
                   "no colon here\n"
                   "carol@example.com:plaintext\n"
                   f"../x@example.com:{hashed(b'pw')}\n"
                   f"BOB@example.com:{hashed(b'pw')}\n")
        error = self.assertRaises(UsersError, Users.load, self.path)
        self.assertEqual([p.split(": ")[0] for p in error.problems],
                         [f"{self.path}:{n}" for n in (2, 3, 4, 5)])
        self.assertIn("not a bcrypt hash", error.problems[1])
        self.assertIn("appears twice", error.problems[3])

    def test_check_password(self) -> None:
        """The right password passes; a wrong one, or an unknown account, does not."""
        self.write(f"bob@example.com:{hashed(b'secret')}\n")
        loaded = Users.load(self.path)
        self.assertTrue(loaded.check_password("bob@example.com", b"secret"))
        self.assertTrue(loaded.check_password("BOB@example.com", b"secret"))
        self.assertFalse(loaded.check_password("bob@example.com", b"Secret"))
        self.assertFalse(loaded.check_password("bob@example.com", b""))
        self.assertFalse(loaded.check_password("nobody@example.com", b"secret"))

    def test_long_password(self) -> None:
        """A password over 72 octets never matches (bcrypt would truncate it)."""
        self.write(f"bob@example.com:{hashed(b'x' * 72)}\n")
        loaded = Users.load(self.path)
        self.assertTrue(loaded.check_password("bob@example.com", b"x" * 72))
        self.assertFalse(loaded.check_password("bob@example.com", b"x" * 73))

    def test_unknown_account_takes_time(self) -> None:
        """
        Checking an unknown account costs about as much as a known one (a
        bcrypt check against a dummy hash of the same cost).
        """
        self.write(f"bob@example.com:{hashed(b'secret', 10)}\n")
        loaded = Users.load(self.path)
        loaded.check_password("nobody@example.com", b"warm up the dummy hash")

        def cost(address: str) -> float:
            start = time.process_time()
            loaded.check_password(address, b"wrong")
            return time.process_time() - start

        self.assertGreater(cost("nobody@example.com"), cost("bob@example.com") / 3)


class ChangeTests(UsersTestCase):
    """L{users.add} and L{users.remove}."""

    def test_add_creates(self) -> None:
        """Adding to a missing file creates it, mode 0600, lower-casing the address."""
        self.assertEqual(users.add(self.path, "Bob@Example.COM", "pässword", FAST),
                         "bob@example.com")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        loaded = Users.load(self.path)
        self.assertEqual(loaded.addresses(), ["bob@example.com"])
        self.assertTrue(loaded.check_password("bob@example.com", "pässword".encode()))
        self.assertEqual(os.listdir(self.folder), ["users"])

    def test_add_keeps_lines(self) -> None:
        """Adding keeps comments and other accounts as they were."""
        original = f"# staff\nalice@example.com:{hashed(b'a')}"
        self.write(original)
        users.add(self.path, "bob@example.com", b"b", FAST)
        self.assertTrue(self.read().startswith(original + "\nbob@example.com:$2b$04$"))
        self.assertEqual(Users.load(self.path).addresses(),
                         ["alice@example.com", "bob@example.com"])

    def test_add_existing(self) -> None:
        """Adding an existing account (in any case) is refused; the file is unchanged."""
        users.add(self.path, "bob@example.com", b"b", FAST)
        before = self.read()
        self.assertRaises(UsersError, users.add, self.path, "BOB@example.com", b"c", FAST)
        self.assertEqual(self.read(), before)

    def test_add_bad_addresses(self) -> None:
        """Addresses that are not local@domain with a safe local part are refused."""
        for bad in ("noat", "@example.com", "bob@", "a..b@example.com", ".a@example.com",
                    "a.@example.com", "a/b@example.com", "a b@example.com",
                    '"q"@example.com', "a:b@example.com", "x" * 65 + "@example.com",
                    "bob@-example.com", "bob@exa_mple.com", "bob@example..com",
                    "bob@[127.0.0.1]", "b\u202eb@example.com", "b\u00f6b@b\u00fc_x.example",
                    "bob@example.com\n"):
            self.assertRaises(UsersError, users.add, self.path, bad, b"pw", FAST)
        self.assertFalse(os.path.exists(self.path))

    def test_utf8_accounts(self) -> None:
        """
        An internationalized account (RFC 6531) is stored in UTF-8, NFC and
        lower case, and found by any spelling: another case, NFD, the
        domain's A-label form; it cannot be added twice in another spelling.
        """
        stored = users.add(self.path, "REN\u00c9@B\u00fccher.Example", b"pw", FAST)
        self.assertEqual(stored, "ren\u00e9@b\u00fccher.example")
        self.assertIn("ren\u00e9@b\u00fccher.example:", self.read())
        loaded = users.Users.load(self.path)
        for spelling in ("ren\u00e9@xn--bcher-kva.example", "REN\u00c9@B\u00dcCHER.EXAMPLE",
                         "rene\u0301@bu\u0308cher.example"):
            self.assertIn(spelling, loaded)
        self.assertNotIn("rene@bucher.example", loaded)
        self.assertEqual(loaded.addresses(), ["ren\u00e9@b\u00fccher.example"])
        self.assertTrue(loaded.check_password("rene\u0301@xn--bcher-kva.example", b"pw"))
        self.assertRaises(UsersError, users.add, self.path, "ren\u00e9@xn--bcher-kva.example",
                          b"pw", FAST)
        users.remove(self.path, "RENE\u0301@xn--bcher-kva.example")
        self.assertEqual(users.Users.load(self.path).addresses(), [])

    def test_add_good_addresses(self) -> None:
        """Dotted local parts and RFC 5321 atext characters are accepted."""
        for good in ("first.last@example.com", "a+tag@mail.example.com",
                     "o'brien@example.com", "x" * 64 + "@localhost"):
            users.add(self.path, good, b"pw", FAST)
        self.assertEqual(len(Users.load(self.path)), 4)

    def test_add_bad_password(self) -> None:
        """Empty and over-long passwords are refused."""
        for bad in (b"", b"x" * 73, "x\0y"):
            self.assertRaises(UsersError, users.add, self.path, "bob@example.com", bad, FAST)
        self.assertFalse(os.path.exists(self.path))

    def test_add_to_malformed_file(self) -> None:
        """A malformed file is not rewritten."""
        self.write("garbage\n")
        error = self.assertRaises(UsersError, users.add, self.path, "bob@example.com", b"b", FAST)
        self.assertEqual(error.problems, [f"{self.path}:1: expected address:bcrypt-hash"])
        self.assertEqual(self.read(), "garbage\n")

    def test_remove(self) -> None:
        """Removing deletes that account's line only."""
        self.write(f"# staff\nalice@example.com:{hashed(b'a')}\nbob@example.com:{hashed(b'b')}\n")
        users.remove(self.path, "ALICE@example.com")
        self.assertEqual(Users.load(self.path).addresses(), ["bob@example.com"])
        self.assertTrue(self.read().startswith("# staff\nbob@example.com:"))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_remove_unknown(self) -> None:
        """Removing an account that does not exist is refused."""
        self.write(f"bob@example.com:{hashed(b'b')}\n")
        before = self.read()
        self.assertRaises(UsersError, users.remove, self.path, "carol@example.com")
        self.assertEqual(self.read(), before)
