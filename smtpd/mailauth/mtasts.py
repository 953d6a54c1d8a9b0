# -*- test-case-name: tests.test_mailauth_mtasts -*-
"""
MTA-STS (RFC 8461) for the relay: the C{_mta-sts} TXT record, the policy
fetched over verified HTTPS from C{https://mta-sts.DOMAIN/.well-known/mta-sts.txt}
(no redirects, at most 64 KiB), kept on disk by id and C{max_age} so that it
survives a restart, and MX host matching.

The relay asks L{MTASTS.policy} for the recipient domain; with mode
C{enforce} it delivers only to MX hosts that L{STSPolicy.allows} over
verified TLS and defers otherwise; with C{testing} it only logs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import treq
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from smtpd.mailauth.lookup import DNSLookup, TemporaryLookupError
from smtpd.util.durable import fsync_directory, make_folder, replace_file

MODES = ("enforce", "testing", "none")
MAX_POLICY_SIZE = 64 * 1024  # RFC 8461 3.3: senders may limit the body to 64 KiB
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: at most one year
FETCH_TIMEOUT = 60  # RFC 8461 3.3: a timeout of at least a minute is suggested
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_DOMAIN_FILE = re.compile(r"^[a-z0-9.-]{1,253}$")

log = Logger()


class PolicyError(Exception):
    """A policy that cannot be had: fetch failed, or the text is not a valid policy."""


class InvalidPolicy(PolicyError):
    """The text fetched is not a valid policy (RFC 8460 C{sts-policy-invalid})."""


# RFC 8460 4.3.2.2: why a policy could not be had.
FETCH_ERROR = "sts-policy-fetch-error"
POLICY_INVALID = "sts-policy-invalid"
WEBPKI_INVALID = "sts-webpki-invalid"


@dataclass(frozen=True)
class PolicyFailure:
    """
    Why a domain's announced policy could not be fetched.

    @ivar kind: L{FETCH_ERROR}, L{POLICY_INVALID} or L{WEBPKI_INVALID}.
    @ivar detail: a human-readable reason.
    """

    kind: str
    detail: str


def failure_kind(error: BaseException) -> str:
    """The RFC 8460 result type of a failed policy fetch."""
    if isinstance(error, InvalidPolicy):
        return POLICY_INVALID
    pending: list[Any] = [error]
    while pending:
        e = pending.pop()
        if isinstance(e, (SSL.Error, VerificationError)):
            return WEBPKI_INVALID
        # treq's errors wrap the causes (ResponseNeverReceived.reasons: Failures).
        pending += [getattr(r, "value", r) for r in getattr(e, "reasons", None) or ()]
    return FETCH_ERROR


@dataclass(frozen=True)
class STSPolicy:
    """
    One domain's policy as fetched.

    @ivar domain: the policy domain.
    @ivar id: the C{id=} of the TXT record it was fetched under.
    @ivar mode: enforce, testing or none.
    @ivar mx: the MX patterns (C{mx1.example.com}, C{*.example.net}).
    @ivar max_age: how long it may be cached, in seconds.
    @ivar fetched: when it was fetched (clock seconds).
    """

    domain: str
    id: str
    mode: str
    mx: tuple[str, ...]
    max_age: int
    fetched: float

    def expired(self, now: float) -> bool:
        """Whether its C{max_age} has run out at C{now}."""
        return now >= self.fetched + self.max_age

    def allows(self, host: str) -> bool:
        """Whether MX host C{host} matches a pattern (RFC 8461 4.1: a wildcard is one label)."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_txt(records: list[bytes]) -> str | None:
    """The policy id of the C{_mta-sts} TXT records, or L{None} unless exactly one is valid (3.1)."""
    found = [r for r in records if r.startswith(b"v=STSv1")]
    if len(found) != 1:
        return None
    fields = dict(
        part.strip().split("=", 1) for part in found[0].decode("ascii", "replace").split(";")
        if "=" in part
    )
    policy_id = fields.get("id", "").strip()
    return policy_id if _ID.match(policy_id) else None


