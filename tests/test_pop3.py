"""
POP3 end to end over real sockets: a message sent over SMTP to smtpd, delivered
into its Maildir, picked up with Python's poplib over STLS and POP3S and with
Debian's fetchmail.
"""

from __future__ import annotations

import os
import poplib
import subprocess

from twisted.internet import threads
from twisted.trial import unittest

from tests.engines import find_engine, skip_unless
from tests.mailstore import PASSWORD, USER, Deployment


class POP3Tests(unittest.TestCase):
    """smtpd's POP3 listeners with real clients."""

    timeout = 30

    def stls(self, deployment: Deployment, user: str = USER,
             password: str = PASSWORD) -> poplib.POP3:
        """A poplib session over STLS, logged in."""
        client = poplib.POP3("127.0.0.1", deployment.pop3_port, timeout=10)
        client.stls(deployment.client_context())
        client.user(user)
        client.pass_(password)
        return client

    async def test_stls_retrieves_delivered_message(self):
        """poplib over STLS retrieves what SMTP delivered; the file moves to cur/."""
        d = Deployment(self)
        await d.deliver()

        def pick_up():
            client = self.stls(d)
            try:
                return client.stat(), client.retr(1)
            finally:
                client.quit()

        (count, size), (reply, lines, octets) = await threads.deferToThread(pick_up)
        self.assertEqual(count, 1)
        self.assertIn(b"Subject: pick me up", lines)
        self.assertIn(b"Delivered-To: alice@example.test", lines)
        self.assertIn(b".leading dot", lines)
        # The size announced is the size sent (CRLF line ends, before stuffing).
        self.assertEqual(size, sum(len(line) + 2 for line in lines))
        self.assertEqual(d.files("new"), [])
        [name] = d.files("cur")
        self.assertTrue(name.endswith(":2,"), name)

    async def test_pop3s_retrieves_delivered_message(self):
        """poplib over implicit TLS (POP3S) retrieves what SMTP delivered."""
        d = Deployment(self)
        await d.deliver()

        def pick_up():
            client = poplib.POP3_SSL("127.0.0.1", d.pop3s_port, context=d.client_context(),
                                     timeout=10)
            try:
                client.user(USER)
                client.pass_(PASSWORD)
                return client.retr(1)
            finally:
                client.quit()

        _, lines, _ = await threads.deferToThread(pick_up)
        self.assertIn(b"Subject: pick me up", lines)

    async def test_alias_domain_logs_in_to_target(self):
        """A login at an alias domain opens the mailbox of its target account."""
        d = Deployment(self)
        await d.deliver()

        def count():
            client = self.stls(d, user="Alice@Alias.Test")
            try:
                return client.stat()[0]
            finally:
                client.quit()

        self.assertEqual(await threads.deferToThread(count), 1)

    async def test_wrong_password_refused(self):
        """A wrong password gets -ERR [AUTH]; the right one still works after."""
        d = Deployment(self)

        def attempt():
            client = poplib.POP3("127.0.0.1", d.pop3_port, timeout=10)
            client.stls(d.client_context())
            client.user(USER)
            try:
                client.pass_("wrong")
            except poplib.error_proto as e:
                refused = e.args[0]
            else:
                refused = None
            client.user(USER)
            client.pass_(PASSWORD)
            client.quit()
            return refused

        refused = await threads.deferToThread(attempt)
        self.assertEqual(refused, b"-ERR [AUTH] Authentication failed")

    async def test_second_session_gets_in_use(self):
        """While one session has the mailbox, a second login gets -ERR [IN-USE]."""
        d = Deployment(self)

        def two_sessions():
            first = self.stls(d)
            try:
                self.stls(d)
            except poplib.error_proto as e:
                return e.args[0]
            finally:
                first.quit()
            return None

        refused = await threads.deferToThread(two_sessions)
        self.assertTrue(refused.startswith(b"-ERR [IN-USE]"), refused)

    async def test_dele_and_quit_remove_the_file(self):
        """DELE marks; the file goes only at QUIT, not when the client just drops."""
        d = Deployment(self)
        await d.deliver()

        def dele_and_drop():
            client = self.stls(d)
            client.dele(1)
            client.close()  # no QUIT: no UPDATE state

        await threads.deferToThread(dele_and_drop)
        self.assertEqual(len(d.files("cur")), 1)

        def dele_and_quit():
            client = self.stls(d)
            client.dele(1)
            return client.quit()

        self.assertTrue((await threads.deferToThread(dele_and_quit)).startswith(b"+OK"))
        self.assertEqual(d.files("cur") + d.files("new"), [])

    async def test_uidl_same_in_two_sessions(self):
        """UIDL is the Maildir unique name, the same in two sessions."""
        d = Deployment(self)
        await d.deliver()
        unique = os.path.basename(d.files("new")[0]).split(",")[0]

        def uidl():
            client = self.stls(d)
            try:
                return client.uidl()[1]
            finally:
                client.quit()

        first = await threads.deferToThread(uidl)
        second = await threads.deferToThread(uidl)
        self.assertEqual(first, [b"1 " + unique.encode()])
        self.assertEqual(first, second)

    async def test_login_refused_in_clear(self):
        """Without TLS, CAPA offers STLS but not USER, and USER is refused."""
        d = Deployment(self)

        def in_clear():
            client = poplib.POP3("127.0.0.1", d.pop3_port, timeout=10)
            try:
                capabilities = client.capa()
                try:
                    client.user(USER)
                except poplib.error_proto as e:
                    return capabilities, e.args[0]
                return capabilities, None
            finally:
                client.quit()

        capabilities, refused = await threads.deferToThread(in_clear)
        self.assertIn("STLS", capabilities)
        self.assertNotIn("USER", capabilities)
        self.assertTrue(refused.startswith(b"-ERR [AUTH] Plaintext"), refused)

    async def test_login_in_clear_when_allowed(self):
        """With [auth] allow_plaintext = yes, USER/PASS work without TLS."""
        d = Deployment(self, allow_plaintext=True)
        await d.deliver()

        def in_clear():
            client = poplib.POP3("127.0.0.1", d.pop3_port, timeout=10)
            try:
                client.user(USER)
                client.pass_(PASSWORD)
                return client.stat()[0]
            finally:
                client.quit()

        self.assertEqual(await threads.deferToThread(in_clear), 1)

    async def test_commands_logged_without_password(self):
        """The activity log has a line per POP3 command and never the password."""
        d = Deployment(self)

        def session():
            self.stls(d).quit()

        await threads.deferToThread(session)
        log = d.activity()
        self.assertRegex(log, r"STLS - \+OK")
        self.assertRegex(log, r"USER alice@example.test \+OK")
        self.assertRegex(log, r"alice@example.test .* PASS - \+OK")
        self.assertNotIn("correct", log)


