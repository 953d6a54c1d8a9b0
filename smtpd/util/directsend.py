"""
Writing into a plain TCP socket at once. Twisted's C{transport.write} buffers
the data, asks epoll for writability, sends on the next loop turn and asks
epoll to stop: two epoll_ctl(2) calls and a loop turn per write. A short
reply or command nearly always fits into the socket's send buffer at once.
"""

from __future__ import annotations

from typing import Any


def send_at_once(transport: Any, data: bytes) -> int:
    """
    Send C{data} straight into the socket of C{transport} (a plain
    C{twisted.internet.tcp} connection, with nothing waiting in its own
    buffer); how many octets the socket took. 0 on any error: the caller then
    writes the rest through the transport, which reports the error in its way.
    """
    try:
        return transport.getHandle().send(data)
    except OSError:
        return 0
