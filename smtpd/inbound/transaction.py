# -*- test-case-name: tests.test_protocol -*-
"""
The mail transaction (RFC 5321 4.1.1.2-4, RFC 1870, RFC 3461): MAIL, RCPT and
DATA. The data streams into the cleanup stage as it arrives: the terminator
and the stuffed dots are handled by L{DotDecoder}, the rules by cleanup, so
memory does not grow with the message; the client is paused while the disk
lags behind.
"""

from __future__ import annotations

import errno

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from smtpd.cleanup.interfaces import ClientInfo, MessageRefused
from smtpd.directory.interfaces import DirectoryUnavailable
from smtpd.directory.routing import LMTP, LOCAL, route
from smtpd.inbound import policy
from smtpd.inbound.core import COMMAND, DATA, SUBMISSION
from smtpd.inbound.dotstream import DotDecoder
from smtpd.mail import address, intl
from smtpd.mail.envelope import Envelope, Recipient

log = Logger()

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


_NO_MAIL_PARAMS = address.MailParams()


class Transaction:
    """MAIL, RCPT and DATA of L{smtpd.inbound.session.SMTPSession}."""

    _session_bytes = 0
    _message = None
    _decoder: DotDecoder | None = None
    # No transaction: shared, immutable values (a MAIL gives the session its own).
    _sender: str | None = None
    _mail_params = _NO_MAIL_PARAMS
    _rcpts: list[Recipient] | tuple = ()
    _rcpt_seen: set[str] | frozenset = frozenset()

    def _reset(self) -> None:
        if self._sender is not None:
            # A MAIL gave these to the session: back to the shared defaults.
            del self._sender, self._mail_params, self._rcpts, self._rcpt_seen

    def smtp_MAIL(self, arg: str):
        """RFC 5321 4.1.1.2 with SIZE, BODY, RET, ENVID, once the client's name is known."""
        return self.after_reverse_dns(lambda: self._mail(arg))

    def _mail(self, arg: str):
        config = self.inbound.config
        if self._helo is None:
            return self._reply(503, "5.5.1", "Error: send HELO/EHLO first")
        if self._sender is not None:
            return self._reply(503, "5.5.1", "Error: nested MAIL command")
        if config.tls.require and not self._tls:
            return self._reply(530, "5.7.0", "Must issue a STARTTLS command first")
        if self._user is None and (self.kind == SUBMISSION or not config.auth.anonymous):
            return self._reply(530, "5.7.0", "Authentication required")
        parsed = self._path_argument(arg, "FROM:", "sender", address.mail_params)
        if parsed is None:
            return None
        sender, params = parsed
        if not (params.smtputf8 or sender.isascii()):
            # RFC 6531 3.5: a MAIL that needs SMTPUTF8 and did not say so.
            return self._reply(550, "5.6.7",
                               "Non-ASCII addresses not permitted for that sender")
        if params.requiretls and not self._tls:
            # RFC 8689 4.1: REQUIRETLS only over a TLS session (RFC 3207's 530).
            return self._reply(530, "5.7.10", "REQUIRETLS needs a TLS session")
        messages = config.messages
        if params.size is not None:
            if messages.max_message_size and params.size > messages.max_message_size:
                return self._reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
            room = self._session_room()
            if room is not None and params.size > room:
                return self._reply(552, "5.3.4", "Session size limit exceeded")
        refusal = self.mail_refusal(sender)
        if refusal is not None:
            return self._reply(*refusal)
        self._sender, self._mail_params = sender, params
        self._rcpts, self._rcpt_seen = [], set()
        return self._reply(250, "2.1.0", "Ok")

    def _session_room(self) -> int | None:
        """What the session may still send (C{max_session_size}); L{None}: no limit."""
        limit = self.inbound.config.messages.max_session_size
        return max(0, limit - self._session_bytes) if limit else None

    def _path_argument(self, arg: str, prefix: str, what: str, parse_params):
        """
        The path and parameters of a MAIL (C{FROM:}, C{<>} allowed) or RCPT
        (C{TO:}) argument; L{None} after replying 501/555 when they are bad.
        """
        verb = "MAIL" if prefix == "FROM:" else "RCPT"
        if arg[: len(prefix)].upper() != prefix:
            self._reply(501, "5.5.4", f"Syntax: {verb} {prefix}<address>")
            return None
        try:
            path, rest = address.parse_path(arg[len(prefix):].lstrip(" "),
                                            null_ok=prefix == "FROM:")
            if rest and not self._esmtp:
                raise address.ParameterError("parameters need EHLO", unknown=True)
            return path, parse_params(rest)
        except address.AddressError as e:
            self._reply(501, "5.5.4", f"Bad {what} address syntax: {e}")
        except address.ParameterError as e:
            self._param_error(e)
        return None

    def _param_error(self, e: address.ParameterError):
        if e.unknown:
            return self._reply(555, "5.5.4", f"Error: {e}")
        return self._reply(501, "5.5.4", f"Error: {e}")

    def smtp_RCPT(self, arg: str):
        """RFC 5321 4.1.1.3 with NOTIFY and ORCPT; the relay rule of SPEC 5."""
        config = self.inbound.config
        if self._sender is None:
            return self._reply(503, "5.5.1", "Error: need MAIL command")
        parsed = self._path_argument(arg, "TO:", "recipient", address.rcpt_params)
        if parsed is None:
            return None
        rcpt, params = parsed
        if not (self._mail_params.smtputf8 or rcpt.isascii()):
            return self._reply(553, "5.6.7",
                               "Non-ASCII addresses not permitted for that recipient")
        if len(self._rcpts) >= config.messages.max_recipients > 0:
            return self._reply(452, "4.5.3", "Error: too many recipients")
        resolver = self.inbound.recipients
        if resolver is not None:
            d = resolver.resolve(rcpt)
            d.addCallbacks(self._rcpt_resolved, self._rcpt_lookup_failed,
                           callbackArgs=(rcpt, params), errbackArgs=(rcpt,))
            return d
        dest = route(config, self.inbound.users, rcpt)
        if dest is None:
            return self._reply(550, "5.1.1", f"<{rcpt}>: User unknown")
        return self._rcpt_accept(rcpt, params, dest, (rcpt,))

    def _rcpt_resolved(self, resolved, rcpt: str, params) -> None:
        """The directory's answer for RCPT C{rcpt}."""
        if resolved is None:
            return self._reply(550, "5.1.1", f"<{rcpt}>: User unknown")
        helo = (self._helo or "").lower().rstrip(".")
        if helo and helo in resolved.hosts.values():
            # The host that holds the mailbox sent it here, and we would send
            # it back: two nodes' directories disagree (one has not seen a
            # move yet). Not a 5xx: the sender retries once they agree.
            log.warn("RCPT {rcpt}: its mailbox host {host} sent it here; refused as a loop",
                     rcpt=rcpt, host=helo)
            return self._reply(451, "4.4.6", f"<{rcpt}>: Mail for this mailbox loops between "
                                             f"hosts ({helo} holds it), try again later")
        return self._rcpt_accept(rcpt, params, resolved.destination, resolved.recipients,
                                 resolved.hosts)

    def _rcpt_lookup_failed(self, failure: Failure, rcpt: str) -> None:
        """The directory could not say: a temporary refusal, never 'unknown'."""
        failure.trap(DirectoryUnavailable)
        log.warn("RCPT {rcpt}: directory unavailable: {why}", rcpt=rcpt,
                 why=failure.getErrorMessage())
        self._reply(451, "4.4.3", f"<{rcpt}>: Recipient address lookup failed, try again later")

    def _rcpt_accept(self, rcpt: str, params, dest, addresses: tuple[str, ...],
                     hosts: dict[str, str] | None = None) -> None:
        """
        The relay rule, then queue C{addresses} for RCPT C{rcpt} (itself, or
        what the directory expands it to, with C{rcpt} as their ORCPT, and
        the other host that holds the mailbox from C{hosts}).
        """
        config = self.inbound.config
        if not policy.may_relay(config, self.peer_ip, self._user is not None, dest):
            return self._reply(554, "5.7.1", "Relay access denied")
        for queued in addresses:
            orcpt = params.orcpt
            if queued != rcpt and not orcpt:
                orcpt = f"rfc822;{rcpt}"
            key = _same_recipient_key(queued, dest.kind in (LOCAL, LMTP))
            if key not in self._rcpt_seen:
                self._rcpt_seen.add(key)
                host = (hosts or {}).get(queued, "")
                self._rcpts.append(Recipient(queued, params.notify, orcpt, host=host))
        return self._reply(250, "2.1.5", "Ok")

    def smtp_DATA(self, arg: str):
        """RFC 5321 4.1.1.4: the message streams into cleanup up to CRLF.CRLF."""
        if arg:
            return self._reply(501, "5.5.4", "Syntax: DATA")
        if self._sender is None:
            return self._reply(503, "5.5.1", "Error: need MAIL command")
        if self._mail_params.body == "BINARYMIME":
            # RFC 3030 3: BINARYMIME data only by BDAT.
            return self._reply(503, "5.5.1", "Error: BODY=BINARYMIME requires BDAT")
        if not self._rcpts:
            return self._reply(554, "5.5.1", "Error: no valid recipients")
        self._message = self.begin_message()
        self._send("354 End data with <CR><LF>.<CR><LF>\r\n")
        self._log(354)
        self._command = ("DATA", "")
        self._mode = DATA
        self.in_transfer = True
        self._decoder = DotDecoder()
        self.deadlines.data_started()

    def begin_message(self):
        """Open the message of this transaction in cleanup (for DATA and BDAT)."""
        params = self._mail_params
        return self.inbound.cleanup.begin(
            self._sender or "", self._rcpts, client=self.client_info(), ret=params.ret,
            envid=params.envid, body=params.body, room=self._session_room(),
            messages=self.inbound.config.messages, smtputf8=params.smtputf8,
            requiretls=params.requiretls,
        )

    def client_info(self) -> ClientInfo:
        """
        Who this session's client is, for the trace header and the filters;
        the RFC 3848 protocol keyword, C{UTF8SMTP...} for a transaction with
        SMTPUTF8 (RFC 6531 3.7.3).
        """
        proto = "ESMTP" if self._esmtp else "SMTP"
        if self._esmtp and self._mail_params.smtputf8:
            proto = "UTF8SMTP"
        if self._esmtp and self._tls:
            proto += "S"
        if self._esmtp and self._user is not None:
            proto += "A"
        return ClientInfo(self._helo or "", self.peer_ip, proto, self._user, self._tls,
                          self._is_relay_client, self.client_name())

    def _is_relay_client(self) -> bool:
        return policy.in_networks(self.peer_ip, self.inbound.config.access.relay)

    def data_received(self) -> defer.Deferred | None:
        """Take the buffered input as message data, up to the terminator."""
        data, self._buf = self._buf, b""
        self.deadlines.data_received(len(data))
        body, rest = self._decoder.feed(data)
        keep_going = True
        if body and self._message is not None:
            try:
                keep_going = self._message.write(body)
            except Exception:
                log.failure("Unexpected error receiving data in SMTP session {id}",
                            id=self.session_id)
                self.step_failed()
        if rest is None:
            return None if keep_going else self._message.drained()
        self._buf = rest
        self._mode = COMMAND
        self._decoder = None
        self.deadlines.data_ended()
        return self._end_of_data()

    def step_failed(self) -> bool:
        """
        A step raised. In DATA the message is given up and the rest of the
        data still read as data: the 451 comes at its end (C{False}: not now).
        """
        if self._message is not None:
            self._message.abort()
            self._message = None
        return self._mode != DATA

    def abort_transfer(self) -> None:
        """The connection is gone: nothing half received is queued."""
        if self._message is not None:
            self._message.abort()
            self._message = None

    def _end_of_data(self) -> defer.Deferred | None:
        message, self._message = self._message, None
        self._reset()
        if message is None:
            self.in_transfer = False
            return self._reply(451, "4.3.0", "Error: internal error")
        d = message.finish()
        d.addCallbacks(self._stored, self._store_failed, (message,))
        d.addBoth(self._transfer_done)
        return d

    def _stored(self, envelope: Envelope, message) -> None:
        self._session_bytes += message.size
        self.inbound.received += 1
        self.inbound.events["messages_tls" if self.tls_active else "messages_plain"] += 1
        self.messages += 1
        self._reply(250, "2.0.0", f"Ok: queued as {envelope.id}")

    def _store_failed(self, failure: Failure) -> None:
        if failure.check(MessageRefused):
            e = failure.value
            return self._reply(e.code, e.status, e.text)
        if failure.check(OSError) and failure.value.errno in _DISK_FULL:
            log.error("Queue write failed: {e}", e=failure.value)
            return self._reply(452, "4.3.1", "Insufficient system storage")
        log.failure("Queue write failed in session {id}", failure, id=self.session_id)
        self._reply(451, "4.3.0", "Error: local error in processing")

    def _transfer_done(self, result):
        self.in_transfer = False
        return result


def _same_recipient_key(rcpt: str, local: bool) -> str:
    """
    What makes two RCPT addresses the same recipient: the domain is
    case-insensitive (and its A-label and U-label forms the same), and so is
    the local part of our own accounts (NFC); a remote
    host decides about its own local parts (C{Bob@x} and C{bob@x} may differ).
    """
    local_part, domain = address.split_address(rcpt)
    if local or not domain:
        return intl.address_key(rcpt)
    return f"{local_part}@{intl.domain_key(domain)}"
