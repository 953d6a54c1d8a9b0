# -*- test-case-name: tests.test_cleanup -*-
"""
The seams of the cleanup stage: who handed the message over (L{ClientInfo}),
the filters that see a complete message (L{ICleanupFilter}), and a refusal
(L{MessageRefused}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from zope.interface import Attribute, Interface


class ClientInfo:
    """
    The SMTP client a message came from.

    @ivar helo: the HELO/EHLO name it gave.
    @ivar ip: its address.
    @ivar protocol: the RFC 3848 keyword of the session (C{ESMTPSA}, ...).
    @ivar user: the authenticated login, or L{None}.
    @ivar tls: whether the session was encrypted.
    @ivar name: its forward-confirmed DNS name, C{"unknown"} when the reverse
        lookup found none, empty when no lookup was made (C{reverse_dns = no}).
    """

    def __init__(self, helo: str, ip: str, protocol: str = "ESMTP", user: str | None = None,
                 tls: bool = False, relay_check: Callable[[], bool] = lambda: False,
                 name: str = ""):
        self.helo = helo
        self.name = name
        self.ip = ip
        self.protocol = protocol
        self.user = user
        self.tls = tls
        self._relay_check = relay_check

    @cached_property
    def relay_client(self) -> bool:
        """
        Whether the client may relay (in C{[access] relay}); with C{user} this
        decides outbound signing versus inbound checks. Worked out when first
        asked.
        """
        return self._relay_check()

    def __repr__(self) -> str:
        return f"ClientInfo({self.helo!r}, {self.ip!r}, {self.protocol!r}, user={self.user!r})"


@dataclass(frozen=True)
class FilterResult:
    """
    What a filter decided about a complete message.

    @ivar prepend: header fields to put above the message, each one whole
        field ending in CRLF (C{b"Authentication-Results: ...\\r\\n"}).
    @ivar reply: C{(code, status, text)} to refuse the message
        (C{(550, "5.7.1", "DMARC policy")}); L{None} accepts it.
    """

    prepend: list[bytes] = field(default_factory=list)
    reply: tuple[int, str, str] | None = None


class ICleanupFilter(Interface):
    """
    A check or signer run by cleanup once a message is complete and has
    passed the size, line and hop rules, before it is queued (DKIM signing,
    Authentication-Results). Filters run in the order configured; the fields
    they prepend go above the trace header, the first filter's first.
    """

    name = Attribute("A short name for logs: 'dkim-sign', 'auth-results'.")

    def check(envelope, message, client):
        """
        Look at one message.

        @param envelope: the L{smtpd.mail.envelope.Envelope} about to be
            queued (sender, recipients, id); do not change it.
        @param message: an L{smtpd.mail.source.IMessageSource}: the data as it
            will be queued, our C{Received:} field first. Read it in chunks,
            off the reactor thread when it is large.
        @param client: the L{ClientInfo} of the SMTP session, or L{None} for
            pickup files and reports we made.
        @return: a L{FilterResult}, or a coroutine or Deferred of one. An
            exception refuses the message with C{451 4.3.0} (SMTP) or keeps
            the pickup file for a later try.
        """


class MessageRefused(Exception):
    """
    The message is not queued; C{code status text} is the SMTP reply saying
    why (C{552 5.3.4 Message size exceeds fixed maximum message size}).
    """

    def __init__(self, code: int, status: str, text: str):
        super().__init__(code, status, text)
        self.code, self.status, self.text = code, status, text

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"
