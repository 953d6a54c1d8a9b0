"""
A real HAProxy for tests: a temporary config with one TCP frontend on a free
loopback port whose backend is an smtpd listener, reached with
C{send-proxy-v2} (or C{send-proxy} for v1). L{HAPROXY_MISSING} is the reason
to skip when Debian's haproxy is not installed.
"""

from __future__ import annotations

import os

from tests.engineproc import EngineProcess, free_port, start_engine
from tests.engines import find_engine, skip_unless

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
        self.engine = EngineProcess("haproxy", self.port)

    def start(self) -> None:
        """Start and wait until the frontend accepts connections."""
        self.engine.start([find_engine("haproxy"), "-db", "-f", self.config])

    def stop(self) -> None:
        """Stop haproxy and wait for it."""
        self.engine.stop()


def start_haproxy(case, backend_port: int, version: int = 2) -> HAProxy:
    """A started L{HAProxy} in front of C{backend_port}, stopped at cleanup."""
    return start_engine(case, "haproxy-", lambda folder: HAProxy(folder, backend_port, version))
