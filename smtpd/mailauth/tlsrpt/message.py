# -*- test-case-name: tests.test_tlsrpt -*-
"""
A report as mail (RFC 8460 5.3): C{multipart/report; report-type="tlsrpt"}
with a short text part and the gzip-compressed JSON as
C{application/tlsrpt+gzip}, and the C{TLS-Report-Domain},
C{TLS-Report-Submitter} fields and the Subject the RFC prescribes, and
C{TLS-Required: No} (RFC 8689 5) so that the report is delivered despite the
recipient's failing MTA-STS or DANE policy (RFC 8460 5.3).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime

# RFC 5322 2.1.1: lines of at most 78 characters (base64 in 76).
_BASE64_LINE = 76


@dataclass(frozen=True)
class ReportMail:
    """
    What one report message says.

    @ivar domain: the policy domain reported on.
    @ivar submitter: our domain (C{TLS-Report-Submitter}).
    @ivar report_id: the report's C{report-id}.
    @ivar sender: the C{From:} address.
    @ivar recipients: the C{rua} mail addresses.
    @ivar file_name: the attachment's name (RFC 8460 5.1).
    @ivar day: the UTC day reported on (C{YYYY-MM-DD}).
    """

    domain: str
    submitter: str
    report_id: str
    sender: str
    recipients: tuple[str, ...]
    file_name: str
    day: str


def report_message(mail: ReportMail, report: bytes, now: float) -> bytes:
    """The whole message (CRLF line ends) carrying the gzip-compressed C{report}."""
    digest = hashlib.sha256(mail.report_id.encode("utf-8")).hexdigest()
    boundary = f"----=_TLSRPT_{digest[:24]}"
    date = datetime.fromtimestamp(int(now), timezone.utc)
    lines = [
        f"From: <{mail.sender}>",
        "To: " + ",\r\n ".join(f"<{r}>" for r in mail.recipients),
        f"Date: {format_datetime(date)}",
        f"Subject: Report Domain: {mail.domain}",
        f" Submitter: {mail.submitter}",
        f" Report-ID: <{mail.report_id}>",
        f"Message-ID: <tlsrpt.{digest[:32]}@{mail.submitter}>",
        f"TLS-Report-Domain: {mail.domain}",
        f"TLS-Report-Submitter: {mail.submitter}",
        "Auto-Submitted: auto-generated",  # RFC 3834: never answered automatically
        # RFC 8460 5.3 / RFC 8689 5: a report must get through the very TLS
        # failures it reports, so MTA-STS and DANE do not stop it.
        "TLS-Required: No",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type="tlsrpt";',
        f' boundary="{boundary}"',
        "",
        "This is a multipart message in MIME format.",
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="us-ascii"',
        "Content-Transfer-Encoding: 7bit",
        "",
        f"This is an aggregate TLS report from {mail.submitter}",
        f"on the SMTP TLS sessions with {mail.domain} on {mail.day} (UTC), RFC 8460.",
        "",
        f"--{boundary}",
        "Content-Type: application/tlsrpt+gzip",
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment;",
        f' filename="{mail.file_name}"',
        "",
        *_base64_lines(report),
        f"--{boundary}--",
    ]
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def _base64_lines(data: bytes) -> list[str]:
    """C{data} in base64, L{_BASE64_LINE} characters a line."""
    encoded = base64.b64encode(data).decode("ascii")
    return [encoded[i:i + _BASE64_LINE] for i in range(0, len(encoded), _BASE64_LINE)]
