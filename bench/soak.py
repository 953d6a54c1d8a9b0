#!/usr/bin/env python3
"""
`make soak`: a bounded soak run of one smtpd, minutes long; never part of
`make test`.

    make soak [SOAK_ARGS="--minutes 10 --rate 100"]
    .venv-bench/bin/python bench/soak.py --smtpd-venv .venv [--minutes 5] [--rate 100]

Starts `twistd -n smtpd` with a local domain (bench.test, two accounts), an
alias of it, a drop domain, and two remote domains routed by their own smart
hosts: one into Postfix's smtp-sink (relay), one into an smtp-sink that
refuses every RCPT with a 5xx, so each message sent there comes back to the
local sender as a non-delivery report (bounce). Postfix's smtp-source sends
4 KiB messages at --rate messages a second in total (new connection per
message) over the five paths for --minutes; then the queue drains.

Once a second it records the server's RSS and open file descriptors (from
/proc), and its queue depth and reactor lag (from the server's own
[http] /metrics: smtpd_queue_messages, smtpd_reactor_lag_seconds). Writes
bench/results/soak.md, soak.json and soak.png, and checks the targets: RSS and
descriptors flat within 10% after the first minute (median of the second
minute against the median of the last minute of load), reactor lag p99 under
50 ms while under load, and every message sent landed where its path leads.
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers import DOMAIN, BenchError, Sink, free_port, make_users_file, tool, wait_banner  # noqa: E402
from procs import stop_popen  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENDER = f"soak@{DOMAIN}"
# Each path: its share of the rate and the recipient smtp-source sends to.
PATHS = {
    "local": (0.35, f"rcpt@{DOMAIN}"),
    "alias": (0.15, "rcpt@alias.test"),
    "drop": (0.15, "someone@drop.test"),
    "relay": (0.25, "rcpt@sink.test"),
    "bounce": (0.10, "rcpt@refuse.test"),
}
SESSIONS = 4          # smtp-source sessions per path
BATCH_SECONDS = 10.0  # each smtp-source run sends about this many seconds' worth
SIZE = 4096
FLAT = 0.10           # RSS and descriptors: at most this growth after the first minute
LAG_P99 = 0.050       # seconds


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="of load (default 5)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="messages per second over all paths (default 100)")
    parser.add_argument("--smtpd-venv", default=os.path.join(REPO, ".venv"))
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--server-nice", type=int, default=0, metavar="N",
                        help="run smtpd at this nice value (negative needs root): on a "
                        "shared, overloaded machine, measures the server's own reactor lag "
                        "rather than its wait for a CPU (default 0)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--report", metavar="JSON",
                        help="only rewrite soak.md and soak.png from a soak.json")
    args = parser.parse_args(argv)
    if not 2 <= args.minutes <= 24 * 60 or not 1 <= args.rate <= 5000:
        parser.error("--minutes must be 2..1440 (the first minute is warm-up) "
                     "and --rate 1..5000")
    return args


class Deployment:
    """The smtpd under test, its two sinks and its folder."""

    def __init__(self, folder: str, venv_bin: str, nice: int = 0):
        self.folder = folder
        self.nice = nice
        self.venv_bin = venv_bin
        self.port, self.http = free_port(), free_port()
        self.sink = Sink(os.path.join(folder, "sink"))
        self.refuse_port = free_port()
        self.refuser: subprocess.Popen | None = None
        self.process: subprocess.Popen | None = None

    def config(self) -> str:
        """etc/smtpd.ini: defaults but for the listeners and the domains."""
        return "\n".join([
            "[server]", "hostname = soak.test",
            f"listen = tcp:{self.port}:interface=127.0.0.1", "",
            "[http]", f"listen = tcp:{self.http}:interface=127.0.0.1", "",
            "[delivery]", "outbound_tls = none", "",
            "[logging]", "path = activity.log", "",
            f"[domain:{DOMAIN}]", "type = local", "",
            "[domain:alias.test]", "type = alias", f"alias_of = {DOMAIN}", "",
            "[domain:drop.test]", "type = drop", "",
            "[domain:sink.test]", "type = remote", f"smart_host = [127.0.0.1]:{self.sink.port}", "",
            "[domain:refuse.test]", "type = remote",
            f"smart_host = [127.0.0.1]:{self.refuse_port}", ""])

    def start(self) -> None:
        """The sinks, the accounts, then twistd -n smtpd."""
        self.sink.start()
        log = os.path.join(self.folder, "refuse.log")
        with open(log, "wb") as out:
            self.refuser = subprocess.Popen(
                [tool("smtp-sink"), "-u", "nobody", "-f", "RCPT",
                 f"127.0.0.1:{self.refuse_port}", "256"], stdout=out, stderr=subprocess.STDOUT)
        wait_banner(self.refuse_port, 10, lambda: self.refuser.poll() is None, log)
        make_users_file(self.folder, self.venv_bin, ["rcpt", "soak"])
        ini = os.path.join(self.folder, "etc", "smtpd.ini")
        with open(ini, "w") as f:
            f.write(self.config())
        self.log = os.path.join(self.folder, "twistd.log")
        with open(os.path.join(self.folder, "twistd.out"), "wb") as out:
            self.process = subprocess.Popen(
                [os.path.join(self.venv_bin, "twistd"), "-n", "--pidfile=", "--logfile",
                 self.log, "smtpd", "--config", ini],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.folder,
                preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None)
        wait_banner(self.port, 60, lambda: self.process.poll() is None, self.log)

    def stop(self) -> None:
        """Everything started, also after a half-done start."""
        if self.process is not None:
            stop_popen(self.process, grace=30)
        if self.refuser is not None:
            stop_popen(self.refuser)
        self.sink.stop()

    def landed(self) -> dict[str, int]:
        """Messages found where each path leads."""
        mailbox = os.path.join(self.folder, "mailroot", "mailbox", DOMAIN)
        return {
            "local+alias": _count(os.path.join(mailbox, "rcpt", "new")),
            "drop": _count(os.path.join(self.folder, "mailroot", "drop")),
            "relay": self.sink.delivered(),
            "bounce": _count(os.path.join(mailbox, "soak", "new")),
        }


def _count(folder: str) -> int:
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


class Load:
    """One smtp-source loop per path, paced to its share of the rate."""

    def __init__(self, port: int, rate: float, seconds: float, folder: str):
        self.port, self.rate, self.seconds = port, rate, seconds
        self.folder = folder
        self.sent = {name: 0 for name in PATHS}
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(name,), daemon=True)
                        for name in PATHS]

    def start(self) -> None:
        """Begin sending."""
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def running(self) -> bool:
        """Whether any loop still sends."""
        return any(thread.is_alive() for thread in self.threads)

    def wait(self) -> None:
        """Until every loop has ended."""
        for thread in self.threads:
            thread.join()

    def _loop(self, name: str) -> None:
        share, recipient = PATHS[name]
        rate = self.rate * share
        batch = max(SESSIONS, round(rate * BATCH_SECONDS))
        end = self.started + self.seconds
        while not self.stopping.is_set() and time.monotonic() < end:
            began = time.monotonic()
            count = min(batch, max(1, round((end - began) * rate)))
            self._batch(name, recipient, count)
            pause = count / rate - (time.monotonic() - began)
            if pause > 0:
                self.stopping.wait(min(pause, max(0.0, end - time.monotonic())))

    def _batch(self, name: str, recipient: str, count: int) -> None:
        command = [tool("smtp-source"), "-s", str(min(SESSIONS, count)), "-m", str(count),
                   "-l", str(SIZE), "-f", SENDER, "-t", recipient, "-M", "client.test",
                   f"127.0.0.1:{self.port}"]
        done = subprocess.run(command, capture_output=True, cwd=self.folder)
        if done.returncode == 0:
            self.sent[name] += count
        else:
            said = (done.stderr or done.stdout).decode(errors="replace").strip()
            self.failures.append(f"{name}: smtp-source exit {done.returncode}: {said[:300]}")


def metrics(port: int) -> dict[str, float]:
    """The server's /metrics as {name{labels}: value} (no comments)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def process_figures(pid: int) -> tuple[int, int, float, float]:
    """
    RSS in bytes and open descriptors of process C{pid}, and the seconds its
    main (reactor) thread has run and waited for a CPU while runnable, from /proc.
    """
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/schedstat") as f:
        ran, waited = (int(v) / 1e9 for v in f.read().split()[:2])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), ran, waited


