"""
A real HAProxy for tests: a temporary config with one TCP frontend on a free
loopback port whose backend is an smtpd listener, reached with
C{send-proxy-v2} (or C{send-proxy} for v1). L{HAPROXY_MISSING} is the reason
to skip when Debian's haproxy is not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tests.engines import find_engine, skip_unless
from tests.slapd import free_port

HAPROXY_MISSING = skip_unless("haproxy")

CONFIG = """
global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend smtp
    bind 127.0.0.1:{port}
    default_backend smtpd

backend smtpd
    server node1 127.0.0.1:{backend} {send_proxy}
"""


class HAProxy:
    """One private haproxy in the foreground (-db)."""

    def __init__(self, folder: str, backend_port: int, version: int = 2) -> None:
        self.port = free_port()
        self.config = os.path.join(folder, "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(port=self.port, backend=backend_port,
                                  send_proxy="send-proxy-v2" if version == 2 else "send-proxy"))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start and wait until the frontend accepts connections."""
        self.process = subprocess.Popen([find_engine("haproxy"), "-db", "-f", self.config],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("haproxy did not start listening within 10 s")

    def stop(self) -> None:
        """Stop haproxy and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self.process.stderr.close()
        self.process = None


def start_haproxy(case, backend_port: int, version: int = 2) -> HAProxy:
    """A started L{HAProxy} in front of C{backend_port}, stopped at cleanup."""
    folder = tempfile.mkdtemp(prefix="haproxy-")
    case.addCleanup(shutil.rmtree, folder, True)
    proxy = HAProxy(folder, backend_port, version)
    proxy.start()
    case.addCleanup(proxy.stop)
    return proxy
