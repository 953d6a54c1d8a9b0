# -*- test-case-name: tests.test_qmgr -*-
"""
What happened to each recipient: its state and last reply in the envelope,
the counters since start, and one delivery log line per result (SPEC 7). Every
part of the queue that settles a recipient records it here.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from smtpd.directory.routing import DROP, LOCAL
from smtpd.mail.envelope import DELIVERED, FAILED, DeliveryStatus, Envelope, Recipient
from smtpd.queue.stats import DeliveryStats

# Envelope.client of the reports we generate: not counted as "received".
LOCAL_CLIENT = "local"

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


class Results:
    """
    Records recipient results.

    @param log: where the per-recipient delivery lines go: an object with
        C{delivery(queue_id, recipient, relay, code, status, delay, tls)} (the
        L{smtpd.util.activity.ActivityLog}), a twisted.logger C{Logger}, or a
        callable taking one dict.

    @ivar counters: since start: C{received} (messages stored by others than
        the queue itself), C{delivered}, C{deferred} and C{bounced}
        (recipient results, per attempt).
    @ivar errors: where errors go: C{log} when it has a C{failure} method,
        else a twisted.logger C{Logger}.
    """

    def __init__(self, log: Any = None):
        self.log = log if log is not None else Logger()
        self.errors = self.log if hasattr(self.log, "failure") else Logger()
        self.counters = {"received": 0, "delivered": 0, "deferred": 0, "bounced": 0}
        self.stats = DeliveryStats()

    def received(self, envelope: Envelope | None = None) -> None:
        """Count one message received from outside the queue."""
        self.counters["received"] += 1
        if envelope is not None:
            self.stats.message(len(envelope.recipients), envelope.size)

    def record(self, envelope: Envelope, recipient: Recipient, status: DeliveryStatus,
               kind: str, now: float) -> None:
        """Record one recipient's result of an attempt: state, reply, counters, log line."""
        recipient.last_reply = reply_line(status)
        recipient.status = status.status
        recipient.remote_mta = status.remote_mta
        if status.delivered:
            recipient.state = DELIVERED
            result = "delivered"
        elif status.permanent:
            recipient.state = FAILED
            result = "bounced"
        else:
            result = "deferred"
        self.counters[result] += 1
        self.stats.result(result, kind, status.status, recipient.address,
                          max(0.0, now - envelope.arrival), bool(status.tls))
        relay = status.remote_mta or {LOCAL: "local", DROP: "drop"}.get(kind, "none")
        self.log_line(envelope, recipient, relay, status.code, status.status, now, status.tls,
                      status.tls_policy)

    def fail(self, envelope: Envelope, recipient: Recipient, status: str, reply: str = "",
             now: float | None = None) -> None:
        """
        Fail a pending recipient without an attempt (expired: 4.4.7; deleted
        by the administrator: 5.0.0); logged when C{now} is given.
        """
        recipient.state = FAILED
        recipient.status = status
        if reply:
            recipient.last_reply = reply
        self.counters["bounced"] += 1
        self.stats.result("bounced", "none", status, recipient.address, 0.0)
        if now is not None:
            self.log_line(envelope, recipient, recipient.remote_mta or "none", 554, status, now)

    def log_line(self, envelope: Envelope, recipient: Recipient, relay: str,
                 code: int, status: str, now: float, tls: bool = False,
                 tls_policy: str = "") -> None:
        """
        The delivery log line for one recipient (SPEC 7); results are recorded
        before the attempt is counted, so this is attempt C{attempts + 1};
        C{tls_policy} is the recipient-side TLS policy mode that applied.
        """
        delay = max(0.0, now - envelope.arrival)
        if hasattr(self.log, "delivery"):
            self.log.delivery(envelope.id, recipient.address, relay, code, status, delay, tls,
                              outcome=outcome(recipient), reply=recipient.last_reply,
                              attempt=envelope.attempts + 1, tls_policy=tls_policy)
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


def outcome(recipient: Recipient) -> str:
    """Postfix's word for a recipient's result: sent, bounced or deferred."""
    if recipient.state == DELIVERED:
        return "sent"
    if recipient.state == FAILED:
        return "bounced"
    return "deferred"
