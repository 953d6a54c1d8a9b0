# -*- test-case-name: tests.test_relay_tls_policy -*-
"""
The TLS outcome of one outbound session, as TLS reporting (RFC 8460) counts
it: which recipient-side policy applied (MTA-STS, DANE or none), with its
policy strings, the MX host and address, and success or the RFC 8460 result
type of the failure.

The relay publishes one L{TLSOutcome} per new session (or per host it would
not connect to under a policy) on its L{TLSOutcomes}; a TLS-RPT recorder
subscribes there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.logger import Logger

# RFC 8460 4.4 policy types.
POLICY_STS = "sts"
POLICY_TLSA = "tlsa"
NO_POLICY = "no-policy-found"

SUCCESS = "success"
# RFC 8460 4.3 result types.
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
VALIDATION_FAILURE = "validation-failure"
TLSA_INVALID = "tlsa-invalid"
DNSSEC_INVALID = "dnssec-invalid"
DANE_REQUIRED = "dane-required"
STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
STS_POLICY_INVALID = "sts-policy-invalid"
STS_WEBPKI_INVALID = "sts-webpki-invalid"

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


class TLSOutcomes:
    """The hook where the relay publishes L{TLSOutcome}s; observers subscribe."""

    def __init__(self) -> None:
        self._observers: list[Callable[[TLSOutcome], object]] = []

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
