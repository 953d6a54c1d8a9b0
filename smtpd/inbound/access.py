# -*- test-case-name: tests.test_access -*-
"""
The access rules of a session beyond who may connect and relay: the client's
reverse DNS name and the rules MAIL must pass (a confirmed client name when
required, the submission sender rule, the message rate). The deadlines that
cut slow clients are the core's (L{smtpd.inbound.deadline}).
"""

from __future__ import annotations

from twisted.internet import defer

from smtpd.inbound.core import SMTPS, SUBMISSION
from smtpd.inbound.submission import sender_refusal


class AccessRules:
    """Reverse DNS and MAIL rules of L{smtpd.inbound.session.SMTPSession}."""

    _looked_up = False
    _client_name: str | None = None
    _rdns: defer.Deferred | None = None

    def start_reverse_dns(self) -> None:
        """Start the reverse lookup of the client (C{[access] reverse_dns})."""
        lookup = self.inbound.reverse_dns
        access = self.inbound.config.access
        if not access.reverse_dns or lookup is None:
            return
        self._rdns = lookup.lookup(self.peer_ip, access.reverse_dns_timeout)
        self._rdns.addCallback(self._named)

    def _named(self, name: str | None) -> None:
        self._rdns, self._looked_up, self._client_name = None, True, name

    def client_name(self) -> str:
        """The confirmed name, C{"unknown"}, or empty when no lookup was made."""
        if not self._looked_up:
            return ""
        return self._client_name or "unknown"

    def after_reverse_dns(self, step):
        """
        C{step()} once the reverse lookup is over (at most its timeout): a
        Deferred while it runs, else the result of C{step()} now.
        """
        if self._rdns is None:
            return step()
        waiting: defer.Deferred = defer.Deferred()
        self._rdns.addCallback(lambda _: waiting.callback(None))
        waiting.addCallback(lambda _: step())
        return waiting

    def mail_refusal(self, sender: str) -> tuple[int, str, str] | None:
        """
        The reply refusing MAIL FROM C{sender} by the access rules, or L{None}:
        no confirmed client name when one is required (450 4.7.25, RFC 7372),
        a sender the login does not own on submission (553 5.7.1), more
        messages than C{message_rate} (451 4.7.1).
        """
        config = self.inbound.config
        access = config.access
        if access.reject_unknown_client and self._looked_up and self._client_name is None:
            return 450, "4.7.25", f"Client host rejected: cannot find your hostname, [{self.peer_ip}]"
        if self.kind in (SUBMISSION, SMTPS):
            refusal = sender_refusal(config, self._user, sender)
            if refusal is not None:
                return _reply(553, refusal)
        refusal = self.inbound.throttle.message(self.peer_ip)
        if refusal is not None:
            return _reply(451, refusal)
        return None


def _reply(code: int, refusal: str) -> tuple[int, str, str]:
    """C{(code, status, text)} of a refusal C{"status text"}."""
    status, _, text = refusal.partition(" ")
    return code, status, text
