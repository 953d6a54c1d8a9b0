# -*- test-case-name: tests.test_local -*-
"""
The drop agent (SPEC 4, 6): one IIS-style C{.eml} file per message in
C{mailroot/drop/} for C{type = drop} domains.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from smtpd.delivery.interfaces import IDeliveryAgent
from smtpd.delivery.maildir import MailboxError, header_value, raise_error
from smtpd.delivery.outcome import disk_error
from smtpd.mail.envelope import DeliveryStatus, Envelope, valid_queue_id
from smtpd.mail.lineends import convert_chunks
from smtpd.mail.source import IMessageSource, read_chunks
from smtpd.util.durable import TEMP_SUFFIX, FolderSync, make_folder, temp_name, write_chunks

log = Logger()


@implementer(IDeliveryAgent)
class DropDelivery:
    """
    The C{drop} agent: writes one C{.eml} file per message into
    C{mailroot/drop/} (IIS Drop format): C{x-sender:} and C{x-receiver:}
    lines, then the message, CRLF.

    @param mailroot: the mailroot folder.
    @param clock: an C{IReactorTime}.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk work.
    """

    name = "drop"

    def __init__(self, mailroot: str, clock: Any, run_blocking: Callable[..., Deferred]):
        self.folder = os.path.join(os.path.abspath(mailroot), "drop")
        self._clock = clock
        self._run = run_blocking
        self._sync = FolderSync(self.folder)
        self._started = clock.seconds()
        self._cleaned = False

    def deliver(self, envelope: Envelope, deliveries: Sequence[tuple[Any, Any]],
                message: IMessageSource) -> Deferred[list[DeliveryStatus]]:
        """
        One file for all the recipients of C{deliveries}; one status each,
        never failing (a disk problem is 452 4.3.1 or 451 4.3.0).
        """
        addresses = [recipient.address for recipient, _ in deliveries]
        return Deferred.fromCoroutine(self._deliver(envelope, addresses, message))

    async def _deliver(self, envelope: Envelope, addresses: list[str],
                       message: IMessageSource) -> list[DeliveryStatus]:
        try:
            await self.drop(envelope, addresses, message)
        except OSError as e:
            log.error("Drop delivery of {queue_id} failed: {error}",
                      queue_id=envelope.id, error=e)
            code, status, text = disk_error(e, "drop delivery")
        except Exception:
            log.failure("Drop delivery of {queue_id} failed", queue_id=envelope.id)
            code, status, text = 451, "4.3.0", "drop delivery error"
        else:
            code, status, text = 250, "2.0.0", "delivered to the drop folder"
        return [DeliveryStatus(a, code, status, text) for a in addresses]

    def stop(self) -> None:
        """Nothing to release: every write finishes on its own."""

    def drop(self, envelope: Envelope, recipients: Sequence[str],
             message: IMessageSource) -> Deferred[None]:
        """
        Drop C{message} for C{recipients} as one file, copied from the source
        in chunks. Fails with L{MailboxError} for an address carrying a line
        break, L{OSError} on disk errors.
        """
        try:
            lines = [b"x-sender: " + header_value(envelope.sender, "sender") + b"\r\n"]
            lines += [b"x-receiver: " + header_value(r, "recipient") + b"\r\n"
                      for r in recipients]
        except MailboxError as e:
            return self._run(raise_error, e)
        if valid_queue_id(envelope.id):
            # The same name each time this drop is made: an attempt replayed
            # after a crash replaces its own file rather than adding one.
            digest = hashlib.sha256("\n".join(recipients).lower().encode("utf-8"))
            name = f"{envelope.id}.{digest.hexdigest()[:12].upper()}.eml"
        else:
            name = f"message.{int(self._clock.seconds()):X}{secrets.token_hex(4).upper()}.eml"
        binary = envelope.body.upper() == "BINARYMIME"
        return self._run(self._drop_blocking, name, b"".join(lines), message, binary)

    def _drop_blocking(self, name: str, header: bytes, message: IMessageSource,
                       binary: bool = False) -> None:
        make_folder(self.folder)
        if not self._cleaned:
            self._cleaned = True
            remove_stale_temporaries(self.folder, self._started)
        path = os.path.join(self.folder, name)
        tmp = temp_name(path)
        # BINARYMIME data is copied byte for byte (a bare CR or LF is content).
        chunks = read_chunks(message)
        body = chunks if binary else convert_chunks(chunks, b"\r\n")
        write_chunks(tmp, itertools.chain([header], body))
        try:
            os.rename(tmp, path)
            self._sync.sync()
        except BaseException:
            for p in (tmp, path):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            raise


def remove_stale_temporaries(folder: str, started: float) -> None:
    """
    Remove our temporary files (C{.name.<random>.tmp}) from C{folder} that
    were last changed before C{started}: drops cut short by a crash of an
    earlier run. Errors are ignored.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < started:
                os.unlink(entry.path)
        except OSError:
            continue
