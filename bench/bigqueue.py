#!/usr/bin/env python3
"""
A big queue: write N deferred entries straight into a fresh mailroot's queue
folder (as the server writes them: <id>.eml and <id>.json, no fsync here),
then start `twistd -n smtpd` on it and measure, from the spawn:

  * accepting: the first 220 greeting on the listener;
  * first attempt: the first connection to the smart host (a bare TCP
    listener on 127.0.0.2 that answers 421, so every attempt is deferred);
  * RSS (VmRSS) and VmHWM of the server once the first attempt is in.

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


def greeting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
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
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
