# -*- test-case-name: tests.test_pickup -*-
"""
The pickup folder watcher. On Linux, C{twisted.internet.inotify} reports a
file closed after writing (C{IN_CLOSE_WRITE}) or renamed in (C{IN_MOVED_TO}),
so a file is taken only when complete; elsewhere the folder is polled and a
file is taken once its size and modification time are the same on two polls.
Files present at start are taken. Names starting with a dot are ignored (write
there, then rename). At most L{CONCURRENCY} files are sent at once, so a
thousand dropped together do not exhaust file descriptors.
"""

from __future__ import annotations

import os
from collections import deque

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from smtpd.pickup.sender import PickupSender
from smtpd.util.durable import make_folder

log = Logger()

CONCURRENCY = 16
POLL_INTERVAL = 1.0
RETRY_INTERVAL = 60.0


def inotify_available() -> bool:
    """Whether this platform has inotify (Linux)."""
    try:
        from twisted.internet import inotify  # noqa: F401
    except ImportError:
        return False
    return True


class PickupService(Service):
    """
    Watches C{folder} and sends what appears there.

    @param folder: C{mailroot/pickup}.
    @param sender: the L{PickupSender}.
    @param reactor: the reactor (for inotify) and clock.
    @param use_inotify: L{None}: when available; C{False}: poll.
    """

    def __init__(self, folder: str, sender: PickupSender, reactor, use_inotify=None):
        self.folder = os.path.abspath(folder)
        self.sender = sender
        self.reactor = reactor
        self.use_inotify = inotify_available() if use_inotify is None else use_inotify
        self._retries: dict[str, object] = {}
        self._waiting: deque[str] = deque()
        self._known: set[str] = set()
        self._active: dict[str, Deferred] = {}
        self._notifier = None
        self._poll_call = None
        self._seen: dict[str, tuple[int, float]] = {}

    def startService(self) -> None:
        """Create the folder, start watching, take what is already there."""
        Service.startService(self)
        make_folder(self.folder)
        if self.use_inotify:
            self._watch()
            self.rescan()
        else:
            self._poll()

    def stopService(self) -> Deferred | None:
        """Stop watching; files being sent finish (the others wait for the next start)."""
        Service.stopService(self)
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()
        self._waiting.clear()
        if not self._active:
            return None
        return DeferredList(list(self._active.values()))

    # -- watching

    def _watch(self) -> None:
        from twisted.internet import inotify
        from twisted.python.filepath import FilePath

        self._notifier = inotify.INotify(self.reactor)
        self._notifier.startReading()
        mask = inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO
        self._notifier.watch(FilePath(self.folder), mask=mask, callbacks=[self._notified])

    def _notified(self, _watch, path, mask: int) -> None:
        from twisted.internet import inotify

        if mask & inotify.IN_Q_OVERFLOW:
            self.rescan()
        else:
            self.offer(os.fsdecode(path.basename()))

    def rescan(self) -> None:
        """Take every file in the folder (at start, after an inotify overflow)."""
        for name in sorted(self._listing()):
            self.offer(name)

    def _listing(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.folder) if not n.startswith(".")]
        except OSError as e:
            log.error("cannot list the pickup folder {folder}: {e}", folder=self.folder, e=e)
            return []

    def _poll(self) -> None:
        """Take files whose size and mtime did not change since the last poll."""
        self._poll_call = None
        seen: dict[str, tuple[int, float]] = {}
        for name in self._listing():
            try:
                st = os.stat(os.path.join(self.folder, name))
            except OSError:
                continue
            seen[name] = (st.st_size, st.st_mtime)
            if self._seen.get(name) == seen[name]:
                self.offer(name)
        self._seen = seen
        if self.running:
            self._poll_call = self.reactor.callLater(POLL_INTERVAL, self._poll)

    # -- sending

    def offer(self, name: str) -> None:
        """Send file C{name} when a place is free (once, however often offered)."""
        if name.startswith(".") or name in self._known or not self.running:
            return
        self._known.add(name)
        self._waiting.append(name)
        self._pump()

    def _pump(self) -> None:
        while self._waiting and len(self._active) < CONCURRENCY and self.running:
            name = self._waiting.popleft()
            d = Deferred.fromCoroutine(self._send(name))
            if not d.called:
                self._active[name] = d

    async def _send(self, name: str) -> None:
        path = os.path.join(self.folder, name)
        try:
            if os.path.isfile(path):
                await self.sender.send(path)
        except Exception:
            log.failure("pickup file {name} not sent; tried again later", name=name)
            if self.running:
                self._retries[name] = self.reactor.callLater(RETRY_INTERVAL, self._retry, name)
        else:
            self._known.discard(name)
        finally:
            self._active.pop(name, None)
            self._pump()

    def _retry(self, name: str) -> None:
        self._retries.pop(name, None)
        self._known.discard(name)
        self.offer(name)
