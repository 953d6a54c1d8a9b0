"""
Tests for L{smtpd.ctl}: the C{smtpctl} command.
"""

from __future__ import annotations

import io
import json
import os
import sys

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from smtpd.admin import ctl
from smtpd.mail.envelope import DEFERRED, Envelope, Recipient
from smtpd.queue.store import Queue
from smtpd.directory.accounts import Users

CONFIG = """\
[domain:example.com]
type = local
[domain:alias.example]
type = alias
alias_of = example.com
[domain:drop.example]
type = drop
[domain:remote.example]
type = remote
"""


class CtlTestCase(unittest.TestCase):
    """A deployment folder with etc/smtpd.ini, and captured output."""

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "etc"))
        self.config = os.path.join(self.root, "etc", "smtpd.ini")
        self.users = os.path.join(self.root, "etc", "users")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def run_ctl(self, *argv: str, stdin: str = "", clock=None) -> int:
        """Run smtpctl with C{argv} against the test config; the exit status."""
        self.patch(sys, "stdin", io.StringIO(stdin))
        return ctl.main(["--config", self.config, *argv], clock=clock)

    def assertNoTraceback(self) -> None:
        """Nothing that looks like a traceback was printed."""
        self.assertNotIn("Traceback", self.stdout.getvalue() + self.stderr.getvalue())


class CheckTests(CtlTestCase):
    """C{smtpctl check}."""

    def test_ok(self) -> None:
        """A valid configuration: exit 0 and '<path>: OK'."""
        self.assertEqual(self.run_ctl("check"), 0)
        self.assertEqual(self.stdout.getvalue(), f"{self.config}: OK\n")
        self.assertEqual(self.stderr.getvalue(), "")

    def test_problems(self) -> None:
        """An invalid configuration: exit 1 and one stderr line per problem."""
        with open(self.config, "a") as f:
            f.write("[server]\nmax_connections = lots\nbogus = 1\n")
        self.assertEqual(self.run_ctl("check"), 1)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(any("max_connections" in line for line in lines))
        self.assertTrue(any("bogus" in line for line in lines))
        self.assertEqual(self.stdout.getvalue(), "")
        self.assertNoTraceback()

    def test_missing_file(self) -> None:
        """A missing configuration file: exit 1 with a message, no traceback."""
        os.unlink(self.config)
        self.assertEqual(self.run_ctl("check"), 1)
        self.assertIn(self.config, self.stderr.getvalue())
        self.assertNoTraceback()

    def test_bad_users_file(self) -> None:
        """A malformed accounts file is reported by check too."""
        with open(self.users, "w") as f:
            f.write("nonsense\n")
        self.assertEqual(self.run_ctl("check"), 1)
        self.assertEqual(self.stderr.getvalue(),
                         f"{self.users}:1: expected address:bcrypt-hash\n")

    def test_usage(self) -> None:
        """A usage error exits 2 without a traceback."""
        self.assertEqual(ctl.main([]), 2)
        self.assertEqual(ctl.main(["user", "frobnicate"]), 2)
        self.assertNoTraceback()


