# -*- test-case-name: tests.test_mailauth_checks -*-
"""
DKIM verification (RFC 6376) of every signature of an incoming message.

The key records are fetched first, asynchronously, through the injected
resolver; dkimpy then verifies in a thread with a C{dnsfunc} that answers
from those prefetched records, so its own resolver is never used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value
from twisted.internet.defer import Deferred, gatherResults

from smtpd.mailauth.headers import header_fields, split_message
from smtpd.mailauth.lookup import DNSLookup, TemporaryLookupError

# A message with more signatures than this has the rest ignored (a CPU-cost bound).
MAX_SIGNATURES = 8


@dataclass(frozen=True)
class DKIMResult:
    """
    The verdict on one DKIM-Signature field.

    @ivar result: pass, fail, neutral, temperror or permerror (RFC 8601 2.7.1).
    @ivar domain: the C{d=} tag (lower case), or "".
    @ivar selector: the C{s=} tag, or "".
    @ivar algorithm: the C{a=} tag, or "".
    @ivar b: the first 8 characters of C{b=} (RFC 6008), telling signatures apart.
    @ivar reason: why it did not pass, for the header comment.
    """

    result: str
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    b: str = ""
    reason: str = ""


@dataclass(frozen=True)
class _Signature:
    """The tags of one signature needed before verifying it."""

    domain: str
    selector: str
    algorithm: str
    b: str

    @property
    def key_name(self) -> str:
        """Where its key is published."""
        return f"{self.selector}._domainkey.{self.domain}".lower()


def signatures(message: bytes) -> list[_Signature | None]:
    """The signatures of C{message} in order; L{None} for one whose tags do not parse."""
    header, _ = split_message(message)
    found: list[_Signature | None] = []
    for field in header_fields(header):
        if field.name.lower() != b"dkim-signature":
            continue
        try:
            tags = parse_tag_value(field.raw.split(b":", 1)[1])
            domain = tags[b"d"].decode("ascii").lower()
            selector = tags[b"s"].decode("ascii")
            algorithm = tags.get(b"a", b"").decode("ascii")
            b = b"".join(tags.get(b"b", b"").split())[:8].decode("ascii")
        except (InvalidTagValueList, KeyError, UnicodeDecodeError):
            found.append(None)
            continue
        found.append(_Signature(domain, selector, algorithm, b))
    return found[:MAX_SIGNATURES]


class DKIMVerifier:
    """
    Verifies the signatures of incoming messages.

    @param lookup: the L{DNSLookup} key records come from.
    @param run_blocking: C{f(callable, *args) -> Deferred} running dkimpy in a thread pool.
    """

    def __init__(self, lookup: DNSLookup, run_blocking: Callable[..., Deferred]) -> None:
        self.lookup = lookup
        self.run_blocking = run_blocking

    async def verify(self, message: bytes) -> list[DKIMResult]:
        """One L{DKIMResult} per signature of C{message} (CRLF line ends); [] when unsigned."""
        found = signatures(message)
        if not found:
            return []
        names = sorted({s.key_name for s in found if s is not None})
        keys = dict(zip(names, await gatherResults([
            Deferred.fromCoroutine(self._key(name)) for name in names
        ], consumeErrors=True)))
        return await self.run_blocking(verify_all, message, found, keys)

    async def _key(self, name: str) -> bytes | None | TemporaryLookupError:
        """The key record at C{name}: bytes, L{None} when absent, or the temporary error."""
        try:
            records = await self.lookup.txt(name)
        except TemporaryLookupError as e:
            return e
        return records[0] if records else None


def verify_all(
    message: bytes,
    found: list[_Signature | None],
    keys: dict[str, bytes | None | TemporaryLookupError],
) -> list[DKIMResult]:
    """Verify each signature with the prefetched keys (CPU work: run in a thread)."""
    verifier = dkim.DKIM(message)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's key lookup, answered from the prefetched records."""
        key = keys.get(name.decode("ascii", "replace").rstrip(".").lower())
        return key if isinstance(key, bytes) else None

    return [_verify_one(verifier, i, s, keys, dnsfunc) for i, s in enumerate(found)]


def _verify_one(verifier, index, sig, keys, dnsfunc) -> DKIMResult:
    """The verdict on signature C{index}."""
    if sig is None:
        return DKIMResult("permerror", reason="malformed signature")
    tags = dict(domain=sig.domain, selector=sig.selector, algorithm=sig.algorithm, b=sig.b)
    key = keys.get(sig.key_name)
    if isinstance(key, TemporaryLookupError):
        return DKIMResult("temperror", reason="key lookup failed", **tags)
    if key is None:
        return DKIMResult("permerror", reason="no key published", **tags)
    try:
        ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
    except dkim.ValidationError as e:
        return DKIMResult("fail", reason=_reason(e), **tags)
    except dkim.DKIMException as e:
        return DKIMResult("permerror", reason=_reason(e), **tags)
    if ok:
        return DKIMResult("pass", **tags)
    return DKIMResult("fail", reason="signature did not verify", **tags)


def _reason(e: Exception) -> str:
    """A header-comment-safe reason: no parentheses, no control characters, short."""
    text = "".join(c for c in str(e) if c.isprintable() and c not in "()\\")
    return text.split(" (")[0][:60]
