"""
Tests for L{smtpd.tls}: the self-signed certificate made on first start and
the server TLS options, including a real handshake over loopback.
"""

from __future__ import annotations

import datetime
import os
import stat

from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.internet import defer, error, protocol
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.trial import unittest

from smtpd.util.tls import TLSError, ensure_certificate, server_tls_options

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOSTNAME = "mail.example.test"


def _load(path: str) -> x509.Certificate:
    """The (first) certificate in a PEM file."""
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def _content(path: str) -> bytes:
    """The bytes of a file."""
    with open(path, "rb") as f:
        return f.read()


class EnsureCertificateTests(unittest.TestCase):
    """L{ensure_certificate} creates a self-signed pair once, then leaves it alone."""

    def setUp(self) -> None:
        self.folder = self.mktemp()
        self.cert = os.path.join(self.folder, "etc", "tls", "smtpd.pem")
        self.key = os.path.join(self.folder, "etc", "tls", "smtpd.key")

    def test_creates(self) -> None:
        """
        Missing files are created, parent folders included: a certificate
        naming the host in CN and subjectAltName, and a key only its owner reads.
        """
        self.assertTrue(ensure_certificate(self.cert, self.key, HOSTNAME, NOW))
        certificate = _load(self.cert)
        cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.assertEqual([a.value for a in cn], [HOSTNAME])
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), [HOSTNAME])
        self.assertEqual(certificate.issuer, certificate.subject)
        self.assertEqual(stat.S_IMODE(os.stat(self.key).st_mode), 0o600)
        self.assertIn(b"PRIVATE KEY", _content(self.key))

    def test_validity(self) -> None:
        """The certificate is valid from a day before the clock for ten years."""
        ensure_certificate(self.cert, self.key, HOSTNAME, NOW)
        certificate = _load(self.cert)
        now = datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc)
        self.assertEqual(certificate.not_valid_before_utc, now - datetime.timedelta(days=1))
        self.assertEqual(certificate.not_valid_after_utc, now + datetime.timedelta(days=3650))

    def test_no_temporary_files_left(self) -> None:
        """Only the certificate and the key remain in the folder."""
        ensure_certificate(self.cert, self.key, HOSTNAME, NOW)
        self.assertEqual(
            sorted(os.listdir(os.path.dirname(self.cert))), ["smtpd.key", "smtpd.pem"]
        )

    def test_idempotent(self) -> None:
        """A second call writes nothing and says so."""
        ensure_certificate(self.cert, self.key, HOSTNAME, NOW)
        before = _content(self.cert), _content(self.key)
        self.assertFalse(ensure_certificate(self.cert, self.key, "other.example", NOW + 5))
        self.assertEqual((_content(self.cert), _content(self.key)), before)

    def test_existing_key_is_certified(self) -> None:
        """
        When only the key exists it is kept, and the new certificate is for it.
        """
        ensure_certificate(self.cert, self.key, HOSTNAME, NOW)
        key = _content(self.key)
        os.unlink(self.cert)
        self.assertTrue(ensure_certificate(self.cert, self.key, HOSTNAME, NOW))
        self.assertEqual(_content(self.key), key)
        server_tls_options(self.cert, self.key)

    def test_certificate_without_key(self) -> None:
        """
        A certificate whose key is missing is never replaced: L{TLSError} says
        what to do, and the certificate is untouched.
        """
        ensure_certificate(self.cert, self.key, HOSTNAME, NOW)
        certificate = _content(self.cert)
        os.unlink(self.key)
        error = self.assertRaises(
            TLSError, ensure_certificate, self.cert, self.key, HOSTNAME, NOW
        )
        self.assertIn(self.key, str(error))
        self.assertEqual(_content(self.cert), certificate)
        self.assertFalse(os.path.exists(self.key))

    def test_unwritable_folder(self) -> None:
        """A folder that cannot be created gives a one-line L{TLSError}."""
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a folder")
        cert = os.path.join(blocker, "smtpd.pem")
        key = os.path.join(blocker, "smtpd.key")
        error = self.assertRaises(TLSError, ensure_certificate, cert, key, HOSTNAME, NOW)
        self.assertNotIn("\n", str(error))


