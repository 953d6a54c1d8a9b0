#!/usr/bin/env python3
"""
Benchmarks for smtpd (SPEC section 9). Not a test: run by hand, numbers go into
the README.

    .venv/bin/python bench/bench.py inbound [--messages 5000] [--sessions 20] [--size 4096]
    .venv/bin/python bench/bench.py relay   [--messages 2000] [--sessions 20] [--size 4096]

inbound: Postfix's smtp-source sends to a fresh `twistd -n smtpd` (fsync on);
the rate is messages accepted per second of smtp-source's run, while the
server also delivers them to a Maildir.
relay: smtp-source -> smtpd (relay client) -> queue -> Postfix's smtp-sink on
127.0.0.2 (as a bracketed smart host); the rate is messages per second from
the first connection until the queue is empty again.

Needs Debian's postfix package (smtp-source, smtp-sink). Everything listens on
127.0.0.0/8 only. bench/idle.py measures idle sessions.

Leave a minute or two between runs and take the median of several: each run
ends by deleting thousands of files, and on ext4 without a journal (this VM)
every file created in the same block group for about half a minute after that
is slower (the allocator skips recently deleted inodes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(os.path.abspath(sys.executable))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.path.exists(path):
        sys.exit(f"{name} not found: apt-get install postfix (it provides smtp-source/smtp-sink)")
    return path


def deployment(extra: str, server: str = "") -> tuple[str, int]:
    """A temporary deployment root and its port; C{server}: more [server] lines."""
    root = tempfile.mkdtemp(prefix="smtpd-bench-")
    port = free_port()
    os.makedirs(os.path.join(root, "etc"))
    with open(os.path.join(root, "etc", "smtpd.ini"), "w") as f:
        f.write(
            f"[server]\nhostname = bench.test\nlisten = tcp:{port}:interface=127.0.0.1\n{server}"
            "[messages]\nmax_session_size = 0\n"
            "[logging]\npath = logs.txt\n"
            "[domain:localhost]\ntype = local\n" + extra
        )
    return root, port


def start(root: str, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile", os.path.join(root, "twistd.log"),
         "smtpd", "--config", os.path.join(root, "etc", "smtpd.ini")],
        cwd=root,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    sys.exit("smtpd did not start; see " + os.path.join(root, "twistd.log"))


def source(port: int, args, rcpt: str) -> float:
    started = time.monotonic()
    subprocess.run(
        [tool("smtp-source"), "-s", str(args.sessions), "-l", str(args.size), "-m", str(args.messages),
         "-f", "bench@example.com", "-t", rcpt, f"127.0.0.1:{port}"],
        check=True,
    )
    return time.monotonic() - started


def queue_empty(root: str) -> bool:
    queue = os.path.join(root, "mailroot", "queue")
    return not any(n.endswith(".json") for n in os.listdir(queue))


def inbound(args) -> None:
    root, port = deployment("")
    server = start(root, port)
    try:
        elapsed = source(port, args, "postmaster@localhost")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    print(f"inbound: {args.messages} messages of {args.size} B over {args.sessions} sessions "
          f"in {elapsed:.2f} s = {args.messages / elapsed:.0f} msg/s (fsync on)")
    shutil.rmtree(root)


def relay(args) -> None:
    sink_port = free_port("127.0.0.2")
    # smtp-sink refuses to run as root without a user to switch to.
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([tool("smtp-sink"), *as_user, "-c", f"127.0.0.2:{sink_port}", "1000"],
                            stdout=subprocess.DEVNULL)
    root, port = deployment(f"[delivery]\nsmart_host = [127.0.0.2]:{sink_port}\noutbound_tls = none\n")
    server = start(root, port)
    try:
        started = time.monotonic()
        source(port, args, "user@remote.test")
        deadline = time.monotonic() + 600
        while not queue_empty(root):
            if sink.poll() is not None or time.monotonic() > deadline:
                sys.exit("smtp-sink ended or the queue did not drain; see "
                         + os.path.join(root, "twistd.log"))
            time.sleep(0.02)
        elapsed = time.monotonic() - started
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
        sink.kill()
    print(f"relay: {args.messages} messages of {args.size} B, inbound -> queue -> smtp-sink, "
          f"{elapsed:.2f} s = {args.messages / elapsed:.0f} msg/s end to end")
    shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["inbound", "relay"])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    {"inbound": inbound, "relay": relay}[args.what](args)


if __name__ == "__main__":
    main()
