#!/usr/bin/env python3
"""
Idle-session benchmark for smtpd (SPEC section 9): many concurrent idle
sessions in one process, the memory each costs, and how fast a new client
still gets its banner. Not a test: run by hand, numbers go into the README.

    .venv/bin/python bench/idle.py [--sessions 10000] [--probes 500]

Starts a fresh `twistd -n smtpd` on a temporary deployment (127.0.0.1 only),
opens --sessions connections and reads each banner, then reports the growth
of the server's resident memory (VmRSS in /proc/PID/status) per session, and
the latency from connect to banner of --probes new clients opened one after
the other while all the others stay idle (p50, p99, max). Needs an open-files
limit above --sessions (`ulimit -n`; the soft limit is raised to the hard
one). Bounded: at most 60,000 sessions, every step under a time limit.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import deployment, start  # noqa: E402

MAX_SESSIONS = 60_000
WARMUP = 200


def rss_kib(pid: int) -> int:
    """The resident memory of process C{pid} in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def raise_file_limit(needed: int) -> None:
    """Raise our soft open-files limit to the hard one; exit when it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        sys.exit(f"ulimit -n is {hard}; {needed} open files are needed (raise the hard limit)")


def banner(port: int, timeout: float) -> socket.socket:
    """A connection to the server that has read its whole 220 line."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(512)
        if not chunk:
            sock.close()
            raise RuntimeError(f"connection closed before the banner: {reply!r}")
        reply += chunk
    if not reply.startswith(b"220 "):
        sock.close()
        raise RuntimeError(f"refused: {reply!r}")
    return sock


def open_sessions(port: int, count: int, deadline: float) -> list[socket.socket]:
    """C{count} idle sessions, each past its banner."""
    sessions = []
    try:
        for i in range(count):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {i} sessions opened in the time allowed")
            sessions.append(banner(port, timeout=10))
    except BaseException:
        close_all(sessions)
        raise
    return sessions


def close_all(sessions: list[socket.socket]) -> None:
    for sock in sessions:
        sock.close()


def probe(port: int, count: int) -> list[float]:
    """Connect-to-banner latencies (seconds) of C{count} new clients, one at a time."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        sock = banner(port, timeout=10)
        latencies.append(time.perf_counter() - started)
        sock.close()
    return sorted(latencies)


def percentile(values: list[float], fraction: float) -> float:
    """The C{fraction} percentile of sorted C{values} (nearest rank)."""
    return values[min(len(values) - 1, max(0, round(fraction * len(values)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed for opening the sessions")
    args = parser.parse_args()
    if not 0 < args.sessions <= MAX_SESSIONS or not 0 < args.probes <= 10_000:
        sys.exit(f"--sessions must be 1..{MAX_SESSIONS}, --probes 1..10000")
    raise_file_limit(args.sessions + WARMUP + 100)
    limit = args.sessions + args.probes + WARMUP + 100
    root, port = deployment(
        "", server=f"max_connections = {limit}\nmax_connections_per_ip = {limit}\n"
    )
    server = start(root, port)
    try:
        # Warm up the code paths and the allocator before the baseline.
        close_all(open_sessions(port, WARMUP, time.monotonic() + 60))
        time.sleep(0.5)
        before = rss_kib(server.pid)
        started = time.monotonic()
        sessions = open_sessions(port, args.sessions, started + args.timeout)
        opened = time.monotonic() - started
        try:
            time.sleep(1.0)
            after = rss_kib(server.pid)
            latencies = probe(port, args.probes)
        finally:
            close_all(sessions)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    per_session = (after - before) * 1024 / args.sessions
    print(f"idle: {args.sessions} sessions opened in {opened:.1f} s; server RSS "
          f"{before / 1024:.1f} -> {after / 1024:.1f} MiB = {per_session / 1024:.2f} KiB "
          f"({per_session:.0f} B) per session")
    print(f"idle: banner to a new client with {args.sessions} idle: "
          f"p50 {percentile(latencies, 0.5) * 1000:.2f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms, "
          f"max {latencies[-1] * 1000:.2f} ms ({args.probes} probes)")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
