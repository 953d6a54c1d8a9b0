# -*- test-case-name: tests.test_mailauth_arc -*-
"""
ARC (RFC 8617): verify the chain of an incoming message, recorded as
C{arc=} in our Authentication-Results, and seal a message we pass on (a
forwarding or list host) so that the next receiver can trust our results.

Like DKIM verification, the keys of every ARC-Seal and ARC-Message-Signature
are fetched first through the injected resolver; dkimpy then works in a
thread from those records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value
from twisted.internet.defer import Deferred, gatherResults

from smtpd.mailauth.headers import header_fields, split_message
from smtpd.mailauth.keys import RSA_SHA256, DKIMKey, load_key
from smtpd.mailauth.lookup import DNSLookup, TemporaryLookupError

ARC_FIELDS = (b"arc-seal", b"arc-message-signature")
# RFC 8617 5.1.1.1: a chain longer than 50 sets is invalid; fetch no more keys than that.
MAX_KEYS = 2 * 50


@dataclass(frozen=True)
class ARCResult:
    """
    The chain validation status of an incoming message.

    @ivar result: C{none} (no ARC sets), C{pass} or C{fail} (RFC 8617 4.4).
    @ivar instances: how many ARC sets the message carries.
    @ivar reason: why it failed, for the header comment.
    """

    result: str
    instances: int = 0
    reason: str = ""


def key_names(message: bytes) -> list[str]:
    """Where the keys of the message's ARC-Seal and ARC-Message-Signature fields are published."""
    header, _ = split_message(message)
    names = []
    for field in header_fields(header):
        if field.name.lower() not in ARC_FIELDS:
            continue
        try:
            tags = parse_tag_value(field.raw.split(b":", 1)[1])
            name = f"{tags[b's'].decode('ascii')}._domainkey.{tags[b'd'].decode('ascii')}"
        except (InvalidTagValueList, KeyError, UnicodeDecodeError):
            continue
        if name.lower() not in names:
            names.append(name.lower())
    return names[:MAX_KEYS]


class ARCVerifier:
    """
    Validates ARC chains.

    @param lookup: the L{DNSLookup} keys come from.
    @param run_blocking: C{f(callable, *args) -> Deferred} running dkimpy in a thread pool.
    """

    def __init__(self, lookup: DNSLookup, run_blocking: Callable[..., Deferred]) -> None:
        self.lookup = lookup
        self.run_blocking = run_blocking

    async def verify(self, message: bytes) -> ARCResult:
        """The chain validation status of C{message} (CRLF line ends)."""
        names = key_names(message)
        if not names:
            return ARCResult("none")
        records = await gatherResults(
            [Deferred.fromCoroutine(self._key(n)) for n in names], consumeErrors=True
        )
        keys = dict(zip(names, records))
        if any(isinstance(k, TemporaryLookupError) for k in keys.values()):
            return ARCResult("fail", reason="temporary DNS error fetching a key")
        return await self.run_blocking(verify_chain, message, keys)

    async def _key(self, name: str) -> bytes | None | TemporaryLookupError:
        try:
            records = await self.lookup.txt(name)
        except TemporaryLookupError as e:
            return e
        return records[0] if records else None


def verify_chain(message: bytes, keys: dict[str, bytes | None]) -> ARCResult:
    """dkimpy's chain validation with prefetched keys (CPU work: run in a thread)."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's key lookup, answered from the prefetched records."""
        return keys.get(name.decode("ascii", "replace").rstrip(".").lower())

    arc = dkim.ARC(message)
    try:
        status, sets, reason = arc.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as e:
        return ARCResult("fail", reason=str(e)[:60])
    instances = max((s.get("instance", 0) for s in sets), default=0)
    if status == dkim.CV_Pass:
        return ARCResult("pass", instances)
    if status == dkim.CV_None:
        return ARCResult("none")
    return ARCResult("fail", instances, "".join(c for c in reason if c not in "()\\")[:60])


def seal_message(message: bytes, domain: str, key: DKIMKey, authserv_id: str) -> bytes:
    """
    The ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results,
    CRLF-terminated) for C{message}, which must carry our Authentication-Results
    field with its C{arc=} result; C{b""} when it does not. CPU work.
    """
    arc = dkim.ARC(message, signature_algorithm=key.algorithm.encode("ascii"), linesep=b"\r\n")
    fields = arc.sign(
        key.selector.encode("ascii"),
        domain.encode("ascii"),
        key.private,
        authserv_id.encode("ascii"),
        include_headers=[n for n, _ in arc.headers if n.lower() in _SEALED_FIELDS] or None,
    )
    return b"".join(f if f.endswith(b"\r\n") else f + b"\r\n" for f in fields)


_SEALED_FIELDS = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
    b"content-type", b"content-transfer-encoding", b"in-reply-to", b"references",
    b"list-id", b"list-post", b"list-unsubscribe",
)


class ARCSealer:
    """
    Seals messages this server passes on.

    @param domain: the sealing domain (C{d=}).
    @param key: an RSA L{DKIMKey} (RFC 8617 allows rsa-sha256 only).
    @param authserv_id: whose Authentication-Results the seal vouches for.
    @param run_blocking: C{f(callable, *args) -> Deferred} on a thread pool.
    """

    def __init__(self, domain: str, key: DKIMKey, authserv_id: str,
                 run_blocking: Callable[..., Deferred]) -> None:
        if key.algorithm != RSA_SHA256:
            raise ValueError("ARC sealing needs an RSA key (RFC 8617 3.3: rsa-sha256)")
        self.domain = domain
        self.key = key
        self.authserv_id = authserv_id
        self.run_blocking = run_blocking

    @classmethod
    def from_config(cls, config: Any, run_blocking: Callable[..., Deferred]) -> ARCSealer | None:
        """The sealer of C{[checks] arc_seal}, or L{None} when it is empty. Reads the key file."""
        pair = config.checks.arc_seal
        if pair is None:
            return None
        key = load_key(pair.selector, pair.path)
        return cls(config.arc_domain, key, config.authserv_id, run_blocking)

    async def seal(self, message: bytes) -> bytes:
        """The ARC set to prepend to C{message}, or C{b""} when it has no results of ours."""
        return await self.run_blocking(
            seal_message, message, self.domain, self.key, self.authserv_id
        )
