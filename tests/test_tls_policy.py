"""
Tests for the TLS policy of L{smtpd.util.tls}: the minimum version, the cipher
list, and certificates re-read on reload, over real loopback handshakes.
"""

from __future__ import annotations

import os
import shutil

from twisted.internet import defer, protocol, reactor
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from smtpd.config import TLSConfig
from smtpd.util.tls import ReloadableTLS, ensure_certificate, options_for


class _Hello(protocol.Protocol):
    """Says hello (server side)."""

    def connectionMade(self) -> None:
        self.transport.write(b"hello")


class _Client(protocol.Protocol):
    """Records the first data, the TLS version and the peer certificate."""

    def __init__(self) -> None:
        self.done: defer.Deferred = defer.Deferred()
        self.result: dict = {}

    def dataReceived(self, data: bytes) -> None:
        connection = self.transport.getHandle()
        self.result = {
            "data": data,
            "version": connection.get_protocol_version_name(),
            "cipher": connection.get_cipher_name(),
            "serial": self.transport.getPeerCertificate().get_serial_number(),
        }
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.result.setdefault("reason", reason)
        self.done.callback(self.result)


class TLSPolicyTests(unittest.TestCase):
    """What the server's TLS options accept."""

    def section(self, **changes) -> TLSConfig:
        folder = os.path.abspath(self.mktemp())
        cert, key = os.path.join(folder, "c.pem"), os.path.join(folder, "c.key")
        ensure_certificate(cert, key, "localhost", 1.7e9)
        return TLSConfig(certificate=cert, key=key, **changes)

    def serve(self, options) -> int:
        factory = TLSMemoryBIOFactory(options, False, protocol.Factory.forProtocol(_Hello))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def handshake(self, port: int, **client_options) -> dict:
        client = _Client()
        options = CertificateOptions(**client_options)
        factory = TLSMemoryBIOFactory(options, True, protocol.ClientFactory.forProtocol(lambda: client))
        reactor.connectTCP("127.0.0.1", port, factory)
        return await client.done

    async def test_default_minimum_is_tls12(self):
        """By default TLS 1.2 clients are served, and 1.3 is negotiated when both can."""
        port = self.serve(options_for(self.section()))
        result = await self.handshake(port, lowerMaximumSecurityTo=TLSVersion.TLSv1_2)
        self.assertEqual((result["data"], result["version"]), (b"hello", "TLSv1.2"))
        result = await self.handshake(port)
        self.assertEqual(result["version"], "TLSv1.3")

    async def test_tls11_refused(self):
        """A client that offers at most TLS 1.1 gets no session."""
        port = self.serve(options_for(self.section()))
        result = await self.handshake(
            port,
            insecurelyLowerMinimumTo=TLSVersion.TLSv1_0,
            lowerMaximumSecurityTo=TLSVersion.TLSv1_1,
        )
        self.assertNotIn("data", result)

    async def test_minimum_13(self):
        """min_version = 1.3 refuses a TLS 1.2 client."""
        port = self.serve(options_for(self.section(min_version="1.3")))
        result = await self.handshake(port, lowerMaximumSecurityTo=TLSVersion.TLSv1_2)
        self.assertNotIn("data", result)
        self.assertEqual((await self.handshake(port))["version"], "TLSv1.3")

    async def test_ciphers(self):
        """The cipher string limits the TLS 1.2 ciphers."""
        port = self.serve(options_for(self.section(ciphers="ECDHE+CHACHA20")))
        result = await self.handshake(port, lowerMaximumSecurityTo=TLSVersion.TLSv1_2)
        self.assertIn("CHACHA20", result["cipher"])

    async def test_reload_new_certificate(self):
        """
        After reload, new connections get the renewed certificate; a broken
        renewal is one error line and the old certificate stays.
        """
        section = self.section()
        options = ReloadableTLS(options_for(section))
        port = self.serve(options)
        first = (await self.handshake(port))["serial"]
        os.remove(section.certificate)
        ensure_certificate(section.certificate, section.key, "localhost", 1.8e9)
        self.assertEqual(options.reload(section), [])
        second = (await self.handshake(port))["serial"]
        self.assertNotEqual(first, second)
        shutil.copy(__file__, section.certificate)
        problems = options.reload(section)
        self.assertEqual(len(problems), 1)
        self.assertIn("not a PEM certificate", problems[0])
        self.assertEqual((await self.handshake(port))["serial"], second)
