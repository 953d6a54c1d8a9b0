"""
A small LMTP server for tests (RFC 2033, with RFC 3030 BDAT when told to
offer CHUNKING): it accepts every recipient, keeps each message's data as it
came, and answers once per accepted recipient after the final dot or BDAT
LAST. It records the command lines it got, so a test can see what the client
chose (DATA or BDAT).
"""

from __future__ import annotations

from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


class LMTPStore(LineReceiver):
    """One session; the factory holds C{extensions}, C{commands} and C{messages}."""

    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self) -> None:
        """Greet and start a transaction."""
        self.recipients = 0
        self.data: bytes | None = None
        self.pending = 0
        self.dot_mode = False
        self.refused = False
        self.factory.connections += 1
        self.sendLine(b"220 store LMTP ready")

    def lineReceived(self, line: bytes) -> None:
        """One command line, or a line of the DATA stream."""
        if self.dot_mode:
            return self._data_line(line)
        self.factory.commands.append(line)
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"LHLO":
            offered = [b"store"] + list(self.factory.extensions)
            for keyword in offered[:-1]:
                self.sendLine(b"250-" + keyword)
            self.sendLine(b"250 " + offered[-1])
        elif verb in (b"MAIL", b"RSET"):
            self.recipients, self.data, self.refused = 0, None, False
            self.sendLine(b"250 2.0.0 ok")
        elif verb == b"RCPT":
            self.recipients += 1
            self.sendLine(b"250 2.1.5 ok")
        elif verb == b"DATA":
            self.data, self.dot_mode = b"", True
            self.sendLine(b"354 go ahead")
        elif verb == b"BDAT" and b"BDAT" in self.factory.extensions_verbs:
            words = line.split()
            self.pending = int(words[1])
            self.last = len(words) > 2
            self.data = self.data or b""
            self.setRawMode()
            if self.pending == 0:
                self.rawDataReceived(b"")
        elif verb == b"QUIT":
            self.sendLine(b"221 2.0.0 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"500 5.5.1 unknown command")

    def _data_line(self, line: bytes) -> None:
        if line == b".":
            self.dot_mode = False
            self._stored(self.data)
        else:
            self.data += (line[1:] if line.startswith(b".") else line) + b"\r\n"

    def rawDataReceived(self, data: bytes) -> None:
        """The octets of a BDAT chunk; the rest is the next command."""
        taken, rest = data[:self.pending], data[self.pending:]
        self.data += taken
        self.pending -= len(taken)
        if self.pending:
            return
        if self.refused:
            self.sendLine(b"503 5.5.1 no transaction")  # once, as an SMTP server would
        elif self.factory.refuse_chunk:
            self.refused = True
            self.sendLine(self.factory.refuse_chunk)
        elif self.last:
            self._stored(self.data)
        else:
            self.sendLine(b"250 2.0.0 chunk taken")
        self.setLineMode(rest)

    def _stored(self, data: bytes) -> None:
        self.factory.messages.append(data)
        self.data = None
        for i in range(self.recipients):
            self.sendLine(b"250 2.0.0 saved for recipient %d" % (i + 1))


async def start_store(case, extensions: list[bytes], refuse_chunk: bytes = b""
                      ) -> tuple[Factory, str]:
    """
    An L{LMTPStore} offering C{extensions} on a loopback port: its factory
    and LMTP target. C{refuse_chunk}: the reply to the first BDAT chunk of
    each transaction (later chunks then get one C{503} each, LAST included).
    """
    from twisted.internet import reactor

    factory = Factory.forProtocol(LMTPStore)
    factory.extensions = extensions
    factory.extensions_verbs = [b"BDAT"] if b"CHUNKING" in extensions else []
    factory.commands, factory.messages = [], []
    factory.refuse_chunk, factory.connections = refuse_chunk, 0
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    case.addCleanup(port.stopListening)
    return factory, f"tcp:127.0.0.1:{port.getHost().port}"
