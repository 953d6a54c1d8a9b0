#!/usr/bin/env python3
"""
`make bench`: smtpd side by side with Postfix and aiosmtpd, in one run.

    make bench [BENCH_ARGS="--messages 2000 --reps 3"]
    .venv-bench/bin/python bench/bench.py --smtpd-venv .venv [options]

For every load (bench/runner.py LOADS: inbound to Maildir 4 KiB and 100 KiB,
1 and 10 recipients, many messages per connection; relay end to end into
smtp-sink, 1 and 10 recipients; on request the same relay loads into an
smtp-sink without PIPELINING, the -nopipe loads) and every server (a private Postfix instance,
aiosmtpd with an fsync'ing Maildir handler, smtpd with default settings), on a
fresh instance each time: Postfix's smtp-source sends --messages messages over
20 sessions, and the run ends when every recipient has landed (Maildir files,
or smtp-sink's dump) or nothing moved for 20 s. Then idle sessions (as
bench/idle.py). Writes bench/results/latest.md, latest.json and latest.png.

Runs as root (Postfix's master must). Everything listens on 127.0.0.1 with
free ports; every process started is stopped at the end, also on failure or
Ctrl-C; the temporary folders are removed (--keep keeps them).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from idle import idle_smtpd, measure_idle  # noqa: E402
from peers import Aiosmtpd, BenchError, local_parts, make_users_file, tool  # noqa: E402
from report import write_all  # noqa: E402
from runner import (LOADS, SERVERS, SESSIONS, Context, applies, check_run,  # noqa: E402
                    run_once, summary)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MESSAGES = 100_000


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="per run (default 2000)")
    parser.add_argument("--reps", type=int, default=3, help="runs per load and server")
    parser.add_argument("--loads", default=",".join(load.key for load in LOADS if load.default),
                        help="comma-separated subset of: "
                        + ", ".join(load.key for load in LOADS)
                        + " (the -nopipe ones only when named)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated subset of: " + ", ".join(SERVERS))
    parser.add_argument("--idle-sessions", type=int, default=10_000,
                        help="idle-session measurement size; 0 skips it")
    parser.add_argument("--idle-probes", type=int, default=500)
    parser.add_argument("--smtpd-venv", default=os.path.join(REPO, ".venv"))
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--workdir", default=None,
                        help="where the temporary instances go (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args(argv)
    if not 0 < args.messages <= MAX_MESSAGES or not 0 < args.reps <= 20:
        parser.error(f"--messages must be 1..{MAX_MESSAGES} and --reps 1..20")
    args.loads = [load for load in LOADS if load.key in args.loads.split(",")]
    args.servers = [s for s in SERVERS if s in args.servers.split(",")]
    if not args.loads or not args.servers:
        parser.error("no known load or server selected")
    return args


def preflight(args: argparse.Namespace) -> str:
    """Check what the run needs; return the smtpd venv's bin folder."""
    if os.geteuid() != 0 and "Postfix" in args.servers:
        raise BenchError("run as root: the private Postfix instance's master needs it "
                         "(or pass --servers aiosmtpd,smtpd)")
    for name in ("smtp-source", "smtp-sink", "postfix", "postconf"):
        tool(name)
    venv_bin = os.path.join(os.path.abspath(args.smtpd_venv), "bin")
    for name in ("twistd", "smtpctl"):
        if not os.access(os.path.join(venv_bin, name), os.X_OK):
            raise BenchError(f"{venv_bin}/{name} is missing: run 'make venv' first")
    return venv_bin


def version(command: list[str]) -> str:
    """The first line a version command prints, or '?'."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine() -> str:
    """CPU count, model and kernel."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}"


def metadata(args, argv: list[str]) -> dict:
    """What the results header says about this run."""
    try:
        from importlib.metadata import version as package_version
        aiosmtpd = package_version("aiosmtpd")
    except Exception:
        aiosmtpd = "not installed"
    postfix = version(["postconf", "-d", "-h", "mail_version"])
    commit = version(["git", "-C", REPO, "log", "-1", "--format=%h (%cd)", "--date=short"])
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "args": ("BENCH_ARGS=\"" + " ".join(user_args(argv)) + "\"") if user_args(argv) else "",
        "smtpd": f"at {commit}",
        "postfix": postfix,
        "aiosmtpd": aiosmtpd,
        "python": platform.python_version(),
        "sessions": SESSIONS,
        "messages": args.messages,
        "reps": args.reps,
        "setup": [
            "Postfix: private instance (postfix -c DIR start) with its own config, queue "
            "and data folders; virtual(8) Maildir delivery for bench.test; relayhost = "
            "[127.0.0.1]:SINK for other domains; Debian's defaults otherwise, but "
            "smtpd_peername_lookup = no (no DNS here), maillog_file (no syslog), no alias "
            "maps, no chroot. Postfix fsyncs its queue files and Maildir files.",
            "aiosmtpd: bench/aiosmtpd_maildir.py, one Maildir file per recipient, "
            "written in a worker thread with fsync of the file and of new/ before 250.",
            "smtpd: twistd -n smtpd with a generated config: default settings but "
            "`listen`, [domain:bench.test] local with accounts from smtpctl user add, "
            "[domain:remote.test] remote, and smart_host = [127.0.0.1]:SINK for relay "
            "loads. The idle measurement raises max_connections and "
            "max_connections_per_ip to fit its sessions.",
            "Relay destination: Postfix's smtp-sink; recipients counted from its dump file.",
            "Each run on a fresh instance; runs interleave the servers (the order "
            "rotates per repetition) so that drift hits all alike.",
        ],
    }


