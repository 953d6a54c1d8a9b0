# -*- test-case-name: tests.test_pickup -*-
"""
One pickup file on its way into the queue: read off the reactor thread,
streamed through cleanup, removed once durable; or moved to C{badmail/} with
a C{.bdr} saying why.
"""

from __future__ import annotations

import os
import re
import time

from twisted.logger import Logger

from smtpd.cleanup.interfaces import MessageRefused
from smtpd.cleanup.trace import header_date
from smtpd.mail.envelope import Recipient
from smtpd.pickup.parse import MAX_HEADER, PickupError, parse
from smtpd.util.durable import fsync_directory, make_folder, replace_file, unlink_quietly

log = Logger()

CHUNK = 64 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class PickupSender:
    """
    Sends pickup files through cleanup.

    @param cleanup: the L{smtpd.cleanup.stage.Cleanup}.
    @param badmail: the C{mailroot/badmail} folder.
    @param run_blocking: C{f(callable, *args) -> Deferred} for file work.
    """

    def __init__(self, cleanup, badmail: str, run_blocking):
        self.cleanup = cleanup
        self.badmail = badmail
        self.run = run_blocking

    async def send(self, path: str) -> str:
        """
        Queue the file C{path} and remove it; or move it to badmail. Returns
        what happened: C{"queued <id>"}, C{"badmail: <reason>"}, C{"gone"}.
        Raises L{OSError} or a temporary (4xx) L{MessageRefused} when it could
        not be queued for a reason that may pass (a full disk, a failing
        filter): the file stays for a later try.
        """
        try:
            head, complete = await self.run(_read_head, path)
        except FileNotFoundError:
            return "gone"
        clock = self.cleanup.clock
        hostname = self.cleanup.config.server.hostname
        try:
            parsed = parse(head, complete, hostname, header_date(clock.seconds()))
        except PickupError as e:
            return await self._bad(path, str(e))
        message = self.cleanup.begin(parsed.sender, [Recipient(r) for r in parsed.recipients],
                                     client=None, normalize=True)
        try:
            await self._stream(message, path, parsed.header, head, parsed.body_offset, complete)
        except BaseException:
            message.abort()
            raise
        try:
            envelope = await message.finish()
        except MessageRefused as e:
            if e.code < 500:
                raise  # a temporary refusal: the file stays for a later try
            return await self._bad(path, str(e))
        await self.run(_remove, path)
        log.info("pickup file {name} queued as {id}", name=os.path.basename(path), id=envelope.id)
        return f"queued {envelope.id}"

    async def _stream(self, message, path: str, header: bytes, head: bytes, offset: int,
                      complete: bool) -> None:
        if not message.write(header):
            await message.drained()
        if complete:
            if not message.write(head[offset:]):
                await message.drained()
            return
        position = offset
        while True:
            chunk = await self.run(_read_chunk, path, position)
            if not chunk:
                return
            position += len(chunk)
            if not message.write(chunk):
                await message.drained()

    async def _bad(self, path: str, reason: str) -> str:
        log.warn("pickup file {name} moved to badmail: {reason}",
                 name=os.path.basename(path), reason=reason)
        now = self.cleanup.clock.seconds()
        await self.run(_to_badmail, path, self.badmail, reason, now)
        return f"badmail: {reason}"


def _read_head(path: str) -> tuple[bytes, bool]:
    """The file's first octets (enough for its header) and whether that is all of it."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER + 1)
    return head, len(head) <= MAX_HEADER


def _read_chunk(path: str, position: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(position)
        return f.read(CHUNK)


def _remove(path: str) -> None:
    os.unlink(path)
    fsync_directory(os.path.dirname(path))


def _to_badmail(path: str, badmail: str, reason: str, now: float) -> None:
    """C{<name>.bad} (the file as it was) and C{<name>.bdr} (why), durably."""
    make_folder(badmail)
    stem = _SAFE.sub("_", os.path.basename(path))[:100] or "pickup"
    while os.path.lexists(os.path.join(badmail, stem + ".bad")):
        stem += "_"
    bad, bdr = (os.path.join(badmail, stem + ext) for ext in (".bad", ".bdr"))
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    report = (f"Reason: {_one_line(reason)}\r\nSource: pickup/{_one_line(os.path.basename(path))}"
              f"\r\nDate: {when}\r\n").encode("utf-8")
    replace_file(bdr, report)
    try:
        os.rename(path, bad)
    except OSError:
        unlink_quietly(bdr)
        raise
    fsync_directory(badmail)
    fsync_directory(os.path.dirname(path))


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
