"""
Kill points for the crash tests: C{SMTPD_FAULT=name[:n]} in the environment
makes the process kill itself with SIGKILL the C{n}th time (default: the
first) it passes the point called C{name}. The variable is read once, at
import; without it L{point} costs one comparison.

The points, in the order a message passes them:

  - C{spool}: during DATA, a chunk of a large message written to its spool file;
  - C{store-data}: the queue data file durable, its envelope not yet written;
  - C{stored}: the message durable (queue or Maildirs), the 250 not yet sent;
  - C{maildir}: one Maildir copy written, the others of the batch not yet;
  - C{delivered}: an attempt's agents done (a peer's 250 received), the
    envelope not yet rewritten;
  - C{bounced}: an NDR durable, the original not yet updated or removed.
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT = "SMTPD_FAULT"

POINTS = ("spool", "store-data", "stored", "maildir", "delivered", "bounced")


def parse(value: str) -> tuple[str, int] | None:
    """C{"name[:n]"} as C{(name, n)}; L{None} for an empty value."""
    if not value:
        return None
    name, _, count = value.partition(":")
    return name, max(1, int(count or "1"))


_armed = parse(os.environ.get(ENVIRONMENT, ""))
_hits = 0


def point(name: str) -> None:
    """Die here (SIGKILL) when the environment armed point C{name} and its count is reached."""
    if _armed is None or _armed[0] != name:
        return
    global _hits
    _hits += 1
    if _hits >= _armed[1]:
        os.write(2, f"fault point {name} reached: SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
