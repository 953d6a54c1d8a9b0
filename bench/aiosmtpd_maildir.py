"""
The aiosmtpd peer of the benchmark: an aiosmtpd server whose handler delivers
each message to a Maildir per recipient with the same durability smtpd gives
(unique name in tmp/, write, fsync the file, rename into new/, fsync new/)
before it answers 250. The disk work runs in asyncio's default thread pool, so
the event loop keeps serving other sessions meanwhile.

    python bench/aiosmtpd_maildir.py --port PORT --maildirs DIR --domain bench.test

Mail for DOMAIN lands in DIR/DOMAIN/LOCALPART/new/; other domains get 550.
Runs until SIGTERM or SIGINT. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import time

from aiosmtpd.smtp import SMTP


class MaildirHandler:
    """aiosmtpd handler: one fsync'd Maildir file per recipient of DOMAIN."""

    def __init__(self, maildirs: str, domain: str):
        self.maildirs = maildirs
        self.domain = domain.lower()
        self.counter = itertools.count()
        self.host = socket.gethostname()
        self.ready: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Accept recipients at our domain only."""
        if address.rpartition("@")[2].lower() != self.domain:
            return "550 5.1.1 not a local domain"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        """Deliver durably in a worker thread, then answer 250."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, self.deliver, envelope.mail_from, list(envelope.rcpt_tos),
            envelope.original_content)
        return "250 2.0.0 OK delivered"

    def deliver(self, sender: str, recipients: list[str], data: bytes) -> None:
        """Write C{data} into each recipient's Maildir (blocking; in a thread)."""
        content = b"Return-Path: <" + sender.encode() + b">\n" + data.replace(b"\r\n", b"\n")
        for rcpt in recipients:
            folder = os.path.join(self.maildirs, self.domain, rcpt.rpartition("@")[0].lower())
            self.make_maildir(folder)
            name = f"{time.time():.6f}.P{os.getpid()}Q{next(self.counter)}.{self.host}"
            temporary = os.path.join(folder, "tmp", name)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, os.path.join(folder, "new", name))
            fsync_directory(os.path.join(folder, "new"))

    def make_maildir(self, folder: str) -> None:
        """Create tmp/, new/, cur/ of C{folder} once."""
        if folder in self.ready:
            return
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        fsync_directory(os.path.dirname(folder))
        self.ready.add(folder)


def fsync_directory(path: str) -> None:
    """fsync a folder so the names in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def serve(port: int, handler: MaildirHandler) -> None:
    """Listen on 127.0.0.1:C{port} until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench.test"),
        host="127.0.0.1", port=port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildirs", required=True)
    parser.add_argument("--domain", default="bench.test")
    args = parser.parse_args()
    asyncio.run(serve(args.port, MaildirHandler(args.maildirs, args.domain)))


if __name__ == "__main__":
    main()
