# -*- test-case-name: tests.test_deadline -*-
"""
Deadlines for slow clients (Postfix's C{smtpd_timeout} with
C{smtpd_per_record_deadline} and C{smtpd_min_data_rate}).

An idle timeout alone is reset by every byte, so a client sending one byte
every few seconds holds its connection for ever. Here a command line must be
complete C{command_timeout} after its first byte, and DATA must end within
C{data_timeout} of the 354 reply plus one second for every C{min_data_rate}
bytes received: a real client on a slow link earns time with every byte it
sends, a trickle does not.
"""

from __future__ import annotations

from collections.abc import Callable

from smtpd.config import ServerConfig


class Deadlines:
    """
    The deadlines of one session.

    @param clock: an L{IReactorTime}.
    @param server: returns the current C{[server]} section.
    @param expired: called once when a deadline passes.
    """

    # One per session: no instance dict (many idle sessions).
    __slots__ = ("clock", "server", "expired", "_line_timer", "_data_timer", "_data_start",
                 "_data_bytes")

    def __init__(self, clock, server: Callable[[], ServerConfig], expired: Callable[[], None]):
        self.clock = clock
        self.server = server
        self.expired = expired
        self._line_timer = None
        self._data_timer = None
        self._data_start = 0.0
        self._data_bytes = 0

    # -- command lines ----------------------------------------------------

    def partial_line(self, pending: bool) -> None:
        """
        Say whether part of a command line is waiting for its end: the first
        time starts the line's deadline; L{False} ends it.
        """
        if not pending:
            self._cancel_line()
        elif self._line_timer is None:
            self._line_timer = self.clock.callLater(
                self.server().command_timeout, self._line_expired
            )

    def line_taken(self) -> None:
        """A whole command line arrived: its deadline is over."""
        self._cancel_line()

    def _cancel_line(self) -> None:
        if self._line_timer is not None:
            if self._line_timer.active():
                self._line_timer.cancel()
            self._line_timer = None

    def _line_expired(self) -> None:
        self._line_timer = None
        self.expired()

    # -- DATA -------------------------------------------------------------

    def data_started(self) -> None:
        """The 354 reply went out: the DATA deadline starts."""
        self._cancel_line()
        self._data_start = self.clock.seconds()
        self._data_bytes = 0
        self._data_timer = self.clock.callLater(self.server().data_timeout, self._data_check)

    def data_received(self, size: int) -> None:
        """C{size} more bytes of message data arrived."""
        self._data_bytes += size

    def data_ended(self) -> None:
        """The end of data arrived: no more DATA deadline."""
        if self._data_timer is not None:
            if self._data_timer.active():
                self._data_timer.cancel()
            self._data_timer = None

    def data_deadline(self) -> float:
        """When DATA must have ended, for the bytes received so far."""
        server = self.server()
        earned = self._data_bytes / server.min_data_rate if server.min_data_rate else 0.0
        return self._data_start + server.data_timeout + earned

    def _data_check(self) -> None:
        left = self.data_deadline() - self.clock.seconds()
        if left > 0:
            self._data_timer = self.clock.callLater(left, self._data_check)
            return
        self._data_timer = None
        self.expired()

    def stop(self) -> None:
        """The session is over: cancel every timer."""
        self._cancel_line()
        self.data_ended()
