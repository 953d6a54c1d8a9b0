# -*- test-case-name: tests.test_mailauth_signing -*-
"""
DKIM private keys: PEM files whose key type chooses the algorithm (RSA ->
C{rsa-sha256}, Ed25519 -> C{ed25519-sha256}, RFC 8463), the public-key TXT
record to publish, and new keys for C{smtpctl dkim keygen}.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from smtpd.config.dkimkeys import key_algorithm, load_pem_key

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
ALGORITHMS = (RSA_SHA256, ED25519_SHA256)
RSA_BITS = 2048
# One character-string of a TXT record holds at most 255 octets (RFC 1035 3.3).
TXT_STRING_MAX = 255


class DKIMKeyError(ValueError):
    """A key file that is not an RSA or Ed25519 private key in PEM form."""


@dataclass(frozen=True)
class DKIMKey:
    """
    One signing key of a domain.

    @ivar selector: the DNS label under C{_domainkey} (C{s1}).
    @ivar algorithm: L{RSA_SHA256} or L{ED25519_SHA256}.
    @ivar private: the key in the form dkimpy signs with (PKCS#1 PEM for
        RSA, the base64 32-octet seed for Ed25519).
    @ivar record: the TXT record value to publish (C{v=DKIM1; k=...; p=...}).
    @ivar key: the loaded private key (cryptography), for signing with OpenSSL.
    """

    selector: str
    algorithm: str
    private: bytes
    record: str
    key: Any = field(default=None, compare=False, repr=False)


def key_from_pem(selector: str, pem: bytes) -> DKIMKey:
    """The signing key in C{pem} for C{selector}."""
    key = _load(pem)
    algorithm = _algorithm(key)
    if algorithm == RSA_SHA256:
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    else:
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        private = base64.b64encode(seed)
    return DKIMKey(selector, algorithm, private, public_record(key), key)


def load_key(selector: str, path: str) -> DKIMKey:
    """Read a key file (blocking: call at start or in a thread)."""
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise DKIMKeyError(f"cannot read {path}: {e.strerror or e}") from e
    return key_from_pem(selector, pem)


def generate_key(algorithm: str) -> bytes:
    """A new private key for C{algorithm}, as unencrypted PKCS#8 PEM."""
    if algorithm == RSA_SHA256:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    elif algorithm == ED25519_SHA256:
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DKIMKeyError(f"unknown algorithm {algorithm!r}; expected {' or '.join(ALGORITHMS)}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_record(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The DKIM key record (RFC 6376 3.6.1, RFC 8463 4) for a private key."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kind = "rsa"
    else:
        der = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        kind = "ed25519"
    return f"v=DKIM1; k={kind}; p={base64.b64encode(der).decode('ascii')}"


def txt_strings(record: str) -> list[bytes]:
    """C{record} cut into the character-strings of one TXT record."""
    data = record.encode("ascii")
    return [data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)] or [b""]


def zone_entry(selector: str, domain: str, record: str) -> str:
    """The record as a zone-file line, ready to paste (long values split in quoted strings)."""
    strings = " ".join(f'"{s.decode("ascii")}"' for s in txt_strings(record))
    return f"{selector}._domainkey.{domain}. IN TXT ( {strings} )"


def _load(pem: bytes) -> Any:
    """The private key in a PEM file; L{DKIMKeyError} with the reason otherwise."""
    try:
        return load_pem_key(pem)
    except ValueError as e:
        raise DKIMKeyError(str(e)) from e


def _algorithm(key: Any) -> str:
    """The DKIM algorithm for a loaded private key."""
    try:
        return key_algorithm(key)
    except ValueError as e:
        raise DKIMKeyError(str(e)) from e
