#!/usr/bin/env python3
"""
Outbound relay alone, with and without PIPELINING at the next hop: a queue of
--entries entries (--rcpts recipients each, all at remote.test), written into
a fresh mailroot as the server writes them (bench/bigqueue.py) and all due at
once; then `twistd -n smtpd` starts with smart_host = Postfix's smtp-sink,
which offers PIPELINING or, run with -p, does not. Measured per run: the time
from the sink's first accepted recipient to its last, the drain rate, and the
CPU seconds of smtpd's process tree meanwhile. Inbound work plays no part (the
end-to-end relay loads of bench.py are bound by accepting, not relaying).

    .venv-bench/bin/python bench/drain.py --smtpd-venv .venv [--entries 1000]
        [--rcpts 10] [--reps 3] [--connections N] [--out bench/results/FILE.md]

Runs as any user; everything on 127.0.0.1 with free ports; stopped and
removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bigqueue import write_queue  # noqa: E402
from peers import BenchError, Sink, Smtpd  # noqa: E402
from procs import cpu_seconds, tree  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL = 0.05
TIMEOUT = 300.0


def drain_once(folder: str, venv_bin: str, entries: int, rcpts: int,
               pipelining: bool, connections: int) -> dict:
    """One run on fresh instances; its figures."""
    sink = Sink(os.path.join(folder, "sink"), pipelining)
    lines = (f"outbound_connections_per_domain = {connections}",) if connections else ()
    server = Smtpd(os.path.join(folder, "server"), sink.port, [], venv_bin, None,
                   delivery_lines=lines)
    write_queue(os.path.join(server.folder, "mailroot", "queue"), entries, entries, rcpts)
    expected = entries * rcpts
    try:
        sink.start()
        server.start()
        first = first_cpu = None
        deadline = time.monotonic() + TIMEOUT
        while sink.delivered() < expected and time.monotonic() < deadline:
            if first is None and sink.count:
                first, first_cpu = time.time(), cpu_seconds(tree(server.root_pid()))
            time.sleep(POLL)
        cpu = cpu_seconds(tree(server.root_pid())) - (first_cpu or 0.0)
        landed = sink.delivered()
        if landed < expected or first is None:
            raise BenchError(f"only {landed} of {expected} recipients reached the sink; "
                             f"see {server.log}")
        seconds = sink.last_arrival() - first
    finally:
        server.stop()
        sink.stop()
    return {"pipelining": pipelining, "seconds": seconds, "rate": entries / seconds,
            "cpu_per_1000": cpu * 1000 / entries}


def table(runs: list[dict], entries: int, rcpts: int) -> str:
    """The markdown table: median (min-max) per variant."""
    lines = [f"| smtp-sink | runs | messages/s, {entries} entries x {rcpts} rcpt "
             f"(median, min-max) | recipients/s | smtpd CPU s per 1000 messages |",
             "|---|---|---|---|---|"]
    for pipelining in (True, False):
        chosen = [r for r in runs if r["pipelining"] == pipelining]
        if not chosen:
            continue
        rates = [r["rate"] for r in chosen]
        median = statistics.median(rates)
        cpu = statistics.median(r["cpu_per_1000"] for r in chosen)
        label = "offers PIPELINING" if pipelining else "no PIPELINING (-p)"
        lines.append(f"| {label} | {len(chosen)} | {median:.0f} ({min(rates):.0f}-"
                     f"{max(rates):.0f}) | {median * rcpts:.0f} | {cpu:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smtpd-venv", default=os.path.join(REPO, ".venv"))
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rcpts", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=0,
                        help="outbound_connections_per_domain (default: smtpd's, 100)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    venv_bin = os.path.join(os.path.abspath(args.smtpd_venv), "bin")
    workdir = tempfile.mkdtemp(prefix="smtpd-drain-")
    os.chmod(workdir, 0o755)  # smtp-sink runs as nobody and writes below it
    runs = []
    try:
        for rep in range(args.reps):
            # Alternate which variant goes first, so that drift hits both alike.
            for pipelining in ((True, False) if rep % 2 == 0 else (False, True)):
                folder = os.path.join(workdir, f"{rep}-{'pipe' if pipelining else 'nopipe'}")
                run = drain_once(folder, venv_bin, args.entries, args.rcpts, pipelining,
                                 args.connections)
                runs.append(run)
                print(f"[drain] rep {rep + 1}/{args.reps} pipelining={pipelining!s:5s} "
                      f"{run['rate']:7.1f} msg/s  {run['cpu_per_1000']:5.1f} s CPU/1000",
                      flush=True)
    except BenchError as e:
        print(f"[drain] failed: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = table(runs, args.entries, args.rcpts)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
