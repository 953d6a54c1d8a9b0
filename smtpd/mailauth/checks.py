# -*- test-case-name: tests.test_mailauth_checks -*-
"""
The inbound checks of C{[checks]}: SPF, DKIM and DMARC for mail from
clients that are neither authenticated nor in the relay list, one
C{Authentication-Results:} field, and what C{enforce} answers.

The caller decides who is checked: authenticated submission and relay
clients are never passed to L{InboundChecks.check}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import Deferred, gatherResults, succeed

from smtpd.mailauth.arc import ARCResult, ARCVerifier
from smtpd.mailauth.dkimcheck import DKIMResult, DKIMVerifier
from smtpd.mailauth.dmarc import DMARCEvaluator, DMARCResult
from smtpd.mailauth.headers import from_domain, split_message
from smtpd.mailauth.lookup import DEFAULT_TIMEOUT, DNSLookup
from smtpd.mailauth.results import build_header, remove_forged
from smtpd.mailauth.senderpolicy import SPFChecker, SPFResult

OFF, TAG, ENFORCE = "off", "tag", "enforce"
MODES = (OFF, TAG, ENFORCE)
# Added under dmarc = enforce when the failing domain asks for p=quarantine:
# the field Dovecot/Sieve setups and most mail clients file into Junk.
QUARANTINE_FIELD = b"X-Spam-Flag: YES\r\n"


@dataclass(frozen=True)
class CheckModes:
    """The C{[checks]} settings: C{off}, C{tag} or C{enforce} per method, and the authserv-id."""

    authserv_id: str
    spf: str = TAG
    dkim: str = TAG
    dmarc: str = TAG


@dataclass(frozen=True)
class Verdict:
    """
    What the checks found about one message.

    @ivar spf: the SPF results (HELO, then MAIL FROM when not null), [] when off.
    @ivar dkim: one result per signature; L{None} when DKIM is off.
    @ivar dmarc: the DMARC result, or L{None} when off.
    @ivar arc: the ARC chain status (verified whenever DKIM is on), or L{None}.
    @ivar header: the Authentication-Results field to prepend (CRLF-terminated).
    @ivar extra: further fields to prepend (L{QUARANTINE_FIELD}), or C{b""}.
    @ivar reply: C{(code, "x.y.z text")} to answer instead of accepting the
        message (550 5.7.1 or 451 4.7.0), or L{None} to accept it.
    """

    spf: tuple[SPFResult, ...] = ()
    dkim: tuple[DKIMResult, ...] | None = None
    dmarc: DMARCResult | None = None
    arc: ARCResult | None = None
    header: bytes = b""
    extra: bytes = b""
    reply: tuple[int, str] | None = None

    def rewrite(self, message: bytes, authserv_id: str) -> bytes:
        """
        C{message} as it is to be stored: forged Authentication-Results
        fields claiming C{authserv_id} removed, ours and L{extra} prepended.
        """
        header, body = split_message(message)
        cleaned, _ = remove_forged(header, authserv_id)
        return self.header + self.extra + cleaned + b"\r\n" + body


def _maybe(wanted: bool, coroutine: Any) -> Deferred:
    """A Deferred of C{coroutine} when C{wanted}, else of L{None} (the coroutine closed unrun)."""
    if wanted:
        return Deferred.fromCoroutine(coroutine)
    coroutine.close()
    return succeed(None)


class InboundChecks:
    """
    Runs SPF, DKIM and DMARC for one message.

    @param modes: the L{CheckModes}.
    @param resolver: the twisted.names resolver for C{[delivery] dns_servers}.
    @param reactor: the reactor (SPF's thread hands its queries to it).
    @param run_blocking: C{f(callable, *args) -> Deferred} on a thread pool.
    @param suffixes: the public suffix list; built (a file read) when not given.
    @param timeout: the per-attempt DNS timeouts (seconds).
    """

    def __init__(
        self,
        modes: CheckModes,
        resolver: Any,
        reactor: Any,
        run_blocking: Callable[..., Deferred],
        suffixes: PublicSuffixList | None = None,
        timeout: tuple[int, ...] = DEFAULT_TIMEOUT,
    ) -> None:
        self.modes = modes
        lookup = DNSLookup(resolver, timeout)
        self.spf = SPFChecker(lookup, reactor, run_blocking)
        self.dkim = DKIMVerifier(lookup, run_blocking)
        self.arc = ARCVerifier(lookup, run_blocking)
        self.dmarc = DMARCEvaluator(lookup, suffixes or PublicSuffixList())

    @classmethod
    def from_config(
        cls, config: Any, resolver: Any, reactor: Any, run_blocking: Callable[..., Deferred],
        suffixes: PublicSuffixList | None = None,
    ) -> InboundChecks:
        """
        The checks of C{config}'s [checks] section (reads the public suffix
        list when C{suffixes} is not given: call at start).
        """
        checks = config.checks
        modes = CheckModes(config.authserv_id, checks.spf, checks.dkim, checks.dmarc)
        return cls(modes, resolver, reactor, run_blocking, suffixes)

    @property
    def enabled(self) -> bool:
        """Whether any check is on."""
        return any(m != OFF for m in (self.modes.spf, self.modes.dkim, self.modes.dmarc))

    async def check(self, ip: str, helo: str, sender: str, message: bytes) -> Verdict:
        """
        The verdict on C{message} (header and body, CRLF line ends) from a
        client at C{ip} that said C{helo} and C{MAIL FROM:<sender>}.
        """
        modes = self.modes
        if not self.enabled:
            return Verdict()
        need_inputs = modes.dmarc != OFF
        run_spf = modes.spf != OFF or need_inputs
        run_dkim = modes.dkim != OFF or need_inputs
        # The lookups of the methods do not depend on each other: run them together.
        helo_result, from_result, dkim_results, arc = await gatherResults([
            _maybe(run_spf, self.spf.check_helo(ip, helo)),
            _maybe(run_spf and bool(sender), self.spf.check_mail_from(ip, sender, helo)),
            _maybe(run_dkim, self.dkim.verify(message)),
            _maybe(modes.dkim != OFF, self.arc.verify(message)),
        ], consumeErrors=True).addErrback(lambda f: f.value.subFailure.raiseException())
        spf = [r for r in (helo_result, from_result) if r is not None]
        dkim = tuple(dkim_results) if dkim_results is not None else None
        dmarc = None
        if modes.dmarc != OFF:
            header, _ = split_message(message)
            dmarc = await self.dmarc.evaluate(from_domain(header), spf[-1], dkim or ())
        shown_spf = spf if modes.spf != OFF else []
        shown_dkim = dkim if modes.dkim != OFF else None
        return Verdict(
            spf=tuple(shown_spf),
            dkim=shown_dkim,
            dmarc=dmarc,
            arc=arc,
            header=build_header(modes.authserv_id, shown_spf, shown_dkim, dmarc, arc),
            extra=self._extra(dmarc),
            reply=self._reply(spf[-1] if spf else None, dkim, dmarc),
        )

    def _extra(self, dmarc: DMARCResult | None) -> bytes:
        """L{QUARANTINE_FIELD} when enforcing a p=quarantine failure."""
        if self.modes.dmarc == ENFORCE and dmarc and dmarc.result == "fail" and (
            dmarc.policy == "quarantine"
        ):
            return QUARANTINE_FIELD
        return b""

    def _reply(self, spf, dkim, dmarc) -> tuple[int, str] | None:
        """The first refusal an enforced check calls for: permanent ones before temporary."""
        refusals = [r for r in (
            self._spf_reply(spf), self._dkim_reply(dkim), self._dmarc_reply(dmarc)
        ) if r is not None]
        refusals.sort(key=lambda r: r[0] != 550)
        return refusals[0] if refusals else None

    def _spf_reply(self, spf: SPFResult | None) -> tuple[int, str] | None:
        if self.modes.spf != ENFORCE or spf is None:
            return None
        if spf.result == "fail":
            return (550, f"5.7.1 SPF: {spf.domain} does not allow this host to send its mail")
        if spf.result == "temperror":
            return (451, f"4.7.0 SPF: temporary DNS error for {spf.domain}, try again later")
        return None

    def _dkim_reply(self, dkim) -> tuple[int, str] | None:
        """Under enforce: signatures but none that passes is refused (a temperror defers)."""
        if self.modes.dkim != ENFORCE or not dkim or any(d.result == "pass" for d in dkim):
            return None
        if any(d.result == "temperror" for d in dkim):
            return (451, "4.7.0 DKIM: temporary DNS error fetching a key, try again later")
        return (550, "5.7.1 DKIM: no signature of this message verifies")

    def _dmarc_reply(self, dmarc: DMARCResult | None) -> tuple[int, str] | None:
        if self.modes.dmarc != ENFORCE or dmarc is None:
            return None
        if dmarc.result == "fail" and dmarc.policy == "reject":
            return (550, f"5.7.1 DMARC: the policy of {dmarc.header_from} rejects this message")
        if dmarc.result == "temperror" and dmarc.policy != "none":
            return (451, "4.7.0 DMARC: temporary DNS error, try again later")
        return None
