# -*- test-case-name: tests.test_client_bdat -*-
"""
The message data of an outbound transaction on the wire: the DATA stream
(dot-stuffed) or BDAT chunks (RFC 3030), for the SMTP client and, with one
reply per recipient after BDAT LAST, the LMTP client. A message held in memory goes in
one write; one on disk is streamed as the host takes it (a pull producer: never
more than a chunk or two in memory).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols.basic import FileSender

from smtpd.delivery.wire import BdatChunker, DotStuffer, Reply, SessionError
from smtpd.mail.source import CHUNK_SIZE, IMessageSource, held_data

# A message held in memory up to this size goes in one write (its final dot
# or BDAT LAST included); a larger one, or one on disk, is streamed.
WHOLE_WRITE_LIMIT = 1024 * 1024


def swallow(deferreds: list[Deferred[Any]]) -> None:
    """Let the failures of C{deferreds} go unreported (their waiter has its answer)."""
    for d in deferreds:
        d.addErrback(lambda _: None)


class _Reader:
    """A file whose read errors end the session instead of the transport's write loop."""

    def __init__(self, file: Any, client: Any):
        self.file = file
        self.client = client

    def read(self, size: int) -> bytes:
        """Up to C{size} octets; b"" (the end) after a read error, which fails the session."""
        try:
            return self.file.read(size)
        except OSError as e:
            self.client.fail(SessionError(451, "4.3.0", f"451 4.3.0 cannot read the message: {e}"),
                             abort=True)
            return b""


