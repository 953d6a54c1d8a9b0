# -*- test-case-name: tests.test_qmgr -*-
"""
One delivery attempt of one queue entry, from reading its envelope to
recording the outcome: the dispatcher delivers, the results are recorded per
recipient, the notifier sends the reports they call for, and the entry is
either finished (removed, or put in badmail) or written back and given its
next attempt by the scheduler.
"""

from __future__ import annotations

from typing import Any

from smtpd.delivery.outcome import temporary
from smtpd.mail.envelope import DEFERRED, HELD, Envelope
from smtpd.mail.source import BytesSource, IMessageSource
from smtpd.queue.dispatcher import Dispatcher
from smtpd.queue.notifier import Notifier
from smtpd.queue.results import Results
from smtpd.queue.scheduler import Scheduler
from smtpd.util import faults


class Attempts:
    """
    Runs attempts on queue entries (one at a time per entry: the scheduler
    sees to that).

    @param queue: the L{smtpd.queue.store.Queue}.
    @param clock: an C{IReactorTime}.
    """

    def __init__(self, queue: Any, clock: Any, scheduler: Scheduler, dispatcher: Dispatcher,
                 notifier: Notifier, results: Results):
        self.queue = queue
        self.clock = clock
        self.scheduler = scheduler
        self.dispatcher = dispatcher
        self.notifier = notifier
        self.results = results

    async def run(self, queue_id: str) -> None:
        """
        Try to deliver entry C{queue_id} now.

        @raise Exception: when its envelope cannot be read or written (the
            scheduler logs it and retries later).
        """
        envelope = await self.scheduler.read(queue_id)
        if envelope is None:
            return
        if envelope.state == HELD or self.scheduler.state(queue_id) == HELD:
            self.scheduler.set_state(queue_id, HELD)
            return
        pending = envelope.pending()
        try:
            message: IMessageSource = self.queue.source(queue_id)
        except Exception:
            self.results.errors.failure("Cannot read the data of queue entry {queue_id}",
                                        queue_id=queue_id)
            message = BytesSource(b"")
            statuses = {r.address: temporary(r.address, "queue file unreadable")
                        for r in pending}
            kinds: dict[str, str] = {}
        else:
            statuses, kinds = await self.dispatcher.deliver(envelope, pending, message)
            faults.point("delivered")
        now = self.clock.seconds()
        for recipient in pending:
            self.results.record(envelope, recipient, statuses[recipient.address],
                                kinds.get(recipient.address, ""), now)
        envelope.attempts += 1
        passed = {address for address, status in statuses.items() if status.dsn_passed}
        await self.notifier.conclude(envelope, pending, kinds, message, now, passed)
        if envelope.pending():
            await self.keep(envelope, now)
        else:
            await self._finish(envelope)

    async def keep(self, envelope: Envelope, now: float) -> None:
        """Record the attempt on disk, then schedule the next one."""
        queue_id = envelope.id
        held = self.scheduler.state(queue_id) == HELD
        envelope.state = HELD if held else DEFERRED
        envelope.next_attempt = self.scheduler.next_attempt(envelope, now)
        try:
            await self.queue.update(envelope)
        except FileNotFoundError:
            self.scheduler.forget(queue_id)
            return
        except Exception:
            self.results.errors.failure("Cannot record the attempt on {queue_id}",
                                        queue_id=queue_id)
        if self.scheduler.state(queue_id) is None:
            return  # deleted meanwhile
        self.scheduler.set_state(queue_id, envelope.state)
        if not held and self.scheduler.running:
            self.scheduler.schedule(queue_id, envelope.next_attempt)

    async def _finish(self, envelope: Envelope) -> None:
        """Nothing is pending: the entry leaves the queue (or stays when it cannot)."""
        try:
            await self.notifier.finish(envelope)
        except Exception:
            self.results.errors.failure("Cannot remove finished queue entry {queue_id}",
                                        queue_id=envelope.id)
            await self.keep(envelope, self.clock.seconds())
            return
        self.scheduler.forget(envelope.id)
