#!/usr/bin/env python3
"""
A big queue: write N deferred entries straight into a fresh mailroot's queue
folder (as the server writes them: <id>.eml and <id>.json, no fsync here),
then start `twistd -n smtpd` on it and measure, from the spawn:

  * accepting: the first 220 greeting on the listener;
  * first attempt: the first connection to the smart host (a bare TCP
    listener on 127.0.0.2 that answers 421, so every attempt is deferred);
  * RSS (VmRSS) and VmHWM of the server once the first attempt is in;

then, once the whole schedule is loaded, the listing of the queue while the
server keeps answering SMTP:

  * `smtpctl queue list --limit 100` (the first page) and `smtpctl queue list`
    (every entry, streamed a page at a time), each a new process;
  * `admin.queue()` (its default page of 100) and one page of 1,000 deep in
    the queue, through the control socket;
  * the banner latency of new SMTP connections (one every 50 ms) during the
    full listing.

    .venv/bin/python bench/bigqueue.py [--entries 100000] [--due 100]

`--due` entries are due at once, the rest over the next hour. Not a test:
the figures go into the README.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.dirname(os.path.abspath(sys.executable))
DATA = b"From: <a@client.test>\r\nTo: <r@remote.test>\r\nSubject: queued\r\n\r\n" + b"x" * 900 + b"\r\n"


def write_queue(queue: str, entries: int, due: int, recipients: int = 1) -> None:
    """C{entries} deferred entries of C{recipients} each, C{due} of them due now."""
    os.makedirs(queue, 0o700)
    now = time.time()
    for n in range(entries):
        queue_id = f"{int(now) - 3600:08X}{secrets.randbits(64):016X}"
        envelope = {
            "id": queue_id, "sender": "a@client.test",
            "recipients": [{"address": f"r{n}-{k}@remote.test", "notify": [], "orcpt": "",
                            "state": "pending", "last_reply": "421 4.3.2 try later",
                            "status": "4.3.2", "remote_mta": "", "notified_delay": False}
                           for k in range(recipients)],
            "arrival": now - 3600, "next_attempt": now if n < due else now + 60 + n % 3600,
            "attempts": 1, "state": "deferred", "ret": "", "envid": "", "size": len(DATA),
            "client": "client.test [127.0.0.1]", "body": "",
        }
        with open(os.path.join(queue, queue_id + ".eml"), "wb") as f:
            f.write(DATA)
        with open(os.path.join(queue, queue_id + ".json"), "w") as f:
            json.dump(envelope, f)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def first_connection(port: int, seen: list[float]) -> threading.Thread:
    """A listener on 127.0.0.2:port that notes its first connection and answers 421."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.2", port))
    server.listen(100)

    def run() -> None:
        while True:
            conn, _ = server.accept()
            if not seen:
                seen.append(time.monotonic())
            conn.sendall(b"421 4.3.2 bench sink: try later\r\n")
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def greeting(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            return s.recv(100).startswith(b"220")
    except OSError:
        return False


def memory(pid: int) -> dict[str, int]:
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) // 1024
    return found


def loaded(control, entries: int, timeout: float = 120.0) -> float:
    """Wait until the server's schedule holds every entry; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if sum(control.call("status")["queue"].values()) >= entries:
            break
        time.sleep(0.2)
    return time.monotonic() - started


class Banners:
    """New SMTP connections every C{interval} s in a thread, timing each 220."""

    def __init__(self, port: int, interval: float = 0.05):
        self.port, self.interval = port, interval
        self.times: list[float] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stopping.is_set():
            began = time.monotonic()
            if greeting(self.port, timeout=10):
                self.times.append(time.monotonic() - began)
            self.stopping.wait(self.interval)

    def summary(self) -> str:
        times = sorted(self.times)
        if not times:
            return "no banner"
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        return (f"{len(times)} banners, median {times[len(times) // 2] * 1000:.0f} ms, "
                f"p99 {p99 * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms")


def timed(command: list[str]) -> tuple[float, int]:
    """Seconds to run C{command} (stdout counted, not kept) and its output lines."""
    began = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if done.returncode:
        raise SystemExit(f"{command}: {done.stderr.decode(errors='replace')}")
    return time.monotonic() - began, done.stdout.count(b"\n")


def listing(root: str, config: str, port: int, entries: int) -> None:
    """The listing figures of a running server of C{entries} entries."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from smtpd.admin.control import ControlClient

    control = ControlClient(os.path.join(root, "mailroot", "smtpd.sock"), timeout=300)
    waited = loaded(control, entries)
    print(f"schedule loaded {waited:.1f} s after the first attempt")
    smtpctl = [os.path.join(BIN, "smtpctl"), "--config", config, "queue", "list"]
    baseline, _ = timed(smtpctl[:-2] + ["status"])
    first, _ = timed(smtpctl + ["--limit", "100"])
    began = time.monotonic()
    page = control.call("queue")
    api_first = time.monotonic() - began
    middle = control.call("queue", limit=1, offset=entries // 2)[0]["id"]
    began = time.monotonic()
    deep = control.call("queue", limit=1000, after=middle)
    api_deep = time.monotonic() - began
    with Banners(port) as banners:
        full, lines = timed(smtpctl)
    print(f"smtpctl status (process start-up and one call): {baseline:.2f} s; "
          f"smtpctl queue list --limit 100: {first:.2f} s; full listing ({lines} lines): "
          f"{full:.1f} s; admin.queue() ({len(page)} entries): {api_first * 1000:.0f} ms; "
          f"a page of {len(deep)} from the middle: {api_deep * 1000:.0f} ms")
    print(f"banner latency during the full listing: {banners.summary()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=100)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="smtpd-bigqueue-")
    try:
        started = time.monotonic()
        write_queue(os.path.join(root, "mailroot", "queue"), args.entries, args.due)
        print(f"wrote {args.entries} entries in {time.monotonic() - started:.1f} s")
        subprocess.run(["sync"], check=False)
        port, sink_port = free_port("127.0.0.1"), free_port("127.0.0.2")
        seen: list[float] = []
        first_connection(sink_port, seen)
        os.makedirs(os.path.join(root, "etc"))
        config = os.path.join(root, "etc", "smtpd.ini")
        with open(config, "w") as f:
            f.write(f"[server]\nhostname = mx.bench\nlisten = tcp:{port}:interface=127.0.0.1\n"
                    f"[delivery]\nsmart_host = [127.0.0.2]:{sink_port}\noutbound_tls = none\n"
                    "[logging]\npath = activity.log\n[domain:localhost]\ntype = local\n")
        spawned = time.monotonic()
        server = subprocess.Popen(
            [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=twistd.log",
             "smtpd", "--config", config], cwd=root)
        try:
            while not greeting(port):
                time.sleep(0.02)
            accepting = time.monotonic() - spawned
            while not seen:
                time.sleep(0.01)
            attempt = seen[0] - spawned
            mem = memory(server.pid)
            print(f"entries {args.entries}: accepting after {accepting:.2f} s, first attempt "
                  f"after {attempt:.2f} s, RSS {mem['VmRSS']} MB (peak {mem['VmHWM']} MB)")
            listing(root, config, port, args.entries)
            mem = memory(server.pid)
            print(f"RSS after the listings {mem['VmRSS']} MB (peak {mem['VmHWM']} MB)")
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
