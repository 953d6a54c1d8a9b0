# -*- test-case-name: tests.test_cleanup_mailauth -*-
"""
The mail authentication filters of the cleanup stage (L{ICleanupFilter}s):

* L{DKIMSignFilter} signs mail from authenticated and relay clients, pickup
  files and our own reports, when the From: domain has keys;
* L{AuthResultsFilter} runs the C{[checks]} on mail from every other client:
  one Authentication-Results field, the quarantine mark, an ARC seal when
  configured, or the refusal C{enforce} calls for.

Authenticated submission and relay clients are never checked; other
clients' mail is never signed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import Deferred
from zope.interface import implementer

from smtpd.cleanup.interfaces import ClientInfo, FilterResult, ICleanupFilter
from smtpd.mail.source import read_all
from smtpd.mailauth.arc import ARCSealer
from smtpd.mailauth.checks import InboundChecks
from smtpd.mailauth.signing import DKIMSigner


def trusted(client: ClientInfo | None) -> bool:
    """Whether mail from C{client} is ours to sign: authenticated, a relay client, or local (L{None})."""
    return client is None or bool(client.user) or client.relay_client


@implementer(ICleanupFilter)
class DKIMSignFilter:
    """
    Prepends the DKIM signatures of the From: domain's keys.

    @param run_blocking: C{f(callable, *args) -> Deferred} for reading a spooled message.
    """

    name = "dkim-sign"

    def __init__(self, signer: DKIMSigner, run_blocking: Callable[..., Deferred]) -> None:
        self.signer = signer
        self.run_blocking = run_blocking

    async def check(self, envelope: Any, message: Any, client: ClientInfo | None) -> FilterResult:
        """The signatures to prepend, or nothing (ICleanupFilter)."""
        if not self.signer.keys or not trusted(client):
            return FilterResult()
        data = await self.run_blocking(read_all, message)
        signature = await self.signer.signature(data, True)
        return FilterResult([signature] if signature else [])


@implementer(ICleanupFilter)
class AuthResultsFilter:
    """
    Runs the inbound checks and prepends their results.

    @param sealer: the L{ARCSealer} of C{[checks] arc_seal}, or L{None}.
    """

    name = "auth-results"

    def __init__(self, checks: InboundChecks, sealer: ARCSealer | None,
                 run_blocking: Callable[..., Deferred]) -> None:
        self.checks = checks
        self.sealer = sealer
        self.run_blocking = run_blocking

    async def check(self, envelope: Any, message: Any, client: ClientInfo | None) -> FilterResult:
        """The Authentication-Results field (and seal), or the refusal (ICleanupFilter)."""
        if trusted(client) or not self.checks.enabled:
            return FilterResult()
        data = await self.run_blocking(read_all, message)
        verdict = await self.checks.check(client.ip, client.helo, envelope.sender, data)
        if verdict.reply is not None:
            code, text = verdict.reply
            status, _, reason = text.partition(" ")
            return FilterResult(reply=(code, status, reason))
        fields = [verdict.header, verdict.extra]
        if self.sealer is not None:
            fields.insert(0, await self.sealer.seal(verdict.header + verdict.extra + data))
        return FilterResult([f for f in fields if f])


def mailauth_filters(config: Any, resolver: Any, reactor: Any,
                     run_blocking: Callable[..., Deferred],
                     suffixes: PublicSuffixList | None = None) -> list:
    """
    The filters C{config} asks for: the checks when any is on, the signer when a
    domain has keys. Reads the key files and (unless C{suffixes} is given) the
    public suffix list: call at start or on reload, not per message.
    """
    filters: list = []
    checks = InboundChecks.from_config(config, resolver, reactor, run_blocking, suffixes)
    if checks.enabled:
        filters.append(AuthResultsFilter(checks, ARCSealer.from_config(config, run_blocking),
                                         run_blocking))
    signer = DKIMSigner.from_config(config, run_blocking)
    if signer.keys:
        filters.append(DKIMSignFilter(signer, run_blocking))
    return filters


# The errors a filter build can meet: an unreadable or invalid key file.
BUILD_ERRORS = (OSError, ValueError)


class MailAuthFilters:
    """
    Builds the mail authentication filters of a cleanup stage for a
    configuration: at start, and again on reload, so that a new C{dkim} key
    or C{[checks]} mode applies to the next message (the public suffix list
    is read once).

    @param reactor: for the checks' lookups.
    @param run_blocking: the mail authentication threads.
    """

    def __init__(self, reactor: Any, run_blocking: Callable[..., Deferred]) -> None:
        self.reactor = reactor
        self.run_blocking = run_blocking
        self._suffixes: PublicSuffixList | None = None

    def build(self, config: Any, resolver: Any) -> list:
        """
        The filters for C{config}, asking C{resolver}; raises one of
        L{BUILD_ERRORS} when a key cannot be used.
        """
        if self._suffixes is None:
            self._suffixes = PublicSuffixList()
        return mailauth_filters(config, resolver, self.reactor, self.run_blocking, self._suffixes)

    @staticmethod
    def install(cleanup: Any, filters: list) -> None:
        """
        Make C{filters} the mail authentication filters of C{cleanup}, in
        the place of the old ones (other filters stay where they are).
        """
        pending = list(filters)
        replaced: list = []
        for old in cleanup.filters:
            if not isinstance(old, (AuthResultsFilter, DKIMSignFilter)):
                replaced.append(old)
            elif pending:
                replaced.extend(pending)
                pending = []
        cleanup.filters = replaced + pending
