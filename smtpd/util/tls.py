# -*- test-case-name: tests.test_tls -*-
"""
The server's TLS certificate: a self-signed one created on first start when
none is configured, and the pyOpenSSL options that STARTTLS and implicit-TLS
listeners use.
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from zope.interface import implementer

from smtpd.util.durable import fsync_directory, replace_file

VALIDITY = datetime.timedelta(days=3650)
BACKDATE = datetime.timedelta(days=1)


class TLSError(Exception):
    """The certificate or key cannot be used; C{str()} is one line saying why."""


def ensure_certificate(
    cert_path: str, key_path: str, hostname: str, clock_seconds: float
) -> bool:
    """
    Make sure a certificate and its private key exist at C{cert_path} and
    C{key_path}. When either is missing, create a self-signed RSA-2048
    certificate for C{hostname} (subject CN and DNS subjectAltName), valid from
    a day before C{clock_seconds} for ten years; an existing key is kept and
    certified, an existing certificate is never replaced.

    @return: True when files were written, False when both already existed.
    @raise TLSError: when the certificate exists without its key, or an
        existing key cannot be read, or the files cannot be written.
    """
    have_cert, have_key = os.path.exists(cert_path), os.path.exists(key_path)
    if have_cert and have_key:
        return False
    if have_cert:
        raise TLSError(
            f"{cert_path} exists but its private key {key_path} does not; "
            "restore the key or remove the certificate to get a new self-signed one"
        )
    try:
        key = _read_key(key_path) if have_key else _new_key()
        certificate = _self_signed(key, hostname, clock_seconds)
        if not have_key:
            _write_atomically(key_path, _key_pem(key), 0o600)
        _write_atomically(
            cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644
        )
    except OSError as e:
        raise TLSError(f"cannot write {e.filename or cert_path}: {e.strerror or e}") from None
    return True


def _new_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-2048 private key (the widest client compatibility)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: PrivateKeyTypes) -> bytes:
    """C{key} as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _self_signed(
    key: PrivateKeyTypes, hostname: str, clock_seconds: float
) -> x509.Certificate:
    """A self-signed server certificate for C{hostname}."""
    # A common name is at most 64 characters (RFC 5280); the SAN carries the
    # name that clients check in any case.
    cn = [x509.NameAttribute(NameOID.COMMON_NAME, hostname)] if len(hostname) <= 64 else []
    name = x509.Name(cn)
    now = datetime.datetime.fromtimestamp(clock_seconds, datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[union-attr]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )


def _write_atomically(path: str, data: bytes, mode: int) -> None:
    """
    Write C{data} to C{path} with permissions C{mode}, durably: the queue's
    temporary file, fsync and rename, then the folder fsync'd.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    replace_file(path, data, mode)
    fsync_directory(folder)


def _read_file(path: str, what: str) -> bytes:
    """The bytes of C{path}, or L{TLSError} naming C{what} it should hold."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSError(f"cannot read the {what} {path}: {e.strerror or e}") from None


def _read_key(path: str) -> PrivateKeyTypes:
    """The unencrypted PEM private key in C{path}."""
    try:
        return serialization.load_pem_private_key(_read_file(path, "private key"), None)
    except (ValueError, TypeError) as e:
        raise TLSError(
            f"{path} is not an unencrypted PEM private key ({_first_line(e)})"
        ) from None


def _read_certificates(path: str) -> list[x509.Certificate]:
    """The PEM certificates in C{path}: the server's first, then its chain."""
    try:
        certificates = x509.load_pem_x509_certificates(_read_file(path, "certificate"))
    except ValueError as e:
        raise TLSError(f"{path} is not a PEM certificate ({_first_line(e)})") from None
    return certificates


def _first_line(error: Exception) -> str:
    """The first line of an exception's message, for a one-line error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _public_bytes(key) -> bytes:
    """A public key in a form two keys can be compared by."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


MIN_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


def server_tls_options(
    cert_path: str, key_path: str, min_version: str = "1.2", ciphers: str = ""
) -> CertificateOptions:
    """
    TLS options for the server side of STARTTLS and implicit TLS: the first
    certificate of C{cert_path} with any further ones as its chain, the key of
    C{key_path}, TLS C{min_version} (C{"1.2"} or C{"1.3"}) at least, and the
    OpenSSL cipher string C{ciphers} for TLS 1.2 (empty: Twisted's defaults).

    @raise TLSError: when a file cannot be read or parsed, the key is not
        the certificate's, or no cipher is left.
    """
    certificates = _read_certificates(cert_path)
    key = _read_key(key_path)
    if _public_bytes(certificates[0].public_key()) != _public_bytes(key.public_key()):
        raise TLSError(f"the private key {key_path} does not belong to the certificate {cert_path}")
    try:
        options = CertificateOptions(
            privateKey=PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            certificate=X509.from_cryptography(certificates[0]),
            extraCertChain=[X509.from_cryptography(c) for c in certificates[1:]],
            raiseMinimumTo=MIN_VERSIONS[min_version],
            **_cipher_option(ciphers),
        )
        options.getContext()
    except (SSL.Error, ValueError, TypeError) as e:
        raise TLSError(
            f"cannot use {cert_path} with {key_path}: {_first_line(e)}"
        ) from None
    return options


def _cipher_option(ciphers: str) -> dict:
    """The C{acceptableCiphers} argument for a cipher string (none when empty)."""
    if not ciphers:
        return {}
    return {"acceptableCiphers": AcceptableCiphers.fromOpenSSLCipherString(ciphers)}


def options_for(section) -> CertificateOptions:
    """
    L{server_tls_options} for a C{[tls]} section (anything with C{certificate},
    C{key}, C{min_version} and C{ciphers}).

    @raise TLSError: as L{server_tls_options}.
    """
    return server_tls_options(
        section.certificate, section.key, section.min_version, section.ciphers
    )


@implementer(IOpenSSLContextFactory)
class ReloadableTLS:
    """
    Server TLS options that can be replaced while listening: STARTTLS and
    implicit-TLS listeners ask for a context per connection, so a renewed
    certificate (an ACME client's) is used from the next connection on.
    """

    def __init__(self, options: CertificateOptions):
        self.options = options

    def getContext(self) -> SSL.Context:
        """The OpenSSL context of the current options."""
        return self.options.getContext()

    def reload(self, section) -> list[str]:
        """
        Re-read certificate and key of the C{[tls]} C{section} and use them
        from now on; the problems, one line each (the old options stay then).
        """
        try:
            self.options = options_for(section)
        except TLSError as e:
            return [f"[tls] {e}"]
        return []
