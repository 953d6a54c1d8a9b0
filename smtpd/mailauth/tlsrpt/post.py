# -*- test-case-name: tests.test_tlsrpt_post -*-
"""
A report posted to an https C{rua} (RFC 8460 5.4): C{POST} of the gzip JSON
as C{application/tlsrpt+gzip}. A POST that fails (no connection, a TLS
error, a timeout, a reply other than 2xx) is tried again after
L{RETRY_DELAYS} on the injected clock, then given up with a log line.
Retries live in memory: a restart drops the ones pending.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

# Seconds for one POST.
POST_TIMEOUT = 60
# Seconds before each further try of a failed POST: backing off, the last
# one under seven hours after the first, all within the day after the report's.
RETRY_DELAYS = (600.0, 1800.0, 5400.0, 16200.0)

CONTENT_TYPE = b"application/tlsrpt+gzip"

log = Logger()


class ReportPoster:
    """
    POSTs reports and retries the failed ones.

    @param http: a C{treq} L{HTTPClient} (over verified TLS).
    @param clock: an C{IReactorTime}: when retries happen.
    @param reactor: for the POST timeout.
    """

    def __init__(self, http: Any, clock: Any, reactor: Any) -> None:
        self.http = http
        self.clock = clock
        self.reactor = reactor
        self._timers: set[Any] = set()

    @property
    def pending(self) -> int:
        """How many retries wait."""
        return len(self._timers)

    def stop(self) -> None:
        """Drop the retries still waiting."""
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()

    async def post(self, url: str, report: bytes, domain: str, day: str,
                   attempt: int = 0) -> bool:
        """
        POST C{report} (C{domain}'s for C{day}) to C{url}; whether it was
        taken. When not, another try is scheduled while L{RETRY_DELAYS}
        allow, else the report is given up (logged).
        """
        outcome = await self._post_once(url, report)
        if outcome is None:
            log.info("TLS-RPT report of {domain} for {day} posted to {url}", domain=domain,
                     day=day, url=url)
            return True
        if attempt >= len(RETRY_DELAYS):
            log.warn("TLS-RPT report of {domain} for {day} not posted to {url}, given up "
                     "after {attempts} tries: {outcome}", domain=domain, day=day, url=url,
                     attempts=attempt + 1, outcome=outcome)
            return False
        delay = RETRY_DELAYS[attempt]
        log.info("TLS-RPT report of {domain} for {day} not posted to {url}: {outcome}; "
                 "trying again in {delay:.0f} s", domain=domain, day=day, url=url,
                 outcome=outcome, delay=delay)
        self._schedule(delay, url, report, domain, day, attempt + 1)
        return False

    async def _post_once(self, url: str, report: bytes) -> str | None:
        """One POST: None when taken (2xx), else what went wrong."""
        try:
            response = await self.http.post(
                url, data=report, headers={b"Content-Type": [CONTENT_TYPE]},
                allow_redirects=False, timeout=POST_TIMEOUT, reactor=self.reactor)
            await response.text()
        except Exception as e:
            return f"failed: {e.__class__.__name__}: {e}"
        if 200 <= response.code < 300:
            return None
        return f"HTTP {response.code}"

    def _schedule(self, delay: float, *args: Any) -> None:
        """Another try after C{delay} seconds; it never fails (errors are logged)."""

        def retry() -> None:
            self._timers.discard(timer)
            d = Deferred.fromCoroutine(self.post(*args))
            d.addErrback(lambda f: log.failure("TLS-RPT report POST failed", f))

        timer = self.clock.callLater(delay, retry)
        self._timers.add(timer)
