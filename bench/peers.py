"""
The servers the benchmark drives, each a private instance in its own folder on
127.0.0.1 with a free port: Postfix (postfix -c DIR start, virtual(8) Maildir
delivery, relayhost to smtp-sink), aiosmtpd (bench/aiosmtpd_maildir.py) and
smtpd (twistd -n smtpd with a generated config), plus Postfix's smtp-sink as
the relay destination. Every start has a matching stop that also works after a
half-done start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time

from procs import alive, kill_tree, stop_popen

DOMAIN = "bench.test"
REMOTE = "remote.test"
HERE = os.path.dirname(os.path.abspath(__file__))


class BenchError(Exception):
    """A failure that ends the benchmark with one clear message."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_parts(count: int) -> list[str]:
    """The local parts smtp-source -t rcpt@... -r COUNT uses: rcpt, 2rcpt, 3rcpt, ..."""
    return ["rcpt"] + [f"{i}rcpt" for i in range(2, count + 1)]


def tool(name: str) -> str:
    """The path of a Postfix program, or a BenchError naming the package."""
    for folder in (None, "/usr/sbin:/usr/lib/postfix/sbin"):
        found = shutil.which(name, path=folder)
        if found:
            return found
    raise BenchError(f"{name} not found: run 'make engines' as root "
                     f"(Debian package postfix provides it)")


def wait_banner(port: int, timeout: float, running, log: str) -> None:
    """Wait until 127.0.0.1:C{port} sends a 220 banner; else BenchError citing C{log}."""
    deadline = time.monotonic() + timeout
    last = "no connection"
    while time.monotonic() < deadline:
        if not running():
            raise BenchError(f"the server ended during start-up; see {log}")
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
    raise BenchError(f"no 220 banner on 127.0.0.1:{port} within {timeout:.0f} s ({last}); see {log}")


def nobody() -> tuple[int, int]:
    """uid and gid of the unprivileged user smtp-sink and virtual(8) run as."""
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