class Recorder:
    """Samples the server once a second in a thread."""

    def __init__(self, deployment: Deployment, load: Load):
        self.deployment, self.load = deployment, load
        self.samples: list[dict] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Begin sampling (time 0 is the start of the load)."""
        self.thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self.stopping.set()
        self.thread.join()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.samples.append(self.sample())
            except (OSError, ValueError, StopIteration) as e:
                self.errors.append(f"{time.monotonic() - self.load.started:.0f} s: {e}")
            next_at += 1.0
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def sample(self) -> dict:
        """One sample."""
        rss, fds, ran, waited = process_figures(self.deployment.process.pid)
        m = metrics(self.deployment.http)
        queue = sum(v for k, v in m.items() if k.startswith("smtpd_queue_messages{"))
        return {
            "t": round(time.monotonic() - self.load.started, 2),
            "rss": rss, "fds": fds, "queue": int(queue),
            "lag": m.get("smtpd_reactor_lag_seconds", 0.0),
            "ran": ran, "waited": waited,
            "sessions": int(m.get("smtpd_sessions_open", 0)),
            "received": int(m.get("smtpd_messages_received_total", 0)),
            "loaded": self.load.running(),
        }


def drain(deployment: Deployment, recorder: Recorder, timeout: float) -> bool:
    """Wait until the queue is empty (True) or C{timeout} passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if recorder.samples and not recorder.samples[-1]["loaded"] \
                and recorder.samples[-1]["queue"] == 0:
            return True
        time.sleep(1)
    return False


