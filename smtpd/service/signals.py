# -*- test-case-name: tests.test_lifecycle -*-
"""
The signals an operator or a supervisor sends: SIGHUP reloads (or, where
reloading is not wired, is logged and ignored: it never kills the server, as
logrotate and C{systemctl reload} send it), SIGUSR1 reopens the log files after
logrotate renamed them (then runs whatever handler was there before, such as
twistd's own log rotation). SIGTERM and SIGINT stay Twisted's: a clean stop.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.application import service
from twisted.logger import Logger

log = Logger()


class SignalService(service.Service):
    """
    Installs the SIGHUP and SIGUSR1 handlers while running.

    @param reactor: for C{callFromThread} (handlers run between bytecodes of
        the main thread; the work runs in the reactor's turn).
    @param on_hangup: called for SIGHUP, or L{None} to log and ignore it.
    @param on_reopen: called for SIGUSR1.
    """

    def __init__(self, reactor: Any, on_hangup: Callable[[], Any] | None,
                 on_reopen: Callable[[], Any]):
        self.reactor = reactor
        self.on_hangup = on_hangup
        self.on_reopen = on_reopen
        self._previous: dict[int, Any] = {}

    def privilegedStartService(self) -> None:
        """Install the handlers before the listeners bind (see L{SMTPServer})."""
        service.Service.privilegedStartService(self)
        self.install()

    def startService(self) -> None:
        """Install the handlers if not done yet."""
        service.Service.startService(self)
        self.install()

    def install(self) -> None:
        """Install the handlers (once), remembering the ones they replace."""
        if self._previous:
            return
        for signum, handler in ((signal.SIGHUP, self._hangup), (signal.SIGUSR1, self._reopen)):
            try:
                self._previous[signum] = signal.signal(signum, handler)
            except ValueError:
                # Not the main thread (an in-process test): nothing to install.
                return

    def stopService(self) -> None:
        """Put the previous handlers back."""
        service.Service.stopService(self)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _hangup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.hangup)

    def _reopen(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reopen)
        previous = self._previous.get(signal.SIGUSR1)
        if callable(previous):
            previous(signum, frame)

    def hangup(self) -> None:
        """SIGHUP: reload, or say that it is ignored."""
        if self.on_hangup is None:
            log.info("SIGHUP received: no live reload in this server; ignored")
            return
        log.info("SIGHUP received: reloading the configuration")
        try:
            self.on_hangup()
        except Exception:
            log.failure("Reload on SIGHUP failed")

    def reopen(self) -> None:
        """SIGUSR1: reopen the log files."""
        log.info("SIGUSR1 received: reopening log files")
        try:
            self.on_reopen()
        except Exception:
            log.failure("Reopening the log files failed")
