# -*- test-case-name: tests.test_web -*-
"""
C{/healthz} (the process serves) and C{/readyz}: every listener bound, the
mailroot writable (a file really written there), and at least
C{[http] min_free_space} octets free on its file system.
"""

from __future__ import annotations

import os
import tempfile


def free_space(path: str) -> int:
    """Octets an unprivileged user may still write on C{path}'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def writable(folder: str) -> str:
    """"" when a file can be written and removed in C{folder}, else why not."""
    try:
        fd, path = tempfile.mkstemp(prefix=".readyz-", dir=folder)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(path)
    except OSError as e:
        return f"{folder}: {e.strerror}"
    return ""


def readiness(listeners, mailroot: str, min_free: int) -> dict:
    """
    The checks behind C{/readyz} (blocking: run it in a thread): C{ready}
    and C{checks} (C{listeners}, C{mailroot}, C{disk}, each C{ok} and C{detail}).
    """
    unbound = [l.description for l in listeners if getattr(l, "port", None) is None]
    why_not_writable = writable(mailroot)
    try:
        free = free_space(mailroot)
        disk_ok = free >= min_free
        disk = f"{free} octets free, floor {min_free}"
    except OSError as e:
        disk_ok, disk = False, f"{mailroot}: {e.strerror}"
    checks = {
        "listeners": {"ok": not unbound,
                      "detail": "not bound: " + " ".join(unbound) if unbound else "all bound"},
        "mailroot": {"ok": not why_not_writable, "detail": why_not_writable or "writable"},
        "disk": {"ok": disk_ok, "detail": disk},
    }
    return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}