class Sink:
    """Postfix's smtp-sink appending every message to one dump file we count."""

    PATTERN = b"\nX-Rcpt-Args: "

    def __init__(self, folder: str):
        self.folder = folder
        self.port = free_port()
        self.dump = os.path.join(folder, "dump")
        self.process: subprocess.Popen | None = None
        self.offset, self.tail, self.count = 0, b"", 0

    def start(self) -> None:
        """Run smtp-sink as nobody on 127.0.0.1:port."""
        os.makedirs(self.folder, exist_ok=True)
        os.chown(self.folder, *nobody())
        log = open(os.path.join(self.folder, "smtp-sink.log"), "wb")
        with log:
            self.process = subprocess.Popen(
                [tool("smtp-sink"), "-u", "nobody", "-D", self.dump,
                 f"127.0.0.1:{self.port}", "1024"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        wait_banner(self.port, 10, lambda: self.process.poll() is None, log.name)

    def delivered(self) -> int:
        """Recipients the sink has accepted so far (its X-Rcpt-Args dump lines)."""
        try:
            with open(self.dump, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        self.offset += len(chunk)
        text = self.tail + chunk
        self.count += text.count(self.PATTERN)
        self.tail = text[-(len(self.PATTERN) - 1):]
        return self.count

    def last_arrival(self) -> float | None:
        """Wall-clock time of the last write to the dump."""
        try:
            return os.stat(self.dump).st_mtime
        except FileNotFoundError:
            return None

    def stop(self) -> None:
        """Stop smtp-sink."""
        if self.process is not None:
            stop_popen(self.process)


class Server:
    """What the runner needs of every server: start, stop, pid, port, Maildirs."""

    name = "?"

    def __init__(self, folder: str, sink_port: int | None, accounts: list[str]):
        self.folder = folder
        self.sink_port = sink_port
        self.accounts = accounts
        self.port = free_port()
        os.makedirs(folder, exist_ok=True)

    def root_pid(self) -> int:
        """The pid whose process tree is the server."""
        raise NotImplementedError

    def maildir(self, local: str) -> str:
        """The Maildir of C{local}@bench.test."""
        raise NotImplementedError

    def new_folders(self) -> list[str]:
        """The new/ folders of all accounts."""
        return [os.path.join(self.maildir(a), "new") for a in self.accounts]

    def landed(self) -> int:
        """Messages in the new/ folders of all accounts."""
        total = 0
        for folder in self.new_folders():
            try:
                total += len(os.listdir(folder))
            except FileNotFoundError:
                pass
        return total

    def last_arrival(self) -> float | None:
        """Wall-clock time of the last rename into a new/ folder."""
        times = []
        for folder in self.new_folders():
            try:
                times.append(os.stat(folder).st_mtime)
            except FileNotFoundError:
                pass
        return max(times, default=None)


class Aiosmtpd(Server):
    """aiosmtpd with the fsync'ing Maildir handler of bench/aiosmtpd_maildir.py."""

    name = "aiosmtpd"

    def start(self) -> None:
        """Start the handler script with this interpreter (the bench venv's)."""
        self.log = os.path.join(self.folder, "aiosmtpd.log")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "aiosmtpd_maildir.py"), "--port",
                 str(self.port), "--maildirs", os.path.join(self.folder, "mail"),
                 "--domain", DOMAIN],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        wait_banner(self.port, 30, lambda: self.process.poll() is None, self.log)

    def root_pid(self) -> int:
        return self.process.pid

    def maildir(self, local: str) -> str:
        return os.path.join(self.folder, "mail", DOMAIN, local)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if getattr(self, "process", None) is not None:
            stop_popen(self.process)


class Smtpd(Server):
    """smtpd under twistd with default settings but ports, accounts and a smart host."""

    name = "smtpd"

    def __init__(self, folder, sink_port, accounts, venv_bin: str, users_file: str | None,
                 server_lines: tuple[str, ...] = ()):
        super().__init__(folder, sink_port, accounts)
        self.venv_bin = venv_bin
        self.users_file = users_file
        self.server_lines = list(server_lines)

    def config(self) -> str:
        """The generated etc/smtpd.ini: defaults apart from port, domains, smart host."""
        lines = ["[server]", f"listen = tcp:{self.port}:interface=127.0.0.1",
                 *self.server_lines, ""]
        if self.sink_port:
            lines += ["[delivery]", f"smart_host = [127.0.0.1]:{self.sink_port}", ""]
        lines += [f"[domain:{DOMAIN}]", "type = local", "",
                  f"[domain:{REMOTE}]", "type = remote", ""]
        return "\n".join(lines)

    def start(self) -> None:
        """Write the deployment, then twistd -n smtpd --config it."""
        etc = os.path.join(self.folder, "etc")
        os.makedirs(etc, exist_ok=True)
        self.ini = os.path.join(etc, "smtpd.ini")
        with open(self.ini, "w") as f:
            f.write(self.config())
        if self.users_file:
            shutil.copy(self.users_file, os.path.join(etc, "users"))
        self.log = os.path.join(self.folder, "twistd.log")
        with open(os.path.join(self.folder, "twistd.out"), "wb") as out:
            # BENCH_SMTPD_PROFILE=FILE: cProfile of the reactor thread, stats saved
            # to FILE(.N) when smtpd stops (for bench/profile.py).
            profile = os.environ.get("BENCH_SMTPD_PROFILE")
            extra = []
            if profile:
                extra = [f"--profile={profile}.{os.getpid()}.{id(self)}",
                         "--profiler=cprofile", "--savestats"]
            self.process = subprocess.Popen(
                [os.path.join(self.venv_bin, "twistd"), "-n", "--pidfile=", "--logfile",
                 self.log, *extra, "smtpd", "--config", self.ini],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.folder)
        wait_banner(self.port, 60, lambda: self.process.poll() is None, self.log)
        self.spy = None
        spy = os.environ.get("BENCH_SMTPD_PYSPY")
        if spy:
            # BENCH_SMTPD_PYSPY=FILE: py-spy (a sampling profiler, pip install py-spy in
            # the smtpd venv) records every thread of the instance until it stops, as
            # collapsed stacks in FILE.<pid> (for bench/spy.py). Its own CPU is not the
            # server's: it is not a child of twistd.
            self.spy = subprocess.Popen(
                [os.path.join(self.venv_bin, "py-spy"), "record", "--pid",
                 str(self.process.pid), "--format", "raw", "--threads", "--nonblocking", "--rate", "250",
                 "--output", f"{spy}.{self.process.pid}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def root_pid(self) -> int:
        return self.process.pid

    def maildir(self, local: str) -> str:
        return os.path.join(self.folder, "mailroot", "mailbox", DOMAIN, local)

    def stop(self) -> None:
        """SIGTERM (smtpd's graceful stop), then SIGKILL."""
        if getattr(self, "process", None) is not None:
            stop_popen(self.process, grace=30)
        if getattr(self, "spy", None) is not None:
            self.spy.wait(timeout=60)  # writes its file when the server has gone


def make_users_file(folder: str, venv_bin: str, accounts: list[str]) -> str:
    """An etc/users with the benchmark accounts, made once with smtpctl user add."""
    etc = os.path.join(folder, "etc")
    os.makedirs(etc, exist_ok=True)
    ini = os.path.join(etc, "smtpd.ini")
    with open(ini, "w") as f:
        f.write(f"[domain:{DOMAIN}]\ntype = local\n")
    for local in accounts:
        done = subprocess.run(
            [os.path.join(venv_bin, "smtpctl"), "--config", ini, "user", "add",
             f"{local}@{DOMAIN}", "--password-stdin"],
            input=b"bench-password\n", capture_output=True, cwd=folder)
        if done.returncode != 0:
            raise BenchError("smtpctl user add failed: "
                             + (done.stderr or done.stdout).decode(errors="replace").strip())
    return os.path.join(etc, "users")


# master.cf of the private Postfix instance: Debian's services, none chrooted (the
# instance has no chroot copy of /etc), smtpd on our loopback port only.
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


class Postfix(Server):
    """
    A private Postfix instance: config_directory, queue_directory and
    data_directory under our folder, started with postfix -c DIR start (as root).
    Delivery for bench.test by virtual(8) into Maildirs owned by nobody; other
    domains go to relayhost = the sink. Apart from that and the ports, Debian's
    defaults, with the exceptions this closed machine needs: no reverse DNS of
    clients (smtpd_peername_lookup = no; there is no resolver reachable, every
    lookup would wait for its timeout), logging to a file (maillog_file via
    postlogd; there is no syslog daemon) and no alias maps (no local(8)
    delivery here; Debian's default /etc/aliases.db does not exist).
    """

    name = "Postfix"

    def main_cf(self) -> str:
        """The instance's main.cf."""
        uid, gid = nobody()
        d = self.folder
        lines = [
            "compatibility_level = 3.6",
            f"queue_directory = {d}/spool",
            f"data_directory = {d}/data",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            f"myhostname = {DOMAIN}",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "smtpd_peername_lookup = no",
            "alias_maps =",
            "alias_database =",
            f"maillog_file = {d}/maillog",
            f"maillog_file_prefixes = {d}",
            f"virtual_mailbox_domains = {DOMAIN}",
            f"virtual_mailbox_base = {d}/mail",
            f"virtual_mailbox_maps = texthash:{d}/etc/vmailbox",
            f"virtual_uid_maps = static:{uid}",
            f"virtual_gid_maps = static:{gid}",
        ]
        if self.sink_port:
            lines.append(f"relayhost = [127.0.0.1]:{self.sink_port}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Write the instance and start it; wait for its banner."""
        d = self.folder
        for sub in ("etc", "spool", "data", "mail"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.chmod(d, 0o755)
        shutil.chown(os.path.join(d, "data"), "postfix")
        os.chown(os.path.join(d, "mail"), *nobody())
        with open(os.path.join(d, "etc", "main.cf"), "w") as f:
            f.write(self.main_cf())
        with open(os.path.join(d, "etc", "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port))
        with open(os.path.join(d, "etc", "vmailbox"), "w") as f:
            f.writelines(f"{a}@{DOMAIN} {DOMAIN}/{a}/\n" for a in self.accounts)
        self.log = os.path.join(d, "maillog")
        self.started = True
        done = self.postfix("start", timeout=60)
        if done.returncode != 0:
            raise BenchError(f"postfix -c {d}/etc start failed: {done.stdout.strip()}; "
                             f"see {self.log}")
        wait_banner(self.port, 30, lambda: alive(self.root_pid()), self.log)

    def postfix(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        """Run postfix -c OUR-CONFIG COMMAND."""
        return subprocess.run([tool("postfix"), "-c", os.path.join(self.folder, "etc"), command],
                              capture_output=True, text=True, timeout=timeout)

    def root_pid(self) -> int:
        """The master process (its pid file is in the queue folder)."""
        try:
            with open(os.path.join(self.folder, "spool", "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return -1

    def maildir(self, local: str) -> str:
        return os.path.join(self.folder, "mail", DOMAIN, local)

    def stop(self) -> None:
        """postfix stop; if that hangs or fails, kill the master's process tree."""
        if not getattr(self, "started", False):
            return
        master = self.root_pid()
        try:
            self.postfix("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while master > 0 and alive(master) and time.monotonic() < deadline:
            time.sleep(0.1)
        if master > 0 and alive(master):
            kill_tree(master)
