# -*- test-case-name: tests.test_relay_tls_policy -*-
"""
The TLS outcome of one outbound session, as TLS reporting (RFC 8460) counts
it: which recipient-side policy applied (MTA-STS, DANE or none), with its
policy strings, the MX host and address, and success or the RFC 8460 result
type of the failure.

The relay publishes one L{TLSOutcome} per new session (or per host it would
not connect to under a policy) on its L{TLSOutcomes}; a TLS-RPT recorder
subscribes there. Sessions opened to deliver a TLS report (L{is_tls_report})
are not published (RFC 8460 5.3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser

from twisted.logger import Logger

from smtpd.mail.source import IMessageSource, read_head

# The RFC 8460 policy and result types are TLS reporting's own names.
from smtpd.mailauth.tlsrpt.outcome import (  # noqa: E402
    CERTIFICATE_EXPIRED,
    CERTIFICATE_HOST_MISMATCH,
    CERTIFICATE_NOT_TRUSTED,
    DANE_REQUIRED,
    DNSSEC_INVALID,
    NO_POLICY,
    STARTTLS_NOT_SUPPORTED,
    STS_POLICY_FETCH_ERROR,
    STS_POLICY_INVALID,
    STS_WEBPKI_INVALID,
    TLSA_INVALID,
    VALIDATION_FAILURE,
)
from smtpd.mailauth.tlsrpt.outcome import STS as POLICY_STS  # noqa: E402
from smtpd.mailauth.tlsrpt.outcome import TLSA as POLICY_TLSA  # noqa: E402

SUCCESS = "success"

__all__ = [
    "CERTIFICATE_EXPIRED", "CERTIFICATE_HOST_MISMATCH", "CERTIFICATE_NOT_TRUSTED",
    "DANE_REQUIRED", "DNSSEC_INVALID", "NO_POLICY", "POLICY_STS", "POLICY_TLSA",
    "STARTTLS_NOT_SUPPORTED", "STS_POLICY_FETCH_ERROR", "STS_POLICY_INVALID",
    "STS_WEBPKI_INVALID", "SUCCESS", "TLSA_INVALID", "VALIDATION_FAILURE",
    "TLSOutcome", "TLSOutcomes", "is_tls_report",
]

log = Logger()


@dataclass(frozen=True)
class TLSOutcome:
    """
    One session's (or one refused host's) TLS result.

    @ivar policy_domain: the recipient domain whose policy applied.
    @ivar policy_type: L{POLICY_STS}, L{POLICY_TLSA} or L{NO_POLICY}.
    @ivar policy_strings: the MTA-STS policy lines (C{"mode: enforce"}, ...)
        or the TLSA records in presentation form (C{"3 1 1 ab12..."}).
    @ivar mx_host: the MX host name.
    @ivar receiving_ip: its address, "" when no connection was made.
    @ivar result: L{SUCCESS} or an RFC 8460 result type.
    @ivar detail: a human-readable reason (RFC 8460 C{additional-information}).
    @ivar mode: the policy mode that applied: C{enforce}, C{testing} (MTA-STS),
        C{dane}, or "".
    """

    policy_domain: str
    policy_type: str
    policy_strings: tuple[str, ...]
    mx_host: str
    receiving_ip: str
    result: str
    detail: str = ""
    mode: str = ""

    @property
    def succeeded(self) -> bool:
        """Whether the session was set up over TLS as the policy demands."""
        return self.result == SUCCESS


def is_tls_report(message: IMessageSource) -> bool:
    """
    Whether C{message} is a TLS report (RFC 8460 5.3): a
    C{multipart/report; report-type="tlsrpt"} with a C{TLS-Report-Domain}
    field. Only the header is read.
    """
    fields = BytesHeaderParser().parsebytes(read_head(message) + b"\r\n")
    return (fields.get("TLS-Report-Domain") is not None
            and fields.get_content_type() == "multipart/report"
            and str(fields.get_param("report-type", "")).lower() == "tlsrpt")


class TLSOutcomes:
    """The hook where the relay publishes L{TLSOutcome}s; observers subscribe."""

    def __init__(self) -> None:
        self._observers: list[Callable[[TLSOutcome], object]] = []

    @property
    def observed(self) -> bool:
        """Whether anyone subscribed (else outcomes need not be worked out)."""
        return bool(self._observers)

    def subscribe(self, observer: Callable[[TLSOutcome], object]) -> Callable[[], None]:
        """Call C{observer} with every outcome from now on; returns the unsubscribe call."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def publish(self, outcome: TLSOutcome) -> None:
        """
        Hand C{outcome} to every observer; one that fails is logged, never
        the delivery's problem.
        """
        for observer in list(self._observers):
            try:
                observer(outcome)
            except Exception:
                log.failure("TLS outcome observer {observer!r} failed", observer=observer)
