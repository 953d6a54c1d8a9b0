# -*- test-case-name: tests.test_pop3 -*-
"""
One POP3 session (RFC 1939), on Twisted's L{pop3.POP3}: Twisted's RETR, TOP,
RSET, NOOP and CAPA; ours for what a mail server must do differently: the
login state (L{smtpd.pop3.login}), line splitting that drops what follows
STLS, ordered pipelining, RFC 2449 response codes, listings that leave out
deleted messages, removal at QUIT in a thread, an activity-log line per
command.
"""

from __future__ import annotations

import inspect
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.mail import pop3

from smtpd.pop3.login import AUTHORIZATION, LOGIN_COMMANDS, AuthorizationState

log = Logger()

# RFC 2449 4: command lines are at most 255 octets; SASL responses
# (RFC 5034 4) may be longer.
MAX_LINE = 2048

# Commands allowed before login (RFC 1939 4, RFC 2449, RFC 2595, RFC 5034).


class POP3Session(AuthorizationState, pop3.POP3):
    """
    A POP3 session of a L{smtpd.pop3.server.POP3Server}.

    @ivar user: the account once logged in (for the log), else L{None}.
    @ivar tls: whether the session is encrypted.
    """

    AUTH_CMDS = AUTHORIZATION

    def __init__(self, server: Any, implicit_tls: bool = False):
        self.server = server
        self.tls = implicit_tls
        self.user: str | None = None
        self.peer_ip = ""
        self.session_id = ""
        self.server_address: tuple[str, Any] = ("", "")
        self.failures = 0
        self.closed = False
        self.pending_user: str | None = None
        # The command awaiting its reply, for the log: [verb, argument, logged].
        self.logging: list | None = None
        self.buffer = b""
        self.overlong = False
        self.discard = False
        self.release = None
        self.line_start = True

    # -- connection -----------------------------------------------------

    def callLater(self, period, func):
        """Timeouts run on the server's clock."""
        return self.server.clock.callLater(period, func)

    def connectionMade(self):
        """Greet (no APOP challenge: passwords are stored as bcrypt hashes)."""
        peer, host = self.transport.getPeer(), self.transport.getHost()
        self.peer_ip = getattr(peer, "host", "") or str(peer)
        self.server_address = (getattr(host, "host", ""), getattr(host, "port", ""))
        refusal = self.server.refusal(self.peer_ip)
        if refusal is not None:
            self.failResponse(refusal)
            self.closed = True
            self.transport.loseConnection()
            return
        self.session_id = self.server.register(self)
        self.timeOut = self.server.idle_timeout
        self.setTimeout(self.timeOut)
        self.successResponse(f"{self.server.config.server.hostname} POP3 ready")

    def connectionLost(self, reason=None):
        """Give the mailbox back (no UPDATE state without QUIT: RFC 1939 6)."""
        self.closed = True
        self.setTimeout(None)
        self.free_mailbox()
        if self.session_id:
            self.server.unregister(self.session_id)

    def timeoutConnection(self):
        """RFC 1939 3: an idle session is closed without removing anything."""
        self.logging = ["TIMEOUT", "", False]
        self.failResponse("Disconnected for inactivity")
        self.transport.loseConnection()

    def free_mailbox(self) -> None:
        """Release the mailbox lock, once."""
        release, self.release = self.release, None
        if release is not None:
            release()

    def dataReceived(self, data: bytes):
        """
        Split lines (CRLF or LF). Bytes pipelined behind STLS are dropped
        before the handshake (RFC 2595 4: no command injection).
        """
        self.buffer += data
        while not self.closed and not self.transport.disconnecting:
            line, newline, rest = self.buffer.partition(b"\n")
            if not newline:
                if len(self.buffer) > MAX_LINE:
                    self.buffer, self.overlong = b"", True
                return
            self.buffer = rest
            if self.overlong or len(line) > MAX_LINE:
                self.overlong = False
                self.logging = ["-", "", False]
                self.failResponse("Line too long")
                continue
            self.lineReceived(line[:-1] if line.endswith(b"\r") else line)
            if self.discard:
                self.buffer, self.discard = b"", False
                return

    def state_COMMAND(self, line: bytes):
        """One command line; an unexpected error is answered, never fatal."""
        try:
            self.processCommand(*line.split(b" "))
        except Exception:
            log.failure("Unexpected error in POP3 session {id}", id=self.session_id)
            self.failResponse("[SYS/TEMP] Internal error")

    def processCommand(self, command: bytes, *args: bytes):
        """Check state and arguments, log, and run C{do_<COMMAND>}."""
        if self.blocked is not None:
            self.blocked.append((command, args))
            return None
        verb = command.upper()
        name = verb.decode("ascii", "replace")
        entry = [name, _loggable(verb, args), False]
        self.logging = entry
        handler = getattr(self, "do_" + name, None) if name.isalpha() else None
        if handler is None:
            return self.failResponse("Unknown command")
        if self.mbox is None and verb not in self.AUTH_CMDS:
            return self.failResponse("Log in first")
        if self.mbox is not None and verb in LOGIN_COMMANDS:
            return self.failResponse("Already logged in")
        try:
            inspect.signature(handler).bind(*args)
        except TypeError:
            return self.failResponse(f"Wrong arguments for {name}")
        result = handler(*args)
        if isinstance(result, Deferred):
            result.addBoth(self.command_done, entry)
        return result

    def command_done(self, result, entry: list) -> None:
        """A command with a delayed reply has ended: make sure it got one."""
        if result is not None and hasattr(result, "getTraceback"):
            log.failure("Unexpected error in POP3 session {id}", result, id=self.session_id)
        if not entry[2] and not self.closed:
            self.logging = entry
            self.failResponse("[SYS/TEMP] Internal error")

    def hold(self, coroutine) -> Deferred:
        """Run C{coroutine} with later commands waiting (pipelining keeps order)."""
        self.blocked = []
        d = Deferred.fromCoroutine(coroutine)
        d.addBoth(self.resume)
        return d

    def resume(self, result):
        """Run the commands that waited behind a held one."""
        commands, self.blocked = self.blocked or [], None
        while commands and self.blocked is None and not self.closed:
            command, args = commands.pop(0)
            self.processCommand(command, *args)
        if self.blocked is not None:
            self.blocked.extend(commands)
        return result

    # -- replies and the log ---------------------------------------------

    def successResponse(self, message=""):
        """C{+OK}, logged with the command it answers."""
        self.log_reply("+OK")
        pop3.POP3.successResponse(self, message)

    def failResponse(self, message=b""):
        """C{-ERR}, logged with the command it answers."""
        self.log_reply("-ERR")
        pop3.POP3.failResponse(self, message)

    def log_reply(self, status: str) -> None:
        """One activity-log line for the pending command."""
        entry = self.logging
        if entry is None or entry[2]:
            return
        entry[2] = True
        self.server.activity.command(self, entry[0], entry[1], status)

    # -- TRANSACTION state -------------------------------------------------

    def message_number(self, text: bytes) -> int | None:
        """The 0-based index named by C{text}; answers -ERR and None when none."""
        try:
            number = int(text)
            if 1 <= number <= len(self.mbox.messages) and number - 1 not in self.mbox.deleted:
                return number - 1
        except ValueError:
            pass
        self.failResponse("No such message")
        return None

    def do_STAT(self):
        """RFC 1939 5: count and size of the messages not marked deleted."""
        present = self.mbox.present()
        return self.successResponse(b"%d %d" % (len(present), sum(m.size for _, m in present)))

    def do_LIST(self, which: bytes | None = None):
        """RFC 1939 5: the scan listing (deleted messages left out)."""
        if which is not None:
            i = self.message_number(which)
            if i is not None:
                self.successResponse(b"%d %d" % (i + 1, self.mbox.messages[i].size))
            return None
        present = self.mbox.present()
        self.successResponse(f"{len(present)} messages")
        self.transport.writeSequence([b"%d %d\r\n" % (i + 1, m.size) for i, m in present])
        return self.sendLine(b".")

    def do_UIDL(self, which: bytes | None = None):
        """RFC 1939 7: unique-ids, stable across sessions (the Maildir unique name)."""
        if which is not None:
            i = self.message_number(which)
            if i is not None:
                self.successResponse(f"{i + 1} {self.mbox.messages[i].uid}")
            return None
        self.successResponse("")
        self.transport.writeSequence(
            [f"{i + 1} {m.uid}\r\n".encode("ascii") for i, m in self.mbox.present()])
        return self.sendLine(b".")

    def do_DELE(self, which: bytes):
        """RFC 1939 5: mark a message; it goes at QUIT."""
        i = self.message_number(which)
        if i is None:
            return None
        self.mbox.deleteMessage(i)
        return self.successResponse(f"Message {i + 1} deleted")

    def do_RETR(self, which: bytes):
        """RFC 1939 5: the whole message (Twisted sends the file)."""
        if self.message_number(which) is None:
            return None
        self.line_start = True
        return pop3.POP3.do_RETR(self, which)

    def do_TOP(self, which: bytes, lines: bytes):
        """RFC 1939 7: the header and the first C{lines} lines of the body."""
        if self.message_number(which) is None:
            return None
        if not lines.isdigit():
            return self.failResponse("Bad line count")
        self.line_start = True
        return pop3.POP3.do_TOP(self, which, lines)

    def do_RPOP(self, *args: bytes):
        """RPOP (RFC 1081) trusts the client's host: never."""
        return self.failResponse("RPOP not supported")

    def transformChunk(self, chunk: bytes) -> bytes:
        """
        LF to CRLF and dot-stuffing (RFC 1939 3), also for a line that
        starts a chunk or the message.
        """
        data = chunk.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..")
        if self.line_start and data.startswith(b"."):
            data = b"." + data
        if data:
            self.line_start = data.endswith(b"\n")
        return data

    def do_QUIT(self):
        """RFC 1939 6: the UPDATE state: remove the marked messages, then close."""
        if self.mbox is None:
            self.successResponse("Bye")
            self.transport.loseConnection()
            return None
        return self.hold(self.update())

    async def update(self) -> None:
        """Remove the marked messages (in a thread), release the mailbox, close."""
        try:
            removed = await self.mbox.expunge()
        except OSError as e:
            log.error("POP3 session {id}: cannot remove messages of {user}: {e}",
                      id=self.session_id, user=self.user, e=e)
            self.failResponse("[SYS/TEMP] Some deleted messages were not removed")
        else:
            self.free_mailbox()
            self.successResponse(f"Bye, {removed} messages removed")
        self.transport.loseConnection()


def _loggable(verb: bytes, args: tuple[bytes, ...]) -> str:
    """A command's argument as logged: never a password or SASL response."""
    if verb == b"PASS" or not args:
        return ""
    if verb == b"AUTH":
        return args[0].decode("ascii", "replace")
    return " ".join(a.decode("utf-8", "replace") for a in args)
