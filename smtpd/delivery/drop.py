# -*- test-case-name: tests.test_local -*-
"""
The drop agent (SPEC 4, 6): one IIS-style C{.eml} file per message in
C{mailroot/drop/} for C{type = drop} domains.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred

from smtpd.delivery.maildir import MailboxError, header_value, raise_error
from smtpd.mail.envelope import Envelope, valid_queue_id
from smtpd.mail.lineends import line_ends
from smtpd.util.durable import FolderSync, make_folder, temp_name, write_file


class DropDelivery:
    """
    Writes one C{.eml} file per message into C{mailroot/drop/} (IIS Drop
    format): C{x-sender:} and C{x-receiver:} lines, then the message, CRLF.

    @param mailroot: the mailroot folder.
    @param clock: an C{IReactorTime}.
    @param run_blocking: C{f(callable, *args) -> Deferred} for disk work.
    """

    def __init__(self, mailroot: str, clock: Any, run_blocking: Callable[..., Deferred]):
        self.folder = os.path.join(os.path.abspath(mailroot), "drop")
        self._clock = clock
        self._run = run_blocking
        self._sync = FolderSync(self.folder)

    def deliver(self, envelope: Envelope, recipients: Sequence[str],
                data: bytes) -> Deferred[None]:
        """
        Drop C{data} for C{recipients} as one file. Fails with L{MailboxError}
        for an address carrying a line break, L{OSError} on disk errors.
        """
        try:
            lines = [b"x-sender: " + header_value(envelope.sender, "sender") + b"\r\n"]
            lines += [b"x-receiver: " + header_value(r, "recipient") + b"\r\n"
                      for r in recipients]
        except MailboxError as e:
            return self._run(raise_error, e)
        stem = envelope.id if valid_queue_id(envelope.id) else "message"
        name = f"{stem}.{int(self._clock.seconds()):X}{secrets.token_hex(4).upper()}.eml"
        content = b"".join(lines) + line_ends(data, b"\r\n")
        return self._run(self._drop_blocking, name, content)

    def _drop_blocking(self, name: str, content: bytes) -> None:
        make_folder(self.folder)
        path = os.path.join(self.folder, name)
        tmp = temp_name(path)
        write_file(tmp, content)
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
