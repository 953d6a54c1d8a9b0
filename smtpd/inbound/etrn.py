# -*- test-case-name: tests.test_etrn -*-
"""
ETRN (RFC 1985): a client that was offline asks for the mail deferred for its
domain to be sent now. C{ETRN domain} starts the entries with a recipient at
that domain, C{ETRN @domain} also those for its subdomains. Only clients in
C{[access] etrn} (empty: the relay list) may ask. TURN is not offered: it
would hand the mail to whoever connects.

Replies: the codes and texts of RFC 1985 section 5, with enhanced status codes:

* C{250 2.0.0 OK, queuing for node <x> started} (C{ETRN domain}: its entries
  are due now)
* C{253 2.0.0 OK, <n> pending messages for node <x> started} (C{ETRN @domain}:
  the C{n} entries for the domain and its subdomains are due now)
* C{251 2.0.0 OK, no messages waiting for node <x>}
* C{458 4.3.0 Unable to queue messages for node <x>} (the queue could not run)
* C{459 4.7.1 Node <x> not allowed: <reason>} (this client may not ask, or
  C{#queue} names, which are not supported)
* C{500 5.5.2 Syntax Error} (no node name, or more than one word)
* C{501 5.5.4 Syntax Error in Parameters} (a node name that is not a fully
  qualified domain name)
* C{503 5.5.1} before EHLO or inside a mail transaction (RFC 5321 sequence).

252 (pending messages started, count unknown) is never needed: the count is
always known.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure

from smtpd.inbound import policy
from smtpd.mail import address

log = Logger()


class Etrn:
    """ETRN for L{smtpd.inbound.session.SMTPSession}."""

    def _extensions(self) -> list[str]:
        return [*super()._extensions(), "ETRN"]

    def smtp_ETRN(self, arg: str):
        """RFC 1985: start the queue for a domain (C{@domain}: and its subdomains)."""
        if self._helo is None:
            return self._reply(503, "5.5.1", "Error: send HELO/EHLO first")
        if self._sender is not None:
            return self._reply(503, "5.5.1", "Error: MAIL transaction in progress")
        if not arg or " " in arg:
            return self._reply(500, "5.5.2", "Syntax Error")
        if arg.startswith("#"):
            return self._reply(459, "4.7.1", f"Node {arg} not allowed: queue names not supported")
        subdomains = arg.startswith("@")
        domain = arg[1:] if subdomains else arg
        if not fully_qualified(domain):
            return self._reply(501, "5.5.4", "Syntax Error in Parameters")
        access = self.inbound.config.access
        if not policy.in_networks(self.peer_ip, access.etrn or access.relay):
            return self._reply(459, "4.7.1", f"Node {arg} not allowed: access denied")
        if self.inbound.etrn is None:
            return self._reply(458, "4.3.0", f"Unable to queue messages for node {arg}")
        d = self.inbound.etrn(domain, subdomains)
        d.addCallbacks(self._etrn_started, self._etrn_failed, (arg, subdomains),
                       errbackArgs=(arg,))
        return d

    def _etrn_started(self, count: int, node: str, subdomains: bool) -> None:
        if not count:
            return self._reply(251, "2.0.0", f"OK, no messages waiting for node {node}")
        if subdomains:
            return self._reply(253, "2.0.0",
                               f"OK, {count} pending messages for node {node} started")
        return self._reply(250, "2.0.0", f"OK, queuing for node {node} started")

    def _etrn_failed(self, failure: Failure, node: str) -> None:
        log.failure("ETRN {node} failed", failure, node=node)
        self._reply(458, "4.3.0", f"Unable to queue messages for node {node}")


def fully_qualified(name: str) -> bool:
    """
    Whether C{name} is a fully qualified domain name, as RFC 1985 5 wants the
    node name: valid syntax, at least two labels, not an address literal.
    """
    return (address.is_domain(name) and not name.startswith("[")
            and "." in name.strip("."))
