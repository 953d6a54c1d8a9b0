# -*- test-case-name: tests.test_tlsrpt_relay -*-
"""
The relay's side of TLS reporting (RFC 8460): L{TLSReportRecorder}
subscribes to C{RelayManager.tls_outcomes} and hands each outcome of a
recipient domain's MX host to the TLS-RPT store as an
L{smtpd.mailauth.tlsrpt.outcome.TLSOutcome}, with our own address on that
path (C{sending-mta-ip}) and the MX patterns of an MTA-STS policy.

Sessions with smart hosts and address literals are no recipient domain's
policy and are not recorded.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from smtpd.delivery import tlsoutcome as relay
from smtpd.mailauth.tlsrpt.outcome import (
    RESULT_TYPES,
    VALIDATION_FAILURE,
    ITLSOutcomes,
    TLSOutcome,
    TLSPolicy,
)

# The most of a failure's text kept as its reason code.
REASON_LIMIT = 200
# Source addresses remembered (per receiving address) before the memory is cleared.
_SOURCES_LIMIT = 1024


def source_address(address: str) -> str:
    """
    The address this machine sends from toward C{address} (the kernel's
    route choice, found with an unconnected UDP socket: no packet is sent),
    or "" when there is none.
    """
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 25))
            return str(probe.getsockname()[0])
    except (OSError, ValueError):
        return ""


def smart_hosts(config: Any) -> set[str]:
    """The smart host names of C{config} as the relay names their routes."""
    hosts = {config.delivery.smart_host}
    hosts |= {d.smart_host for d in config.domains}
    return {str(h).lower() for h in hosts if h is not None}


def is_recipient_domain(name: str, smart: set[str]) -> bool:
    """Whether the relay's C{policy_domain} is a recipient domain, not a smart host or an address."""
    if not name or any(c in name for c in "[]:") or name.lower() in smart:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


def mx_patterns(strings: tuple[str, ...]) -> tuple[str, ...]:
    """The C{mx:} patterns of MTA-STS policy strings."""
    return tuple(s.partition(":")[2].strip() for s in strings if s.startswith("mx:"))


def ascii_domain(name: str) -> str | None:
    """C{name} as DNS has it (an internationalized name in A-labels), or L{None}."""
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def convert(outcome: relay.TLSOutcome, sending_ip: str) -> TLSOutcome | None:
    """The TLS-RPT form of one relay outcome (L{None}: its domain has no DNS form)."""
    domain = ascii_domain(outcome.policy_domain)
    if domain is None:
        return None
    strings = tuple(outcome.policy_strings)
    patterns = mx_patterns(strings) if outcome.policy_type == relay.POLICY_STS else ()
    result = "" if outcome.succeeded else outcome.result
    if result and result not in RESULT_TYPES:
        result = VALIDATION_FAILURE
    return TLSOutcome(
        policy=TLSPolicy(outcome.policy_type, domain, strings, patterns),
        receiving_mx_hostname=outcome.mx_host,
        receiving_ip=outcome.receiving_ip,
        sending_mta_ip=sending_ip,
        result_type=result,
        failure_reason_code="" if not result else " ".join(outcome.detail.split())[:REASON_LIMIT],
    )


class TLSReportRecorder:
    """
    An observer of C{RelayManager.tls_outcomes} that records into an
    L{ITLSOutcomes}.

    @param outcomes: the L{ITLSOutcomes} (the TLS-RPT store).
    @param config: the L{smtpd.config.Config} (its smart hosts); may be
        replaced on reload.
    @param source: finds our address toward a receiving address.
    """

    def __init__(self, outcomes: ITLSOutcomes, config: Any,
                 source: Callable[[str], str] = source_address) -> None:
        self.outcomes = outcomes
        self.config = config
        self.source = source
        self._sources: dict[str, str] = {}

    def __call__(self, outcome: relay.TLSOutcome) -> None:
        """Record C{outcome} when it is about a recipient domain's MX host."""
        if not is_recipient_domain(outcome.policy_domain, smart_hosts(self.config)):
            return
        converted = convert(outcome, self._source(outcome.receiving_ip))
        if converted is not None:
            self.outcomes.record(converted)

    def _source(self, address: str) -> str:
        if not address:
            return ""
        found = self._sources.get(address)
        if found is None:
            if len(self._sources) >= _SOURCES_LIMIT:
                self._sources.clear()
            found = self._sources[address] = self.source(address)
        return found
