# -*- test-case-name: tests.test_tlsrpt -*-
"""
The TLS outcome of one outbound connection, as TLS-RPT (RFC 8460) counts
it, and the interface of what records them.

A connection is a success when TLS was negotiated (and, under a policy,
validated); otherwise its C{result_type} says why (RFC 8460 4.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from zope.interface import Interface, implementer

# RFC 8460 4.4: the policy that applied.
STS = "sts"
TLSA = "tlsa"
NO_POLICY = "no-policy-found"
POLICY_TYPES = (STS, TLSA, NO_POLICY)

# RFC 8460 4.3.1: negotiation failures.
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
VALIDATION_FAILURE = "validation-failure"
# RFC 8460 4.3.2.1 (DANE) and 4.3.2.2 (MTA-STS): policy failures.
TLSA_INVALID = "tlsa-invalid"
DNSSEC_INVALID = "dnssec-invalid"
DANE_REQUIRED = "dane-required"
STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
STS_POLICY_INVALID = "sts-policy-invalid"
STS_WEBPKI_INVALID = "sts-webpki-invalid"
RESULT_TYPES = (
    STARTTLS_NOT_SUPPORTED, CERTIFICATE_HOST_MISMATCH, CERTIFICATE_EXPIRED,
    CERTIFICATE_NOT_TRUSTED, VALIDATION_FAILURE, TLSA_INVALID, DNSSEC_INVALID,
    DANE_REQUIRED, STS_POLICY_FETCH_ERROR, STS_POLICY_INVALID, STS_WEBPKI_INVALID,
)


@dataclass(frozen=True)
class TLSPolicy:
    """
    The policy a connection was made under (RFC 8460 4.4 "policy").

    @ivar type: L{STS}, L{TLSA} or L{NO_POLICY}.
    @ivar domain: the policy domain (the recipient domain).
    @ivar strings: the policy as text: the lines of an MTA-STS policy, the
        TLSA records in presentation form; empty for L{NO_POLICY}.
    @ivar mx_host: the MX patterns of an MTA-STS policy.
    """

    type: str
    domain: str
    strings: tuple[str, ...] = ()
    mx_host: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in POLICY_TYPES:
            raise ValueError(f"unknown TLS-RPT policy type {self.type!r}")
        object.__setattr__(self, "domain", self.domain.lower().rstrip("."))


@dataclass(frozen=True)
class TLSOutcome:
    """
    One connection's TLS result.

    @ivar policy: the L{TLSPolicy} it was made under.
    @ivar receiving_mx_hostname: the MX host name connected to.
    @ivar receiving_ip: its address.
    @ivar sending_mta_ip: our address on the connection.
    @ivar result_type: "" for a success, else one of L{RESULT_TYPES}.
    @ivar failure_reason_code: a short machine-readable reason (an OpenSSL
        verification error name, for instance), or "".
    @ivar receiving_mx_helo: the name in the host's greeting, or "".
    """

    policy: TLSPolicy
    receiving_mx_hostname: str
    receiving_ip: str = ""
    sending_mta_ip: str = ""
    result_type: str = ""
    failure_reason_code: str = ""
    receiving_mx_helo: str = ""

    def __post_init__(self) -> None:
        if self.result_type and self.result_type not in RESULT_TYPES:
            raise ValueError(f"unknown TLS-RPT result type {self.result_type!r}")

    @property
    def success(self) -> bool:
        """Whether TLS was negotiated (and validated, under a policy)."""
        return not self.result_type


class ITLSOutcomes(Interface):
    """Where the relay reports the TLS outcome of each new connection."""

    def record(outcome: TLSOutcome) -> None:
        """Count C{outcome}; never blocks and never raises."""


@implementer(ITLSOutcomes)
class MemoryOutcomes:
    """An L{ITLSOutcomes} that keeps every outcome in a list (for tests)."""

    def __init__(self) -> None:
        self.outcomes: list[TLSOutcome] = []

    def record(self, outcome: TLSOutcome) -> None:
        """Keep C{outcome}."""
        self.outcomes.append(outcome)