class MessageStreaming:
    """
    The data part of L{smtpd.delivery.client.RelayClient}: it supplies
    C{expect}, C{write}, C{fail}, the timeout and the session's state.
    """

    async def stream(self, source: IMessageSource) -> Reply:
        """
        Send the message as the DATA stream, dot-stuffed a chunk at a time as
        the host takes it (a pull producer on the transport: never more than
        a chunk or two in memory), then the final dot; the reply to it.
        """
        final = self.expect("reply to end of DATA")
        stuffer = DotStuffer()
        await self._send_source(source, stuffer.feed, stuffer.finish)
        return await final

    async def stream_chunks(self, source: IMessageSource, binary: bool = False,
                            pipelined: bool = True) -> Reply:
        """
        Send the message as BDAT chunks (RFC 3030), one per piece read from
        C{source}, the last with C{LAST} (L{send_chunks}). The reply that
        decides: the first refusal of a chunk, else the reply to the last one.
        """
        refused, finals = await self.send_chunks(source, binary, pipelined)
        try:
            last = await finals[0] if finals else None
        finally:
            swallow(finals)
        return refused or last

    async def send_chunks(self, source: IMessageSource, binary: bool = False,
                          pipelined: bool = True, answers: int = 1
                          ) -> tuple[Reply | None, list[Deferred[Reply]]]:
        """
        Send the message as BDAT chunks (RFC 3030), one per piece read from
        C{source}, the last with C{LAST}. C{pipelined} (the host offers
        PIPELINING): the chunks stream as the host takes them without waiting
        for their replies. Otherwise each chunk waits for its reply and a
        refusal ends the message there (RFC 3030 2: no more chunks after a
        4xx or 5xx; without PIPELINING a client may not send a command before
        the previous one is answered). C{binary} (BINARYMIME): the octets go
        as they are, line ends untouched. C{answers}: how many replies BDAT
        LAST gets (LMTP, RFC 2033 4.2: one per accepted recipient).

        @return: the first refusal of a chunk before the last (or L{None}),
            once every chunk before the last is answered; and the Deferred
            replies to BDAT LAST, C{answers} of them (none when the message
            ended at a refusal without LAST). The caller awaits them, or
            swallows their failures.
        """
        chunker = BdatChunker(binary)
        if not pipelined:
            return await self._chunks_in_step(source, chunker, answers)
        replies: list[Deferred[Reply]] = []
        finals: list[Deferred[Reply]] = []

        def chunk(data: bytes) -> bytes:
            out = chunker.feed(data)
            if out:
                replies.append(self.expect("reply to BDAT"))
            return out

        def last() -> bytes:
            finals.extend(self.expect("reply to BDAT LAST") for _ in range(answers))
            return chunker.finish()

        def whole(data: bytes) -> bytes:
            finals.extend(self.expect("reply to BDAT LAST") for _ in range(answers))
            return chunker.whole(data)

        self.setTimeout(self.timeout)  # armed for the replies of the chunks to come
        refused = None
        try:
            await self._send_source(source, chunk, last, whole)
            for d in replies:
                reply = await d
                if refused is None and not 200 <= reply.code < 300:
                    refused = reply
        except BaseException:
            swallow(finals)
            raise
        finally:
            swallow(replies)
        return refused, finals

    async def _chunks_in_step(self, source: IMessageSource, chunker: BdatChunker,
                              answers: int) -> tuple[Reply | None, list[Deferred[Reply]]]:
        """
        BDAT toward a host without PIPELINING: one chunk, then its reply,
        then the next (the reply also shows the host took the chunk: never
        more than one chunk in memory). The first refusal ends the message.
        A message held in memory is one chunk, C{BDAT <n> LAST}.
        """
        data = held_data(source)
        if data is not None and len(data) <= WHOLE_WRITE_LIMIT:
            return None, self._last(chunker.whole(data), answers)
        try:
            file = source.open()
        except OSError as e:
            self.fail(SessionError(451, "4.3.0", f"451 4.3.0 cannot read the message: {e}"),
                      abort=True)
            return None, [self.expect("reply to BDAT")]
        reader = _Reader(file, self)
        try:
            while self.error is None:
                data = reader.read(CHUNK_SIZE)
                if not data:
                    break
                out = chunker.feed(data)
                if out:
                    reply = await self._chunk(out, "reply to BDAT")
                    if not 200 <= reply.code < 300:
                        return reply, []
        finally:
            file.close()
        return None, self._last(chunker.finish(), answers)

    def _last(self, chunk: bytes, answers: int) -> list[Deferred[Reply]]:
        """Write the BDAT LAST command and its data; its C{answers} replies."""
        finals = [self.expect("reply to BDAT LAST") for _ in range(answers)]
        if self.error is None:
            self.write(chunk)
        return finals

    def _chunk(self, chunk: bytes, phase: str) -> Deferred[Reply]:
        """Write one BDAT command and its data; its reply."""
        d = self.expect(phase)
        if self.error is None:
            self.write(chunk)
        return d

    async def _send_source(self, source: IMessageSource, transform: Any, finish: Any,
                           whole: Any = None) -> None:
        """
        Write C{source} through C{transform} a chunk at a time as the host
        takes it (a pull producer on the transport: never more than a chunk
        or two in memory), then C{finish()}. A read error fails the session.
        A message held in memory (up to L{WHOLE_WRITE_LIMIT}) goes in one
        write: C{whole(data)} when given, else C{transform(data) + finish()}.
        """
        data = held_data(source)
        if data is not None and len(data) <= WHOLE_WRITE_LIMIT:
            self.resetTimeout()
            out = whole(data) if whole is not None else transform(data) + finish()
            if self.error is None:
                self.write(out)
            return
        await self._stream_file(source, transform)
        tail = finish()
        if self.error is None:
            self.write(tail)

    async def _stream_file(self, source: IMessageSource, transform: Any) -> None:
        """Write C{source} through C{transform} as the host takes it (a pull producer)."""

        def progress(chunk: bytes) -> bytes:
            self.resetTimeout()  # the host is taking the data: progress
            return transform(chunk)

        try:
            file = source.open()
        except OSError as e:
            self.fail(SessionError(451, "4.3.0", f"451 4.3.0 cannot read the message: {e}"),
                      abort=True)
            return
        sender = FileSender()
        sender.CHUNK_SIZE = CHUNK_SIZE
        self._direct = False  # the file goes through the transport: so does all after it
        self._streaming = True
        try:
            await sender.beginFileTransfer(_Reader(file, self), self.transport, progress)
        except Exception:
            pass  # the transport stopped us: the connection is gone, the replies fail
        finally:
            self._streaming = False
            file.close()
