# -*- test-case-name: tests.test_relay_tls_policy -*-
"""
One transaction with one host of a route, under the recipient side's TLS
policy for that host (L{smtpd.delivery.tlspolicy.HostPolicy}) and the
message's own demand (REQUIRETLS): which TLS level to use, what a failure
means (defer, bounce, or only a log line under MTA-STS testing), and the TLS
outcome of every new session, published for TLS reporting.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.logger import Logger

from smtpd.delivery.pool import ConnectionPool
from smtpd.delivery.routes import Route, Target
from smtpd.delivery.tlsoutcome import (
    DNSSEC_INVALID,
    NO_POLICY,
    STARTTLS_NOT_SUPPORTED,
    SUCCESS,
    VALIDATION_FAILURE,
    TLSOutcome,
    TLSOutcomes,
)
from smtpd.delivery.tlspolicy import HostPolicy, dane_check
from smtpd.delivery.wire import OutboundMessage, SessionError
from smtpd.mail.envelope import DeliveryStatus


def requiretls_error(error: SessionError, target: Target) -> SessionError:
    """RFC 8689 4.2.1: a REQUIRETLS message that found no verified TLS is returned (5.7.10)."""
    return SessionError(550, "5.7.10", "550 5.7.10 REQUIRETLS: no verified TLS with "
                        f"{target.remote_mta}: {error.reply}")


class HostDelivery:
    """
    Transactions with single hosts, for L{smtpd.delivery.relay.RelayManager}.

    @param pool: the L{ConnectionPool} sessions come from.
    @param clock: gives C{seconds()} (DANE checks certificate dates with it).
    @param log: a L{Logger}.
    @param outcomes: where TLS outcomes are published.
    """

    def __init__(self, pool: ConnectionPool, clock: Any, log: Logger, outcomes: TLSOutcomes):
        self._pool = pool
        self._clock = clock
        self._log = log
        self._outcomes = outcomes

    async def deliver(
        self, route: Route, target: Target, message: OutboundMessage, policy: HostPolicy
    ) -> list[DeliveryStatus]:
        """
        One transaction with one host under C{policy}. DANE and MTA-STS
        C{enforce} demand verified TLS (and an MX host the MTA-STS policy
        lists), else the host is skipped with 4.7.5; C{testing} logs such
        failures and delivers as usual. REQUIRETLS demands verified TLS and
        bounces (5.7.10) without it.
        """
        # The sessions of a TLS report are not counted (RFC 8460 5.3).
        counted = not message.tls_report
        level = self._policyLevel(route, target, policy, counted)
        # A host a testing policy does not list was reported already.
        report = policy.allows(target.name) and counted
        if message.requiretls and level not in ("verify", "dane"):
            level = "verify"
        if level == route.tls:
            return await self._deliverAsUsual(route, target, message, policy, report)
        try:
            return await self._deliverTo(replace(route, tls=level), target, message, policy)
        except SessionError as e:
            tls_problem = e.tls_failure or bool(e.tls_result)
            if message.requiretls and tls_problem:
                raise requiretls_error(e, target) from None
            if policy.mode != "testing" or not tls_problem:
                raise
            self._log.info("relay: {remote}: MTA-STS testing for {domain}: {reply}; "
                           "delivering as usual", remote=target.remote_mta,
                           domain=policy.domain, reply=e.reply)
        return await self._deliverAsUsual(route, target, message, policy, report=False)

    async def _deliverAsUsual(
        self, route: Route, target: Target, message: OutboundMessage, policy: HostPolicy,
        report: bool = True,
    ) -> list[DeliveryStatus]:
        """
        One transaction with one host at the route's own TLS level; at
        C{outbound_tls = may} a host whose TLS fails gets one more try in plain
        text (as Postfix at level may). C{report}: publish the TLS outcome
        (not after a testing policy's failure was published).
        """
        try:
            return await self._deliverTo(route, target, message, policy, report)
        except SessionError as e:
            if message.requiretls and (e.tls_failure or e.tls_result):
                raise requiretls_error(e, target) from None
            if not (e.tls_failure and route.tls == "may"):
                raise
            self._log.info(
                "relay: {remote}: {reply}; trying again without TLS",
                remote=target.remote_mta,
                reply=e.reply,
            )
        return await self._deliverTo(replace(route, tls="none"), target, message, policy, report)

    def _policyLevel(self, route: Route, target: Target, policy: HostPolicy,
                     counted: bool = True) -> str:
        """
        The TLS level C{policy} asks for with C{target}; L{SessionError} when
        it rules the host out (published unless not C{counted}).
        """
        if policy.error:
            if counted:
                self._publish(policy, target, "", DNSSEC_INVALID, policy.error)
            raise SessionError(451, "4.7.5", f"451 4.7.5 no TLSA answer for {target.name}: "
                               f"{policy.error}", tls_result=DNSSEC_INVALID)
        if policy.kind == NO_POLICY:
            return route.tls
        if policy.mode == "dane":
            return "dane"
        if not policy.allows(target.name):
            why = f"MX host {target.name} is not in the MTA-STS policy of {policy.domain}"
            if counted:
                self._publish(policy, target, "", VALIDATION_FAILURE, why)
            if policy.enforced:
                raise SessionError(451, "4.7.5", f"451 4.7.5 {why}",
                                   tls_result=VALIDATION_FAILURE)
            self._log.info("relay: MTA-STS testing: {why}", why=why)
            return route.tls
        return "verify" if policy.enforced or route.tls != "none" else "none"

    async def _deliverTo(
        self, route: Route, target: Target, message: OutboundMessage, policy: HostPolicy,
        report: bool = True,
    ) -> list[DeliveryStatus]:
        """One transaction with one host, on a pooled connection if there is one."""
        connection = await self._connect(route, target, policy, report, fresh=False)
        try:
            return await connection.client.send(message)
        except SessionError as e:
            if not e.stale:
                raise
        finally:
            self._pool.release(connection)
        # The pooled connection had died: once more on a fresh one.
        connection = await self._connect(route, target, policy, report, fresh=True)
        try:
            return await connection.client.send(message)
        finally:
            self._pool.release(connection)

    async def _connect(self, route: Route, target: Target, policy: HostPolicy,
                       report: bool, fresh: bool) -> Any:
        """A pooled or new connection; the TLS outcome of a new one is published (C{report})."""
        report = report and route.tls != "none"
        check = dane_check(policy, target.name, self._clock) if route.tls == "dane" else None
        try:
            if fresh:
                connection = await self._pool.connect(route, target, check)
            else:
                connection = await self._pool.connection(route, target, check)
        except SessionError as e:
            if e.tls_result and report:
                self._publish(policy, target, target.address, e.tls_result, e.reply)
            raise
        client = connection.client
        if client.transactions == 0 and report:
            result = SUCCESS if client.secure else STARTTLS_NOT_SUPPORTED
            self._publish(policy, target, target.address, result)
        return connection

    def _publish(self, policy: HostPolicy, target: Target, address: str, result: str,
                 detail: str = "") -> None:
        """Publish one L{TLSOutcome} on L{tls_outcomes}."""
        self._outcomes.publish(TLSOutcome(
            policy_domain=policy.domain, policy_type=policy.kind,
            policy_strings=policy.strings, mx_host=target.name, receiving_ip=address,
            result=result, detail=detail, mode=policy.mode))
