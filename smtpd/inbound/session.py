# -*- test-case-name: tests.test_protocol -*-
"""
The inbound ESMTP session (RFC 5321, 1869, 1870, 1985, 2034, 2920, 3030, 3207,
3461, 4954, 6152, 6531), assembled from its parts: the core (connection, buffer,
pipelining, replies), the session commands, the mail transaction, BDAT, ETRN,
AUTH and the access rules (reverse DNS, MAIL rules, deadlines).

L{SMTPSession} subclasses Twisted's L{twisted.mail.smtp.ESMTP} for its timeout
and connection plumbing, and replaces its command and DATA handling, which has
flaws a production server cannot keep: it answers commands pipelined behind
STARTTLS inside the TLS session, drops into command mode after an over-long data
line, handles DATA one Python call per line, holds the whole message in memory,
and cannot keep pipelined replies in order around asynchronous checks.
"""

from __future__ import annotations

from smtpd.inbound.access import AccessRules
from smtpd.inbound.auth import Auth
from smtpd.inbound.bdat import Chunking
from smtpd.inbound.commands import Commands
from smtpd.inbound.core import LISTEN, SMTPS, SUBMISSION, SessionCore
from smtpd.inbound.etrn import Etrn
from smtpd.inbound.transaction import Transaction

__all__ = ["LISTEN", "SMTPS", "SUBMISSION", "SMTPSession"]


class SMTPSession(Chunking, Etrn, Commands, Transaction, Auth, AccessRules, SessionCore):
    """
    One inbound SMTP connection.

    Reply codes and enhanced status codes follow Postfix where RFC 5321 leaves
    a choice. Every command is logged through the L{Inbound}'s command log.
    """

