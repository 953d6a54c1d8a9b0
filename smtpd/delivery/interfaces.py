# -*- test-case-name: tests.test_qmgr -*-
"""
The seam between the queue and the delivery agents. The queue routes each
pending recipient (L{smtpd.directory.routing.route}) and hands the recipients
of one transport to that transport's agent; the agent reports one
L{DeliveryStatus} per recipient. Agents: local Maildir, drop folder, relay by
MX or smart host (and LMTP).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IDeliveryAgent(Interface):
    """A transport that delivers one message to some of its recipients."""

    name = Attribute(
        "The transport's name, as in the delivery log and the [domain:NAME] type: "
        "'local', 'drop', 'relay', 'lmtp'."
    )

    def deliver(envelope, deliveries, message):
        """
        Deliver C{message} to the recipients of C{deliveries}.

        @param envelope: the L{smtpd.mail.envelope.Envelope} (sender, id, DSN
            parameters); the agent does not change it.
        @param deliveries: a sequence of C{(Recipient, Destination)} pairs, the
            destination as L{smtpd.directory.routing.route} gave it.
        @param message: an L{smtpd.mail.source.IMessageSource}; the agent reads
            it in bounded chunks and never holds it whole.
        @return: a Deferred firing with a list of
            L{smtpd.mail.envelope.DeliveryStatus}, one per delivery, in the
            order given. It never fails: an unexpected error is a temporary
            status (C{451 4.3.0}) for the recipients concerned.
        """

    def stop():
        """
        The server is stopping: close idle connections and release resources;
        returns a Deferred (or None) that fires when done. Deliveries under way
        may still finish.
        """


class IMailboxAgent(IDeliveryAgent):
    """
    A local agent that can also write one copy and take it back: what the
    all-local fast path needs to deliver every copy of a message or none.
    """

    def write(envelope, mailbox, message):
        """
        Write one copy of C{message} (an L{smtpd.mail.source.IMessageSource})
        into C{mailbox}, durably; a Deferred firing with the new file's path,
        failing with the error (nothing left behind).
        """

    def write_many(envelope, mailboxes, message):
        """
        L{write} into each of C{mailboxes} at once (one disk job for all of
        them where the agent can); a list of Deferreds, one per mailbox, in
        the order given.
        """

    def remove(path):
        """Take back the copy at C{path}, durably; a Deferred."""
