# -*- test-case-name: tests.test_lifecycle -*-
"""
The top of the service tree, which fixes the order of start: bind every
listener, then take the mailroot lock, then create the mailroot's folders,
then start the parts (the queue is scanned only then). On stop the listeners
close first, the parts drain, and the lock is released last.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.internet.defer import maybeDeferred

from smtpd.service.listeners import ListenerGroup, StartupError
from smtpd.util.lock import LockHeld, MailrootLock

MAILROOT_FOLDERS = ("queue", "mailbox", "drop", "badmail", "pickup")


def prepare_mailroot(mailroot: str) -> None:
    """Create C{mailroot/} and its folders when missing."""
    for name in MAILROOT_FOLDERS:
        os.makedirs(os.path.join(mailroot, name), 0o700, exist_ok=True)


class SMTPServer(service.MultiService):
    """
    The whole server. Its children start in the order added and stop in
    reverse; the L{ListenerGroup} is bound before any of them starts and is
    added last, so it stops first.

    @ivar listeners: the L{ListenerGroup}.
    @ivar lock: the L{MailrootLock}.
    """

    def __init__(self, mailroot: str, listeners: ListenerGroup):
        service.MultiService.__init__(self)
        self.mailroot = mailroot
        self.listeners = listeners
        self.lock = MailrootLock(mailroot)
        listeners._then = self._claim_mailroot

    def _claim_mailroot(self) -> None:
        """After binding: the lock, then the folders (never before the lock)."""
        try:
            self.lock.acquire()
            prepare_mailroot(self.mailroot)
        except LockHeld as e:
            raise StartupError(f"Cannot start: {e}") from None
        except OSError as e:
            self.lock.release()
            raise StartupError(
                f"Cannot start: mailroot {self.mailroot}: {e.strerror or e}"
            ) from None

    def privilegedStartService(self) -> None:
        """
        As root, before twistd drops privileges: the signal handlers are
        installed, then the listeners (the last child) bind and the mailroot is
        locked; no other part does anything before startService.
        """
        service.MultiService.privilegedStartService(self)
        self.listeners.bind()

    def startService(self) -> None:
        """Start the parts once bound and locked (binding now if not yet done)."""
        self.listeners.bind()
        service.MultiService.startService(self)

    def stopService(self) -> Any:
        """Stop the parts (listeners first); release the lock when all are done."""
        d = maybeDeferred(service.MultiService.stopService, self)

        def release(result: Any) -> Any:
            self.lock.release()
            return result

        return d.addBoth(release)