class FetchmailTests(unittest.TestCase):
    """Debian's fetchmail picks mail up from smtpd over STLS."""

    timeout = 60
    skip = skip_unless("fetchmail")

    async def test_fetchmail_retrieves_over_stls(self):
        """fetchmail (sslproto tls1.2+, the test CA) fetches the message into its MDA."""
        d = Deployment(self)
        await d.deliver()
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        out = os.path.join(home, "fetched.eml")
        rc = os.path.join(home, "fetchmailrc")
        with open(rc, "w") as f:
            f.write(
                f"poll 127.0.0.1 protocol pop3 port {d.pop3_port} uidl\n"
                f'  user "{USER}" password "{PASSWORD}"\n'
                f"  sslproto tls1.2+ sslcertck sslcertfile {d.ca_file}\n"
                "  sslcommonname mx.example.test\n"
                f'  mda "cat > {out}"\n'
            )
        os.chmod(rc, 0o600)
        env = {**os.environ, "HOME": home, "FETCHMAILHOME": home}

        def fetch():
            return subprocess.run(
                [find_engine("fetchmail"), "-f", rc, "--nodetach", "--nosyslog", "-v"],
                env=env, capture_output=True, timeout=30, check=False)

        result = await threads.deferToThread(fetch)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(b"STLS", result.stdout + result.stderr)
        with open(out, "rb") as f:
            self.assertIn(b"Subject: pick me up", f.read())
