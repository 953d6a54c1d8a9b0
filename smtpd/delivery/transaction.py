# -*- test-case-name: tests.test_client -*-
"""
One mail transaction on an established outbound session (RFC 5321 3.3):
RSET on a reused session, MAIL, one RCPT per recipient, DATA and the message.
Toward a host that offers PIPELINING (RFC 2920) RSET, MAIL, every RCPT and DATA
go in one write and the replies are matched in order; otherwise one command at a
time. Toward a host that offers CHUNKING (RFC 3030) the message goes as BDAT
chunks instead of DATA, once the RCPT replies are in: one chunk per piece read
from the message source, pipelined toward a host that offers PIPELINING, else
each chunk after the previous one's reply (RFC 3030 2). Every recipient gets
its own status.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from smtpd.delivery.wire import (
    OutboundMessage,
    SessionError,
    mail_command,
    rcpt_command,
    refusal,
    safe_address,
)
from smtpd.mail.envelope import DeliveryStatus


async def run_transaction(client: Any, message: OutboundMessage,
                          reused: bool) -> list[DeliveryStatus]:
    """
    Run C{message} on C{client} (a L{smtpd.delivery.client.RelayClient}).

    @return: one status per recipient, in order.
    @raise SessionError: when the transaction failed as a whole (RSET or
        MAIL refused, the message too big, the session lost before MAIL was
        accepted: C{stale} on a reused session).
    """
    results: dict[int, DeliveryStatus] = {}
    safe = []
    for i, recipient in enumerate(message.recipients):
        if safe_address(recipient.address, message.smtputf8):
            safe.append(i)
        else:
            results[i] = client.status(recipient.address, 553, "553 5.1.3 bad address syntax")
    commands = [mail_command(message, message.source.size, client.extensions)]
    commands += [rcpt_command(message.recipients[i], client.extensions, message.smtputf8)
                 for i in safe]
    pipelined = "PIPELINING" in client.extensions
    chunking = "CHUNKING" in client.extensions
    if pipelined and safe and not chunking:
        commands.append(b"DATA")
    replies: list[Deferred] | None = None
    try:
        if pipelined:
            _check(client, message)
            # RFC 2920: RSET may lead the flight; one write per transaction.
            replies = client.pipeline([b"RSET", *commands] if reused else commands)
            if reused:
                await _rset_replied(client, replies.pop(0))
        else:
            if reused:
                await _rset_replied(client, client.command(b"RSET"))
            _check(client, message)
        await _mail(client, commands[0], replies)
    except SessionError as e:
        _abandon(replies or [])
        stale = reused and client.error is not None
        raise SessionError(e.code, e.status, e.reply, stale=stale, final=e.final) from None
    try:
        rcpt_replies = replies[1 : 1 + len(safe)] if replies else None
        data_reply = replies[-1] if replies and safe and not chunking else None
        accepted = await _recipients(client, message, safe, rcpt_replies, results)
        if chunking:
            await _bdat(client, message, accepted, results)
        else:
            await _data(client, message, accepted, data_reply, results)
    except SessionError as e:
        _abandon(replies or [])
        for i, recipient in enumerate(message.recipients):
            if i not in results:
                results[i] = client.status(recipient.address, e.code, e.reply, e.status)
    return [results[i] for i in range(len(message.recipients))]


async def _rset_replied(client: Any, pending: Deferred) -> None:
    """RSET's reply; any other than 2xx ends the session."""
    reply = await pending
    if not 200 <= reply.code < 300:
        raise _stop(client, reply)


