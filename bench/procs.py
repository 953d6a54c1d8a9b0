"""
Process-tree accounting from /proc for the benchmark: CPU seconds and resident
memory of a server and all its descendants, and stopping what we started.

CPU of a tree is the sum over its live processes of utime + stime + cutime +
cstime: a child that ended during the measurement and was reaped by its parent
(Postfix's master reaps its smtpd, cleanup, virtual processes) is counted in the
parent's cutime/cstime, so the difference of two readings is the CPU the whole
tree spent in between.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3 onwards)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()


def tree(root: int) -> list[int]:
    """C{root} and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime + cutime + cstime of C{pids}, in seconds (ended ones count 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        # stat fields 14-17 (1-based) are utime stime cutime cstime; we start at 3.
        ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLOCK_TICKS


def pss_bytes(pids: list[int]) -> int:
    """
    The summed proportional set size of C{pids}: resident memory with pages
    shared between processes divided among them, so that a tree of many
    processes (Postfix) is not charged its shared libraries once per process.
    """
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def alive(pid: int) -> bool:
    """Whether process C{pid} exists and is not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def kill_tree(root: int, grace: float = 5.0) -> None:
    """SIGTERM C{root} and its descendants, SIGKILL what is left after C{grace} s."""
    pids = tree(root)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.05)
        if not any(alive(p) for p in pids):
            return


def stop_popen(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a child we started: SIGTERM, then SIGKILL after C{grace} s; reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            kill_tree(process.pid, grace=1.0)
            process.wait(5)


def thread_times(pid: int) -> dict[str, tuple[float, float]]:
    """(utime, stime) in seconds of each thread of C{pid}, by thread name (summed per name)."""
    found: dict[str, tuple[float, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            fields = _stat_fields(f"{pid}/task/{tid}")
        except OSError:
            continue
        # Pool threads share a name pattern: one line for all of them.
        key = "pool" if name.startswith("PoolThread") or tid != str(pid) else "main"
        u, s = found.get(key, (0.0, 0.0))
        found[key] = (u + int(fields[11]) / CLOCK_TICKS, s + int(fields[12]) / CLOCK_TICKS)
    return found