class ServerOptionsTests(unittest.TestCase):
    """L{server_tls_options} loads a matching pair or says in one line why not."""

    def pair(self, hostname: str = HOSTNAME) -> tuple[str, str]:
        """A freshly created certificate and key."""
        folder = self.mktemp()
        cert, key = os.path.join(folder, "c.pem"), os.path.join(folder, "k.pem")
        ensure_certificate(cert, key, hostname, NOW)
        return cert, key

    def assertTLSError(self, cert: str, key: str, *fragments: str) -> None:
        """L{server_tls_options} fails with a one-line message holding C{fragments}."""
        error = self.assertRaises(TLSError, server_tls_options, cert, key)
        self.assertNotIn("\n", str(error))
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_options(self) -> None:
        """A matching pair gives L{CertificateOptions} with a usable context."""
        options = server_tls_options(*self.pair())
        self.assertIsInstance(options, CertificateOptions)
        self.assertIsNotNone(options.getContext())

    def test_mismatch(self) -> None:
        """A key that is not the certificate's is refused, naming both files."""
        cert, _ = self.pair()
        _, other_key = self.pair()
        self.assertTLSError(cert, other_key, cert, other_key, "does not belong")

    def test_missing_files(self) -> None:
        """Missing files are named in the error."""
        cert, key = self.pair()
        self.assertTLSError(cert + ".gone", key, cert + ".gone", "cannot read")
        self.assertTLSError(cert, key + ".gone", key + ".gone", "cannot read")

    def test_garbage(self) -> None:
        """Files that are not PEM are refused, naming the file."""
        cert, key = self.pair()
        garbage = self.mktemp()
        with open(garbage, "wb") as f:
            f.write(b"not a pem file\n")
        self.assertTLSError(garbage, key, garbage, "not a PEM certificate")
        self.assertTLSError(cert, garbage, garbage, "not an unencrypted PEM private key")

    def test_chain(self) -> None:
        """Certificates after the first one in the file are sent as the chain."""
        cert, key = self.pair()
        other_cert, _ = self.pair("ca.example.test")
        with open(cert, "ab") as f:
            f.write(_content(other_cert))
        options = server_tls_options(cert, key)
        self.assertEqual(len(options.extraCertChain), 1)


class _Echo(protocol.Protocol):
    """Sends back what it receives; fires C{factory.lost} when closed."""

    def dataReceived(self, data: bytes) -> None:
        """Echo C{data}."""
        self.transport.write(data)

    def connectionLost(self, reason=None) -> None:
        """Tell the test the server side is closed."""
        self.factory.lost.callback(None)


class _Ping(protocol.Protocol):
    """Sends a ping; records the reply and the peer certificate, then closes."""

    def connectionMade(self) -> None:
        """Send the ping (TLS buffers it until the handshake is done)."""
        self.transport.write(b"ping")

    def dataReceived(self, data: bytes) -> None:
        """Record the echo and the server's certificate, then close."""
        self.factory.reply = data
        self.factory.peer = self.transport.getPeerCertificate()
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        """Record why the connection ended and tell the test."""
        self.factory.reason = reason
        self.factory.lost.callback(None)


class HandshakeTests(unittest.TestCase):
    """The options serve real TLS over loopback."""

    async def exchange(self, hostname: str) -> protocol.ClientFactory:
        """
        Serve the certificate for C{HOSTNAME} on 127.0.0.1 and connect a client
        that trusts that certificate and expects C{hostname}; everything is
        closed when this returns.
        """
        from twisted.internet import reactor

        folder = self.mktemp()
        cert, key = os.path.join(folder, "c.pem"), os.path.join(folder, "k.pem")
        ensure_certificate(cert, key, HOSTNAME, NOW)
        server = protocol.Factory.forProtocol(_Echo)
        server.lost = defer.Deferred()
        port = reactor.listenSSL(0, server, server_tls_options(cert, key), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = protocol.ClientFactory.forProtocol(_Ping)
        client.lost, client.reply, client.peer = defer.Deferred(), None, None
        trust = Certificate.loadPEM(_content(cert))
        reactor.connectSSL(
            "127.0.0.1",
            port.getHost().port,
            client,
            optionsForClientTLS(hostname, trustRoot=trust),
        )
        await client.lost
        await server.lost
        return client

    def test_handshake(self) -> None:
        """A client trusting the certificate completes TLS and gets its echo."""

        async def run() -> None:
            client = await self.exchange(HOSTNAME)
            self.assertEqual(client.reply, b"ping")
            client.reason.trap(error.ConnectionDone)
            self.assertEqual(client.peer.get_subject().commonName, HOSTNAME)

        return defer.Deferred.fromCoroutine(run())

    def test_wrong_name_refused(self) -> None:
        """A client expecting another host name refuses the certificate."""

        async def run() -> None:
            client = await self.exchange("other.example.test")
            self.assertIsNone(client.reply)
            self.assertIn("other.example.test", str(client.reason.value))

        return defer.Deferred.fromCoroutine(run())
