# -*- test-case-name: tests.test_client -*-
"""
Setting an outbound session up, after the greeting: EHLO (or HELO), STARTTLS
per the TLS policy (RFC 3207), and AUTH PLAIN or LOGIN toward a smart host
(RFC 4954). Each step fails with the L{SessionError} that says why.
"""

from __future__ import annotations

from base64 import b64encode
from typing import Any

from smtpd.delivery.tlsoutcome import STARTTLS_NOT_SUPPORTED
from smtpd.delivery.wire import SessionError, parse_extensions, refusal

# The levels that refuse to go on without TLS (verify and dane also check the certificate).
REQUIRED = ("encrypt", "verify", "dane")


async def set_up(client: Any, tls: str, tls_options: Any, username: str,
                 password: str) -> None:
    """
    Everything between the greeting and the first transaction on C{client}
    (a L{smtpd.delivery.client.RelayClient}): EHLO, STARTTLS when offered
    (required for C{encrypt}, C{verify} and C{dane}) and EHLO again, then
    the client's own check of the peer's certificate (DANE), AUTH when a
    C{username} is set.
    """
    await hello(client, tls, username)
    if tls != "none":
        if "STARTTLS" in client.extensions:
            await start_tls(client, tls_options)
            await hello(client, tls, username)
            client.verify_peer()
        elif tls in REQUIRED:
            raise tls_required()
    if username:
        await authenticate(client, username, password)


async def hello(client: Any, tls: str, username: str) -> None:
    """
    EHLO; a 5xx falls back to HELO unless TLS or AUTH is required (both
    need ESMTP); a 4xx means this host cannot take mail now.
    """
    reply = await client.command(b"EHLO " + client.helo)
    if 200 <= reply.code < 300:
        client.extensions = parse_extensions(reply.lines)
        return
    if not 500 <= reply.code < 600:
        raise refusal(reply.code, reply.text)
    if tls in REQUIRED and not client.secure:
        raise tls_required()
    if username:
        raise auth_required()
    reply = await client.command(b"HELO " + client.helo)
    if not 200 <= reply.code < 300:
        raise refusal(reply.code, reply.text)
    client.extensions = {}

async def start_tls(client: Any, tls_options: Any) -> None:
    """STARTTLS, then the handshake (a failure there loses the connection: 4.7.5)."""
    reply = await client.command(b"STARTTLS")
    if reply.code != 220:
        raise SessionError(451, "4.7.5", f"451 4.7.5 STARTTLS refused: {reply.text}",
                           tls_failure=True, tls_result=STARTTLS_NOT_SUPPORTED)
    try:
        client.transport.startTLS(tls_options)
    except Exception as e:
        raise SessionError(451, "4.7.5", f"451 4.7.5 cannot start TLS: {e}",
                           tls_failure=True) from None
    client.secure = True

async def authenticate(client: Any, username: str, password: str) -> None:
    """
    AUTH PLAIN, else LOGIN. Refused credentials are a configuration
    problem, so temporary, and tried once (no second guess counting
    against the host's failure limit).
    """
    mechanisms = client.extensions.get("AUTH", "").upper().split()
    user, password = username.encode("utf-8"), password.encode("utf-8")
    if "PLAIN" in mechanisms:
        token = b64encode(b"\0" + user + b"\0" + password)
        reply = await client.command(b"AUTH PLAIN " + token, "reply to AUTH")
    elif "LOGIN" in mechanisms:
        reply = await client.command(b"AUTH LOGIN", "reply to AUTH")
        for secret in (user, password):
            if reply.code != 334:
                break
            reply = await client.command(b64encode(secret), "reply to AUTH")
    else:
        raise auth_required()
    if reply.code != 235:
        raise SessionError(451, "4.7.0", f"451 4.7.0 authentication failed: {reply.text}")


def tls_required() -> SessionError:
    """TLS is required and the host does not offer it."""
    return SessionError(451, "4.7.5", "451 4.7.5 TLS is required, but was not offered by host",
                        tls_result=STARTTLS_NOT_SUPPORTED)


def auth_required() -> SessionError:
    """AUTH is required and the host offers neither PLAIN nor LOGIN."""
    return SessionError(451, "4.7.0",
                        "451 4.7.0 AUTH is required, but the host offers no PLAIN or LOGIN")
