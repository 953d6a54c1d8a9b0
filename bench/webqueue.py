#!/usr/bin/env python3
"""
The status page against a big queue: write N deferred entries (as
bench/bigqueue.py does), start `twistd -n smtpd` on them with an [http]
listener, wait until the whole schedule is loaded, then time each of these
GETs (one at a time, each twice: the first and the second request):

  * /queue (the HTML queue page), /api/queue (its JSON), the next page by
    cursor;
  * /api/qshape and / (the overview with the qshape table);
  * /api/queue?q=... (a search);

and the server's RSS and peak after them.

    .venv/bin/python bench/webqueue.py [--entries 100000]

Not a test: the figures go into the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bigqueue import BIN, first_connection, free_port, greeting, memory, write_queue  # noqa: E402

PATHS = ("/queue", "/api/queue", "/api/qshape", "/", "/api/queue?q=r77")


def get(url: str) -> tuple[float, bytes]:
    """Seconds to GET C{url}, and its body."""
    began = time.monotonic()
    with urllib.request.urlopen(url, timeout=600) as response:
        body = response.read()
    return time.monotonic() - began, body


def schedule_size(url: str) -> int:
    """How many entries the server's schedule holds (/api/status)."""
    _, body = get(url + "/api/status")
    return sum(json.loads(body)["queue"].values())


def measure(url: str, entries: int, pid: int) -> None:
    """Wait for the schedule to be loaded; time each path twice."""
    started = time.monotonic()
    while schedule_size(url) < entries and time.monotonic() - started < 300:
        time.sleep(0.5)
    print(f"schedule loaded ({time.monotonic() - started:.1f} s after accepting)")
    for path in PATHS:
        first, body = get(url + path)
        second, _ = get(url + path)
        print(f"GET {path}: {first:.3f} s, again {second:.3f} s ({len(body)} bytes)")
    _, body = get(url + "/api/queue?per_page=100")
    cursor = json.loads(body).get("next")
    if cursor:
        took, _ = get(url + f"/api/queue?per_page=100&after={cursor}")
        print(f"GET /api/queue?per_page=100&after=<cursor>: {took:.3f} s")
    mem = memory(pid)
    print(f"RSS {mem['VmRSS']} MB (peak {mem['VmHWM']} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="smtpd-webqueue-")
    try:
        write_queue(os.path.join(root, "mailroot", "queue"), args.entries, 0)
        subprocess.run(["sync"], check=False)
        port, web, sink_port = free_port("127.0.0.1"), free_port("127.0.0.1"), \
            free_port("127.0.0.2")
        first_connection(sink_port, [])
        os.makedirs(os.path.join(root, "etc"))
        config = os.path.join(root, "etc", "smtpd.ini")
        with open(config, "w") as f:
            f.write(f"[server]\nhostname = mx.bench\nlisten = tcp:{port}:interface=127.0.0.1\n"
                    f"[delivery]\nsmart_host = [127.0.0.2]:{sink_port}\noutbound_tls = none\n"
                    "[logging]\npath = activity.log\n[domain:localhost]\ntype = local\n"
                    f"[http]\nlisten = tcp:{web}:interface=127.0.0.1\n")
        server = subprocess.Popen(
            [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=twistd.log",
             "smtpd", "--config", config], cwd=root)
        try:
            while not greeting(port):
                time.sleep(0.05)
            measure(f"http://127.0.0.1:{web}", args.entries, server.pid)
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
