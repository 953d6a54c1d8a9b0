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
import shutil
import subprocess
import sys

from procs import alive, kill_tree, stop_popen

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.postfix import PostfixError, PostfixInstance, free_port, nobody  # noqa: E402
from tests.postfix import wait_banner as shared_wait_banner  # noqa: E402

DOMAIN = "bench.test"
REMOTE = "remote.test"
HERE = os.path.dirname(os.path.abspath(__file__))


class BenchError(Exception):
    """A failure that ends the benchmark with one clear message."""



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
    shared_wait_banner(port, timeout, running, log, BenchError)


class Sink:
    """Postfix's smtp-sink appending every message to one dump file we count."""

    PATTERN = b"\nX-Rcpt-Args: "

    def __init__(self, folder: str, pipelining: bool = True):
        """@param pipelining: whether the sink offers PIPELINING (else C{smtp-sink -p})."""
        self.folder = folder
        self.pipelining = pipelining
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
                [tool("smtp-sink"), *([] if self.pipelining else ["-p"]),
                 "-u", "nobody", "-D", self.dump,
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
                 server_lines: tuple[str, ...] = (), delivery_lines: tuple[str, ...] = ()):
        super().__init__(folder, sink_port, accounts)
        self.venv_bin = venv_bin
        self.users_file = users_file
        self.server_lines = list(server_lines)
        self.delivery_lines = list(delivery_lines)

    def config(self) -> str:
        """The generated etc/smtpd.ini: defaults apart from port, domains, smart host."""
        lines = ["[server]", f"listen = tcp:{self.port}:interface=127.0.0.1",
                 *self.server_lines, ""]
        if self.sink_port or self.delivery_lines:
            lines += ["[delivery]", *self.delivery_lines]
            if self.sink_port:
                lines.append(f"smart_host = [127.0.0.1]:{self.sink_port}")
            lines.append("")
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
            # BENCH_SMTPD_PROFILE=FILE: twistd's cProfile (wall clock; on Python 3.12
            # it sees every thread), stats saved to FILE(.N) when smtpd stops
            # (read them with pstats).
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


class Postfix(Server):
    """
    A private Postfix instance (tests/postfix.py, shared with the interop
    tests): its own config, queue and data folders under ours, started with
    postfix -c DIR start (as root). Delivery for bench.test by virtual(8) into
    Maildirs owned by nobody; other domains go to relayhost = the sink.
    """

    name = "Postfix"

    def __init__(self, folder: str, sink_port: int | None, accounts: list[str]):
        super().__init__(folder, sink_port, accounts)
        self.instance = PostfixInstance(folder, hostname=DOMAIN, relay=sink_port,
                                        mailboxes={DOMAIN: accounts})
        self.port = self.instance.port
        self.log = self.instance.log_path

    def start(self) -> None:
        """Write the instance and start it; wait for its banner."""
        try:
            self.instance.start()
        except PostfixError as e:
            raise BenchError(str(e)) from None

    def root_pid(self) -> int:
        """The master process (its pid file is in the queue folder)."""
        return self.instance.master_pid()

    def maildir(self, local: str) -> str:
        return self.instance.maildir(f"{local}@{DOMAIN}")

    def stop(self) -> None:
        """postfix stop; if that hangs or fails, kill the master's process tree."""
        master = self.root_pid()
        self.instance.stop()
        if master > 0 and alive(master):
            kill_tree(master)
