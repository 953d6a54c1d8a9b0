# -*- test-case-name: tests.test_tlsrpt_relay -*-
"""
The TLS outcome of a new outbound connection, as TLS-RPT (RFC 8460) counts
it, from what the session set-up came to under the route's C{outbound_tls}:
TLS negotiated, STARTTLS not offered (or refused), or the handshake failed,
and then why: the certificate's dates, its name, its issuer.

Only connections to a domain's MX hosts with a TLS policy other than
C{none} count; a plain-text retry after a failed handshake does not (it is
the same delivery). Connections that failed before STARTTLS (refused,
greeting, EHLO) are no TLS sessions and are not counted.
"""

from __future__ import annotations

from typing import Any

from smtpd.delivery.routes import Route, Target
from smtpd.delivery.wire import SessionError
from smtpd.mailauth.tlsrpt.outcome import (
    CERTIFICATE_EXPIRED,
    CERTIFICATE_HOST_MISMATCH,
    CERTIFICATE_NOT_TRUSTED,
    NO_POLICY,
    STARTTLS_NOT_SUPPORTED,
    VALIDATION_FAILURE,
    TLSOutcome,
    TLSPolicy,
)

# The status of "TLS is required, but was not offered" (handshake.tls_required).
_NOT_OFFERED = "4.7.5"
# The most of an error text kept as a failure reason.
_REASON_LIMIT = 200


def connection_outcome(route: Route, target: Target, client: Any,
                       error: SessionError | None, now: float) -> TLSOutcome | None:
    """
    The outcome of C{client}'s set-up with C{target} (C{error}: why it
    failed, L{None} when it is ready) at C{now}, or L{None} when it does not
    count.
    """
    if route.kind != "mx" or route.tls == "none":
        return None
    if error is None or not (error.tls_failure or error.status == _NOT_OFFERED):
        if error is not None and not client.secure:
            return None  # failed before STARTTLS: no TLS session
        result, reason = ("", "") if client.secure else (STARTTLS_NOT_SUPPORTED, "")
    elif not client.secure:
        result, reason = STARTTLS_NOT_SUPPORTED, ""
    else:
        result, reason = handshake_failure(client, error, now)
    return TLSOutcome(
        policy=TLSPolicy(NO_POLICY, route.destination),
        receiving_mx_hostname=target.name,
        receiving_ip=target.address,
        sending_mta_ip=local_address(client),
        result_type=result,
        failure_reason_code=reason,
    )


def handshake_failure(client: Any, error: SessionError, now: float) -> tuple[str, str]:
    """
    The result type and reason of a failed TLS handshake on C{client}: the
    certificate the host sent is checked for its dates; a name mismatch is
    what service_identity reported; another verification failure means no
    trusted issuer was found (the dates and the name being right).
    """
    text = error.reply.partition("TLS negotiation failed: ")[2] or error.reply
    dates = certificate_dates(client)
    if dates is not None and now > dates[1]:
        return CERTIFICATE_EXPIRED, "X509_V_ERR_CERT_HAS_EXPIRED"
    if dates is not None and now < dates[0]:
        return CERTIFICATE_EXPIRED, "X509_V_ERR_CERT_NOT_YET_VALID"
    if "Mismatch" in text:
        return CERTIFICATE_HOST_MISMATCH, "X509_V_ERR_HOSTNAME_MISMATCH"
    if "certificate verify failed" in text:
        return CERTIFICATE_NOT_TRUSTED, "certificate verify failed"
    return VALIDATION_FAILURE, text[:_REASON_LIMIT]


def certificate_dates(client: Any) -> tuple[float, float] | None:
    """
    The validity period (epoch seconds) of the certificate the host sent on
    C{client}'s TLS connection, or L{None} when it sent none.
    """
    try:
        chain = client.transport.getHandle().get_peer_cert_chain()
        leaf = chain[0].to_cryptography()
    except Exception:
        return None
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


def local_address(client: Any) -> str:
    """Our address on C{client}'s connection, or ""."""
    try:
        return str(client.transport.getHost().host)
    except Exception:
        return ""
