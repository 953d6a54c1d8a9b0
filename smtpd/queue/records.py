# -*- test-case-name: tests.test_queue -*-
"""
What the queue writes besides message data: the envelope file, parsed with
every field's type checked (a damaged file must not break the queue later),
and the text of a badmail C{.bdr} report.
"""

from __future__ import annotations

import time
from typing import Any

from smtpd.mail.envelope import Envelope


def _one_line(text: str) -> str:
    """C{text} with control characters replaced, safe for one line of a report."""
    return "".join(c if c.isprintable() else "?" for c in text)


_FIELD_TYPES = {
    "id": str, "sender": str, "arrival": (int, float), "next_attempt": (int, float),
    "attempts": int, "state": str, "ret": str, "envid": str, "size": int,
    "client": str, "body": str,
}
_RECIPIENT_TYPES = {
    "address": str, "orcpt": str, "state": str, "last_reply": str, "status": str,
    "remote_mta": str, "notified_delay": bool,
}


def parse_envelope(raw: bytes, queue_id: str) -> Envelope:
    """
    Parse the envelope file of entry C{queue_id}, checking the type of every
    field (a damaged file must not break the queue later) and that it names
    its own entry.

    @raise ValueError: when it does not.
    """
    envelope = Envelope.from_json(raw)
    _check_types(envelope, _FIELD_TYPES, "envelope")
    for r in envelope.recipients:
        _check_types(r, _RECIPIENT_TYPES, "recipient")
        if not all(isinstance(n, str) for n in r.notify):
            raise ValueError("recipient field 'notify' is not a list of strings")
    if envelope.id != queue_id:
        raise ValueError(f"envelope id {envelope.id!r} does not match its file name")
    return envelope


def _check_types(obj: object, types: dict[str, Any], what: str) -> None:
    for name, kind in types.items():
        value = getattr(obj, name)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"{what} field {name!r} has the wrong type")


def badmail_report(reason: str, envelope: Envelope | None, raw: bytes = b"") -> bytes:
    """
    The text of a C{.bdr} file: why, and the envelope (or the unreadable
    envelope file's bytes when it could not be parsed).
    """
    lines = [f"Reason: {_one_line(reason)}"]
    if envelope is not None:
        lines.append(f"Queue-ID: {_one_line(envelope.id)}")
        lines.append(f"Sender: <{_one_line(envelope.sender)}>")
        if envelope.client:
            lines.append(f"Client: {_one_line(envelope.client)}")
        arrival = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(envelope.arrival))
        lines.append(f"Arrival: {arrival}")
        lines.append(f"Attempts: {envelope.attempts}")
        for r in envelope.recipients:
            detail = f" {_one_line(r.last_reply)}" if r.last_reply else ""
            lines.append(f"Recipient: <{_one_line(r.address)}> {r.state}{detail}")
    elif raw:
        lines.append("Envelope: " + _one_line(raw.decode("utf-8", "replace")))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
