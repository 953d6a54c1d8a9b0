#!/usr/bin/env python3
"""
Idle-session benchmark for smtpd (SPEC section 9): many concurrent idle
sessions in one process, the memory each costs, and how fast a new client
still gets its banner. Not a test: run by hand, numbers go into the README.

    .venv/bin/python bench/idle.py [--sessions 10000] [--probes 500]

`make bench` runs the same measurement (measure_idle) for its results. Starts
a fresh `twistd -n smtpd` on a temporary deployment (127.0.0.1 only; default
settings but the port and max_connections / max_connections_per_ip raised to
fit the sessions),
opens --sessions connections, reads each banner and says EHLO (each session
idle after its EHLO reply), then reports the growth
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
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers import BenchError, Smtpd  # noqa: E402

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
        raise BenchError(f"ulimit -n is {hard}; {needed} open files are needed (raise the hard limit)")


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


def ehlo(sock: socket.socket) -> None:
    """Say EHLO on C{sock} and read the whole (multi-line) 250 reply."""
    sock.sendall(b"EHLO client.bench.test\r\n")
    reply = b""
    while not (reply.endswith(b"\r\n") and reply.split(b"\r\n")[-2][3:4] == b" "):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"connection closed during EHLO: {reply!r}")
        reply += chunk
    if not reply.startswith(b"250"):
        raise RuntimeError(f"EHLO refused: {reply!r}")


def open_sessions(port: int, count: int, deadline: float) -> list[socket.socket]:
    """C{count} idle sessions, each past its banner and its EHLO."""
    sessions = []
    try:
        for i in range(count):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {i} sessions opened in the time allowed")
            sock = banner(port, timeout=10)
            sessions.append(sock)
            ehlo(sock)
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


def idle_smtpd(folder: str, venv_bin: str, sessions: int, probes: int) -> Smtpd:
    """A not yet started smtpd whose connection limits fit the idle measurement."""
    limit = sessions + probes + WARMUP + 100
    return Smtpd(folder, None, [], venv_bin, None,
                 server_lines=(f"max_connections = {limit}",
                               f"max_connections_per_ip = {limit}"))


def measure_idle(port: int, pid: int, sessions: int, probes: int, timeout: float) -> dict:
    """
    Open C{sessions} idle sessions to the server C{pid} on C{port}: its memory
    growth per session and the banner latency of C{probes} new clients meanwhile.
    """
    if not 0 < sessions <= MAX_SESSIONS or not 0 < probes <= 10_000:
        raise BenchError(f"idle sessions must be 1..{MAX_SESSIONS}, probes 1..10000")
    raise_file_limit(sessions + WARMUP + 100)
    # Warm up the code paths and the allocator before the baseline.
    close_all(open_sessions(port, WARMUP, time.monotonic() + 60))
    time.sleep(0.5)
    before = rss_kib(pid)
    started = time.monotonic()
    opened_sessions = open_sessions(port, sessions, started + timeout)
    opened = time.monotonic() - started
    try:
        time.sleep(1.0)
        after = rss_kib(pid)
        latencies = probe(port, probes)
    finally:
        close_all(opened_sessions)
    return {
        "sessions": sessions,
        "open_seconds": opened,
        "rss_before": before * 1024,
        "rss_after": after * 1024,
        "bytes_per_session": (after - before) * 1024 / sessions,
        "probes": probes,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "max": latencies[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed for opening the sessions")
    parser.add_argument("--smtpd-venv", default=".venv")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="smtpd-idle-")
    server = idle_smtpd(root, os.path.join(os.path.abspath(args.smtpd_venv), "bin"),
                        args.sessions, args.probes)
    try:
        server.start()
        result = measure_idle(server.port, server.root_pid(), args.sessions, args.probes,
                              args.timeout)
    except (BenchError, RuntimeError) as e:
        sys.exit(f"idle: {e}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"idle: {result['sessions']} sessions opened in {result['open_seconds']:.1f} s; "
          f"server RSS {result['rss_before'] / 2**20:.1f} -> {result['rss_after'] / 2**20:.1f} MiB"
          f" = {result['bytes_per_session']:.0f} B per session")
    print(f"idle: banner to a new client with {result['sessions']} idle: "
          f"p50 {result['p50'] * 1000:.2f} ms, p99 {result['p99'] * 1000:.2f} ms, "
          f"max {result['max'] * 1000:.2f} ms ({result['probes']} probes)")


if __name__ == "__main__":
    main()
