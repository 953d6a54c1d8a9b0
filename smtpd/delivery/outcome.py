# -*- test-case-name: tests.test_qmgr -*-
"""
The statuses local agents report: what a disk problem or an unexpected error
means for the recipients concerned, one place for the Maildir and drop agents.
"""

from __future__ import annotations

import errno

from smtpd.mail.envelope import DeliveryStatus

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def temporary(address: str, text: str) -> DeliveryStatus:
    """A local temporary failure (451 4.3.0) for C{address}."""
    return DeliveryStatus(address, 451, "4.3.0", text)


def disk_error(error: OSError, what: str) -> tuple[int, str, str]:
    """
    The temporary reply for a disk problem: 452 4.3.1 when the disk (or the
    quota) is full, else 451 4.3.0 C{"<what> error"}.
    """
    if error.errno in _DISK_FULL:
        return 452, "4.3.1", "insufficient system storage"
    return 451, "4.3.0", f"{what} error"
