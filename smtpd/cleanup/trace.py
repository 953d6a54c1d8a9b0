# -*- test-case-name: tests.test_cleanup -*-
"""The trace header (RFC 5321 4.4) cleanup puts on top of every message it queues."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import format_datetime

from smtpd.cleanup.interfaces import ClientInfo
from smtpd.mail import address

_HELO_SAFE = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")
_date_cache: list = [None, ""]


def header_date(now: float) -> str:
    """The RFC 5322 date of C{now} in UTC, made once per second."""
    second = int(now)
    if _date_cache[0] != second:
        _date_cache[:] = [second, format_datetime(datetime.fromtimestamp(second, timezone.utc))]
    return _date_cache[1]


def received_header(hostname: str, client: ClientInfo | None, queue_id: str,
                    recipients: list[str], now: float) -> bytes:
    """
    The C{Received:} field: from the SMTP client (its HELO name made safe,
    its DNS name when looked up, its address, the RFC 3848 protocol keyword)
    or, for a file from the pickup folder, by us alone; C{for <address>} when
    there is one recipient.
    """
    when = header_date(now)
    if client is None:
        return (f"Received: by {hostname} (smtpd, from pickup)\r\n"
                f"\tid {queue_id}; {when}\r\n").encode("utf-8")
    helo = client.helo
    if not address.is_domain(helo):
        helo = _HELO_SAFE.sub("_", helo)[:64]
    rcpt = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    name = f"{client.name} " if client.name else ""
    return (
        f"Received: from {helo} ({name}[{client.ip}])\r\n"
        f"\tby {hostname} (smtpd) with {client.protocol} id {queue_id}{rcpt};\r\n"
        f"\t{when}\r\n"
    ).encode("utf-8")
