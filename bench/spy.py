#!/usr/bin/env python3
"""
Summarise a py-spy recording of smtpd (BENCH_SMTPD_PYSPY=FILE, collapsed stacks:
`py-spy record --format raw --threads`): samples of the reactor thread against
the thread pool's, then the reactor thread's functions by own samples and by
samples including what they called.

    bench/spy.py FILE.<pid> [--top 40] [--messages 1000]

py-spy leaves idle threads out (no --idle), so a sample is a moment a thread was
running Python code or in a system call it made; with --messages the counts are
also given per message.
"""

from __future__ import annotations

import argparse
import collections
import re

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """C{func (path/to/file.py:12)} as C{file.py:func}."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/smtpd/", "lib/python3.12/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{m.group('func')}"


def read(path: str):
    """Stacks (root first) with their sample counts, split into reactor and pool threads."""
    reactor, pool = [], []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            worker = False
            if frames and frames[0].startswith("thread ("):
                worker = "MainThread" not in frames[0]
                frames = frames[1:]
            frames = [short(fr) for fr in frames]
            # A pool thread waiting for work is idle, whatever py-spy thought.
            if worker and frames and frames[-1] == "threading.py:Condition.wait":
                continue
            (pool if worker else reactor).append((frames, int(count)))
    return reactor, pool


def tally(stacks):
    """Own and inclusive samples per function."""
    own, incl = collections.Counter(), collections.Counter()
    for frames, n in stacks:
        if not frames:
            continue
        own[frames[-1]] += n
        for fr in set(frames):
            incl[fr] += n
    return own, incl


def main() -> None:
    """Print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--messages", type=int, default=0)
    args = parser.parse_args()
    reactor, pool = read(args.file)
    total_r = sum(n for _, n in reactor)
    total_p = sum(n for _, n in pool)
    per = f" ({total_r / args.messages:.2f} per message)" if args.messages else ""
    print(f"samples: reactor thread {total_r}{per}, thread pool {total_p}")
    own, incl = tally(reactor)
    print(f"\nreactor thread, own samples (top {args.top}):")
    for fr, n in own.most_common(args.top):
        print(f"{n:8d} {100 * n / total_r:5.1f}%  {fr}")
    print(f"\nreactor thread, inclusive samples (top {args.top}):")
    for fr, n in incl.most_common(args.top):
        print(f"{n:8d} {100 * n / total_r:5.1f}%  {fr}")
    own_p, _ = tally(pool)
    print("\nthread pool, own samples (top 15):")
    for fr, n in own_p.most_common(15):
        print(f"{n:8d} {100 * n / max(1, total_p):5.1f}%  {fr}")


if __name__ == "__main__":
    main()
