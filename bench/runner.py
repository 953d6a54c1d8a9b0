"""
One benchmark run: a fresh server (and smtp-sink for relay loads), one
smtp-source load against it, the count of what landed, the time from the first
connection to the last delivery, and the server tree's CPU and peak memory.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass

from peers import (DOMAIN, REMOTE, Aiosmtpd, BenchError, Postfix, Sink, Smtpd,
                   local_parts, tool)
from procs import cpu_seconds, pss_bytes, stop_popen, thread_times, tree

SESSIONS = 20
SETTLE = 20.0       # seconds without progress after smtp-source ended: give up
POLL = 0.1


@dataclass(frozen=True)
class Load:
    """One smtp-source load."""

    key: str
    title: str
    size: int
    rcpts: int
    relay: bool
    reuse: bool = False   # smtp-source -d: many messages per connection
    pipelining: bool = True   # relay: smtp-sink offers PIPELINING (else smtp-sink -p)
    default: bool = True      # part of a run without --loads


LOADS = [
    Load("in-4k", "inbound to Maildir, 4 KiB, 1 rcpt", 4096, 1, False),
    Load("in-100k", "inbound to Maildir, 100 KiB, 1 rcpt", 102400, 1, False),
    Load("in-4k-10", "inbound to Maildir, 4 KiB, 10 rcpt", 4096, 10, False),
    Load("in-4k-d", "inbound to Maildir, 4 KiB, 1 rcpt, one connection per session (-d)",
         4096, 1, False, reuse=True),
    Load("relay-4k", "relay end to end into smtp-sink, 4 KiB, 1 rcpt", 4096, 1, True),
    Load("relay-4k-10", "relay end to end, 4 KiB, 10 rcpt (one domain)", 4096, 10, True),
    # The effect of outbound PIPELINING: the same relay loads into an smtp-sink
    # that does not offer it, so that the relay client waits for each reply.
    Load("relay-4k-nopipe", "relay end to end, 4 KiB, 1 rcpt, smtp-sink without PIPELINING",
         4096, 1, True, pipelining=False, default=False),
    Load("relay-4k-10-nopipe", "relay end to end, 4 KiB, 10 rcpt, smtp-sink without "
         "PIPELINING", 4096, 10, True, pipelining=False, default=False),
]

SERVERS = ["Postfix", "aiosmtpd", "smtpd"]


def applies(server: str, load: Load) -> bool:
    """aiosmtpd is no MTA: it has no relay path to measure."""
    return not (server == "aiosmtpd" and load.relay)


@dataclass
class Run:
    """The outcome of one run."""

    server: str
    load: str
    rep: int
    messages: int
    expected: int           # recipients that should land (messages x rcpts)
    landed: int
    accept_seconds: float   # smtp-source's run: every message got its reply
    total_seconds: float    # first connection to the last file or sink write
    cpu_seconds: float      # server process tree, utime+stime
    peak_pss: int           # bytes, PSS summed over the tree, sampled every 0.5 s
    source_status: int
    source_error: str

    @property
    def lost(self) -> int:
        """Recipients that did not land."""
        return self.expected - self.landed

    @property
    def rate(self) -> float:
        """Messages per second end to end (a message counts when all its copies landed)."""
        if self.total_seconds <= 0 or self.lost:
            return math.nan
        return self.messages / self.total_seconds

    def as_dict(self) -> dict:
        """For the JSON results."""
        return {**asdict(self), "lost": self.lost, "rate": self.rate}


class Context:
    """What every run needs: where to work, the smtpd venv, the accounts file."""

    def __init__(self, workdir: str, venv_bin: str, users_file: str, messages: int):
        self.workdir = workdir
        self.venv_bin = venv_bin
        self.users_file = users_file
        self.messages = messages
        self.serial = 0

    def folder(self, label: str) -> str:
        """A new folder for one run."""
        self.serial += 1
        path = os.path.join(self.workdir, f"{self.serial:03d}-{label}")
        os.makedirs(path)
        return path


def make_server(name: str, folder: str, sink_port: int | None, ctx: Context, rcpts: int):
    """A not yet started server of kind C{name}."""
    accounts = local_parts(rcpts)
    if name == "Postfix":
        return Postfix(folder, sink_port, accounts)
    if name == "aiosmtpd":
        return Aiosmtpd(folder, sink_port, accounts)
    return Smtpd(folder, sink_port, accounts, ctx.venv_bin, ctx.users_file)


def source_command(load: Load, messages: int, port: int) -> list[str]:
    """The smtp-source command line for C{load}."""
    command = [tool("smtp-source"), "-s", str(SESSIONS), "-l", str(load.size),
               "-m", str(messages), "-f", "bench@client.test",
               "-t", f"rcpt@{REMOTE if load.relay else DOMAIN}"]
    if load.rcpts > 1:
        command += ["-r", str(load.rcpts)]
    if load.reuse:
        command.append("-d")
    return command + [f"127.0.0.1:{port}"]


def run_once(name: str, load: Load, rep: int, ctx: Context) -> Run:
    """Start C{name}, drive C{load} once, stop everything (also on failure)."""
    folder = ctx.folder(f"{name}-{load.key}-{rep}")
    sink = Sink(os.path.join(folder, "sink"), load.pipelining) if load.relay else None
    server = make_server(name, os.path.join(folder, "server"),
                         sink.port if sink else None, ctx, load.rcpts)
    try:
        if sink:
            sink.start()
        server.start()
        return measure(server, sink, load, rep, ctx, folder)
    finally:
        server.stop()
        if sink:
            sink.stop()


def measure(server, sink, load: Load, rep: int, ctx: Context, folder: str) -> Run:
    """Drive the load against a started server and watch it land."""
    messages, expected = ctx.messages, ctx.messages * load.rcpts
    count = sink.delivered if sink else server.landed
    root = server.root_pid()
    cpu_before = cpu_seconds(tree(root))
    threads_before = thread_times(root) if os.environ.get("BENCH_THREADS") else None
    peak = pss_bytes(tree(root))
    errors = open(os.path.join(folder, "smtp-source.err"), "w+")
    started_wall, started = time.time(), time.monotonic()
    source = subprocess.Popen(source_command(load, messages, server.port),
                              stdout=subprocess.DEVNULL, stderr=errors)
    accept_end = None
    landed, progress = 0, started
    deadline = started + 120 + expected / 5
    polls = 0
    try:
        while True:
            time.sleep(POLL)
            now = time.monotonic()
            if accept_end is None and source.poll() is not None:
                accept_end = now
            current = count()
            if current != landed:
                landed, progress = current, now
            polls += 1
            if polls % 5 == 0:
                peak = max(peak, pss_bytes(tree(root)))
            if accept_end is not None and (landed >= expected or now - progress > SETTLE):
                break
            if now > deadline:
                break
        cpu_after = cpu_seconds(tree(root))
        if threads_before is not None:
            # BENCH_THREADS=1: user and system CPU of the server's reactor thread and
            # of its other threads during the run (where the process CPU goes).
            after = thread_times(root)
            print(" ".join(f"[{k}: user {u - threads_before.get(k, (0, 0))[0]:.2f} s, "
                           f"system {s_ - threads_before.get(k, (0, 0))[1]:.2f} s]"
                           for k, (u, s_) in sorted(after.items())), end=" ", flush=True)
        peak = max(peak, pss_bytes(tree(root)))
    finally:
        stop_popen(source, grace=2)
    errors.seek(0)
    error_text = " ".join(errors.read().split())[:300]
    errors.close()
    last = (sink or server).last_arrival()
    total = (last - started_wall) if last else math.nan
    return Run(name_of(server), load.key, rep, messages, expected, landed,
               (accept_end or time.monotonic()) - started, total,
               cpu_after - cpu_before, peak, source.returncode, error_text)


def name_of(server) -> str:
    """The display name of a server object."""
    return server.name


def summary(runs: list[Run]) -> dict:
    """Median and range of rate, CPU per 1000 messages, peak memory, losses."""
    rates = [r.rate for r in runs if not math.isnan(r.rate)]
    cpu = [r.cpu_seconds * 1000 / r.messages for r in runs]
    return {
        "runs": len(runs),
        "complete": len(rates),
        "median": statistics.median(rates) if rates else math.nan,
        "min": min(rates, default=math.nan),
        "max": max(rates, default=math.nan),
        "accept_median": statistics.median(r.messages / r.accept_seconds for r in runs),
        "cpu_per_1000": statistics.median(cpu),
        "peak_pss": max(r.peak_pss for r in runs),
        "lost": sum(r.lost for r in runs),
        "source_errors": sorted({r.source_error for r in runs if r.source_error}),
    }


def check_run(run: Run) -> str | None:
    """A line saying what went wrong in C{run}, or None."""
    problems = []
    if run.lost:
        problems.append(f"{run.lost} of {run.expected} recipients did not land")
    if run.source_status:
        problems.append(f"smtp-source exited {run.source_status}")
    if run.source_error:
        problems.append(f"smtp-source said: {run.source_error}")
    if not problems:
        return None
    return f"{run.server}, {run.load}, rep {run.rep}: " + "; ".join(problems)


__all__ = ["LOADS", "SERVERS", "Load", "Run", "Context", "run_once", "summary",
           "check_run", "applies", "BenchError"]
