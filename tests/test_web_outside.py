"""
The site of an [http] endpoint beyond loopback, served for real: the factory
the server makes for C{tcp:0:interface=0.0.0.0} is bound here on 127.0.0.1
(tests never listen beyond loopback) and asked over TLS, without and with a
login.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.request

from twisted.internet import reactor
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from smtpd.admin.webclient import pinned_context
from smtpd.web.site import WebService
from tests import support
from tests.admin_support import OPERATOR, PASSWORD
from tests.web_support import start_web_server


def fetch(url: str, cert: bytes, headers: dict[str, str] | None = None):
    """GET C{url} over TLS trusting C{cert}: C{(status, final url, body)} (blocking)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20, context=pinned_context(cert)) as r:
            return r.status, r.url, r.read()
    except urllib.error.HTTPError as e:
        return e.code, url, e.read()


class OutsideTests(unittest.TestCase):
    """An endpoint beyond loopback asks for a login, over TLS, whatever [http] login says."""

    timeout = 30

    async def test_refused_without_login(self):
        """
        Without credentials the page sends to the login form and the API and
        metrics answer 401; with an operator's basic credentials the API reads.
        """
        server = start_web_server(self, 9)
        self.assertFalse(server.config.http.login)
        key, cert = support.CertificateAuthority().server_pem("mx.local.test")
        options = PrivateCertificate.loadPEM(key + cert).options()
        config = dataclasses.replace(server.config, http=dataclasses.replace(
            server.config.http, listen=("tcp:0:interface=0.0.0.0",)))
        web = WebService(config, server.top.admin.server, reactor, deferToThread, options, [])
        [(_, factory)] = web.listening
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"https://127.0.0.1:{port.getHost().port}"

        status, final, body = await deferToThread(fetch, url + "/", cert)
        self.assertEqual((status, final), (200, url + "/login"))
        self.assertIn(b'name="password"', body)
        for path in ("/api/status", "/api/sessions", "/metrics"):
            status, _, _ = await deferToThread(fetch, url + path, cert)
            self.assertEqual(status, 401, path)
        status, final, _ = await deferToThread(fetch, url + "/queue", cert)
        self.assertEqual((status, final), (200, url + "/login"))
        token = base64.b64encode(f"{OPERATOR}:{PASSWORD}".encode()).decode()
        status, _, body = await deferToThread(fetch, url + "/api/status", cert,
                                              {"authorization": f"Basic {token}"})
        self.assertEqual((status, json.loads(body)["sessions"]), (200, 0))
