# -*- test-case-name: tests.test_recovery -*-
"""
What the start-up scan of the queue folder does with what a crash left
(Postfix's C{postsuper} at start): temporary files and data files without an
envelope are incomplete stores, removed; an envelope that cannot be parsed,
or has no data, is moved with whatever belongs to it into
C{mailroot/queue/corrupt/} for the administrator. Each gets one log line.

The scan runs when the queue manager starts, before any listener or the
pickup folder hands over a message, and the mailroot lock keeps other
processes out: so everything incomplete it finds is a crash's, whatever its
age.
"""

from __future__ import annotations

import os

from twisted.logger import Logger

from smtpd.util.durable import fsync_directory, make_folder, unlink_quietly

log = Logger()

CORRUPT = "corrupt"


def remove_leftover(folder: str, name: str, what: str) -> None:
    """Remove C{name} (a temporary file or an orphan data file) from C{folder}, logged."""
    path = os.path.join(folder, name)
    try:
        size = os.lstat(path).st_size
    except OSError:
        return
    unlink_quietly(path)
    log.warn("queue recovery: removed {what} {name} ({size} octets) left by a crash",
             what=what, name=name, size=size)


def move_to_corrupt(folder: str, queue_id: str, reason: str) -> bool:
    """
    Move the files of entry C{queue_id} (envelope and data, when present)
    into C{folder/corrupt/}, durably, and log why; whether that worked (when
    it did not, the entry stays and the error is logged).
    """
    corrupt = os.path.join(folder, CORRUPT)
    moved = []
    try:
        make_folder(corrupt)
        for ext in (".json", ".eml"):
            source = os.path.join(folder, queue_id + ext)
            if os.path.lexists(source):
                os.replace(source, os.path.join(corrupt, queue_id + ext))
                moved.append(queue_id + ext)
        fsync_directory(corrupt)
        fsync_directory(folder)
    except OSError as e:
        log.error("queue recovery: entry {id} is corrupt ({reason}) and could not be "
                  "moved to {corrupt}: {error}", id=queue_id, reason=reason,
                  corrupt=corrupt, error=e)
        return False
    log.warn("queue recovery: entry {id} moved to {corrupt} ({reason}): {files}",
             id=queue_id, corrupt=corrupt, reason=reason, files=" ".join(moved))
    return True
