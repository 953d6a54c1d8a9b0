"""
The benchmark's results: bench/results/latest.md (tables), latest.json (every
run) and latest.png (a matplotlib bar chart).
"""

from __future__ import annotations

import json
import math
import os

from runner import LOADS, SERVERS, applies


def fmt_rate(s: dict | None) -> str:
    """'median (min-max)' msg/s, or why there is none."""
    if s is None:
        return "n/a"
    if math.isnan(s["median"]):
        return f"LOST MAIL ({s['lost']} rcpts)"
    text = f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})"
    if s["complete"] < s["runs"]:
        text += f", {s['runs'] - s['complete']} run(s) lost mail"
    return text


def ratio(a: dict | None, b: dict | None) -> str:
    """a/b of the medians, 2 decimals."""
    if not a or not b or math.isnan(a["median"]) or math.isnan(b["median"]):
        return "-"
    return f"{a['median'] / b['median']:.2f}"


def cpu(s: dict | None) -> str:
    """CPU seconds per 1000 messages."""
    return "-" if s is None else f"{s['cpu_per_1000']:.1f}"


def mib(s: dict | None) -> str:
    """Peak memory in MiB."""
    return "-" if s is None else f"{s['peak_pss'] / 2**20:.0f}"


def table(summaries: dict) -> list[str]:
    """The main Markdown table: one row per load."""
    lines = [
        "| load | Postfix msg/s | aiosmtpd msg/s | smtpd msg/s | smtpd/Postfix | smtpd/aiosmtpd "
        "| CPU s per 1000 msgs: Postfix / aiosmtpd / smtpd | peak memory MiB: P / a / s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for load in LOADS:
        row = summaries.get(load.key)
        if not row:
            continue
        p, a, s = (row.get(name) for name in SERVERS)
        lines.append(
            f"| {load.title} | {fmt_rate(p)} | {fmt_rate(a)} | {fmt_rate(s)} | {ratio(s, p)} "
            f"| {ratio(s, a)} | {cpu(p)} / {cpu(a)} / {cpu(s)} | {mib(p)} / {mib(a)} / {mib(s)} |")
    return lines


def accept_table(summaries: dict) -> list[str]:
    """Acceptance rates (smtp-source's own run), for reference."""
    lines = ["| load | Postfix | aiosmtpd | smtpd |", "|---|---|---|---|"]
    for load in LOADS:
        row = summaries.get(load.key)
        if not row:
            continue
        cells = [f"{row[n]['accept_median']:.0f}" if row.get(n) else "n/a" for n in SERVERS]
        lines.append(f"| {load.title} | " + " | ".join(cells) + " |")
    return lines


def idle_lines(idle: dict) -> list[str]:
    """The idle-session table."""
    if not idle:
        return ["Not measured in this run (--idle-sessions 0)."]
    lines = ["| server | idle sessions | memory per session | banner p50 | banner p99 | "
             "banner max | time to open them |", "|---|---|---|---|---|---|---|"]
    for name, r in idle.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['sessions']:,} | {r['bytes_per_session'] / 1024:.2f} KiB "
            f"({r['bytes_per_session']:.0f} B) | {r['p50'] * 1000:.2f} ms | "
            f"{r['p99'] * 1000:.2f} ms | {r['max'] * 1000:.2f} ms | {r['open_seconds']:.1f} s |")
    return lines


def write_markdown(path: str, meta: dict, summaries: dict, problems: list[str],
                   idle: dict) -> None:
    """bench/results/latest.md."""
    out = [
        "# smtpd benchmark: side by side with Postfix and aiosmtpd",
        "",
        f"Run {meta['date']} on {meta['machine']}; `make bench {meta['args']}`.",
        f"smtpd {meta['smtpd']}, Postfix {meta['postfix']}, aiosmtpd {meta['aiosmtpd']}, "
        f"Python {meta['python']}.",
        "",
        f"Each load: `smtp-source -s {meta['sessions']} -m {meta['messages']}` from one "
        f"process on 127.0.0.1, {meta['reps']} run(s) per server, each on a fresh instance. "
        "msg/s = messages / (first connection to the last Maildir rename or smtp-sink "
        "write); a run counts only when every recipient landed. Median (min-max) over "
        "the runs. CPU = utime+stime of the server's whole process tree (/proc, before "
        "and after), per 1000 messages, median. Memory = peak PSS summed over the "
        "tree (sampled every 0.5 s). The load generator and the servers share the "
        "machine's cores; absolute rates drift between runs on a shared machine, the "
        "ratios from one run are the figures.",
        "",
        *table(summaries),
        "",
        "Acceptance only (messages / smtp-source's own run time; Postfix and smtpd "
        "queue first and deliver after, aiosmtpd delivers before its 250):",
        "",
        *accept_table(summaries),
        "",
        "## Idle sessions",
        "",
        *idle_lines(idle),
        "",
        "## Problems seen in this run",
        "",
        *([f"* {p}" for p in problems] or ["None: every run delivered every recipient."]),
        "",
        "## Setup",
        "",
        *[f"* {line}" for line in meta["setup"]],
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(out))


def write_json(path: str, meta: dict, runs: list, idle: dict) -> None:
    """bench/results/latest.json: every run, for later analysis."""
    with open(path, "w") as f:
        json.dump({"meta": meta, "runs": [r.as_dict() for r in runs], "idle": idle}, f,
                  indent=1, default=str)


def write_chart(path: str, summaries: dict) -> None:
    """bench/results/latest.png: msg/s and CPU per 1000 messages per load and server."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = [load for load in LOADS if load.key in summaries]
    colours = {"Postfix": "#4c72b0", "aiosmtpd": "#8c8c8c", "smtpd": "#dd8452"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    width = 0.27
    for i, name in enumerate(SERVERS):
        xs, rates, low, high, cpus = [], [], [], [], []
        for j, load in enumerate(loads):
            s = summaries[load.key].get(name)
            if s is None or not applies(name, load):
                continue
            median = 0.0 if math.isnan(s["median"]) else s["median"]
            xs.append(j + (i - 1) * width)
            rates.append(median)
            low.append(0 if math.isnan(s["min"]) else median - s["min"])
            high.append(0 if math.isnan(s["max"]) else s["max"] - median)
            cpus.append(s["cpu_per_1000"])
        top.bar(xs, rates, width, yerr=[low, high], capsize=3, label=name,
                color=colours[name])
        bottom.bar(xs, cpus, width, label=name, color=colours[name])
    top.set_ylabel("msg/s end to end (median, min-max)")
    top.legend()
    top.set_title("smtpd vs Postfix vs aiosmtpd (aiosmtpd has no relay path)")
    bottom.set_ylabel("server CPU s per 1000 msgs")
    bottom.set_xticks(range(len(loads)))
    bottom.set_xticklabels([load.key for load in loads])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_all(folder: str, meta: dict, runs: list, summaries: dict, problems: list[str],
              idle: dict) -> None:
    """Write latest.md, latest.json and latest.png into C{folder}."""
    os.makedirs(folder, exist_ok=True)
    write_markdown(os.path.join(folder, "latest.md"), meta, summaries, problems, idle)
    write_json(os.path.join(folder, "latest.json"), meta, runs, idle)
    write_chart(os.path.join(folder, "latest.png"), summaries)
