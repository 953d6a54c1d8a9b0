# -*- test-case-name: tests.test_admin -*-
"""
Queue entries as plain data (dicts and lists of str, int, float), the same for
the manhole, the control socket and C{smtpctl} with the server stopped.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
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


def select(ids: Iterable[str], limit: int | None, offset: int = 0,
           after: str | None = None) -> list[str]:
    """
    One page of queue ids in id order (ids sort by arrival second): those
    after C{after} (a cursor: the last id of the previous page), then
    C{offset} skipped, then at most C{limit} (all when L{None}).
    """
    if after is not None:
        ids = (i for i in ids if i > after)
    if limit is None:
        return sorted(ids)[offset:]
    # The first offset + limit of a big queue without sorting all of it.
    return heapq.nsmallest(offset + limit, ids)[offset:]


def page(queue, states: Mapping[str, str | None], limit: int | None, offset: int = 0,
         after: str | None = None) -> list[dict]:
    """
    The L{entry} of each queue entry of one page (L{select}) of C{states}
    (queue id -> the state the queue manager knows, or None), its envelope
    read from C{queue}. An entry gone meanwhile is replaced by the next one,
    so a page shorter than C{limit} is the last. Blocking: run in a thread.
    """
    found: list[dict] = []
    while True:
        wanted = None if limit is None else limit - len(found)
        chosen = select(states, wanted, offset, after)
        found.extend(entry(e, states.get(e.id)) for e in queue.envelopes(chosen))
        if wanted is None or len(chosen) < wanted or len(found) >= limit:
            return found
        after, offset = chosen[-1], 0


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