class UserTests(CtlTestCase):
    """C{smtpctl user ...}."""

    def test_add_list_del(self) -> None:
        """An account added from stdin is listed, can log in, and can be removed."""
        self.assertEqual(self.run_ctl("user", "add", "Bob@Example.com", "--password-stdin",
                                      stdin="s3cret pass\n"), 0)
        self.assertTrue(Users.load(self.users).check_password("bob@example.com",
                                                              b"s3cret pass"))
        self.assertEqual(self.run_ctl("user", "add", "carol@example.com",
                                      "--password-stdin", stdin="pw\n"), 0)
        self.stdout.truncate(0)
        self.stdout.seek(0)
        self.assertEqual(self.run_ctl("user", "list"), 0)
        self.assertEqual(self.stdout.getvalue(), "bob@example.com\ncarol@example.com\n")
        self.assertEqual(self.run_ctl("user", "del", "BOB@example.com"), 0)
        self.assertEqual(Users.load(self.users).addresses(), ["carol@example.com"])
        self.assertEqual(self.stderr.getvalue(), "")

    def test_add_prompts_twice(self) -> None:
        """Without --password-stdin the password is asked twice; a mismatch fails."""
        answers = iter(["one", "two"])
        self.patch(ctl.getpass, "getpass", lambda prompt: next(answers))
        self.assertEqual(self.run_ctl("user", "add", "bob@example.com"), 1)
        self.assertIn("do not match", self.stderr.getvalue())
        self.assertFalse(os.path.exists(self.users))

    def test_add_refused(self) -> None:
        """
        Existing accounts, domains that are not local or alias, bad addresses
        and empty passwords are refused with exit 1 and a message.
        """
        self.assertEqual(self.run_ctl("user", "add", "bob@example.com", "--password-stdin",
                                      stdin="pw\n"), 0)
        before = Users.load(self.users).addresses()
        for address, stdin, message in [
            ("BOB@example.com", "pw\n", "already exists"),
            ("bob@remote.example", "pw\n", "not a local domain"),
            ("bob@drop.example", "pw\n", "not a local domain"),
            ("bob@elsewhere.example", "pw\n", "not a local domain"),
            ("bob@alias.example", "pw\n", "alias.example is an alias of example.com: its "
             "accounts are those of example.com; add bob@example.com instead"),
            ("../bob@example.com", "pw\n", "local part"),
            ("carol@example.com", "\n", "password is empty"),
        ]:
            self.stderr.truncate(0)
            self.stderr.seek(0)
            self.assertEqual(self.run_ctl("user", "add", address, "--password-stdin",
                                          stdin=stdin), 1, address)
            self.assertIn(message, self.stderr.getvalue())
        self.assertEqual(Users.load(self.users).addresses(), before)
        self.assertNoTraceback()

    def test_del_unknown(self) -> None:
        """Removing an unknown account: exit 1 with a message."""
        self.assertEqual(self.run_ctl("user", "del", "nobody@example.com"), 1)
        self.assertIn("does not exist", self.stderr.getvalue())

    def test_bad_config(self) -> None:
        """User commands with an invalid configuration exit 1 with its problems."""
        with open(self.config, "a") as f:
            f.write("[nonsense]\n")
        self.assertEqual(self.run_ctl("user", "list"), 1)
        self.assertIn("nonsense", self.stderr.getvalue())
        self.assertNoTraceback()


