# -*- test-case-name: tests.test_mailauth_signing -*-
"""
DKIM signing of outgoing mail (RFC 6376, RFC 8463): every key of the From:
domain signs (dual signing with RSA and Ed25519), relaxed/relaxed, with From,
To and Subject over-signed so that a copy with one of them added fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from twisted.internet.defer import Deferred

from smtpd.mailauth.headers import from_domain, split_message
from smtpd.mailauth.keys import RSA_SHA256, DKIMKey, load_key

# RFC 6376 5.4.1: the fields a signature should cover, when present.
SIGNED_FIELDS = (
    b"from", b"sender", b"reply-to", b"subject", b"date", b"message-id", b"to", b"cc",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"content-id",
    b"content-description", b"resent-date", b"resent-from", b"resent-sender", b"resent-to",
    b"resent-cc", b"resent-message-id", b"in-reply-to", b"references", b"list-id",
    b"list-help", b"list-unsubscribe", b"list-subscribe", b"list-post", b"list-owner",
    b"list-archive",
)
# RFC 6376 8.15: named once more than they occur, so that none can be added.
OVERSIGNED_FIELDS = (b"from", b"to", b"subject")
CANONICALIZATION = (b"relaxed", b"relaxed")


def signed_fields(message: dkim.DKIM) -> list[bytes]:
    """The C{h=} list: the present fields to sign, then From, To and Subject once more."""
    present = [name.lower() for name, _ in message.headers if name.lower() in SIGNED_FIELDS]
    return present + list(OVERSIGNED_FIELDS)


class _Signature:
    """What dkimpy's signer expects back from C{pk.sign(digest)}."""

    def __init__(self, signature: bytes) -> None:
        self.signature = signature


class _OpenSSLRSA:
    """An RSA key (cryptography) that signs a SHA-256 digest with OpenSSL (PKCS#1 v1.5)."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def sign(self, digest: bytes) -> _Signature:
        """The RFC 8017 RSASSA-PKCS1-v1_5 signature of a SHA-256 C{digest}."""
        return _Signature(self.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())))


class _Signer(dkim.DKIM):
    """
    dkimpy's signer, with the RSA operation done by OpenSSL: dkimpy's own is
    Python integer arithmetic, 14 ms per signature holding the GIL; OpenSSL
    takes well under a millisecond and releases it. dkimpy signs through
    C{pk.sign(digest)} on its Ed25519 branch, whose hash (SHA-256) is the
    same as rsa-sha256's, so the RSA key is handed in on that branch; the
    signature tags (C{a=rsa-sha256}) were fixed before this point.
    """

    def __init__(self, message: bytes, rsa: _OpenSSLRSA | None) -> None:
        dkim.DKIM.__init__(self, message, linesep=b"\r\n")
        self.rsa = rsa

    def gen_header(self, fields, include_headers, canon_policy, header_name, pk,
                   standardize=False):
        """dkimpy's header generation, signing RSA with OpenSSL."""
        if self.rsa is None or self.signature_algorithm != b"rsa-sha256":
            return dkim.DKIM.gen_header(self, fields, include_headers, canon_policy,
                                        header_name, pk, standardize)
        self.signature_algorithm = b"ed25519-sha256"
        try:
            return dkim.DKIM.gen_header(self, fields, include_headers, canon_policy,
                                        header_name, self.rsa, standardize)
        finally:
            self.signature_algorithm = b"rsa-sha256"


def sign_message(message: bytes, domain: str, keys: Iterable[DKIMKey]) -> bytes:
    """
    The DKIM-Signature fields (CRLF-terminated) that every key of C{domain}
    makes for C{message} (CRLF line ends). CPU work: run it in a thread.
    """
    signatures = []
    for key in keys:
        rsa = _OpenSSLRSA(key.key) if key.algorithm == RSA_SHA256 and key.key else None
        signer = _Signer(message, rsa)
        field = signer.sign(
            key.selector.encode("ascii"),
            domain.encode("ascii"),
            key.private,
            signature_algorithm=key.algorithm.encode("ascii"),
            canonicalize=CANONICALIZATION,
            include_headers=signed_fields(signer),
        )
        signatures.append(field if field.endswith(b"\r\n") else field + b"\r\n")
    return b"".join(signatures)


class DKIMSigner:
    """
    Signs mail whose From: domain has keys, for relay or authenticated clients.

    @param keys: C{{domain: [DKIMKey, ...]}}, domains in lower case.
    @param run_blocking: C{f(callable, *args) -> Deferred} running CPU work
        in a thread pool.
    """

    def __init__(
        self,
        keys: Mapping[str, Sequence[DKIMKey]],
        run_blocking: Callable[..., Deferred],
    ) -> None:
        self.keys = {domain.lower(): tuple(k) for domain, k in keys.items() if k}
        self.run_blocking = run_blocking

    @classmethod
    def from_config(cls, config: Any, run_blocking: Callable[..., Deferred]) -> DKIMSigner:
        """
        The signer for the C{dkim} pairs of the local and alias domains of
        C{config}. Reads the key files: call it at start, not per message.
        """
        keys = {
            domain.name: [load_key(pair.selector, pair.path) for pair in domain.dkim]
            for domain in config.domains
            if domain.type in ("local", "alias") and domain.dkim
        }
        return cls(keys, run_blocking)

    def keys_for(self, message: bytes) -> tuple[str, tuple[DKIMKey, ...]] | None:
        """C{(domain, keys)} for the From: domain of C{message}, or L{None} when it has none."""
        header, _ = split_message(message)
        domain = from_domain(header)
        if domain is None or domain not in self.keys:
            return None
        return domain, self.keys[domain]

    async def signature(self, message: bytes, trusted: bool) -> bytes:
        """
        The DKIM-Signature fields to prepend to C{message} (CRLF line ends),
        or C{b""}: when the client is neither authenticated nor a relay client
        (C{trusted} false), or the From: domain has no key.
        """
        if not trusted:
            return b""
        found = self.keys_for(message)
        if found is None:
            return b""
        domain, keys = found
        return await self.run_blocking(sign_message, message, domain, keys)