def run_all(args, ctx: Context) -> tuple[list, dict, list[str]]:
    """Every load x server x repetition; summaries per load and server; problems."""
    runs, problems = [], []
    for rep in range(1, args.reps + 1):
        for load in args.loads:
            servers = [s for s in args.servers if applies(s, load)]
            shift = (rep - 1) % len(servers)
            for name in servers[shift:] + servers[:shift]:
                print(f"[bench] rep {rep}/{args.reps} {load.key:12s} {name:8s} ...",
                      end=" ", flush=True)
                run = run_once(name, load, rep, ctx)
                runs.append(run)
                print(f"{run.rate:7.1f} msg/s  {run.cpu_seconds:6.2f} s CPU  "
                      f"{run.landed}/{run.expected} landed", flush=True)
                problem = check_run(run)
                if problem:
                    print(f"[bench] PROBLEM: {problem}", flush=True)
                    problems.append(problem)
    summaries: dict = {}
    for load in args.loads:
        for name in args.servers:
            chosen = [r for r in runs if r.load == load.key and r.server == name]
            if chosen:
                summaries.setdefault(load.key, {})[name] = summary(chosen)
    return runs, summaries, problems


def run_idle(args, ctx: Context) -> dict:
    """The idle-session measurement for smtpd and aiosmtpd."""
    results = {}
    if args.idle_sessions <= 0:
        return results
    for name in ("smtpd", "aiosmtpd"):
        if name not in args.servers:
            continue
        folder = ctx.folder(f"idle-{name}")
        if name == "smtpd":
            server = idle_smtpd(folder, ctx.venv_bin, args.idle_sessions, args.idle_probes)
        else:
            server = Aiosmtpd(folder, None, [])
        print(f"[bench] idle: {args.idle_sessions} sessions to {name} ...", end=" ", flush=True)
        try:
            server.start()
            results[name] = measure_idle(server.port, server.root_pid(), args.idle_sessions,
                                         args.idle_probes, timeout=300)
            r = results[name]
            print(f"{r['bytes_per_session']:.0f} B per session, banner p99 "
                  f"{r['p99'] * 1000:.2f} ms", flush=True)
        except (RuntimeError, OSError) as e:
            results[name] = {"error": str(e)}
            print(f"failed: {e}", flush=True)
        finally:
            server.stop()
    return results


def interrupted(signum, frame) -> None:
    """SIGTERM handler: unwind like Ctrl-C."""
    raise KeyboardInterrupt


def user_args(argv: list[str]) -> list[str]:
    """C{argv} without the --smtpd-venv the Makefile adds."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--smtpd-venv":
            skip = True
        elif not arg.startswith("--smtpd-venv="):
            out.append(arg)
    return out


def main(argv: list[str]) -> int:
    """Run the benchmark; 1 with one clear line on failure."""
    args = parse(argv)
    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, through every finally.
    signal.signal(signal.SIGTERM, interrupted)
    workdir = tempfile.mkdtemp(prefix="smtpd-bench-", dir=args.workdir)
    os.chmod(workdir, 0o755)   # Postfix's and smtp-sink's users must reach their folders
    started = time.monotonic()
    try:
        venv_bin = preflight(args)
        users = make_users_file(os.path.join(workdir, "accounts"), venv_bin, local_parts(10))
        ctx = Context(workdir, venv_bin, users, args.messages)
        runs, summaries, problems = run_all(args, ctx)
        idle = run_idle(args, ctx)
        write_all(args.results, metadata(args, argv), runs, summaries, problems, idle)
    except BenchError as e:
        print(f"make bench failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make bench interrupted; every server it started has been stopped",
              file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"[bench] kept {workdir}")
        else:
            print(f"[bench] removing the temporary instances in {workdir} (on a busy disk "
                  "this takes minutes)", flush=True)
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"[bench] done in {time.monotonic() - started:.0f} s: "
          f"{os.path.join(args.results, 'latest.md')} and latest.png")
    if problems:
        print(f"[bench] {len(problems)} run(s) had problems; see latest.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