def percentile(values: list[float], p: float) -> float:
    """The C{p} percentile (nearest rank) of C{values}."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def flatness(samples: list[dict], key: str) -> dict:
    """The second minute's median against the last minute of load's; the worst after."""
    loaded = [s for s in samples if s["loaded"]]
    end = loaded[-1]["t"]
    second = [s[key] for s in loaded if 60 <= s["t"] < 120]
    last = [s[key] for s in loaded if s["t"] >= end - 60]
    base = statistics.median(second)
    final = statistics.median(last)
    worst = max(s[key] for s in loaded if s["t"] >= 60)
    return {"second_minute": base, "last_minute": final, "max_after_first_minute": worst,
            "growth": final / base - 1 if base else 0.0,
            "ok": abs(final / base - 1) <= FLAT if base else False}


def analyse(samples: list[dict], sent: dict, landed: dict, drained: bool) -> dict:
    """The figures and the targets."""
    lags = [s["lag"] for s in samples if s["loaded"]]
    expected = {"local+alias": sent["local"] + sent["alias"], "drop": sent["drop"],
                "relay": sent["relay"], "bounce": sent["bounce"]}
    rss, fds = flatness(samples, "rss"), flatness(samples, "fds")
    lag = {"p50": percentile(lags, 50), "p99": percentile(lags, 99), "max": max(lags),
           "p99_after_first_minute": percentile(
               [s["lag"] for s in samples if s["loaded"] and s["t"] >= 60], 99)}
    lag["ok"] = lag["p99"] < LAG_P99
    cpu = _per_second(samples, "ran")
    wait = _per_second(samples, "waited")
    loaded = [s for s in samples if s["loaded"]]
    # The reactor cannot have been busy with its own work for longer than its
    # thread ran in that second: the rest of a late timer's lag was the wait
    # for a CPU (another process had it).
    own = [min(b["lag"], c) for b, c in zip(loaded[1:], cpu)]
    busy = {"cpu_mean": statistics.mean(cpu), "runqueue_wait_mean": statistics.mean(wait),
            "runqueue_wait_p99": percentile(wait, 99), "own_lag_p99": percentile(own, 99),
            "own_lag_max": max(own)}
    return {
        "sent": sent, "total_sent": sum(sent.values()), "expected": expected,
        "landed": landed, "drained": drained,
        "all_landed": drained and all(landed[k] == v for k, v in expected.items()),
        "rss": rss, "fds": fds, "lag": lag, "reactor_thread": busy,
        "queue_max": max(s["queue"] for s in samples),
        "ok": rss["ok"] and fds["ok"] and lag["ok"] and drained
        and all(landed[k] == v for k, v in expected.items()),
    }


def _per_second(samples: list[dict], key: str) -> list[float]:
    """The growth of the cumulative C{key} per second of time, between samples under load."""
    loaded = [s for s in samples if s["loaded"]]
    return [(b[key] - a[key]) / (b["t"] - a["t"]) for a, b in zip(loaded, loaded[1:])
            if b["t"] > a["t"]]


def machine() -> dict:
    """What ran the soak, and how loaded it was."""
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "model": model, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg": os.getloadavg()}


def write_markdown(path: str, meta: dict, result: dict) -> None:
    """bench/results/soak.md."""
    mib = 1024 * 1024
    rss, fds, lag = result["rss"], result["fds"], result["lag"]
    busy = result["reactor_thread"]
    mark = {True: "met", False: "MISSED"}
    lines = [
        "# Soak run", "",
        f"{meta['date']}, smtpd {meta['commit']}, `{meta['command']}`.", "",
        f"Machine: {meta['machine']['cpus']} CPUs ({meta['machine']['model']}), shared with "
        f"other work while this ran: load average {meta['load_before'][0]:.1f} before, "
        f"{meta['load_after'][0]:.1f} after (1 min). Figures on a quiet machine will differ.",
        "",
        f"Load: {meta['minutes']:g} min at {meta['rate']:g} msg/s (4 KiB, one recipient, a new "
        "connection per message, smtp-source) over local, alias, drop, relay (smtp-sink) "
        "and bounce (5xx at RCPT, NDR to a local mailbox) paths; then the queue drained."
        + (f" smtpd ran at nice {meta['server_nice']}." if meta["server_nice"] else ""),
        "",
        "| figure | value | target |", "|---|---|---|",
        f"| messages sent | {result['total_sent']} | |",
        f"| landed (local+alias, drop, relay, NDRs) | {_landed(result)} | all "
        f"({mark[result['all_landed']]}) |",
        f"| RSS, 2nd minute -> last minute | {rss['second_minute'] / mib:.1f} -> "
        f"{rss['last_minute'] / mib:.1f} MiB ({rss['growth']:+.1%}; max "
        f"{rss['max_after_first_minute'] / mib:.1f}) | within 10% ({mark[rss['ok']]}) |",
        f"| open descriptors, 2nd minute -> last minute | {fds['second_minute']:g} -> "
        f"{fds['last_minute']:g} ({fds['growth']:+.1%}; max {fds['max_after_first_minute']}) "
        f"| within 10% ({mark[fds['ok']]}) |",
        f"| reactor lag p50 / p99 / max under load | {lag['p50'] * 1000:.1f} / "
        f"{lag['p99'] * 1000:.1f} / {lag['max'] * 1000:.1f} ms | p99 < 50 ms "
        f"({mark[lag['ok']]}) |",
        f"| reactor lag p99 after the first minute | "
        f"{lag['p99_after_first_minute'] * 1000:.1f} ms | |",
        f"| reactor thread: CPU used / waiting for a CPU while runnable | "
        f"{busy['cpu_mean'] * 1000:.0f} / {busy['runqueue_wait_mean'] * 1000:.0f} ms per s "
        f"(wait p99 {busy['runqueue_wait_p99'] * 1000:.0f} ms per s) | |",
        f"| reactor lag bounded by the reactor thread's own CPU time in that second, p99 "
        f"/ max | {busy['own_lag_p99'] * 1000:.1f} / {busy['own_lag_max'] * 1000:.1f} ms | |",
        f"| queue depth, max | {result['queue_max']} | |",
        "", "![soak](soak.png)", "",
        "Reactor lag: how late the server's own once-a-second timer fired "
        "(smtpd_reactor_lag_seconds on /metrics), read once a second. RSS and descriptors "
        "from /proc of the twistd process; the reactor thread's CPU time and run-queue "
        "wait (time it was ready to run but another process had the CPU) from "
        "/proc/PID/schedstat. In a second where that thread ran for c ms, no work of its "
        "own can have delayed a timer by more than c ms: min(lag, c) bounds the lag the "
        "server caused itself; the rest of the lag was the wait for a CPU.",
    ]
    if meta["problems"]:
        lines += ["", "Problems:", *(f"* {p}" for p in meta["problems"])]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _landed(result: dict) -> str:
    landed, expected = result["landed"], result["expected"]
    return ", ".join(f"{landed[k]}/{expected[k]}" for k in expected)


def write_chart(path: str, samples: list[dict]) -> None:
    """bench/results/soak.png: RSS, descriptors, queue depth and lag over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    series = [("RSS (MiB)", [s["rss"] / 1048576 for s in samples]),
              ("open descriptors", [s["fds"] for s in samples]),
              ("queue depth", [s["queue"] for s in samples]),
              ("reactor lag (ms)", [s["lag"] * 1000 for s in samples])]
    figure, axes = plt.subplots(len(series), 1, sharex=True, figsize=(9, 9))
    end = max((s["t"] / 60 for s in samples if s["loaded"]), default=0)
    for axis, (title, values) in zip(axes, series):
        axis.plot(t, values, linewidth=0.8)
        axis.set_ylabel(title)
        axis.set_ylim(bottom=0)
        axis.axvspan(0, 1, color="0.9")
        axis.axvline(end, color="0.5", linestyle="--", linewidth=0.8)
        axis.grid(True, linewidth=0.3)
    axes[-1].axhline(LAG_P99 * 1000, color="red", linewidth=0.6)
    axes[-1].set_xlabel("minutes (grey: first minute; dashed: load ends, queue drains)")
    figure.suptitle("smtpd soak")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The soak; the exit status."""
    for name in ("smtp-source", "smtp-sink"):
        tool(name)
    venv_bin = os.path.join(os.path.abspath(args.smtpd_venv), "bin")
    if not os.access(os.path.join(venv_bin, "twistd"), os.X_OK):
        raise BenchError(f"{venv_bin}/twistd is missing: run 'make venv' first")
    folder = tempfile.mkdtemp(prefix="smtpd-soak-")
    os.chmod(folder, 0o755)   # smtp-sink runs as nobody and writes its dump here
    deployment = Deployment(folder, venv_bin, args.server_nice)
    meta = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _commit(), "command": "bench/soak.py " + " ".join(argv),
            "minutes": args.minutes, "rate": args.rate, "machine": machine(),
            "server_nice": args.server_nice,
            "load_before": os.getloadavg()}
    try:
        deployment.start()
        load = Load(deployment.port, args.rate, args.minutes * 60, folder)
        recorder = Recorder(deployment, load)
        load.start()
        recorder.start()
        load.wait()
        drained = drain(deployment, recorder, 120)
        time.sleep(2)
        recorder.stop()
        landed = deployment.landed()
    finally:
        deployment.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept {folder}")
    meta["load_after"] = os.getloadavg()
    meta["problems"] = load.failures[:20] + recorder.errors[:20]
    result = analyse(recorder.samples, load.sent, landed, drained)
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "soak.json"), "w") as f:
        json.dump({"meta": meta, "result": result, "samples": recorder.samples}, f, indent=1)
    write_markdown(os.path.join(args.results, "soak.md"), meta, result)
    write_chart(os.path.join(args.results, "soak.png"), recorder.samples)
    with open(os.path.join(args.results, "soak.md")) as f:
        print(f.read())
    return 0 if result["ok"] else 1


def report(path: str, folder: str) -> int:
    """soak.md and soak.png again from the samples of a soak.json."""
    with open(path) as f:
        saved = json.load(f)
    meta, samples, old = saved["meta"], saved["samples"], saved["result"]
    result = analyse(samples, old["sent"], old["landed"], old["drained"])
    with open(os.path.join(folder, "soak.json"), "w") as f:
        json.dump({"meta": meta, "result": result, "samples": samples}, f, indent=1)
    write_markdown(os.path.join(folder, "soak.md"), meta, result)
    write_chart(os.path.join(folder, "soak.png"), samples)
    return 0 if result["ok"] else 1


def _commit() -> str:
    done = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h"],
                          capture_output=True, text=True)
    return re.sub(r"\s+", "", done.stdout) or "?"


def main(argv: list[str] | None = None) -> int:
    """Run the soak from the command line."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.report:
        return report(args.report, args.results)
    try:
        return run(args, argv)
    except BenchError as e:
        print(f"soak: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
