"""
A real, private Debian Postfix for interop tests and the benchmark.

One instance lives entirely in a folder of its own: config_directory
(FOLDER/etc), queue_directory (FOLDER/spool), data_directory (FOLDER/data),
virtual Maildirs (FOLDER/mail/DOMAIN/LOCAL/) and its log (FOLDER/maillog,
written by postlogd through maillog_file: there is no syslog daemon). Its
SMTP server listens on 127.0.0.1 at a free port; no service is chrooted;
mail it does not deliver itself goes to C{relay} (relayhost
C{[127.0.0.1]:PORT}). It is started with C{postfix -c FOLDER/etc start}, which
must run as root (Postfix's master runs as root and drops to mail_owner), and
stopped as C{postfix stop} does it, with SIGTERM to the master (SIGKILL if
that fails).

In a test:

    from tests.postfix import POSTFIX_MISSING, start_postfix

    class InteropTests(TestCase):
        skip = POSTFIX_MISSING

        def test_relay(self):
            postfix = start_postfix(self, relay=smtpd_port,
                                    settings={"smtputf8_enable": "yes"})
            postfix.sendmail(b"Subject: hi\\r\\n\\r\\nbody\\r\\n",
                             "a@postfix.test", ["b@remote.test"])
            # or SMTP to 127.0.0.1:postfix.port; then poll postfix.log()

C{mailboxes={"postfix.test": ["alice"]}} makes Postfix deliver
alice@postfix.test by virtual(8) into L{PostfixInstance.maildir}. Every other
main.cf parameter can be set or overridden with C{settings} (e.g.
C{debug_peer_list}, C{smtpd_discard_ehlo_keywords}). This module uses only the
standard library: bench/peers.py imports it too.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tests.engineproc import free_port
from tests.engines import find_engine, skip_unless

# The reason to skip when Debian's postfix is not installed (the programs the
# instance runs: the postfix command, its master and daemons, sendmail).
POSTFIX_MISSING = skip_unless("postfix", "postfix/master", "postfix/smtpd", "sendmail",
                              "postqueue")

# master.cf: Debian's services, none chrooted (the instance has no chroot copy
# of /etc), the SMTP server on our loopback port only.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(Exception):
    """The instance could not be started; the message says why and where its log is."""


def wait_banner(port: int, timeout: float, running, log: str,
                error: type[Exception] = PostfixError) -> None:
    """
    Wait until 127.0.0.1:C{port} sends a 220 banner; C{error} citing C{log}
    when C{running()} turns false or C{timeout} passes first.
    """
    deadline = time.monotonic() + timeout
    last = "no connection"
    while time.monotonic() < deadline:
        if not running():
            raise error(f"the server ended during start-up; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                banner = s.recv(512)
                if banner.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
                last = repr(banner)
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise error(f"no 220 banner on 127.0.0.1:{port} within {timeout:.0f} s ({last}); see {log}")


def nobody() -> tuple[int, int]:
    """uid and gid of the unprivileged user virtual(8) delivers as."""
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def alive(pid: int) -> bool:
    """Whether process C{pid} exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostfixInstance:
    """
    One private Postfix: L{write} its configuration, L{start}, L{stop}; read
    its L{log}, its Maildirs (L{messages}) and its queue (L{queue}); submit
    mail with L{sendmail} or SMTP to 127.0.0.1:L{port}.
    """

    def __init__(self, folder: str, *, hostname: str = "postfix.test",
                 relay: int | str | None = None,
                 mailboxes: dict[str, list[str]] | None = None,
                 settings: dict[str, str] | None = None) -> None:
        """
        @param folder: an empty folder the instance owns (made if missing).
        @param hostname: myhostname (its EHLO name and banner).
        @param relay: where mail for other domains goes: a port on 127.0.0.1
            or a C{host:port}; C{None} leaves relayhost empty. The attribute
            C{relay} (C{host:port}) may be changed until L{start}.
        @param mailboxes: domain -> local parts delivered to virtual Maildirs.
        @param settings: main.cf parameters added or overriding the defaults.
        """
        self.folder = os.path.abspath(folder)
        self.hostname = hostname
        self.relay = f"127.0.0.1:{relay}" if isinstance(relay, int) else relay
        self.mailboxes = dict(mailboxes or {})
        self.settings = dict(settings or {})
        self.port = free_port()
        self.config_directory = os.path.join(self.folder, "etc")
        self.log_path = os.path.join(self.folder, "maillog")
        self.started = False

    def parameters(self) -> dict[str, str]:
        """
        The main.cf parameters: Debian's defaults except the instance's folders
        and port, and what this closed machine needs: no reverse DNS of clients
        (no resolver is reachable; each lookup would wait for its timeout), the
        log in a file, no alias maps (Debian's /etc/aliases.db may not exist),
        then L{settings} on top.
        """
        uid, gid = nobody()
        d = self.folder
        domains = " ".join(self.mailboxes)
        values = {
            "compatibility_level": "3.6",
            "queue_directory": f"{d}/spool",
            "data_directory": f"{d}/data",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_peername_lookup": "no",
            "alias_maps": "",
            "alias_database": "",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": d,
            "virtual_mailbox_domains": domains,
            "virtual_mailbox_base": f"{d}/mail",
            "virtual_mailbox_maps": f"texthash:{d}/etc/vmailbox",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
        }
        if self.relay:
            host, _, port = self.relay.rpartition(":")
            values["relayhost"] = f"[{host}]:{port}"
        values.update(self.settings)
        return values

    def main_cf(self) -> str:
        """The text of main.cf."""
        return "".join(f"{name} = {value}\n" for name, value in self.parameters().items())

    def write(self) -> None:
        """Create the instance's folders and write main.cf, master.cf, vmailbox."""
        d = self.folder
        for sub in ("etc", "spool", "data", "mail"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.chmod(d, 0o755)
        shutil.chown(os.path.join(d, "data"), "postfix")
        os.chown(os.path.join(d, "mail"), *nobody())
        self.write_file("main.cf", self.main_cf())
        self.write_file("master.cf", MASTER_CF.format(port=self.port))
        self.write_file("vmailbox", "".join(
            f"{local}@{domain} {domain}/{local}/\n"
            for domain, locals_ in self.mailboxes.items() for local in locals_))

    def write_file(self, name: str, text: str) -> None:
        """Write C{text} to C{name} in the config folder."""
        with open(os.path.join(self.config_directory, name), "w") as f:
            f.write(text)

    def start(self, timeout: float = 60) -> None:
        """Write the instance, run C{postfix start}, wait for the 220 banner."""
        if os.geteuid() != 0:
            raise PostfixError("a private Postfix instance must be started as root "
                               "(Postfix's master runs as root)")
        self.write()
        self.started = True
        done = self.command("postfix", "start", timeout=timeout)
        if done.returncode != 0:
            raise PostfixError(f"postfix -c {self.config_directory} start failed: "
                               f"{(done.stdout + done.stderr).strip()}; see {self.log_path}")
        wait_banner(self.port, timeout, lambda: alive(self.master_pid()), self.log_path)

    def command(self, program: str, *args: str, timeout: float = 30,
                stdin: bytes | None = None) -> subprocess.CompletedProcess:
        """Run a Postfix command (postfix, postqueue, postconf, ...) with -c our config."""
        path = find_engine(program)
        if path is None:
            raise PostfixError(f"{program} not found: run 'make engines' as root "
                               f"(Debian package postfix provides it)")
        return subprocess.run([path, "-c", self.config_directory, *args], input=stdin,
                              capture_output=True, timeout=timeout,
                              text=stdin is None)

    def sendmail(self, message: bytes, sender: str, recipients: list[str],
                 *options: str) -> None:
        """
        Submit C{message} (CRLF or LF lines) with C{sendmail -C}: the pickup
        route, as a local program would. C{options} go before the recipients
        (e.g. C{"-N", "success"}, C{"-V", "envid"}). Raises L{PostfixError}
        when sendmail fails.
        """
        path = find_engine("sendmail")
        done = subprocess.run([path, "-C", self.config_directory, "-i", "-f", sender,
                               *options, "--", *recipients],
                              input=message, capture_output=True, timeout=30)
        if done.returncode != 0:
            raise PostfixError(f"sendmail failed ({done.returncode}): "
                               f"{done.stderr.decode(errors='replace').strip()}")

    def flush(self) -> None:
        """C{postqueue -f}: attempt every queued message now."""
        self.command("postqueue", "-f")

    def queue(self) -> str:
        """C{postqueue -p}: the queue listing (C{Mail queue is empty} when empty)."""
        return self.command("postqueue", "-p").stdout

    def log(self) -> str:
        """The instance's log so far (empty before the first line)."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def maildir(self, address: str) -> str:
        """The virtual Maildir of C{local@domain} (one of L{mailboxes})."""
        local, _, domain = address.rpartition("@")
        return os.path.join(self.folder, "mail", domain, local)

    def messages(self, address: str) -> list[bytes]:
        """The messages delivered to C{address}, oldest first (by file name)."""
        found = []
        folder = self.maildir(address)
        paths = glob.glob(os.path.join(folder, "new", "*")) + glob.glob(
            os.path.join(folder, "cur", "*"))
        for path in sorted(paths, key=os.path.basename):
            with open(path, "rb") as f:
                found.append(f.read())
        return found

    def master_pid(self) -> int:
        """The master's pid from its pid file, or -1 when there is none."""
        try:
            with open(os.path.join(self.folder, "spool", "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return -1

    def stop(self, timeout: float = 10) -> None:
        """
        Stop the instance as C{postfix stop} does, a SIGTERM to the master
        (which stops its daemons), without its script's one-second polls; a
        master still there after C{timeout} gets SIGKILL (the daemons exit
        when their master's status pipe closes).
        """
        if not self.started:
            return
        self.started = False
        master = self.master_pid()
        if master <= 0:
            return
        try:
            os.kill(master, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while alive(master) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(master):
            os.kill(master, signal.SIGKILL)


def postfix_instance(case, **options) -> PostfixInstance:
    """
    A L{PostfixInstance} in a new temporary folder, not started yet (its
    L{PostfixInstance.port} is known, so a peer can be set up to reach it
    first), stopped and the folder removed at C{case}'s cleanup; C{options}
    as for L{PostfixInstance}.
    """
    folder = tempfile.mkdtemp(prefix="postfix-")
    case.addCleanup(shutil.rmtree, folder, True)
    instance = PostfixInstance(folder, **options)
    case.addCleanup(instance.stop)
    return instance


def start_postfix(case, **options) -> PostfixInstance:
    """A started L{postfix_instance}."""
    instance = postfix_instance(case, **options)
    instance.start()
    return instance
