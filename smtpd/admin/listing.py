# -*- test-case-name: tests.test_admin -*-
"""
Queue entries as plain data (dicts and lists of str, int, float), the same for
the manhole, the control socket and C{smtpctl} with the server stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.parser import BytesHeaderParser
from email.policy import compat32

from smtpd.mail.envelope import Envelope, valid_queue_id

# How much of a message C{show} reads to find its header.
HEADER_LIMIT = 64 * 1024

# How many entries C{admin.queue()} gives when not told (a manhole screenful's
# worth, read in a few milliseconds whatever the size of the queue).
DEFAULT_PAGE = 100


def entry(envelope: Envelope, state: str | None = None) -> dict:
    """
    One queue entry as SPEC 7's C{admin.queue()} gives it, plus its C{size};
    C{state} overrides the stored one (the queue manager knows it first).
    """
    return {
        "id": envelope.id,
        "sender": envelope.sender,
        "state": state or envelope.state,
        "attempts": envelope.attempts,
        "next_attempt": envelope.next_attempt,
        "arrival": envelope.arrival,
        "size": envelope.size,
        "recipients": [
            {"address": r.address, "state": r.state, "last_reply": r.last_reply}
            for r in envelope.recipients
        ],
    }


def entries(queue, chosen: Sequence[tuple[str, str | None]]) -> list[dict]:
    """
    The L{entry} of each C{(queue id, state known or None)} of C{chosen}, its
    envelope read from C{queue}, in that order; an entry gone meanwhile is
    left out. Blocking: run in a thread.
    """
    states = dict(chosen)
    return [entry(e, states[e.id]) for e in queue.envelopes([i for i, _ in chosen])]


def detail(envelope: Envelope, data_path: str, state: str | None = None) -> dict:
    """
    L{entry} with everything C{queue show} prints: the DSN parameters, who
    handed the message in, each recipient's status and remote host, and the
    message's header fields as C{[name, value]} pairs.
    """
    shown = entry(envelope, state)
    shown.update(client=envelope.client, ret=envelope.ret, envid=envelope.envid,
                 body=envelope.body)
    for plain, r in zip(shown["recipients"], envelope.recipients):
        plain.update(status=r.status, remote_mta=r.remote_mta, notify=list(r.notify),
                     orcpt=r.orcpt)
    shown["headers"] = read_headers(data_path)
    return shown


def read_headers(path: str) -> list[list[str]]:
    """The header fields of the message file at C{path}, unfolded, in order."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_LIMIT)
    except FileNotFoundError:
        return []
    end = head.find(b"\r\n\r\n")
    head = head[: end + 2] if end >= 0 else head
    message = BytesHeaderParser(policy=compat32).parsebytes(head)
    return [[name, " ".join(str(value).split())] for name, value in message.items()]


def check_id(queue_id: object) -> str:
    """C{queue_id} when it is a well-formed queue id, else L{KeyError}."""
    if not isinstance(queue_id, str) or not valid_queue_id(queue_id):
        raise KeyError(f"no queue entry {queue_id!r}")
    return queue_id

