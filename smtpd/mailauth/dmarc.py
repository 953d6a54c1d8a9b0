# -*- test-case-name: tests.test_mailauth_checks -*-
"""
DMARC (RFC 7489): the policy record of the From: domain or of its
organizational domain (the public suffix list), and identifier alignment of
the SPF and DKIM results with the From: domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from smtpd.mailauth.dkimcheck import DKIMResult
from smtpd.mailauth.lookup import DNSLookup, TemporaryLookupError
from smtpd.mailauth.senderpolicy import SPFResult

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DMARCPolicy:
    """The tags of a DMARC record this server acts on (RFC 7489 6.3)."""

    domain: str
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


@dataclass(frozen=True)
class DMARCResult:
    """
    The DMARC verdict.

    @ivar result: pass, fail, none, temperror or permerror.
    @ivar header_from: the From: domain ("" when there is not exactly one).
    @ivar policy: the policy that applies to this message (none, quarantine,
        reject), after C{sp=} and C{pct=}; "" when the record could not be fetched.
    """

    result: str
    header_from: str = ""
    policy: str = "none"
    reason: str = ""


def parse_record(domain: str, text: bytes) -> DMARCPolicy | None:
    """The policy in a TXT record, or L{None} when it is not a valid DMARC record."""
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    tags: dict[str, str] = {}
    for part in decoded.split(";"):
        if "=" in part:
            name, value = part.split("=", 1)
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not decoded.lstrip().startswith("v"):
        return None
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        # RFC 7489 6.6.3: a record with rua but a bad p= is treated as p=none.
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", "").lower()
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DMARCPolicy(
        domain=domain,
        p=p,
        sp=sp if sp in POLICIES else p,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=pct,
    )


class DMARCEvaluator:
    """
    Finds the policy of a From: domain and evaluates alignment.

    @param lookup: the L{DNSLookup} policy records come from.
    @param suffixes: a L{PublicSuffixList} (loading it reads a file: build it once).
    """

    def __init__(self, lookup: DNSLookup, suffixes: PublicSuffixList) -> None:
        self.lookup = lookup
        self.suffixes = suffixes

    def organizational(self, domain: str) -> str:
        """The organizational domain (RFC 7489 3.2): one label below the public suffix."""
        return self.suffixes.privatesuffix(domain.lower().rstrip(".")) or domain.lower()

    async def policy(self, domain: str) -> DMARCPolicy | None:
        """The record for C{domain}, else its organizational domain's (RFC 7489 6.6.3)."""
        found = await self._record(domain)
        organization = self.organizational(domain)
        if found is None and organization != domain:
            found = await self._record(organization)
        return found

    async def _record(self, domain: str) -> DMARCPolicy | None:
        records = [r for r in await self.lookup.txt("_dmarc." + domain)
                   if r.lstrip().lower().startswith(b"v=dmarc1")]
        # Several records: no policy at all (RFC 7489 6.6.3 step 5).
        return parse_record(domain, records[0]) if len(records) == 1 else None

    def aligned(self, identifier: str, header_from: str, mode: str) -> bool:
        """Whether C{identifier} aligns with the From: domain in mode C{r} or C{s} (RFC 7489 3.1)."""
        identifier = identifier.lower().rstrip(".")
        if mode == "s":
            return identifier == header_from
        return self.organizational(identifier) == self.organizational(header_from)

    async def evaluate(
        self, header_from: str | None, spf: SPFResult | None, dkim: Sequence[DKIMResult]
    ) -> DMARCResult:
        """The DMARC result for a message whose single From: domain is C{header_from}."""
        if not header_from:
            return DMARCResult("permerror", reason="not exactly one From: domain")
        try:
            policy = await self.policy(header_from)
        except TemporaryLookupError as e:
            return DMARCResult("temperror", header_from, "", str(e))
        if policy is None:
            return DMARCResult("none", header_from)
        if self._passes(header_from, policy, spf, dkim):
            return DMARCResult("pass", header_from, "none")
        applied = policy.p if policy.domain == header_from else policy.sp
        if policy.pct < 100:
            # RFC 7489 6.6.4: unsampled mail gets the next weaker policy; this
            # server never samples at random, so every message gets the weaker one.
            applied = {"reject": "quarantine", "quarantine": "none"}.get(applied, "none")
        undecided = (spf is not None and spf.result == "temperror") or any(
            d.result == "temperror" for d in dkim)
        if undecided:
            return DMARCResult("temperror", header_from, applied, "an input was a temperror")
        return DMARCResult("fail", header_from, applied)

    def _passes(self, header_from, policy, spf, dkim) -> bool:
        """An aligned SPF pass or an aligned DKIM pass (RFC 7489 4.2)."""
        if spf is not None and spf.result == "pass" and self.aligned(
            spf.domain, header_from, policy.aspf
        ):
            return True
        return any(
            d.result == "pass" and self.aligned(d.domain, header_from, policy.adkim) for d in dkim
        )
