# -*- test-case-name: tests.test_cleanup -*-
"""
The cleanup stage itself: L{Cleanup.begin} opens an L{IncomingMessage} that
takes the data as it arrives (checked by L{MessageRules}, kept in a
L{Spool}); L{IncomingMessage.finish} runs the filters and hands the message to
the queue intake, firing once it is durable. L{Cleanup.submit} is the way in
for reports we make ourselves (NDRs, delay notices).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import BinaryIO

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from smtpd.cleanup.interfaces import ClientInfo, FilterResult, ICleanupFilter, MessageRefused
from smtpd.cleanup.rules import MessageRules
from smtpd.cleanup.trace import received_header
from smtpd.mail.envelope import Envelope, Recipient
from smtpd.mail.source import IMessageSource
from smtpd.mailauth.results import ForgedResultsFilter
from smtpd.queue.spool import THRESHOLD, JoinedReader, Spool
from smtpd.util import faults

log = Logger()

# Envelope.client of pickup files.
PICKUP_CLIENT = "pickup"


class Cleanup:
    """
    The one way into the queue.

    @param config: the L{smtpd.config.Config}; may be replaced on reload.
    @param queue: the L{smtpd.queue.store.Queue} (ids, and the folder a
        large message spills into).
    @param clock: an C{IReactorTime}.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk work.
    @param accept: C{accept(envelope, message) -> Deferred[None]}, firing once
        the message is durable (delivered to every local Maildir, or stored);
        by default C{queue.store}.
    @param filters: the L{ICleanupFilter}s, in order.
    @param threshold: the size beyond which a message goes to disk.
    """

    def __init__(self, config, queue, clock, run_blocking: Callable[..., Deferred],
                 accept: Callable[[Envelope, IMessageSource], Deferred] | None = None,
                 filters: Sequence[ICleanupFilter] = (), threshold: int = THRESHOLD):
        self.config = config
        self.queue = queue
        self.clock = clock
        self.run_blocking = run_blocking
        self.accept = accept
        self.filters = list(filters)
        self.threshold = threshold

    def begin(self, sender: str, recipients: list[Recipient], *,
              client: ClientInfo | None, ret: str = "", envid: str = "", body: str = "",
              room: int | None = None, normalize: bool | None = None, messages=None,
              smtputf8: bool = False, requiretls: bool = False) -> IncomingMessage:
        """
        Start a message from C{client} (L{None}: the pickup folder).

        @param room: what the session may still send (L{None}: no limit).
        @param normalize: make bare CR/LF into CRLF (default: per
            C{[messages] bare_newlines}).
        @param messages: the C{[messages]} limits to apply (default: the
            current config's).
        @param smtputf8: the client gave the SMTPUTF8 parameter (RFC 6531).
        @param requiretls: MAIL had REQUIRETLS (RFC 8689): kept in the envelope.
        """
        messages = messages if messages is not None else self.config.messages
        if normalize is None:
            normalize = messages.bare_newlines == "normalize"
        binary = body.upper() == "BINARYMIME"
        rules = MessageRules(messages.max_message_size, room, normalize and not binary,
                             messages.max_hop_count, binary=binary)
        now = self.clock.seconds()
        envelope = Envelope(
            id=self.queue.new_id(), sender=sender, recipients=recipients, arrival=now,
            next_attempt=now, ret=ret, envid=envid, body=body, smtputf8=smtputf8,
            requiretls=requiretls,
            client=PICKUP_CLIENT if client is None else f"{client.helo} [{client.ip}]",
        )
        spool = Spool(self.queue.directory, self.run_blocking, self.threshold)
        hostname = self.config.server.hostname
        spool.write(received_header(hostname, client, envelope.id,
                                    [r.address for r in recipients], now))
        forged = ForgedResultsFilter(self.config.authserv_id)
        return IncomingMessage(self, envelope, client, rules, spool, forged)

    def submit(self, envelope: Envelope, message: IMessageSource) -> Deferred[None]:
        """
        Queue a message we made (a report): the filters may sign it (their
        refusals are logged, not obeyed: a report must not vanish), then the
        intake takes it. Fires once it is durable.
        """
        return Deferred.fromCoroutine(self._submit(envelope, message))

    async def _submit(self, envelope: Envelope, message: IMessageSource) -> None:
        prepend, reply = await self.run_filters(envelope, message, None)
        if reply is not None:
            log.warn("filter refusal of report {id} ignored: {reply}", id=envelope.id,
                     reply=" ".join(map(str, reply)))
        if prepend:
            message = PrefixedSource(prepend, message)
            envelope.size = message.size
        await self.intake(envelope, message)

    def intake(self, envelope: Envelope, message: IMessageSource) -> Deferred[None]:
        """Hand a finished message to C{accept} (by default the queue's C{store})."""
        return (self.accept or self.queue.store)(envelope, message)

    async def run_filters(self, envelope: Envelope, message: IMessageSource,
                          client: ClientInfo | None) -> tuple[bytes, tuple | None]:
        """
        Run every filter: the fields to prepend, and the first refusal
        (L{None} when none refused). A filter that fails refuses with 451.
        """
        fields: list[bytes] = []
        if not self.filters:
            return b"", None
        for check in self.filters:
            try:
                result = maybeDeferred(check.check, envelope, message, client)
                result = await _resolved(result)
            except Exception:
                log.failure("cleanup filter {name} failed on {id}",
                            name=getattr(check, "name", check), id=envelope.id)
                return b"".join(fields), (451, "4.3.0", "Error: local error in processing")
            fields.extend(result.prepend)
            if result.reply is not None:
                return b"".join(fields), result.reply
        return b"".join(fields), None


async def _resolved(result: Deferred) -> FilterResult:
    value = await result
    if inspect.isawaitable(value):
        value = await value
    return value


class IncomingMessage:
    """
    One message on its way in: L{write} its data as it arrives, then
    L{finish} (or L{abort}).

    @ivar envelope: the envelope it will be queued with (its C{id} is known
        from the start).
    """

    def __init__(self, cleanup: Cleanup, envelope: Envelope, client: ClientInfo | None,
                 rules: MessageRules, spool: Spool, forged: ForgedResultsFilter):
        self.envelope = envelope
        self._forged = forged
        self._cleanup = cleanup
        self._client = client
        self._rules = rules
        self._spool = spool
        self._dropped = False

    @property
    def size(self) -> int:
        """The octets of data received so far (dot-unstuffed, no trace header)."""
        return self._rules.size

    def write(self, data: bytes) -> bool:
        """
        Take the next part of the data (dot-unstuffed); C{False} when the
        sender should pause until L{drained} fires (the disk lags).
        """
        data = self._rules.feed(data)
        if self._dropped:
            return True
        if self._rules.hopeless:
            # Refused whatever follows: keep reading, keep nothing.
            self._dropped = True
            self._spool.discard()
            return True
        data = self._forged.feed(data)
        return self._spool.write(data) if data else True

    def early_refusal(self) -> MessageRefused | None:
        """
        Why the message will be refused whatever data follows (too big, a
        bare CR or LF, a long line), or L{None}: for answering each BDAT chunk.
        """
        return self._rules.refusal() if self._rules.hopeless else None

    def drained(self) -> Deferred[None]:
        """Fires when the spool has caught up."""
        return self._spool.drained()

    def finish(self) -> Deferred[Envelope]:
        """
        The data is complete. Fires with the envelope once the message is
        durable; fails with L{MessageRefused} when a rule or filter refuses
        it, or with the L{OSError} of a failed write. The spool is gone
        either way.
        """
        return Deferred.fromCoroutine(self._finish())

    async def _finish(self) -> Envelope:
        spool = self._spool
        try:
            tail = self._rules.finish()
            refusal = self._rules.refusal()
            if refusal is not None:
                raise refusal
            tail = self._forged.feed(tail) + self._forged.finish()
            if tail:
                spool.write(tail)
            await spool.finish()
            envelope = self.envelope
            envelope.size = spool.size
            fields, reply = await self._cleanup.run_filters(envelope, spool, self._client)
            if reply is not None:
                raise MessageRefused(*reply)
            spool.prepend(fields)
            envelope.size = spool.size
            await self._cleanup.intake(envelope, spool)
            faults.point("stored")
            return envelope
        finally:
            spool.discard()

    def abort(self) -> None:
        """Give the message up (the client went away): nothing is queued."""
        self._spool.discard()


@implementer(IMessageSource)
class PrefixedSource:
    """A source with header fields put before another source's data."""

    def __init__(self, prefix: bytes, rest: IMessageSource):
        self._prefix = prefix
        self._rest = rest
        self.size = len(prefix) + rest.size

    def open(self) -> BinaryIO:
        """The prefix, then the other source's data."""
        return JoinedReader(self._prefix, self._rest.open())