def _check(client: Any, message: OutboundMessage) -> None:
    """
    What we can refuse before MAIL: a host without the extensions the
    message needs (never a silent downgrade), too big for the host, a sender
    unfit for the wire. A missing extension is a permanent failure for this
    host only: another MX host may offer it.
    """
    extensions = client.extensions
    if message.binary and not ("BINARYMIME" in extensions and "CHUNKING" in extensions):
        # RFC 3030 3: BINARYMIME data cannot be converted here.
        raise SessionError(554, "5.6.3", "554 5.6.3 Conversion required but not supported: "
                           "the host does not offer BINARYMIME and CHUNKING")
    if message.smtputf8 and "SMTPUTF8" not in extensions:
        # RFC 6531 3.2: no downgrade of an internationalized message.
        raise SessionError(550, "5.6.7", "550 5.6.7 Non-ASCII addresses or header fields "
                           "need SMTPUTF8, which the host does not offer")
    limit = client.extensions.get("SIZE", "")
    size = message.source.size
    if limit.isdigit() and 0 < int(limit) < size:
        raise SessionError(552, "5.3.4", f"552 5.3.4 message size {size} exceeds "
                           f"the size limit {int(limit)} of the host")
    if not safe_address(message.sender, message.smtputf8):
        raise SessionError(553, "5.1.7", "553 5.1.7 bad sender address syntax", final=True)
    if message.requiretls and not (client.secure and "REQUIRETLS" in client.extensions):
        # RFC 8689 4.2.1: only to a host that offers REQUIRETLS (another MX may).
        raise SessionError(550, "5.7.30", f"550 5.7.30 REQUIRETLS support required, but "
                           f"{client.remote_mta} does not offer it")


async def _mail(client: Any, command: bytes, replies: list[Deferred] | None) -> None:
    """MAIL's reply; a refusal fails the transaction (the rest of a pipelined flight is read)."""
    reply = await (replies[0] if replies else client.command(command))
    if 200 <= reply.code < 300:
        return
    if reply.code == 421:
        raise _stop(client, reply)
    if replies:
        await _drain(client, replies[1:])
    error = refusal(reply.code, reply.text)
    # A 5xx to MAIL refuses this sender or message, whatever host we try
    # next (as Postfix: only the greeting's 5xx is skipped).
    error.final = error.permanent
    raise error


async def _recipients(client: Any, message: OutboundMessage, safe: list[int],
                      replies: list[Deferred] | None, results: dict) -> list[int]:
    """The RCPT replies; the indexes of the recipients accepted."""
    accepted = []
    for n, i in enumerate(safe):
        recipient = message.recipients[i]
        if replies is None:
            reply = await client.command(rcpt_command(recipient, client.extensions,
                                                      message.smtputf8))
        else:
            reply = await replies[n]
        if reply.code == 421:
            raise _stop(client, reply)
        if 200 <= reply.code < 300:
            accepted.append(i)
        else:
            results[i] = client.status(recipient.address, reply.code, reply.text)
    return accepted


async def _data(client: Any, message: OutboundMessage, accepted: list[int],
                pipelined: Deferred | None, results: dict) -> None:
    """DATA, the streamed message, and the final reply for the accepted recipients."""
    if pipelined is None and not accepted:
        return
    reply = await (pipelined if pipelined is not None else client.command(b"DATA"))
    if reply.code == 354:
        if not accepted:
            # RFC 2920 3.1: DATA accepted with no recipient: end it at once.
            await client.command(b".", "reply to end of DATA")
            return
        reply = await client.stream(message.source)
    if reply.code == 421:
        client.fail(refusal(reply.code, reply.text))
    for i in accepted:
        results[i] = client.status(message.recipients[i].address, reply.code, reply.text)


async def _bdat(client: Any, message: OutboundMessage, accepted: list[int],
                results: dict) -> None:
    """The message as BDAT chunks (RFC 3030), and the reply for the accepted recipients."""
    if not accepted:
        return
    reply = await client.stream_chunks(message.source, message.binary,
                                       pipelined="PIPELINING" in client.extensions)
    if reply.code == 421:
        client.fail(refusal(reply.code, reply.text))
    for i in accepted:
        results[i] = client.status(message.recipients[i].address, reply.code, reply.text)


def _stop(client: Any, reply: Any) -> SessionError:
    """A reply that ends the session (421, or a failed RSET)."""
    error = refusal(reply.code, reply.text)
    client.fail(error)
    return error


async def _drain(client: Any, replies: list[Deferred]) -> None:
    """Read the replies of a pipelined flight after a refused MAIL; a 354 gets a lone dot."""
    for d in replies:
        try:
            reply = await d
        except SessionError:
            return
        if reply.code == 354:
            await client.command(b".", "reply to end of DATA")


def _abandon(replies: list[Deferred]) -> None:
    """Replies nobody reads any more (the session failed): their errors are expected."""
    for d in replies:
        d.addErrback(lambda _: None)
