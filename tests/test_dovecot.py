"""
IMAP through a real Dovecot (Debian dovecot-imapd) started with the shipped
docs/dovecot.conf on smtpd's Maildirs and accounts file: a message smtpd
delivered is served over IMAP, and once Dovecot has set its \\Seen flag (renamed
it to C{...:2,S}), smtpd's POP3 still lists it under the same UIDL.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import pwd
import grp
import re
import shutil
import signal
import tempfile

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from tests.engineproc import accepts as listening, free_port
from tests.engines import find_engine, skip_unless
from tests.mailstore import PASSWORD, USER, Deployment, eventually

TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "docs", "dovecot.conf")



def mail_user() -> tuple[str, str]:
    """
    The user and group Dovecot reads mail as: Dovecot refuses root, so a
    root test run uses nobody (and hands it the Maildirs); else the test's user.
    """
    if os.getuid() == 0:
        return "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def chown_tree(top: str, user: str, group: str) -> None:
    """Give C{top} and everything below it to C{user}:C{group}."""
    for folder, subfolders, files in os.walk(top):
        for name in [folder] + [os.path.join(folder, n) for n in subfolders + files]:
            shutil.chown(name, user, group)


def dovecot_config(template: str, root: str, run: str, port: int, user: str, group: str) -> str:
    """
    The shipped configuration for a deployment at C{root}, private to this
    test: its sockets, state and log in C{run} (a short path: sockets' names
    are limited to 108 octets).
    """
    text = template.replace("/srv/mail", root)
    text = text.replace("mail_uid = smtpd", f"mail_uid = {user}")
    text = text.replace("mail_gid = smtpd", f"mail_gid = {group}")
    text = text.replace("uid=smtpd gid=smtpd", f"uid={user} gid={group}")
    text = re.sub(r"port = 143\b", f"port = {port}", text)
    text = re.sub(r"port = 993\b", "port = 0", text)
    text += (f"\nbase_dir = {run}/run\nstate_dir = {run}/state\n"
             f"instance_name = smtpd-test-{port}\nlog_path = {run}/dovecot.log\n"
             "listen = 127.0.0.1\nfirst_valid_uid = 1\n")
    if os.getuid() != 0:
        me = pwd.getpwuid(os.getuid()).pw_name
        text += (f"default_internal_user = {me}\ndefault_login_user = {me}\n"
                 f"service auth {{\n  user = {me}\n}}\n")
    for sub in ("run", "state"):
        os.makedirs(os.path.join(run, sub))
    path = os.path.join(run, "dovecot.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


class Dovecot(ProcessProtocol):
    """A Dovecot master process in the foreground (-F)."""

    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(None)


class DovecotTests(unittest.TestCase):
    """A real Dovecot on smtpd's Maildirs."""

    timeout = 60
    skip = skip_unless("dovecot", "dovecot/imap")

    def run_folder(self) -> str:
        """A short-named temporary folder for Dovecot's sockets, removed after."""
        run = tempfile.mkdtemp(prefix="dovecot-")
        self.addCleanup(shutil.rmtree, run, True)
        return run

    async def start_dovecot(self, config: str, port: int) -> None:
        dovecot = Dovecot()
        process = reactor.spawnProcess(dovecot, find_engine("dovecot"),
                                       ["dovecot", "-F", "-c", config], env=dict(os.environ))

        async def stop():
            if not dovecot.ended.called:
                process.signalProcess(signal.SIGTERM)
                await dovecot.ended

        self.addCleanup(lambda: defer.Deferred.fromCoroutine(stop()))
        try:
            await eventually(lambda: dovecot.ended.called or listening(port), timeout=15)
        finally:
            self.assertFalse(dovecot.ended.called, dovecot.output.decode("utf-8", "replace"))

    def deployment(self) -> Deployment:
        """
        smtpd in a folder of /tmp that Dovecot's mail user may traverse (the
        test's own temporary folders are private to the user running them).
        """
        root = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, root, True)
        os.chmod(root, 0o711)
        return Deployment(self, root=os.path.join(root, "srv"))

    async def test_imap_serves_delivered_mail_and_seen_keeps_pop3_listing(self):
        """Dovecot serves smtpd's delivery over IMAP; after \\Seen, POP3 lists it still."""
        d = self.deployment()
        await d.deliver()
        unique = os.path.basename(d.files("new")[0]).split(",")[0]
        user, group = mail_user()
        chown_tree(os.path.join(d.root, "mailroot"), user, group)
        port = free_port()
        with open(TEMPLATE) as f:
            config = dovecot_config(f.read(), d.root, self.run_folder(), port, user, group)
        await self.start_dovecot(config, port)

        def imap():
            client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
            client.starttls(d.client_context())
            client.login(USER.upper(), PASSWORD)
            selected = client.select("INBOX")
            assert selected[0] == "OK", selected
            _, data = client.fetch("1", "(BODY.PEEK[])")
            client.store("1", "+FLAGS", "\\Seen")
            client.logout()
            return data[0][1]

        message = await threads.deferToThread(imap)
        self.assertIn(b"Subject: pick me up", message)
        self.assertIn(b"Delivered-To: alice@example.test", message)
        [name] = d.files("cur")
        self.assertTrue(name.endswith(":2,S"), name)

        def pop3():
            client = poplib.POP3("127.0.0.1", d.pop3_port, timeout=10)
            client.stls(d.client_context())
            client.user(USER)
            client.pass_(PASSWORD)
            try:
                return client.uidl()[1], client.retr(1)[1]
            finally:
                client.quit()

        uids, lines = await threads.deferToThread(pop3)
        self.assertEqual(uids, [b"1 " + unique.encode()])
        self.assertIn(b"Subject: pick me up", lines)

    async def test_wrong_password_refused_by_dovecot(self):
        """Dovecot checks the bcrypt hashes of etc/users: a wrong password fails."""
        d = Deployment(self)
        user, group = mail_user()
        port = free_port()
        with open(TEMPLATE) as f:
            config = dovecot_config(f.read(), d.root, self.run_folder(), port, user, group)
        await self.start_dovecot(config, port)

        def imap():
            client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
            client.starttls(d.client_context())
            try:
                client.login(USER, "wrong")
            except imaplib.IMAP4.error as e:
                return str(e)
            finally:
                client.shutdown()
            return None

        self.assertIn("AUTHENTICATIONFAILED", await threads.deferToThread(imap))
