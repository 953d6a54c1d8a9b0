# -*- test-case-name: tests.test_bdat -*-
"""
CHUNKING (RFC 3030): C{BDAT <count> [LAST]}. Each chunk is exactly C{count}
octets read as data (no dot-stuffing, no terminator search), pipelined or
split over any number of TCP segments, and streamed into the same cleanup
stage as DATA: one way for message data into the queue.

* Each BDAT gets one reply once its chunk is read: C{250 2.0.0 Ok: <n> octets
  received}, and after C{LAST} the usual C{250 2.0.0 Ok: queued as <id>}
  once the message is durable.
* The cleanup rules apply as for DATA, while the chunks arrive: the size
  limits (C{552 5.3.4}), lines of at most 998 octets (C{500 5.5.2}), bare CR
  or LF refused or made CRLF per C{[messages] bare_newlines} (C{550 5.6.0}).
  A CRLF may be split between chunks. For C{BODY=BINARYMIME} (RFC 3030 3,
  offered with CHUNKING) the data is binary: no line rules, nothing
  converted, stored byte for byte; DATA after it gets C{503 5.5.1}.
* A chunk that fails ends the transaction: it and every chunk pipelined
  behind it are still read to their last octet and discarded, so the command
  stream stays in sync; those later chunks get C{503 5.5.1} (no transaction).
* BDAT and DATA are not mixed in one transaction (C{503 5.5.1}), and no RCPT
  comes after the first chunk.
"""

from __future__ import annotations

import re

from smtpd.inbound.core import COMMAND, DATA

_BDAT = re.compile(r"(\d{1,18})(?: +(LAST))?", re.IGNORECASE)


class Chunk:
    """
    The chunk being read: how many octets are still to come, whether it is
    the last, and the refusal it will be answered with (L{None}: none yet).
    """

    def __init__(self, count: int, last: bool, refusal: tuple[int, str, str] | None):
        self.count = count
        self.remaining = count
        self.last = last
        self.refusal = refusal


class Chunking:
    """BDAT for L{smtpd.inbound.session.SMTPSession}; comes first in its bases."""

    # Whether the current transaction has begun with BDAT.
    _chunked = False
    _chunk: Chunk | None = None

    def _extensions(self) -> list[str]:
        return [*super()._extensions(), "CHUNKING", "BINARYMIME"]

    def _reset(self) -> None:
        super()._reset()
        if self._chunked and self._message is not None:
            # RSET (or EHLO, STARTTLS) between chunks: nothing is queued.
            self._message.abort()
            self._message = None
            self.in_transfer = False
        self._chunked = False

    def smtp_BDAT(self, arg: str):
        """RFC 3030 2: the next chunk of the message, C{count} octets."""
        match = _BDAT.fullmatch(arg)
        if match is None:
            return self._reply(501, "5.5.4", "Syntax: BDAT count [LAST]")
        count, last = int(match.group(1)), match.group(2) is not None
        refusal = self._chunk_refusal()
        if refusal is None and not self._chunked:
            self._begin_chunks()
        self._chunk = Chunk(count, last, refusal)
        if count == 0:
            return self._end_of_chunk()
        self._mode = DATA

    def _chunk_refusal(self) -> tuple[int, str, str] | None:
        """Why the chunk about to come is to be discarded, or L{None}."""
        if self._sender is None:
            return (503, "5.5.1", "Error: need MAIL command")
        if not self._rcpts:
            return (554, "5.5.1", "Error: no valid recipients")
        if self._chunked and self._message is None:
            # A step failed inside this transaction (an internal error).
            return (451, "4.3.0", "Error: internal error")
        return None

    def _begin_chunks(self) -> None:
        self._message = self.begin_message()
        self._chunked = True
        self.in_transfer = True

    def data_received(self):
        """In a chunk: take up to its remaining octets; else DATA's reading."""
        chunk = self._chunk
        if chunk is None:
            return super().data_received()
        data = self._buf[: chunk.remaining]
        self._buf = self._buf[len(data):]
        chunk.remaining -= len(data)
        keep_going = True
        message = self._message if chunk.refusal is None else None
        if message is not None:
            keep_going = message.write(data)
        if keep_going:
            return None if chunk.remaining else self._end_of_chunk()
        # The disk lags: read on (or answer the chunk) once the spool caught up.
        drained = message.drained()
        if not chunk.remaining:
            drained.addCallback(lambda _: self._end_of_chunk())
        return drained

    def _end_of_chunk(self):
        """The chunk is read: answer it (after LAST, once it is queued)."""
        chunk, self._chunk = self._chunk, None
        self._mode = COMMAND
        refusal = chunk.refusal
        if refusal is None and self._message is None:
            refusal = (451, "4.3.0", "Error: internal error")
        if refusal is None:
            early = self._message.early_refusal()
            if early is not None:
                refusal = (early.code, early.status, early.text)
        if refusal is not None:
            if self._chunked:
                # The transaction failed: later chunks are read and discarded.
                self._reset()
            return self._reply(*refusal)
        if not chunk.last:
            return self._reply(250, "2.0.0", f"Ok: {chunk.count} octets received")
        self._chunked = False
        return self._end_of_data()

    def smtp_DATA(self, arg: str):
        """No DATA in a transaction begun with BDAT (RFC 3030 2)."""
        if self._chunked:
            return self._reply(503, "5.5.1", "Error: DATA in a BDAT transaction")
        return super().smtp_DATA(arg)

    def smtp_RCPT(self, arg: str):
        """No RCPT once the message data has begun."""
        if self._chunked:
            return self._reply(503, "5.5.1", "Error: RCPT after BDAT")
        return super().smtp_RCPT(arg)
