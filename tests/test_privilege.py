"""
Least privilege, as root: C{twistd --uid/--gid smtpd} binds a port below 1024
before it becomes the unprivileged user, and everything it writes afterwards
belongs to that user with modes that keep others out; C{smtpctl} run as root
leaves the accounts file to the deployment's user.

These tests need root (they create a system user and bind a low port); they
are skipped when the suite runs as another user.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

from twisted.trial import unittest

from smtpd.util.ownership import (
    give_tree,
    hand_over_deployment,
    hand_over_to_deployment,
    owner,
)
from tests.test_tap import send, spawn

BIN = os.path.dirname(sys.executable)


def system_user(testcase) -> tuple[str, int, int]:
    """A system user and group made for C{testcase} and removed after it."""
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root: dropping privileges cannot be tested as a user")
    name = f"smtpdt{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    testcase.addCleanup(subprocess.run, ["userdel", name], check=False, capture_output=True)
    import pwd

    entry = pwd.getpwnam(name)
    return name, entry.pw_uid, entry.pw_gid


def free_low_port() -> int:
    """A free port in 600-999 on 127.0.0.1 (below 1024: only root may bind it)."""
    for port in secrets.SystemRandom().sample(range(600, 1000), 400):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 600-999")


def traversable_root(testcase) -> str:
    """A deployment root in /tmp that another user may reach (trial's folders are 0700)."""
    top = tempfile.mkdtemp(prefix="smtpd-")
    testcase.addCleanup(shutil.rmtree, top, True)
    os.chmod(top, 0o711)
    return os.path.join(top, "srv")


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class DropPrivilegesTests(unittest.TestCase):
    """twistd --uid/--gid started as root."""

    timeout = 60

    async def test_binds_low_port_then_runs_as_user(self):
        """Port < 1024 bound as root; process, queue, Maildir and key files are the user's."""
        name, uid, gid = system_user(self)
        root = traversable_root(self)
        os.makedirs(os.path.join(root, "etc"))
        # As docs/install.md says: the log folder is the user's, etc/ stays root's.
        os.makedirs(os.path.join(root, "log"))
        os.chown(os.path.join(root, "log"), uid, gid)
        port = free_low_port()
        config = os.path.join(root, "etc", "smtpd.ini")
        with open(config, "w") as f:
            f.write(f"[server]\nhostname = mx.priv.test\nlisten = tcp:{port}:interface=127.0.0.1\n"
                    "[delivery]\nsmart_host = [127.0.0.1]:9\n"
                    "[logging]\npath = log/activity.log\n"
                    "[domain:priv.test]\ntype = local\n")
        process = spawn(self, ["twistd", "-n", "--pidfile=", "--logfile=-",
                               f"--uid={name}", f"--gid={name}", "smtpd", "--config", config])
        await process.wait_for(rb"Listening on \S+ \(127\.0\.0\.1:%d\)" % port)
        # twistd says so once it has switched (after privilegedStartService).
        await process.wait_for(rb"set uid/gid %d/%d" % (uid, gid))
        with open(f"/proc/{process.transport.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines())
        self.assertEqual(status["Uid"].split(), [str(uid)] * 4)
        self.assertEqual(status["Gid"].split(), [str(gid)] * 4)

        local = await send(self, port, b"postmaster@priv.test")
        self.assertTrue(local.startswith("250 "), local)
        remote = await send(self, port, b"someone@elsewhere.test")
        self.assertTrue(remote.startswith("250 "), remote)

        mailroot = os.path.join(root, "mailroot")
        maildir = os.path.join(mailroot, "mailbox", "priv.test", "postmaster")
        [message] = glob.glob(os.path.join(maildir, "new", "*"))
        queued = glob.glob(os.path.join(mailroot, "queue", "*"))
        self.assertTrue(queued)
        for path in [message, *queued, os.path.join(root, "etc", "tls", "smtpd.key"),
                     os.path.join(root, "log", "activity.log")]:
            self.assertEqual(owner(path), (uid, gid), path)
            self.assertEqual(mode(path) & 0o077, 0, f"{path}: {oct(mode(path))}")
        for folder in (mailroot, os.path.join(mailroot, "queue"), maildir,
                       os.path.join(maildir, "new"), os.path.dirname(maildir)):
            self.assertEqual(owner(folder), (uid, gid), folder)
            self.assertEqual(mode(folder), 0o700, folder)


class SmtpctlAsRootTests(unittest.TestCase):
    """smtpctl run as root on a deployment that belongs to another user."""

    def deployment(self) -> str:
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        os.makedirs(os.path.join(root, "mailroot"))
        config = os.path.join(root, "etc", "smtpd.ini")
        with open(config, "w") as f:
            f.write("[domain:priv.test]\ntype = local\n")
        return config

    def smtpctl(self, config: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(BIN, "smtpctl"), "--config", config, *args],
                              input="secret\n", capture_output=True, text=True, timeout=60)

    def test_accounts_file_goes_to_deployment_user(self):
        """user add as root: etc/users (0600) is given to the mailroot's owner, and it says so."""
        name, uid, gid = system_user(self)
        config = self.deployment()
        root = os.path.dirname(os.path.dirname(config))
        os.chown(os.path.join(root, "mailroot"), uid, gid)
        result = self.smtpctl(config, "user", "add", "ann@priv.test", "--password-stdin")
        self.assertEqual(result.returncode, 0, result.stderr)
        users = os.path.join(root, "etc", "users")
        self.assertIn(f"now belongs to {name}, the owner of", result.stdout)
        self.assertEqual(owner(users), (uid, gid))
        self.assertEqual(mode(users), 0o600)
        result = self.smtpctl(config, "user", "del", "ann@priv.test")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(owner(users), (uid, gid))

    def test_root_deployment_untouched(self):
        """A mailroot that root owns: the file stays root's and nothing is said."""
        system_user(self)  # root only
        config = self.deployment()
        result = self.smtpctl(config, "user", "add", "ann@priv.test", "--password-stdin")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("belongs", result.stdout)
        root = os.path.dirname(os.path.dirname(config))
        self.assertEqual(owner(os.path.join(root, "etc", "users"))[0], 0)


class OwnershipTests(unittest.TestCase):
    """smtpd.util.ownership on real files."""

    def test_give_tree_never_follows_symlinks(self):
        """give_tree changes the tree's entries, not what a symlink in it points at."""
        name, uid, gid = system_user(self)
        top = os.path.abspath(self.mktemp())
        outside = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(top, "a", "b"))
        with open(outside, "w") as f:
            f.write("x")
        os.symlink(outside, os.path.join(top, "a", "link"))
        self.assertEqual(give_tree(top, uid, gid), 4)
        self.assertEqual(owner(os.path.join(top, "a", "b")), (uid, gid))
        self.assertEqual(owner(outside)[0], 0)
        self.assertEqual(give_tree(top, uid, gid), 0)

    def test_hand_over_deployment(self):
        """The mailroot and the files inside the root go to the user; nothing outside."""
        name, uid, gid = system_user(self)
        root = os.path.abspath(self.mktemp())
        mailroot = os.path.join(root, "mailroot")
        os.makedirs(os.path.join(mailroot, "queue"))
        os.makedirs(os.path.join(root, "etc"))
        key, outside = os.path.join(root, "etc", "key"), os.path.abspath(self.mktemp())
        for path in (key, outside, os.path.join(mailroot, "queue", "x.json")):
            with open(path, "w") as f:
                f.write("x")
        changed = hand_over_deployment(root, mailroot, [key, outside, root + "/none"], uid, gid)
        self.assertEqual(changed, [mailroot, key])
        self.assertEqual(owner(os.path.join(mailroot, "queue", "x.json")), (uid, gid))
        self.assertEqual(owner(outside)[0], 0)
        self.assertEqual(owner(os.path.join(root, "etc"))[0], 0)
        # A mailroot that is the user's already: only its own folders are checked.
        os.chown(os.path.join(mailroot, "queue"), 0, 0)
        self.assertEqual(hand_over_deployment(root, mailroot, [], uid, gid),
                         [os.path.join(mailroot, "queue")])

    def test_not_root_hands_nothing_over(self):
        """Without a mailroot, hand_over_to_deployment leaves the file alone."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("x")
        self.assertIsNone(hand_over_to_deployment(path, os.path.abspath(self.mktemp())))
