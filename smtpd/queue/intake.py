# -*- test-case-name: tests.test_fast_delivery -*-
"""
Messages just accepted: the way into the queue. A message for local
mailboxes only is written to those Maildirs at once, with the durability of
the queue, and never queued (the fast path); everything else is stored in the
queue and delivered from there.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.python.failure import Failure

from smtpd.directory.routing import LOCAL
from smtpd.mail.envelope import PENDING, QUEUED, DeliveryStatus, Envelope, Recipient
from smtpd.mail.source import IMessageSource
from smtpd.queue.dispatcher import Dispatcher
from smtpd.queue.results import Results, wants


class Intake:
    """
    Takes charge of new messages.

    @param queue: the L{smtpd.queue.store.Queue}.
    @param clock: an C{IReactorTime}.
    @param dispatcher: the L{Dispatcher} (routing and the C{local} agent, an
        L{smtpd.delivery.interfaces.IMailboxAgent}).
    @param results: the L{Results}.
    """

    def __init__(self, queue: Any, clock: Any, dispatcher: Dispatcher, results: Results):
        self.queue = queue
        self.clock = clock
        self.dispatcher = dispatcher
        self.results = results
        self.at_once = False

    def accept(self, envelope: Envelope, message: IMessageSource) -> Deferred[None]:
        """
        Take charge of a message an inbound session has just received: fires
        once it is durable, fails like L{smtpd.queue.store.Queue.store} when
        it cannot be made so.

        When every recipient is a local mailbox and none asked for a success
        DSN (and L{at_once} is set: the queue manager runs), the message is
        written to those Maildirs at once and never queued. Otherwise, or
        when any Maildir write fails (the copies already written are taken
        back, so nothing is delivered twice), it is stored in the queue.
        """
        mailboxes = self._all_local(envelope)
        if mailboxes is None:
            return self.queue.store(envelope, message)
        return Deferred.fromCoroutine(self._accept_local(envelope, mailboxes, message))

    async def _accept_local(self, envelope: Envelope, mailboxes: dict[str, list[Recipient]],
                            message: IMessageSource) -> None:
        if not await self._deliver_at_once(envelope, mailboxes, message):
            await self.queue.store(envelope, message)

    def _all_local(self, envelope: Envelope) -> dict[str, list[Recipient]] | None:
        """
        The recipients per Maildir when all of them can be delivered at once
        (local mailboxes, no success DSN wanted); else L{None}.
        """
        if not self.at_once or envelope.state != QUEUED:
            return None
        if "local" not in self.dispatcher.agents:
            return None
        mailboxes: dict[str, list[Recipient]] = {}
        for recipient in envelope.recipients:
            if recipient.state != PENDING or wants(recipient, "SUCCESS"):
                return None
            try:
                destination = self.dispatcher.destination(recipient)
            except Exception:
                return None  # the queue path reports it
            if destination is None or destination.kind != LOCAL:
                return None
            mailboxes.setdefault(destination.mailbox, []).append(recipient)
        return mailboxes or None

    async def _deliver_at_once(self, envelope: Envelope,
                               mailboxes: dict[str, list[Recipient]],
                               message: IMessageSource) -> bool:
        """Write every Maildir copy, or none; whether every one was written."""
        local = self.dispatcher.agents["local"]
        if len(mailboxes) == 1:
            [mailbox] = mailboxes
            try:
                results = [(True, await local.write(envelope, mailbox, message))]
            except Exception:
                results = [(False, Failure())]
        else:
            results = await DeferredList(local.write_many(envelope, list(mailboxes), message),
                                         consumeErrors=True)
        written = [path for ok, path in results if ok]
        if len(written) == len(results):
            self._delivered(envelope, mailboxes)
            return True
        errors = self.results.errors
        for ok, failure in results:
            if not ok:
                errors.info("Maildir delivery of {queue_id} at once failed ({error}); "
                            "queueing it", queue_id=envelope.id,
                            error=failure.getErrorMessage())
        for path in written:
            try:
                await maybeDeferred(local.remove, path)
            except Exception:
                errors.failure("Cannot take back {path} of {queue_id}; "
                               "it may be delivered twice", path=path, queue_id=envelope.id)
        return False

    def _delivered(self, envelope: Envelope, mailboxes: dict[str, list[Recipient]]) -> None:
        """Count and log a message delivered at once, like a queue delivery."""
        self.results.received(envelope)
        now = self.clock.seconds()
        for mailbox, recipients in mailboxes.items():
            for r in recipients:
                status = DeliveryStatus(r.address, 250, "2.0.0",
                                        f"delivered to maildir of {mailbox}")
                self.results.record(envelope, r, status, LOCAL, now)
