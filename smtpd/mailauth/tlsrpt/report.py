# -*- test-case-name: tests.test_tlsrpt -*-
"""
The aggregate report of one policy domain for one UTC day in the JSON
format of RFC 8460 4.4, gzip-compressed (4.5), and its file name (5.1).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from smtpd.mailauth.tlsrpt.store import DAY, DETAIL_FIELDS, PolicyCounts, day_start

# Failure detail fields a report leaves out when they are empty: optional in
# RFC 8460 4.4, or unknown because no connection was made (a policy failure:
# no address, or no MX host at all when the MTA-STS policy could not be had).
_OPTIONAL = ("receiving-mx-helo", "failure-reason-code", "receiving-ip", "sending-mta-ip",
             "receiving-mx-hostname")


def report_id(day: str, domain: str, submitter: str) -> str:
    """A unique report id, the same each time for one day, domain and submitter."""
    return f"{day}T00:00:00Z.{domain}@{submitter}"


def policy_entry(counts: PolicyCounts) -> dict[str, Any]:
    """One element of C{policies}: the policy, its summary and its failure details."""
    policy = counts.policy
    described: dict[str, Any] = {"policy-type": policy.type, "policy-domain": policy.domain}
    if policy.strings:
        described["policy-string"] = list(policy.strings)
    if policy.mx_host:
        described["mx-host"] = list(policy.mx_host)
    details = []
    for key, count in sorted(counts.failures.items()):
        detail = {name: value for name, value in zip(DETAIL_FIELDS, key)
                  if value or name not in _OPTIONAL}
        detail["failed-session-count"] = count
        details.append(detail)
    return {
        "policy": described,
        "summary": {"total-successful-session-count": counts.successes,
                    "total-failure-session-count": counts.failure_count},
        "failure-details": details,
    }


def build_report(day: str, policies: list[PolicyCounts], organization: str, contact: str,
                 report_id: str) -> dict[str, Any]:
    """The report (RFC 8460 4.4) of C{day} for the policies of one domain."""
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": f"{day}T00:00:00Z",
                       "end-datetime": f"{day}T23:59:59Z"},
        "contact-info": contact,
        "report-id": report_id,
        "policies": [policy_entry(c) for c in sorted(policies, key=_order)],
    }


def _order(counts: PolicyCounts) -> tuple:
    policy = counts.policy
    return (policy.type, policy.strings, policy.mx_host)


def compress(report: dict[str, Any]) -> bytes:
    """The report as gzip-compressed UTF-8 JSON (RFC 8460 4.5), the same bytes each time."""
    data = json.dumps(report, indent=1).encode("utf-8")
    return gzip.compress(data, mtime=0)


def file_name(submitter: str, domain: str, day: str) -> str:
    """
    C{submitter!policy-domain!begin-timestamp!end-timestamp.json.gz}
    (RFC 8460 5.1), the timestamps in seconds since the epoch.
    """
    start = int(day_start(day))
    return f"{submitter}!{domain}!{start}!{start + DAY - 1}.json.gz"
