"""
Running a real engine (slapd, Dovecot, HAProxy, ...) for a test: one process
in the foreground, started and waited for until it accepts TCP connections on
its loopback port, stopped (SIGTERM, then SIGKILL) by the test's cleanup, in
a temporary folder removed afterwards:

    class Slapd:
        def __init__(self, folder):
            self.port = free_port()
            self.engine = EngineProcess("slapd", self.port)

        def start(self):
            self.engine.start([find_engine("slapd"), "-d", "0", ...])

        def stop(self):
            self.engine.stop()

    slapd = start_engine(case, "slapd-", Slapd)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:C{port}."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class EngineProcess:
    """
    One engine process in the foreground.

    @param name: the engine, for error messages.
    @param port: the loopback port it listens on once ready.
    @param timeout: seconds to wait for it to listen, and for it to stop.
    @param ready: beyond the port, whether it is ready (a UNIX socket, ...).
    @param log: the engine's log so far, added to error messages.
    """

    def __init__(self, name: str, port: int, timeout: float = 10.0,
                 ready: Callable[[], bool] = lambda: True,
                 log: Callable[[], str] = lambda: "") -> None:
        self.name = name
        self.port = port
        self.timeout = timeout
        self.ready = ready
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, argv: list[str]) -> None:
        """
        Run C{argv} and wait until it listens (and is L{ready});
        C{RuntimeError} with its stderr (and log) when it exits first or
        does not listen within the timeout.
        """
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace")
                self.stop()
                raise RuntimeError(f"{self.name} exited: {error}{self.log()}")
            if accepts(self.port) and self.ready():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not start listening within "
                           f"{self.timeout:g} s{': ' + self.log() if self.log() else ''}")

    def stop(self) -> None:
        """Stop the engine (SIGTERM, SIGKILL after the timeout) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stderr.close()


def start_engine(case: Any, prefix: str, build: Callable[[str], Any],
                 mode: int | None = None) -> Any:
    """
    C{build(folder)} in a new temporary folder (named C{prefix...}, with
    C{mode} when given), started; stopped and the folder removed at
    C{case}'s cleanup (also when the start fails).
    """
    folder = tempfile.mkdtemp(prefix=prefix)
    if mode is not None:
        os.chmod(folder, mode)
    case.addCleanup(shutil.rmtree, folder, True)
    engine = build(folder)
    case.addCleanup(engine.stop)
    engine.start()
    return engine