class QueueListTests(CtlTestCase):
    """C{smtpctl queue list}."""

    def queue(self) -> Queue:
        """The deployment's queue."""
        clock = Clock()
        clock.advance(1_700_000_000)
        return Queue(os.path.join(self.root, "mailroot", "queue"), clock, defer.maybeDeferred)

    def test_empty(self) -> None:
        """An empty (or not yet created) queue says so, and nothing is created."""
        self.assertEqual(self.run_ctl("queue", "list"), 0)
        self.assertEqual(self.stdout.getvalue(), "queue is empty\n")
        self.assertFalse(os.path.exists(os.path.join(self.root, "mailroot")))

    def test_table(self) -> None:
        """Each message is listed with its fields, then its recipients and states."""
        queue = self.queue()
        e = Envelope(queue.new_id(), "a@example.com",
                     [Recipient("b@remote.example", state="pending",
                                last_reply="451 4.4.1 connection refused"),
                      Recipient("c@example.com", state="delivered")],
                     arrival=1_700_000_000.0, next_attempt=1_700_000_900.0,
                     attempts=2, state=DEFERRED, size=20)
        self.successResultOf(queue.store(e, b"Subject: x\r\n\r\nbody\r\n"))
        self.assertEqual(self.run_ctl("queue", "list"), 0)
        lines = self.stdout.getvalue().splitlines()
        self.assertEqual(lines[0].split(), ["ID", "SIZE", "AGE", "STATE", "TRIES", "NEXT",
                                            "SENDER"])
        cells = lines[1].split()
        self.assertEqual(cells[:2], [e.id, "20B"])
        self.assertTrue(cells[2].endswith("d"), cells)  # arrived in 2023: days ago
        self.assertEqual(cells[3:], ["deferred", "2", "now", "<a@example.com>"])
        self.assertEqual(lines[2:], [
            "    b@remote.example  pending  (451 4.4.1 connection refused)",
            "    c@example.com  delivered",
            "-- 20B in 1 message",
        ])
        self.stdout.truncate(0)
        self.stdout.seek(0)
        self.assertEqual(self.run_ctl("queue", "list", "--json"), 0)
        [listed] = json.loads(self.stdout.getvalue())
        self.assertEqual((listed["id"], listed["state"], listed["recipients"][0]["last_reply"]),
                         (e.id, "deferred", "451 4.4.1 connection refused"))

    def test_ages_from_the_clock(self) -> None:
        """
        The ages in C{queue list} and C{queue show} are measured against the
        clock smtpctl is given: 3 h 20 min after arrival, 15 min before the
        next attempt, exactly.
        """
        queue = self.queue()
        e = Envelope(queue.new_id(), "a@example.com", [Recipient("b@remote.example")],
                     arrival=1_700_000_000.0, next_attempt=1_700_012_900.0,
                     attempts=1, state=DEFERRED, size=20)
        self.successResultOf(queue.store(e, b"Subject: x\r\n\r\nbody\r\n"))
        clock = Clock()
        clock.advance(1_700_000_000 + 3 * 3600 + 20 * 60)
        self.assertEqual(self.run_ctl("queue", "list", clock=clock), 0)
        cells = self.stdout.getvalue().splitlines()[1].split()
        self.assertEqual((cells[2], cells[5], cells[6]), ("3h", "in", "15m"))
        self.stdout.truncate(0)
        self.stdout.seek(0)
        clock.advance(86400)
        self.assertEqual(self.run_ctl("queue", "show", e.id, clock=clock), 0)
        self.assertIn("arrival:   2023-11-14 22:13:20 UTC (1d ago)",
                      self.stdout.getvalue().splitlines())

    def test_read_only(self) -> None:
        """Listing never changes the queue folder, whatever it holds."""
        queue = self.queue()
        e = Envelope(queue.new_id(), "", [Recipient("b@example.com")], 1_700_000_000.0)
        self.successResultOf(queue.store(e, b"x\r\n"))
        for name, content in [(".X.eml.0000.tmp", b"partial"), ("0ORPHAN.eml", b"x"),
                              ("0BAD.json", b"{"), ("0BAD.eml", b"x")]:
            with open(os.path.join(queue.directory, name), "wb") as f:
                f.write(content)
        before = sorted(os.listdir(queue.directory))
        self.assertEqual(self.run_ctl("queue", "list"), 0)
        self.assertEqual(sorted(os.listdir(queue.directory)), before)
        self.assertFalse(os.path.exists(queue.badmail))
        self.assertIn(f"{e.id}  ", self.stdout.getvalue())
        self.assertIn("<>", self.stdout.getvalue())

    def test_terminal_escapes(self) -> None:
        """Control characters from the network are not printed to the terminal."""
        queue = self.queue()
        e = Envelope(queue.new_id(), "a@example.com",
                     [Recipient("b@example.com", last_reply="550 \x1b[2Jgotcha")], 1.0)
        self.successResultOf(queue.store(e, b"x\r\n"))
        self.assertEqual(self.run_ctl("queue", "list"), 0)
        self.assertNotIn("\x1b", self.stdout.getvalue())


class ConsoleScriptTests(CtlTestCase):
    """The installed C{smtpctl} console script."""

    def test_installed(self) -> None:
        """The script in the venv runs as a real process, from the deployment folder."""
        script = os.path.join(os.path.dirname(sys.executable), "smtpctl")
        d = getProcessOutputAndValue(script, ["check"], env=dict(os.environ), path=self.root)

        def check(result: tuple[bytes, bytes, int]) -> None:
            out, err, code = result
            self.assertEqual((out, err, code),
                             (os.path.join("etc", "smtpd.ini").encode() + b": OK\n", b"", 0))

        return d.addCallback(check)


class ManholeUserTests(CtlTestCase):
    """C{smtpctl manhole-user add}."""

    def test_add(self) -> None:
        """An operator is written with a bcrypt hash; a bad name is refused."""
        from smtpd.admin.operators import read_operators

        self.assertEqual(self.run_ctl("manhole-user", "add", "alice", "--password-stdin",
                                      stdin="s3cret\n"), 0)
        path = os.path.join(self.root, "etc", "manhole.passwd")
        stored = read_operators(path)["alice"]
        self.assertTrue(stored.startswith(b"$2b$"))
        self.assertIn(f"operator alice written to {path}", self.stdout.getvalue())
        self.assertEqual(self.run_ctl("manhole-user", "add", "bad name", "--password-stdin",
                                      stdin="x\n"), 1)
        self.assertIn("is not an operator name", self.stderr.getvalue())
        self.assertNoTraceback()
