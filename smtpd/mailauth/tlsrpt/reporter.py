# -*- test-case-name: tests.test_tlsrpt -*-
"""
The daily TLS-RPT run (RFC 8460): shortly after each UTC midnight, every
complete day's counts become one report per policy domain that publishes
C{_smtp._tls} with a C{rua}; the report is mailed (through the server's own
way into the queue, so it is DKIM-signed when the sender's domain has keys)
and posted to https C{rua} URLs (a failed POST is tried again a few times,
L{smtpd.mailauth.tlsrpt.post}). Meanwhile the counts are written to disk
every minute while they change, and at stop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import treq
from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import BytesSource
from smtpd.mailauth.lookup import DNSLookup, TemporaryLookupError
from smtpd.mailauth.tlsrpt.message import ReportMail, report_message
from smtpd.mailauth.tlsrpt.post import ReportPoster
from smtpd.mailauth.tlsrpt.record import ReportAddresses, report_addresses
from smtpd.mailauth.tlsrpt.report import build_report, compress, file_name, report_id
from smtpd.mailauth.tlsrpt.store import DAY, FLUSH_INTERVAL, OutcomeStore, day_start

# Seconds after UTC midnight when the reports of the day before go out.
REPORT_DELAY = 300.0
# Seconds after start when reports left from before are tried.
START_DELAY = 60.0
# Seconds until another try when a domain's record could not be looked up
# or its report not queued.
RETRY = 3600.0
# A day whose reports are still not all sent this long after it ended is dropped.
GIVE_UP = 2 * DAY

# The local part of the default sender (the name large providers use).
DEFAULT_SENDER = "noreply-smtp-tls-reporting"

log = Logger()


@dataclass(frozen=True)
class Reporting:
    """Who reports: the C{[tlsrpt]} settings with their defaults filled in."""

    sender: str
    submitter: str
    organization: str
    contact: str

    @classmethod
    def from_config(cls, config: Any) -> Reporting:
        """
        From C{config}: the sender defaults to
        C{noreply-smtp-tls-reporting@<[server] hostname>}, the submitter is
        the sender's domain, the organization defaults to the submitter,
        the contact to the sender.
        """
        settings = config.tlsrpt
        sender = settings.sender or f"{DEFAULT_SENDER}@{config.server.hostname}"
        submitter = sender.rpartition("@")[2].lower()
        return cls(sender, submitter, settings.organization or submitter,
                   settings.contact or sender)


def queue_id(day: str, domain: str) -> str:
    """
    The queue id of a report: the same for the same day and domain, so a
    report queued again after a crash is stored once.
    """
    digest = hashlib.sha256(f"tlsrpt/{day}/{domain}".encode()).hexdigest()
    return f"{int(day_start(day)):08X}{digest[:16].upper()}"


class TLSReporter(service.Service):
    """
    Sends the reports of complete days, and keeps the counts on disk.

    @param config: the L{smtpd.config.Config} (C{[tlsrpt]}, C{[server]
        hostname}); may be replaced on reload.
    @param store: the L{OutcomeStore} the relay records into.
    @param lookup: the L{DNSLookup} for C{_smtp._tls} records.
    @param submit: C{submit(envelope, source) -> Deferred}: queues a message
        (the cleanup stage's C{submit}).
    @param clock: an C{IReactorTime}: the day boundaries and the timers.
    @param agent: an HTTPS L{IAgent} for https C{rua} URLs, or L{None} to skip them.
    @param reactor: for the POST timeout.
    """

    def __init__(self, config: Any, store: OutcomeStore, lookup: DNSLookup,
                 submit: Callable[[Envelope, Any], Deferred], clock: Any, *,
                 agent: Any = None, reactor: Any = None) -> None:
        self.config = config
        self.store = store
        self.lookup = lookup
        self.submit = submit
        self.clock = clock
        self.reactor = reactor if reactor is not None else clock
        self.poster = (ReportPoster(treq.client.HTTPClient(agent), clock, self.reactor)
                       if agent is not None else None)
        self._timer: Any = None
        self._flusher = LoopingCall(self._flush)
        self._flusher.clock = clock
        self._starting: Deferred | None = None

    # ------------------------------------------------------------ service

    def startService(self) -> None:
        """Read the counts kept on disk, then start the timers."""
        service.Service.startService(self)
        self._starting = Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        try:
            await self.store.load()
        except Exception:
            log.failure("TLS-RPT counts not loaded")
        if not self.running:
            return
        self._flusher.start(FLUSH_INTERVAL, now=False)
        self._schedule(START_DELAY if self.store.complete_days() else self._until_next_run())

    def stopService(self) -> Deferred:
        """Stop the timers; fires once the counts are on disk."""
        service.Service.stopService(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.poster is not None:
            self.poster.stop()
        if self._flusher.running:
            self._flusher.stop()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._starting is not None:
            await self._starting
        await self.store.flush()

    def _flush(self) -> Deferred | None:
        """Write the counts when they changed; never fails (the loop must go on)."""
        if not self.store.dirty:
            return None
        d = Deferred.fromCoroutine(self.store.flush())
        return d.addErrback(lambda f: log.failure("TLS-RPT counts not written", f))

    # ------------------------------------------------------------ timing

    def _until_next_run(self) -> float:
        """Seconds until L{REPORT_DELAY} after the next UTC midnight."""
        now = self.clock.seconds()
        return (now // DAY + 1) * DAY + REPORT_DELAY - now

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._timer = self.clock.callLater(delay, self._run)

    def _run(self) -> None:
        self._timer = None
        Deferred.fromCoroutine(self._runSafely())

    async def _runSafely(self) -> None:
        try:
            complete = await self.send_due()
        except Exception:
            log.failure("TLS-RPT reports failed")
            complete = False
        self._schedule(self._until_next_run() if complete else RETRY)

    # ------------------------------------------------------------ reports

    async def send_due(self) -> bool:
        """
        Send the reports of every complete day not sent yet; whether all are
        done (else the rest is tried again in L{RETRY} seconds, until
        L{GIVE_UP} after the day's end).
        """
        complete = True
        for day in self.store.complete_days():
            counts = self.store.days[day]
            for domain in counts.unsent():
                if await self._send_safely(day, domain):
                    await self.store.mark_sent(day, domain)
            left = counts.unsent()
            if left and self.clock.seconds() < day_start(day) + DAY + GIVE_UP:
                complete = False
                continue
            if left:
                log.warn("TLS-RPT reports of {day} not sent, given up: {domains}", day=day,
                         domains=", ".join(left))
            await self.store.forget(day)
        return complete

    async def _send_safely(self, day: str, domain: str) -> bool:
        try:
            return await self.send(day, domain)
        except Exception:
            log.failure("TLS-RPT report of {domain} for {day} failed", domain=domain, day=day)
            return False

    async def send(self, day: str, domain: str) -> bool:
        """
        Send C{domain}'s report for C{day} when the domain wants one; whether
        that is done (sent, or not wanted). False: try again later.
        """
        try:
            addresses = await report_addresses(self.lookup, domain)
        except TemporaryLookupError as e:
            log.info("TLS-RPT report of {domain} for {day} waits: {error}", domain=domain,
                     day=day, error=e)
            return False
        if not addresses:
            return True
        reporting = Reporting.from_config(self.config)
        rid = report_id(day, domain, reporting.submitter)
        report = compress(build_report(day, self.store.days[day].for_domain(domain),
                                       reporting.organization, reporting.contact, rid))
        name = file_name(reporting.submitter, domain, day)
        if addresses.mailto:
            mail = ReportMail(domain, reporting.submitter, rid, reporting.sender,
                              addresses.mailto, name, day)
            await self._mail(queue_id(day, domain), mail, report)
        await self._post_all(addresses, report, domain, day)
        return True

    async def _mail(self, qid: str, mail: ReportMail, report: bytes) -> None:
        """Queue the report message (a copy queued before a crash counts as queued)."""
        now = self.clock.seconds()
        data = report_message(mail, report, now)
        envelope = Envelope(id=qid, sender=mail.sender,
                            recipients=[Recipient(a) for a in mail.recipients],
                            arrival=now, next_attempt=now, size=len(data), client="local")
        try:
            await self.submit(envelope, BytesSource(data))
        except FileExistsError:
            pass
        log.info("TLS-RPT report {id} queued as {qid} for {rua}", id=mail.report_id, qid=qid,
                 rua=", ".join(mail.recipients))

    async def _post_all(self, addresses: ReportAddresses, report: bytes, domain: str,
                        day: str) -> None:
        """POST the report to each https C{rua} (RFC 8460 5.4); failures are retried."""
        for url in addresses.https:
            if self.poster is None:
                log.info("TLS-RPT report of {domain} for {day} not posted to {url}: "
                         "https reporting is off", domain=domain, day=day, url=url)
                continue
            await self.poster.post(url, report, domain, day)