def parse_policy(domain: str, policy_id: str, text: str, now: float) -> STSPolicy:
    """The policy in C{text} (RFC 8461 3.2); L{PolicyError} when it is not valid."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise InvalidPolicy("version is not STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in MODES:
        raise InvalidPolicy(f"mode {mode!r} is not enforce, testing or none")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError as e:
        raise InvalidPolicy("max_age is not a number") from e
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        raise InvalidPolicy("max_age out of range")
    mx = tuple(m.lower().rstrip(".") for m in fields.get("mx", []))
    if mode != "none" and not mx:
        raise InvalidPolicy("no mx patterns")
    return STSPolicy(domain, policy_id, mode, mx, max_age, now)


class PolicyCache:
    """
    Policies on disk, one JSON file per domain in C{folder}, written durably.

    @param run_blocking: C{f(callable, *args) -> Deferred} for the file work.
    """

    def __init__(self, folder: str, run_blocking: Callable[..., Deferred]) -> None:
        self.folder = folder
        self.run_blocking = run_blocking

    def _path(self, domain: str) -> str | None:
        return os.path.join(self.folder, domain + ".json") if _DOMAIN_FILE.match(domain) else None

    async def load(self, domain: str) -> STSPolicy | None:
        """The stored policy of C{domain}, or L{None}."""
        path = self._path(domain)
        return None if path is None else await self.run_blocking(_read_policy, path)

    async def store(self, policy: STSPolicy) -> None:
        """Keep C{policy}, replacing the one stored before."""
        path = self._path(policy.domain)
        if path is not None:
            await self.run_blocking(_write_policy, self.folder, path, policy)


def _read_policy(path: str) -> STSPolicy | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return STSPolicy(**dict(data, mx=tuple(data["mx"])))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_policy(folder: str, path: str, policy: STSPolicy) -> None:
    make_folder(folder)
    replace_file(path, json.dumps(asdict(policy)).encode("utf-8"), 0o644)
    fsync_directory(folder)


class MTASTS:
    """
    Finds the MTA-STS policy of a recipient domain (RFC 8461 5.1).

    @param lookup: the L{DNSLookup} for the TXT record.
    @param agent: an HTTPS L{IAgent} (see L{smtpd.mailauth.https.https_agent}).
    @param cache: the L{PolicyCache}.
    @param clock: gives C{seconds()}; the reactor drives the fetch timeout.
    """

    def __init__(self, lookup: DNSLookup, agent: Any, cache: PolicyCache, clock: Any,
                 reactor: Any) -> None:
        self.lookup = lookup
        self.http = treq.client.HTTPClient(agent)
        self.cache = cache
        self.clock = clock
        self.reactor = reactor

    async def policy(self, domain: str) -> STSPolicy | None:
        """
        The policy to apply to mail for C{domain}, or L{None} when it has
        none: a new one is fetched when the TXT id differs from the cached
        one; a fetch that fails falls back to an unexpired cached policy.
        """
        return (await self.find(domain))[0]

    async def find(self, domain: str) -> tuple[STSPolicy | None, PolicyFailure | None]:
        """L{policy}, and why a policy that the TXT record announced could not be fetched."""
        domain = domain.lower().rstrip(".")
        now = self.clock.seconds()
        cached = await self.cache.load(domain)
        if cached is not None and cached.expired(now):
            cached = None
        try:
            policy_id = parse_txt(await self.lookup.txt("_mta-sts." + domain))
        except TemporaryLookupError:
            return cached, None
        if policy_id is None or (cached is not None and cached.id == policy_id):
            return cached, None
        try:
            fresh = await self.fetch(domain, policy_id)
        except Exception as e:
            log.info("MTA-STS policy of {domain} not fetched: {error}", domain=domain, error=e)
            return cached, PolicyFailure(failure_kind(e), str(e) or e.__class__.__name__)
        await self.cache.store(fresh)
        return fresh, None

    async def fetch(self, domain: str, policy_id: str) -> STSPolicy:
        """Fetch and parse the policy; L{PolicyError} (or a connection error) on failure."""
        url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
        response = await self.http.get(url, allow_redirects=False, timeout=FETCH_TIMEOUT,
                                       reactor=self.reactor)
        if response.code != 200:
            await response.text()
            raise PolicyError(f"HTTP {response.code}")
        content_type = response.headers.getRawHeaders(b"content-type", [b""])[0]
        body = await self._body(response)
        if not content_type.lower().startswith(b"text/plain"):
            raise PolicyError("not text/plain")
        return parse_policy(domain, policy_id, body.decode("utf-8", "replace"),
                            self.clock.seconds())

    async def _body(self, response: Any) -> bytes:
        """The body, refused past L{MAX_POLICY_SIZE}."""
        chunks: list[bytes] = []
        size = [0]

        def collect(data: bytes) -> None:
            """Keep a chunk of the body, refusing past the limit."""
            size[0] += len(data)
            if size[0] > MAX_POLICY_SIZE:
                raise PolicyError("policy over 64 KiB")
            chunks.append(data)

        await treq.collect(response, collect)
        return b"".join(chunks)
