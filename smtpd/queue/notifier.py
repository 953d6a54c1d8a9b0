# -*- test-case-name: tests.test_qmgr -*-
"""
Reports to the sender (Postfix's bounce): non-delivery reports, delay warnings
and success notifications (RFC 3461/3464, built by
L{smtpd.queue.bounce.BounceBuilder}), a copy of each NDR to C{ndr_copy_to},
expiry, and badmail for mail from C{<>} that cannot be delivered (a report
is never answered by a report).

Reports leave through an injected C{submit(envelope, source)}, so that the
server can route them like any other new message; by default they are stored
in the queue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from smtpd.config import Config
from smtpd.directory.routing import REMOTE
from smtpd.mail.envelope import DELIVERED as RCPT_DELIVERED
from smtpd.mail.envelope import FAILED as RCPT_FAILED
from smtpd.mail.envelope import PENDING, Envelope, Recipient
from smtpd.mail.source import BytesSource, IMessageSource, read_all, read_head
from smtpd.queue.bounce import DELAYED, DELIVERED, FAILED, RELAYED, BounceBuilder, has_8bit
from smtpd.queue.results import LOCAL_CLIENT, Results, wants
from smtpd.util import faults


def report_id(envelope: Envelope, action: str) -> str:
    """
    The queue id of the C{action} report on C{envelope}'s current attempt:
    the same each time that attempt is replayed after a crash (the attempt
    count on disk is only raised after the report is durable), so a report
    made twice is stored, and delivered to a Maildir, once.
    """
    digest = hashlib.sha256(f"{envelope.id}/{envelope.attempts}/{action}".encode()).hexdigest()
    return envelope.id[:8] + digest[:16].upper()


def international(envelope: Envelope) -> bool:
    """
    Whether reports on C{envelope} are RFC 6533 global ones: it came with
    SMTPUTF8, or an address in it is not ASCII.
    """
    return envelope.smtputf8 or not all(
        a.isascii() for a in [envelope.sender, *(r.address for r in envelope.recipients)])


class Notifier:
    """
    Sends the reports an attempt calls for, and disposes of finished entries.

    @param config: the L{Config} (expiration, delay_notification,
        ndr_copy_to); may be replaced on reload.
    @param queue: the L{smtpd.queue.store.Queue} (new ids, badmail, removal).
    @param clock: an C{IReactorTime}.
    @param bounces: the L{BounceBuilder}.
    @param results: the L{Results} (counters, log lines, errors).
    @param submit: C{submit(envelope, source) -> Deferred} makes a report
        durable; by default C{queue.store}.
    @param run_blocking: C{f(callable, *args) -> Deferred} for reading the
        original message; by default in the caller's thread.
    """

    def __init__(self, config: Config, queue: Any, clock: Any, bounces: BounceBuilder,
                 results: Results, submit: Callable[..., Deferred] | None = None,
                 run_blocking: Callable[..., Deferred] | None = None):
        self.config = config
        self.queue = queue
        self.clock = clock
        self.bounces = bounces
        self.results = results
        self._submit = submit if submit is not None else (lambda e, s: queue.store(e, s))
        self._run = run_blocking if run_blocking is not None else maybeDeferred

    async def conclude(self, envelope: Envelope, attempted: list[Recipient],
                       kinds: dict[str, str], message: IMessageSource, now: float,
                       passed: frozenset[str] | set[str] = frozenset()) -> None:
        """
        After an attempt: expire what is too old, then send the NDR, the
        success reports and the delay warning it calls for. A failed
        recipient whose NDR could not be made durable is pending again, so
        the report is made at the next attempt. C{passed}: the recipients
        relayed to a host that offered DSN (their success is its to report).
        """
        failed = [r for r in attempted if r.state == RCPT_FAILED]
        failed += self.expire(envelope, now)
        if not envelope.sender:
            return
        returned = await self.bounce(envelope, failed, message)
        await self._report_success(envelope, attempted, kinds, message, passed)
        await self._warn_delay(envelope, message, now)
        if not returned:
            for r in failed:
                r.state = PENDING

    def expire(self, envelope: Envelope, now: float) -> list[Recipient]:
        """Fail what is still pending once the message is C{expiration} old (4.4.7)."""
        if now - envelope.arrival < self.config.delivery.expiration:
            return []
        expired = envelope.pending()
        for r in expired:
            self.results.fail(envelope, r, "4.4.7", now=now)
        return expired

    async def bounce(self, envelope: Envelope, failed: list[Recipient],
                     message: IMessageSource) -> bool:
        """
        The NDR for C{failed} recipients whose NOTIFY asks for it, with a copy
        to C{ndr_copy_to} (an extra recipient of the same report).

        @return: whether nothing needed sending or the report is durable.
        """
        wanted = [r for r in failed if wants(r, "FAILURE")]
        if not wanted:
            return True
        copy = self.config.messages.ndr_copy_to
        sent = await self._send(envelope, wanted, FAILED, message,
                                extra=(copy,) if copy else ())
        if sent:
            faults.point("bounced")
        return sent

    async def _report_success(self, envelope: Envelope, attempted: list[Recipient],
                              kinds: dict[str, str], message: IMessageSource,
                              passed: frozenset[str] | set[str]) -> None:
        """
        Success DSNs: "delivered" for local and drop, "relayed" for remote
        hosts without DSN. A host that offered DSN got the request with the
        message: we send nothing, it reports (RFC 3461 5.2.2).
        """
        done = [r for r in attempted if r.state == RCPT_DELIVERED and wants(r, "SUCCESS")]
        relayed = [r for r in done if kinds.get(r.address) == REMOTE and r.address not in passed]
        delivered = [r for r in done if kinds.get(r.address) != REMOTE]
        for recipients, action in ((delivered, DELIVERED), (relayed, RELAYED)):
            if recipients:
                await self._send(envelope, recipients, action, message)

    async def _warn_delay(self, envelope: Envelope, message: IMessageSource,
                          now: float) -> None:
        """One "delayed" DSN per recipient once the message is C{delay_notification} old."""
        limit = self.config.delivery.delay_notification
        if limit <= 0 or now - envelope.arrival < limit:
            return
        late = [r for r in envelope.pending() if not r.notified_delay and wants(r, "DELAY")]
        if late and await self._send(envelope, late, DELAYED, message):
            for r in late:
                r.notified_delay = True

    async def _send(self, envelope: Envelope, recipients: list[Recipient], action: str,
                    message: IMessageSource, extra: tuple[str, ...] = ()) -> bool:
        """
        Build and submit one DSN from C{<>} to the sender; whether it is
        durable. For a REQUIRETLS message (RFC 8689 5) the report returns the
        header only, whatever RET said, and is itself sent with REQUIRETLS.
        """
        if envelope.requiretls:
            envelope = replace(envelope, ret="HDRS")
        try:
            utf8 = international(envelope)
            report = await self._build(envelope, recipients, action, message, utf8)
            now = self.clock.seconds()
            addresses = [envelope.sender]
            addresses += [a for a in extra if a.lower() != envelope.sender.lower()]
            dsn = Envelope(
                id=report_id(envelope, action), sender="",
                recipients=[Recipient(a) for a in addresses],
                arrival=now, next_attempt=now, size=len(report),
                client=LOCAL_CLIENT, body="8BITMIME" if has_8bit(report) else "",
                smtputf8=utf8,
                requiretls=envelope.requiretls,
            )
            await self._submit(dsn, BytesSource(report))
        except FileExistsError:
            pass  # made before a crash, stored under the same id: already durable
        except Exception:
            self.results.errors.failure("Cannot queue the {action} report for {queue_id}",
                                        action=action, queue_id=envelope.id)
            return False
        self.results.errors.info("{queue_id}: sender {action} notification: {dsn_id}",
                                 queue_id=envelope.id, action=action, dsn_id=dsn.id)
        return True

    async def _build(self, envelope: Envelope, recipients: list[Recipient], action: str,
                     message: IMessageSource, utf8: bool) -> bytes:
        """
        The report: it returns the whole original only for a failure with
        C{RET=FULL}, else just its header section (RFC 3461 4.3), so only
        that much is read. A BINARYMIME original is never returned whole:
        its binary body could not travel inside a report (only its header
        section is returned).
        """
        full = (action == FAILED and envelope.ret.upper() == "FULL"
                and envelope.body.upper() != "BINARYMIME")
        original = await self._run(read_all if full else read_head, message)
        until = envelope.arrival + self.config.delivery.expiration
        return self.bounces.build(envelope, recipients, action, original, retry_until=until,
                                  utf8=utf8)

    async def finish(self, envelope: Envelope) -> None:
        """
        Nothing is pending: remove the entry, or put it in badmail when it is
        a report (from C{<>}) that could not be delivered (never bounced).
        """
        failed = [r for r in envelope.recipients if r.state == RCPT_FAILED]
        if envelope.sender == "" and failed:
            reason = "undeliverable mail from <>: " + "; ".join(
                f"<{r.address}> {r.last_reply or r.status}" for r in failed
            )
            await self.queue.move_to_badmail(envelope, reason)
        else:
            await self.queue.remove(envelope.id)

    async def return_deleted(self, envelope: Envelope,
                             message: IMessageSource) -> bool:
        """
        Fail every pending recipient (5.0.0, deleted by the administrator)
        and return them to the sender; a report from C{<>} goes to badmail
        instead (and so leaves the queue). Whether that is done: the NDR is
        durable, or the entry is in badmail.
        """
        pending = envelope.pending()
        for r in pending:
            self.results.fail(envelope, r, "5.0.0",
                              "554 5.0.0 message deleted by the mail system administrator")
        if envelope.sender == "":
            await self.queue.move_to_badmail(envelope, "deleted by the administrator")
            return True
        return await self.bounce(envelope, pending, message)
