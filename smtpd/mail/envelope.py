# -*- test-case-name: tests.test_queue -*-
"""
The envelope of a queued message: sender, recipients with their per-recipient
delivery state, timing and RFC 3461 DSN parameters. Stored as JSON beside the
message data; never pickled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields

# A queue id: safe as a file name stem (no path tricks).
_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}\Z")

# Recipient states.
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

# Entry states (SPEC 7: admin.queue()).
QUEUED = "queued"
DEFERRED = "deferred"
HELD = "held"


@dataclass
class Recipient:
    """
    One envelope recipient.

    @ivar address: the forward-path as accepted at RCPT, without angle brackets.
    @ivar notify: RFC 3461 NOTIFY values (upper case), empty when not given.
    @ivar orcpt: RFC 3461 ORCPT value as received (C{rfc822;addr}), or "".
    @ivar state: L{PENDING}, L{DELIVERED} or L{FAILED}.
    @ivar last_reply: the last reply or diagnostic for this recipient
        (e.g. C{"550 5.1.1 <x@example.com>: no such user"}).
    @ivar status: the RFC 3463 status of the last attempt (C{"4.4.1"}), or "".
    @ivar remote_mta: the host that gave C{last_reply}, or "".
    @ivar notified_delay: whether a "delayed" DSN was sent for this recipient.
    @ivar host: the other host that holds this recipient's mailbox, as the
        directory said at RCPT (its host attribute), or "": the queue sends
        the recipient there instead of delivering it here.
    """

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str = ""
    state: str = PENDING
    last_reply: str = ""
    status: str = ""
    remote_mta: str = ""
    notified_delay: bool = False
    host: str = ""


@dataclass
class Envelope:
    """
    Everything about a queued message but its data.

    @ivar id: the queue id (upper-case hex; safe as a file name).
    @ivar sender: the reverse-path without angle brackets; "" for C{<>}.
    @ivar arrival: when the message was accepted (clock seconds).
    @ivar next_attempt: when the next delivery attempt is due (clock seconds).
    @ivar attempts: delivery attempts made so far.
    @ivar state: L{QUEUED}, L{DEFERRED} or L{HELD}.
    @ivar ret: RFC 3461 RET (C{"FULL"}, C{"HDRS"}) or "".
    @ivar envid: RFC 3461 ENVID (xtext-decoded) or "".
    @ivar size: the size of the message data in octets.
    @ivar client: who handed us the message: C{"helo [ip]"}, or "pickup"/"local".
    @ivar body: C{"7BIT"}, C{"8BITMIME"}, C{"BINARYMIME"} (the MAIL BODY=
        parameter; BINARYMIME data is kept byte for byte, RFC 3030).
    @ivar smtputf8: the message came with the SMTPUTF8 parameter (RFC 6531):
        its addresses and header fields may be UTF-8.
    @ivar requiretls: the MAIL REQUIRETLS parameter (RFC 8689) was given.
    """

    id: str
    sender: str
    recipients: list[Recipient]
    arrival: float
    next_attempt: float = 0.0
    attempts: int = 0
    state: str = QUEUED
    ret: str = ""
    envid: str = ""
    size: int = 0
    client: str = ""
    body: str = ""
    smtputf8: bool = False
    requiretls: bool = False

    def pending(self) -> list[Recipient]:
        """The recipients still to be delivered."""
        return [r for r in self.recipients if r.state == PENDING]

    def pending_domains(self) -> frozenset[str]:
        """The domains (lower case) of the recipients still to be delivered."""
        return frozenset(r.address.rpartition("@")[2].lower()
                         for r in self.recipients if r.state == PENDING)

    def to_json(self) -> bytes:
        """Serialise to UTF-8 JSON (the fields in their declared order)."""
        # As asdict() would, without its deep copy of every value: the
        # envelope is written once per message and once per attempt.
        record = {name: getattr(self, name) for name in _ENVELOPE_FIELDS}
        record["recipients"] = [{name: getattr(r, name) for name in _RECIPIENT_FIELDS}
                                for r in self.recipients]
        return json.dumps(record, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        """
        Parse what L{to_json} wrote.

        @raise ValueError: on anything that is not a well-formed envelope.
        """
        try:
            raw = json.loads(data)
            recipients = [
                Recipient(**dict(r, notify=tuple(r.get("notify", ()))))
                for r in raw.pop("recipients")
            ]
            return cls(recipients=recipients, **raw)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed envelope: {e}") from e


@dataclass(frozen=True)
class DeliveryStatus:
    """
    The outcome of one delivery attempt for one recipient, as a delivery agent
    (local, drop, relay) reports it to the queue manager.

    @ivar address: the recipient (L{Recipient.address}).
    @ivar code: the SMTP reply code, real or synthesised (C{451} for a refused
        connection, C{550} for NXDOMAIN).
    @ivar status: the RFC 3463 enhanced status (C{"5.1.1"}).
    @ivar reply: the reply text or diagnostic, one line.
    @ivar remote_mta: the host that answered (C{"mx.example.com [192.0.2.1]"}), or "".
    @ivar tls: whether the session with C{remote_mta} was encrypted.
    @ivar tls_policy: the recipient-side TLS policy that applied (C{dane},
        C{sts-enforce}, C{sts-testing}) or "".
    @ivar dsn_passed: C{remote_mta} offered DSN, so the recipient's RFC 3461
        request (NOTIFY, ORCPT, with RET and ENVID) went on with the message
        and its success report is now that host's to send (RFC 3461 5.2.2).
    """

    address: str
    code: int
    status: str
    reply: str
    remote_mta: str = ""
    tls: bool = False
    tls_policy: str = ""
    dsn_passed: bool = False

    @property
    def delivered(self) -> bool:
        """The recipient got the message."""
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        """A failure that no retry will cure."""
        return self.code >= 500


def valid_queue_id(queue_id: str) -> bool:
    """Whether C{queue_id} is safe as a file name stem (no path tricks)."""
    return isinstance(queue_id, str) and _ID.match(queue_id) is not None


_ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope))
_RECIPIENT_FIELDS = tuple(f.name for f in fields(Recipient))
