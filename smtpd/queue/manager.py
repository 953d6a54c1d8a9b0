# -*- test-case-name: tests.test_qmgr -*-
"""
The queue manager (Postfix's qmgr): the service that assembles the parts of
the queue and starts and stops them.

    Intake       accept(): the all-local fast path, else the store
    Scheduler    what is due: one heap, one timer, the retry schedule
    Attempts     one attempt: read, dispatch, record, notify, keep or finish
    Dispatcher   route each recipient, hand it to its agent by name
    Notifier     NDRs, delay and success DSNs, badmail, expiry
    Operations   retry, hold, release, delete, summary, list (admin)
    Results      recipient states, counters, delivery log lines
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults

from smtpd.config import Config
from smtpd.mail.envelope import Envelope
from smtpd.mail.source import IMessageSource
from smtpd.queue.attempt import Attempts
from smtpd.queue.bounce import BounceBuilder
from smtpd.queue.dispatcher import Dispatcher
from smtpd.queue.intake import Intake
from smtpd.queue.notifier import Notifier
from smtpd.queue.operations import EntrySummary, Operations
from smtpd.queue.results import LOCAL_CLIENT, Results, reply_line, wants
from smtpd.queue.scheduler import Scheduler

__all__ = ["QueueManager", "LOCAL_CLIENT", "reply_line", "wants"]


class QueueManager(Service):
    """
    Runs deliveries for everything in the queue.

    @param config: the L{Config}.
    @param queue: the L{smtpd.queue.store.Queue}; the only state shared with
        the rest of the server.
    @param clock: an C{IReactorTime}.
    @param users: the accounts, for routing.
    @param agents: the delivery agents by name (C{"local"}, C{"drop"},
        C{"relay"}), each an L{smtpd.delivery.interfaces.IDeliveryAgent};
        C{"local"} is also an L{smtpd.delivery.interfaces.IMailboxAgent}
        for the all-local fast path.
    @param bounces: the L{BounceBuilder}.
    @param log: where the per-recipient delivery lines go (see L{Results}).
    @param submit: C{submit(envelope, source) -> Deferred} for the reports
        the queue makes; by default C{queue.store}.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk reads
        (the original message for a report); by default in the caller's thread.
    @param max_in_flight: how many attempts may run at once; by default
        C{[delivery] outbound_connections}, at least 100.
    @param shutdown_timeout: how long L{stopService} waits for them.
    """

    def __init__(
        self,
        config: Config,
        queue: Any,
        clock: Any,
        *,
        users: Any,
        agents: Mapping[str, Any],
        bounces: BounceBuilder,
        log: Any = None,
        submit: Callable[..., Deferred] | None = None,
        run_blocking: Callable[..., Deferred] | None = None,
        max_in_flight: int | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        if max_in_flight is None:
            max_in_flight = max(100, config.delivery.outbound_connections)
        self.queue = queue
        self.clock = clock
        self.shutdown_timeout = shutdown_timeout
        self.results = Results(log)
        errors = self.results.errors
        self.scheduler = Scheduler(queue, clock, config, errors, max_in_flight)
        self.dispatcher = Dispatcher(config, users, agents, errors)
        self.notifier = Notifier(config, queue, clock, bounces, self.results,
                                 submit=submit, run_blocking=run_blocking)
        self.attempts = Attempts(queue, clock, self.scheduler, self.dispatcher,
                                 self.notifier, self.results)
        self.intake = Intake(queue, clock, self.dispatcher, self.results)
        self.operations = Operations(queue, clock, self.scheduler, self.notifier)
        self._observing = False

    # -- settings that change on reload

    @property
    def config(self) -> Config:
        """The L{Config}; assigning one passes it to every part."""
        return self.dispatcher.config

    @config.setter
    def config(self, config: Config) -> None:
        self.dispatcher.config = self.scheduler.config = self.notifier.config = config

    @property
    def users(self) -> Any:
        """The accounts for routing; may be replaced on reload."""
        return self.dispatcher.users

    @users.setter
    def users(self, users: Any) -> None:
        self.dispatcher.users = users

    @property
    def counters(self) -> dict[str, int]:
        """
        Since start: C{received} (messages stored by others than this
        manager), C{delivered}, C{deferred} and C{bounced} (recipient
        results, per attempt).
        """
        return self.results.counters

    # -- service

    def startService(self) -> None:
        """Load the schedule from disk, watch for new entries, start the timer."""
        Service.startService(self)
        if not self._observing:
            self.queue.add_observer(self._stored)
            self._observing = True
        self.intake.at_once = True
        self.scheduler.start(self.attempts.run)

    def stopService(self) -> Deferred[None] | None:
        """
        Start nothing more; wait for attempts in flight, at most
        C{shutdown_timeout} seconds (an unfinished attempt is simply made
        again after the restart).
        """
        Service.stopService(self)
        self.intake.at_once = False
        waiting = self.scheduler.stop()
        if not waiting:
            return None
        done: Deferred[None] = Deferred()
        timer = self.clock.callLater(self.shutdown_timeout, _fire, done)

        def finished(_: object) -> None:
            if timer.active():
                timer.cancel()
            _fire(done)

        gatherResults(waiting).addBoth(finished)
        return done

    def _stored(self, envelope: Envelope) -> None:
        """Queue observer: count what others stored; a new entry is tried at once."""
        if envelope.client != LOCAL_CLIENT:
            self.results.received(envelope)
        self.scheduler.added(envelope)

    # -- the way in, and administration

    def accept(self, envelope: Envelope, message: IMessageSource) -> Deferred[None]:
        """Take charge of a message just received (L{Intake.accept})."""
        return self.intake.accept(envelope, message)

    def retry(self, id: str | None = None) -> int:
        """Attempt entry C{id} (or every one not held) now (L{Operations.retry})."""
        return self.operations.retry(id)

    def flush_domain(self, domain: str, subdomains: bool = False) -> Deferred[int]:
        """
        Attempt now every entry with mail pending for C{domain} (ETRN);
        fires with how many (L{Operations.flush_domain}).
        """
        return Deferred.fromCoroutine(self.operations.flush_domain(domain, subdomains))

    def hold(self, id: str) -> Deferred[None]:
        """Stop attempting entry C{id} until released (L{Operations.hold})."""
        return self.operations.hold(id)

    def release(self, id: str) -> Deferred[None]:
        """Attempt a held entry again, at once (L{Operations.release})."""
        return self.operations.release(id)

    def delete(self, id: str, bounce: bool = False) -> Deferred[None]:
        """Remove entry C{id}, with an NDR when C{bounce} (L{Operations.delete})."""
        return self.operations.delete(id, bounce)

    def summary(self) -> dict[str, int]:
        """How many entries are queued, deferred and held."""
        return self.operations.summary()

    def page(self, limit: int | None, offset: int = 0,
             after: str | None = None) -> list[tuple[str, str | None]]:
        """One page of entry ids in order, each with its state (L{Scheduler.page})."""
        return self.scheduler.page(limit, offset, after)

    def position(self, after: str | None = None) -> tuple[int, int]:
        """
        Where C{after} stands in the listing order of L{page}: C{(entries up
        to and including it, all entries)} (L{Scheduler.position}).
        """
        return self.scheduler.position(after)

    def observe_load(self, callback: Callable[[list[tuple[str, float, frozenset[str]]]],
                                              object]) -> None:
        """
        Call C{callback([(queue id, next attempt, pending domains)])} with
        the deferred entries of each batch the scheduler reads at start.
        """
        self.scheduler.load_observers.append(callback)

    def deferred(self) -> list[tuple[str, float, float | None]]:
        """C{(id, arrival, next attempt)} of each deferred entry (L{Scheduler.deferred})."""
        return self.scheduler.deferred()

    def ages(self, bounds: tuple[float, ...]) -> dict[str, list[int]]:
        """
        The entries of each state by age now (L{Scheduler.ages}): one count
        per upper bound of C{bounds} (seconds) and one for older.
        """
        return self.scheduler.ages(self.clock.seconds(), bounds)

    def list(self, offset: int = 0, limit: int = 100) -> Deferred[list[EntrySummary]]:
        """One page of entry summaries read from disk (L{Operations.list})."""
        return Deferred.fromCoroutine(self.operations.list(offset, limit))


def _fire(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)
