# -*- test-case-name: tests.test_client -*-
"""
Why an outbound session ended unasked: a lost connection, or a failed TLS
handshake and its RFC 8460 result type (for TLS reporting and for the next
MX host, which may work in plain text).
"""

from __future__ import annotations

from typing import Any

from service_identity import VerificationError
from twisted.python.failure import Failure

from smtpd.delivery.tlsoutcome import (
    CERTIFICATE_EXPIRED,
    CERTIFICATE_HOST_MISMATCH,
    CERTIFICATE_NOT_TRUSTED,
    VALIDATION_FAILURE,
)
from smtpd.delivery.wire import SessionError


def lost_error(reason: Failure | None, handshake: bool, phase: str,
               expired: bool = False) -> SessionError:
    """
    The error for a connection lost unasked: during the TLS C{handshake} a
    TLS failure (the host may work in plain text), else 4.4.2. C{expired}:
    the host's certificate is out of its validity period (what failed its
    verification, when it failed).
    """
    why = reason.getErrorMessage() if reason is not None else "connection lost"
    if handshake:
        result = tls_failure_type(reason)
        if expired and result == CERTIFICATE_NOT_TRUSTED:
            result = CERTIFICATE_EXPIRED
        return SessionError(451, "4.7.5", f"451 4.7.5 TLS negotiation failed: {why}",
                            tls_failure=True, tls_result=result)
    return SessionError(451, "4.4.2", f"451 4.4.2 lost connection while waiting for {phase}")


def certificate_expired(transport: Any, now: float) -> bool:
    """
    Whether the certificate the host sent on C{transport}'s TLS connection
    is outside its validity period at C{now} (OpenSSL's error says only
    "certificate verify failed"); False when it sent none.
    """
    try:
        leaf = transport.getHandle().get_peer_cert_chain()[0].to_cryptography()
    except Exception:
        return False
    return not (leaf.not_valid_before_utc.timestamp() <= now
                <= leaf.not_valid_after_utc.timestamp())


def tls_failure_type(reason: Failure | None) -> str:
    """The RFC 8460 result type of a failed TLS handshake."""
    if reason is None:
        return VALIDATION_FAILURE
    if reason.check(VerificationError):
        return CERTIFICATE_HOST_MISMATCH
    text = str(reason.value).lower()
    if "expired" in text:
        return CERTIFICATE_EXPIRED
    if "certificate verify failed" in text:
        return CERTIFICATE_NOT_TRUSTED
    return VALIDATION_FAILURE
