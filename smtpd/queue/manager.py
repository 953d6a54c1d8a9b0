# -*- test-case-name: tests.test_qmgr -*-
"""
The queue manager (Postfix's qmgr): decides when each queued message is tried,
hands its recipients to the delivery agents (local Maildir, drop folder, relay),
records the outcome per recipient in the durable queue, retries on the
C{[delivery] retry} schedule, and returns delay warnings, non-delivery reports
and success reports (RFC 3461/3464) through L{smtpd.bounce.BounceBuilder}.

Only C{(next attempt, queue id)} pairs are kept in memory while entries wait,
in one heap served by one timer; envelopes are read from disk when due, and at
most C{max_in_flight} attempts run at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from smtpd.queue.bounce import DELAYED, DELIVERED, FAILED, RELAYED, BounceBuilder, has_8bit
from smtpd.config import Config
from smtpd.mail.envelope import (
    DEFERRED,
    HELD,
    PENDING,
    QUEUED,
    DeliveryStatus,
    Envelope,
    Recipient,
)
from smtpd.mail.envelope import DELIVERED as RCPT_DELIVERED
from smtpd.mail.envelope import FAILED as RCPT_FAILED
from smtpd.delivery.outcome import temporary
from smtpd.directory.routing import DROP, LOCAL, REMOTE, Destination, route
from smtpd.mail.source import BytesSource, IMessageSource, read_all, read_head

# Envelope.client of the reports we generate: not counted as "received".
LOCAL_CLIENT = "local"

# The agent (by name in the registry) for each kind of destination.
AGENT_FOR = {LOCAL: "local", DROP: "drop", REMOTE: "relay"}

_DEFAULT_NOTIFY = ("FAILURE", "DELAY")


def wants(recipient: Recipient, kind: str) -> bool:
    """
    Whether RFC 3461 NOTIFY lets us report C{kind} (C{"SUCCESS"}, C{"FAILURE"},
    C{"DELAY"}) for C{recipient}; no NOTIFY means C{FAILURE,DELAY}.
    """
    notify = recipient.notify or _DEFAULT_NOTIFY
    return kind in notify and "NEVER" not in notify


def reply_line(status: DeliveryStatus) -> str:
    """The one-line reply for a status: C{"550 5.1.1 text"} (code added when absent)."""
    text = " ".join(status.reply.split())
    if text[:3] == str(status.code):
        return text
    if status.status and text.split(" ", 1)[0] == status.status:
        return f"{status.code} {text}"
    return f"{status.code} {status.status} {text}".rstrip()


class QueueManager(Service):
    """
    Runs deliveries for everything in the queue.

    @param queue: the L{smtpd.queue.Queue}; the only state shared with the
        rest of the server.
    @param clock: an C{IReactorTime}.
    @param agents: the delivery agents by name (C{"local"}, C{"drop"},
        C{"relay"}), each an L{smtpd.delivery.interfaces.IDeliveryAgent};
        C{"local"} is also an L{smtpd.delivery.interfaces.IMailboxAgent}
        for the all-local fast path.
    @param log: where the per-recipient delivery lines go: an object with
        C{delivery(queue_id, recipient, relay, code, status, delay)} (the
        L{smtpd.log.ActivityLog}), a twisted.logger C{Logger}, or a callable
        taking one dict. Errors go to its C{failure} method when it has one,
        else to twisted.logger.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk reads
        (the original message for a report); by default in the caller's thread.
    @param max_in_flight: how many attempts may run at once; by default
        C{[delivery] outbound_connections}, at least 100.
    @param shutdown_timeout: how long L{stopService} waits for them.

    @ivar counters: since start: C{received} (messages stored by others than
        this manager), C{delivered}, C{deferred} and C{bounced} (recipient
        results, per attempt).
    @ivar config: the L{Config}; may be replaced on reload.
    @ivar users: the accounts for routing; may be replaced on reload.
    """

    def __init__(
        self,
        config: Config,
        queue,
        clock,
        *,
        users,
        agents,
        bounces: BounceBuilder,
        log=None,
        run_blocking=None,
        max_in_flight: int | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.queue = queue
        self.clock = clock
        self.users = users
        self.agents = dict(agents)
        self.bounces = bounces
        self.log = log if log is not None else Logger()
        self._run = run_blocking if run_blocking is not None else maybeDeferred
        if max_in_flight is None:
            max_in_flight = max(100, config.delivery.outbound_connections)
        self.max_in_flight = max_in_flight
        self.shutdown_timeout = shutdown_timeout
        self.counters = {"received": 0, "delivered": 0, "deferred": 0, "bounced": 0}
        self._errors = self.log if hasattr(self.log, "failure") else Logger()
        self._states: dict[str, str] = {}
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._timer = None
        self._busy: dict[str, Deferred] = {}
        self._attempting: set[str] = set()
        self._pumping = False
        self._observing = False

    # -- service

    def startService(self) -> None:
        """Load the queue from disk, watch for new entries, start the timer."""
        Service.startService(self)
        self._load(self.queue.scan())
        if not self._observing:
            self.queue.add_observer(self._stored)
            self._observing = True
        self._pump()

    def stopService(self) -> Deferred[None] | None:
        """
        Start nothing more; wait for attempts in flight, at most
        C{shutdown_timeout} seconds (an unfinished attempt is simply made
        again after the restart).
        """
        Service.stopService(self)
        self._disarm()
        waiting = [_settled(d) for d in self._busy.values()]
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

    def _load(self, envelopes: list[Envelope]) -> None:
        """Replace the in-memory schedule with the entries of a scan."""
        self._states = {}
        self._due = {}
        for envelope in envelopes:
            state = envelope.state if envelope.state in (QUEUED, DEFERRED, HELD) else QUEUED
            self._states[envelope.id] = state
            if state != HELD:
                self._due[envelope.id] = envelope.next_attempt
        self._heap = [(when, queue_id) for queue_id, when in self._due.items()]
        heapq.heapify(self._heap)

    def _stored(self, envelope: Envelope) -> None:
        """Queue observer: a new entry is tried at once."""
        if envelope.client != LOCAL_CLIENT:
            self.counters["received"] += 1
        if not self.running:
            return
        if envelope.state == HELD:
            self._states[envelope.id] = HELD
            return
        self._states[envelope.id] = envelope.state if envelope.state == DEFERRED else QUEUED
        self._schedule(envelope.id, self.clock.seconds())
        self._arm()

    # -- messages just accepted

    def accept(self, envelope: Envelope, message: IMessageSource) -> Deferred[None]:
        """
        Take charge of a message an inbound session has just received (an
        L{IMessageSource}): fires once it is durable, fails like
        L{smtpd.queue.store.Queue.store} when it cannot be made so.

        When every recipient is a local mailbox and none asked for a success
        DSN, the message is written to those Maildirs at once, with the
        durability of the queue, and never queued. Otherwise, or when any
        Maildir write fails (the copies already written are taken back, so
        nothing is delivered twice), it is stored in the queue and delivered
        from there.
        """
        mailboxes = self._all_local(envelope)
        if mailboxes is None:
            return self.queue.store(envelope, message)
        return Deferred.fromCoroutine(self._accept_local(envelope, mailboxes, message))

    async def _accept_local(
        self, envelope: Envelope, mailboxes: dict[str, list[Recipient]], message: IMessageSource
    ) -> None:
        if not await self._deliver_at_once(envelope, mailboxes, message):
            await self.queue.store(envelope, message)

    def _all_local(self, envelope: Envelope) -> dict[str, list[Recipient]] | None:
        """
        The recipients per Maildir when all of them can be delivered at once
        (local mailboxes, no success DSN wanted); else L{None}.
        """
        if not self.running or envelope.state != QUEUED or "local" not in self.agents:
            return None
        mailboxes: dict[str, list[Recipient]] = {}
        for recipient in envelope.recipients:
            if recipient.state != PENDING or wants(recipient, "SUCCESS"):
                return None
            try:
                destination = route(self.config, self.users, recipient.address)
            except Exception:
                return None  # the queue path reports it
            if destination is None or destination.kind != LOCAL:
                return None
            mailboxes.setdefault(destination.mailbox, []).append(recipient)
        return mailboxes or None

    async def _deliver_at_once(
        self, envelope: Envelope, mailboxes: dict[str, list[Recipient]], message: IMessageSource
    ) -> bool:
        """Write every Maildir copy, or none; whether every one was written."""
        local = self.agents["local"]
        if len(mailboxes) == 1:
            [mailbox] = mailboxes
            try:
                results = [(True, await local.write(envelope, mailbox, message))]
            except Exception:
                results = [(False, Failure())]
        else:
            results = await DeferredList(
                [maybeDeferred(local.write, envelope, m, message) for m in mailboxes],
                consumeErrors=True,
            )
        written = [path for ok, path in results if ok]
        if len(written) == len(results):
            self.counters["received"] += 1
            now = self.clock.seconds()
            for mailbox, recipients in mailboxes.items():
                for r in recipients:
                    status = DeliveryStatus(r.address, 250, "2.0.0",
                                            f"delivered to maildir of {mailbox}")
                    self._apply(envelope, r, status, LOCAL, now)
            return True
        for ok, failure in results:
            if not ok:
                self._errors.info("Maildir delivery of {queue_id} at once failed ({error}); "
                                  "queueing it", queue_id=envelope.id,
                                  error=failure.getErrorMessage())
        for path in written:
            try:
                await maybeDeferred(local.remove, path)
            except Exception:
                self._errors.failure("Cannot take back {path} of {queue_id}; "
                                     "it may be delivered twice",
                                     path=path, queue_id=envelope.id)
        return False

    # -- scheduling

    def _schedule(self, queue_id: str, when: float) -> None:
        """Make C{queue_id} due at C{when} (replacing any earlier schedule)."""
        self._due[queue_id] = when
        heapq.heappush(self._heap, (when, queue_id))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(t, i) for i, t in self._due.items()]
            heapq.heapify(self._heap)

    def _earliest(self) -> float | None:
        """When the first entry is due; drops replaced heap items on the way."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _arm(self) -> None:
        """Keep the one timer set for the earliest due entry (none when full)."""
        earliest = self._earliest()
        if not self.running or earliest is None or self._full():
            self._disarm()
            return
        delay = max(0.0, earliest - self.clock.seconds())
        if self._timer is None or not self._timer.active():
            self._timer = self.clock.callLater(delay, self._fire)
        elif self._timer.getTime() != self.clock.seconds() + delay:
            self._timer.reset(delay)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._pump()

    def _full(self) -> bool:
        return len(self._attempting) >= self.max_in_flight

    def _pump(self) -> None:
        """Start every due entry, up to the limit of attempts in flight."""
        if self._pumping or not self.running:
            return
        self._pumping = True
        try:
            now = self.clock.seconds()
            while not self._full():
                earliest = self._earliest()
                if earliest is None or earliest > now:
                    break
                _, queue_id = heapq.heappop(self._heap)
                del self._due[queue_id]
                self.attempt(queue_id)
        finally:
            self._pumping = False
        self._arm()

    def _exclusive(self, queue_id: str, work: Callable[[], Awaitable[Any]]) -> Deferred:
        """
        Run C{work()} for C{queue_id} after any attempt or admin operation on
        the same entry has finished: one operation per entry at a time.
        """
        previous = self._busy.get(queue_id)

        async def run() -> Any:
            if previous is not None:
                await _settled(previous)
            return await work()

        d = Deferred.fromCoroutine(run())
        self._busy[queue_id] = d

        def release(result: object) -> object:
            if self._busy.get(queue_id) is d:
                del self._busy[queue_id]
            return result

        d.addBoth(release)
        return d

    def _forget(self, queue_id: str) -> None:
        """The entry left the queue."""
        self._states.pop(queue_id, None)
        self._due.pop(queue_id, None)

    # -- one attempt

    def attempt(self, queue_id: str) -> Deferred[None]:
        """
        Try to deliver entry C{queue_id} now (after any operation on it in
        progress). Never fails: every error is logged and retried later.
        """
        self._due.pop(queue_id, None)
        self._attempting.add(queue_id)
        d = self._exclusive(queue_id, lambda: self._attempt(queue_id))

        def failed(failure) -> None:
            self._errors.failure("Delivery attempt for {queue_id} failed", failure,
                                 queue_id=queue_id)
            if self.running and self._states.get(queue_id) not in (None, HELD):
                self._schedule(queue_id, self.clock.seconds() + self._interval(1))

        def done(_: object) -> None:
            self._attempting.discard(queue_id)
            self._pump()

        d.addErrback(failed)
        d.addBoth(done)
        return d

    async def _attempt(self, queue_id: str) -> None:
        envelope = await self._read_envelope(queue_id)
        if envelope is None:
            return
        if envelope.state == HELD or self._states.get(queue_id) == HELD:
            self._states[queue_id] = HELD
            return
        pending = envelope.pending()
        try:
            message = self.queue.source(queue_id)
        except Exception:
            self._errors.failure("Cannot read the data of queue entry {queue_id}",
                                 queue_id=queue_id)
            message = BytesSource(b"")
            statuses = {r.address: temporary(r.address, "queue file unreadable") for r in pending}
            kinds: dict[str, str] = {}
        else:
            statuses, kinds = await self._deliver(envelope, pending, message)
        now = self.clock.seconds()
        for recipient in pending:
            self._apply(envelope, recipient, statuses[recipient.address],
                        kinds.get(recipient.address, ""), now)
        envelope.attempts += 1
        await self._conclude(envelope, pending, kinds, message, now)

    async def _read_envelope(self, queue_id: str) -> Envelope | None:
        """
        The entry's envelope, or L{None} when the entry is gone.

        @raise Exception: when it cannot be read.
        """
        try:
            return await self.queue.read_envelope(queue_id)
        except FileNotFoundError:
            self._forget(queue_id)
            return None

    # -- delivery agents

    async def _deliver(
        self, envelope: Envelope, pending: list[Recipient], message: IMessageSource
    ) -> tuple[dict[str, DeliveryStatus], dict[str, str]]:
        """
        Route each pending recipient and hand the recipients of each agent to
        it, all agents at once.

        @return: a status per address, and the destination kind per address.
        """
        statuses: dict[str, DeliveryStatus] = {}
        kinds: dict[str, str] = {}
        groups: dict[str, list[tuple[Recipient, Destination]]] = {}
        for recipient in pending:
            if recipient.address in kinds or recipient.address in statuses:
                continue  # a repeated RCPT: one delivery
            try:
                destination = route(self.config, self.users, recipient.address)
            except Exception:
                self._errors.failure("Routing {address} failed", address=recipient.address)
                statuses[recipient.address] = temporary(recipient.address, "routing error")
                continue
            if destination is None:
                statuses[recipient.address] = DeliveryStatus(
                    recipient.address, 550, "5.1.1",
                    f"<{recipient.address}>: Recipient address rejected: no such user here",
                )
                continue
            kinds[recipient.address] = destination.kind
            name = AGENT_FOR.get(destination.kind, destination.kind)
            groups.setdefault(name, []).append((recipient, destination))
        jobs = [Deferred.fromCoroutine(self._hand_over(name, envelope, deliveries, message))
                for name, deliveries in groups.items()]
        for results in await gatherResults(jobs, consumeErrors=True):
            for status in results:
                statuses.setdefault(status.address, status)
        return statuses, kinds

    async def _hand_over(
        self, name: str, envelope: Envelope,
        deliveries: list[tuple[Recipient, Destination]], message: IMessageSource,
    ) -> list[DeliveryStatus]:
        """One call of agent C{name} for its recipients; one status each, whatever happens."""
        agent = self.agents.get(name)
        try:
            if agent is None:
                raise LookupError(f"no delivery agent {name!r}")
            results = list(await maybeDeferred(agent.deliver, envelope, deliveries, message))
        except Exception:
            self._errors.failure("Delivery of {queue_id} by {agent} failed",
                                 queue_id=envelope.id, agent=name)
            results = []
        answered = {s.address for s in results}
        for recipient, _ in deliveries:
            if recipient.address not in answered:
                results.append(temporary(recipient.address, f"{name} error"))
        return results

    # -- outcome

    def _apply(
        self, envelope: Envelope, recipient: Recipient, status: DeliveryStatus,
        kind: str, now: float,
    ) -> None:
        """Record one recipient's result: state, reply, counters, log line."""
        recipient.last_reply = reply_line(status)
        recipient.status = status.status
        recipient.remote_mta = status.remote_mta
        if status.delivered:
            recipient.state = RCPT_DELIVERED
            self.counters["delivered"] += 1
        elif status.permanent:
            recipient.state = RCPT_FAILED
            self.counters["bounced"] += 1
        else:
            self.counters["deferred"] += 1
        relay = status.remote_mta or {LOCAL: "local", DROP: "drop"}.get(kind, "none")
        self._log_result(envelope, recipient, relay, status.code, status.status, now, status.tls)

    def _log_result(
        self, envelope: Envelope, recipient: Recipient, relay: str,
        code: int, status: str, now: float, tls: bool = False,
    ) -> None:
        """The delivery log line for one recipient (SPEC 7)."""
        delay = max(0.0, now - envelope.arrival)
        if hasattr(self.log, "delivery"):
            self.log.delivery(envelope.id, recipient.address, relay, code, status, delay, tls)
            return
        fields = {
            "queue_id": envelope.id, "recipient": recipient.address, "relay": relay,
            "code": code, "status": status, "delay": round(delay, 3),
            "reply": recipient.last_reply,
        }
        if hasattr(self.log, "info"):
            self.log.info(
                "{queue_id}: to=<{recipient}>, relay={relay}, delay={delay}, "
                "dsn={status}, code={code} ({reply})", **fields
            )
        else:
            self.log(fields)

    async def _conclude(
        self, envelope: Envelope, attempted: list[Recipient],
        kinds: dict[str, str], message: IMessageSource, now: float,
    ) -> None:
        """Expiry, notifications, then remove the entry or record it and reschedule."""
        failed = [r for r in attempted if r.state == RCPT_FAILED]
        failed += self._expire(envelope, now)
        if envelope.sender:
            returned = await self._bounce(envelope, failed, message)
            await self._report_success(envelope, attempted, kinds, message)
            await self._warn_delay(envelope, message, now)
            if not returned:
                for r in failed:
                    r.state = PENDING  # the report is made again at the next attempt
        if envelope.pending():
            await self._keep(envelope, now)
        else:
            await self._finish(envelope)

    def _expire(self, envelope: Envelope, now: float) -> list[Recipient]:
        """Fail what is still pending once the message is C{expiration} old (4.4.7)."""
        if now - envelope.arrival < self.config.delivery.expiration:
            return []
        expired = envelope.pending()
        for r in expired:
            r.state = RCPT_FAILED
            r.status = "4.4.7"
            self.counters["bounced"] += 1
            relay = r.remote_mta or "none"
            self._log_result(envelope, r, relay, 554, "4.4.7", now)
        return expired

    async def _bounce(self, envelope: Envelope, failed: list[Recipient], message: IMessageSource) -> bool:
        """
        The NDR for C{failed} recipients whose NOTIFY asks for it, with a copy
        to C{ndr_copy_to} (an extra recipient of the same report).

        @return: whether nothing needed storing or the report is durable.
        """
        wanted = [r for r in failed if wants(r, "FAILURE")]
        if not wanted:
            return True
        copy = self.config.messages.ndr_copy_to
        return await self._send(envelope, wanted, FAILED, message, extra=(copy,) if copy else ())

    async def _report_success(
        self, envelope: Envelope, attempted: list[Recipient],
        kinds: dict[str, str], message: IMessageSource,
    ) -> None:
        """Success DSNs: "delivered" for local and drop, "relayed" for remote."""
        done = [r for r in attempted if r.state == RCPT_DELIVERED and wants(r, "SUCCESS")]
        relayed = [r for r in done if kinds.get(r.address) == REMOTE]
        delivered = [r for r in done if kinds.get(r.address) != REMOTE]
        for recipients, action in ((delivered, DELIVERED), (relayed, RELAYED)):
            if recipients:
                await self._send(envelope, recipients, action, message)

    async def _warn_delay(self, envelope: Envelope, message: IMessageSource, now: float) -> None:
        """One "delayed" DSN per recipient once the message is C{delay_notification} old."""
        limit = self.config.delivery.delay_notification
        if limit <= 0 or now - envelope.arrival < limit:
            return
        late = [r for r in envelope.pending() if not r.notified_delay and wants(r, "DELAY")]
        if late and await self._send(envelope, late, DELAYED, message):
            for r in late:
                r.notified_delay = True

    async def _send(
        self, envelope: Envelope, recipients: list[Recipient], action: str,
        message: IMessageSource, extra: tuple[str, ...] = (),
    ) -> bool:
        """Build and queue one DSN from C{<>} to the sender; whether it is durable."""
        try:
            until = envelope.arrival + self.config.delivery.expiration
            full = action == FAILED and envelope.ret.upper() == "FULL"
            original = await self._run(read_all if full else read_head, message)
            report = self.bounces.build(envelope, recipients, action, original,
                                        retry_until=until)
            now = self.clock.seconds()
            addresses = [envelope.sender]
            addresses += [a for a in extra if a.lower() != envelope.sender.lower()]
            dsn = Envelope(
                id=self.queue.new_id(), sender="",
                recipients=[Recipient(a) for a in addresses],
                arrival=now, next_attempt=now, size=len(report),
                client=LOCAL_CLIENT, body="8BITMIME" if has_8bit(report) else "",
            )
            await self.queue.store(dsn, BytesSource(report))
        except Exception:
            self._errors.failure("Cannot queue the {action} report for {queue_id}",
                                 action=action, queue_id=envelope.id)
            return False
        self._errors.info("{queue_id}: sender {action} notification: {dsn_id}",
                          queue_id=envelope.id, action=action, dsn_id=dsn.id)
        return True

    async def _keep(self, envelope: Envelope, now: float) -> None:
        """Record the attempt on disk, then schedule the next one."""
        queue_id = envelope.id
        held = self._states.get(queue_id) == HELD
        envelope.state = HELD if held else DEFERRED
        envelope.next_attempt = self._next_attempt(envelope, now)
        try:
            await self.queue.update(envelope)
        except FileNotFoundError:
            self._forget(queue_id)
            return
        except Exception:
            self._errors.failure("Cannot record the attempt on {queue_id}", queue_id=queue_id)
        if queue_id not in self._states:
            return  # deleted meanwhile
        self._states[queue_id] = envelope.state
        if not held and self.running:
            self._schedule(queue_id, envelope.next_attempt)

    async def _finish(self, envelope: Envelope) -> None:
        """
        Nothing is pending: remove the entry, or put it in badmail when it is
        a report (from C{<>}) that could not be delivered (never bounced).
        """
        failed = [r for r in envelope.recipients if r.state == RCPT_FAILED]
        try:
            if envelope.sender == "" and failed:
                reason = "undeliverable mail from <>: " + "; ".join(
                    f"<{r.address}> {r.last_reply or r.status}" for r in failed
                )
                await self.queue.move_to_badmail(envelope, reason)
            else:
                await self.queue.remove(envelope.id)
        except Exception:
            self._errors.failure("Cannot remove finished queue entry {queue_id}",
                                 queue_id=envelope.id)
            await self._keep(envelope, self.clock.seconds())
            return
        self._forget(envelope.id)

    def _interval(self, attempts: int) -> float:
        """The retry interval after attempt number C{attempts} (the last repeats)."""
        retry = self.config.delivery.retry or (900.0,)
        return max(1.0, retry[min(attempts - 1, len(retry) - 1)])

    def _next_attempt(self, envelope: Envelope, now: float) -> float:
        """
        The next retry per C{[delivery] retry}, brought forward to the moment a
        delay warning is due or the message expires, so both happen on time.
        """
        when = now + self._interval(envelope.attempts)
        delivery = self.config.delivery
        deadlines = [envelope.arrival + delivery.expiration]
        if delivery.delay_notification > 0 and envelope.sender and any(
            not r.notified_delay and wants(r, "DELAY") for r in envelope.pending()
        ):
            deadlines.append(envelope.arrival + delivery.delay_notification)
        return min([when] + [t for t in deadlines if t > now])

    # -- administration

    def _known(self, queue_id: str) -> str:
        if queue_id not in self._states:
            raise KeyError(f"no queue entry {queue_id!r}")
        return self._states[queue_id]

    def retry(self, id: str | None = None) -> int:
        """
        Attempt entry C{id} now, or every entry that is not held when C{id}
        is L{None}; returns how many were made due.

        @raise KeyError: for an unknown id.
        """
        now = self.clock.seconds()
        if id is None:
            ids = [i for i, s in self._states.items() if s != HELD and i not in self._attempting]
            self._due = dict.fromkeys(ids, now)
            self._heap = [(now, i) for i in ids]
        elif self._known(id) == HELD or id in self._attempting:
            return 0
        else:
            ids = [id]
            self._schedule(id, now)
        self._pump()
        return len(ids)

    def hold(self, id: str) -> Deferred[None]:
        """
        Stop attempting entry C{id} until L{release}d (kept across restarts).

        @raise KeyError: for an unknown id.
        """
        self._known(id)
        self._states[id] = HELD
        self._due.pop(id, None)
        return self._exclusive(id, lambda: self._set_state(id, HELD))

    def release(self, id: str) -> Deferred[None]:
        """
        Attempt a held entry again, at once.

        @raise KeyError: for an unknown id.
        """
        if self._known(id) != HELD:
            return succeed(None)
        return self._exclusive(id, lambda: self._set_state(id, None))

    async def _set_state(self, queue_id: str, state: str | None) -> None:
        """Write a held state (or, for L{None}, the released one) to disk."""
        envelope = await self._read_envelope(queue_id)
        if envelope is None:
            return
        now = self.clock.seconds()
        if state is None:
            state = DEFERRED if envelope.attempts else QUEUED
            envelope.next_attempt = now
        envelope.state = state
        await self.queue.update(envelope)
        if queue_id in self._states:
            self._states[queue_id] = state
            if state != HELD:
                self._schedule(queue_id, now)
                self._pump()

    def delete(self, id: str, bounce: bool = False) -> Deferred[None]:
        """
        Remove entry C{id}; with C{bounce}, first return an NDR (5.0.0) for
        its pending recipients (a report from C{<>} goes to badmail instead).

        @raise KeyError: for an unknown id.
        """
        self._known(id)
        self._due.pop(id, None)
        return self._exclusive(id, lambda: self._delete(id, bounce))

    async def _delete(self, queue_id: str, bounce: bool) -> None:
        envelope = await self._read_envelope(queue_id)
        if envelope is None:
            return
        if bounce and envelope.pending():
            message = self.queue.source(queue_id)
            pending = envelope.pending()
            for r in pending:
                r.state = RCPT_FAILED
                r.status = "5.0.0"
                r.last_reply = "554 5.0.0 message deleted by the mail system administrator"
                self.counters["bounced"] += 1
            if envelope.sender == "":
                await self.queue.move_to_badmail(envelope, "deleted by the administrator")
                self._forget(queue_id)
                return
            if not await self._bounce(envelope, pending, message):
                # Not deleted: the entry goes back on the schedule as it was.
                self._schedule(queue_id, envelope.next_attempt)
                self._arm()
                raise RuntimeError(f"cannot queue the NDR for {queue_id}; not deleted")
        await self.queue.remove(queue_id)
        self._forget(queue_id)

    def summary(self) -> dict[str, int]:
        """How many entries are queued, deferred and held."""
        counts = {QUEUED: 0, DEFERRED: 0, HELD: 0}
        for state in self._states.values():
            counts[state] = counts.get(state, 0) + 1
        return counts


def _settled(d: Deferred) -> Deferred[None]:
    """A Deferred firing (with None) when C{d} fires, leaving C{d}'s result alone."""
    waiter: Deferred[None] = Deferred()

    def passthrough(result: object) -> object:
        waiter.callback(None)
        return result

    d.addBoth(passthrough)
    return waiter


def _fire(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)
