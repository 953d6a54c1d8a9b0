# -*- test-case-name: tests.test_control -*-
"""
The control socket: AMP over a UNIX socket in the mailroot (mode 0600; only
the server's own user and root may connect), through which C{smtpctl} asks
the running server's L{Admin} to act. Results travel as JSON; a long one is
fetched in parts (an AMP value holds at most 64 KiB).
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import struct

from twisted.application import service
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp

from smtpd.admin.api import Admin, AdminError, Server

log = Logger(namespace="smtpd.admin")

SOCKET_NAME = "smtpd.sock"
# Linux: sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107
PART_SIZE = 60000

# What smtpctl may ask, and whether it changes the server.
ACTIONS = {
    "status": False, "queue": False, "show": False, "sessions": False,
    "retry": True, "hold": True, "release": True, "delete": True,
    "terminate": True, "terminate_all": True, "reload": True, "reload_accounts": True,
}


class Refused(Exception):
    """The server refused the request; the message says why."""


class Call(amp.Command):
    """Run one admin action; the JSON result's first part and how many parts it has."""

    arguments = [(b"action", amp.Unicode()), (b"arguments", amp.Unicode())]
    response = [(b"result", amp.Unicode()), (b"parts", amp.Integer())]
    errors = {Refused: b"REFUSED"}


class Part(amp.Command):
    """Part C{index} (from 1) of the last long result."""

    arguments = [(b"index", amp.Integer())]
    response = [(b"result", amp.Unicode())]
    errors = {Refused: b"REFUSED"}


def socket_path(mailroot: str) -> str:
    """Where the control socket of the server of C{mailroot} lives."""
    return os.path.join(mailroot, SOCKET_NAME)


def peer_uid(transport) -> int | None:
    """The uid of the process at the other end of a UNIX socket (Linux), or None."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        raw = transport.getHandle().getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    return struct.unpack("3i", raw)[1]


class ControlProtocol(amp.AMP):
    """One smtpctl connection, acting as operator C{smtpctl (user)}."""

    def __init__(self, server: Server):
        amp.AMP.__init__(self)
        self.server = server
        self.admin: Admin | None = None
        self._parts: list[str] = []

    def connectionMade(self):
        """Admit only the server's own user and root."""
        amp.AMP.connectionMade(self)
        uid = peer_uid(self.transport)
        if uid is not None and uid not in (0, os.getuid()):
            log.warn("control socket: refused uid {uid}", uid=uid)
            self.transport.loseConnection()
            return
        self.admin = Admin(self.server, f"smtpctl({_user_name(uid)})")

    @Call.responder
    def call(self, action: str, arguments: str):
        """Run C{action} of the admin API with the JSON C{arguments} (a dict)."""
        if self.admin is None or action not in ACTIONS:
            raise Refused(f"unknown action {action!r}")
        try:
            kwargs = json.loads(arguments or "{}")
            if not isinstance(kwargs, dict):
                raise ValueError("not an object")
        except ValueError as e:
            raise Refused(f"bad arguments: {e}") from None
        d = maybeDeferred(getattr(self.admin, action), **kwargs)
        d.addCallbacks(self._answer, self._refused)
        return d

    @Part.responder
    def part(self, index: int):
        """A further part of the last long result."""
        if not 1 <= index < len(self._parts):
            raise Refused(f"no part {index}")
        return {"result": self._parts[index]}

    def _answer(self, result) -> dict:
        text = json.dumps(result, default=str)
        self._parts = [text[i:i + PART_SIZE] for i in range(0, len(text), PART_SIZE)] or [""]
        return {"result": self._parts[0], "parts": len(self._parts)}

    def _refused(self, failure):
        if failure.check(AdminError, TypeError):
            raise Refused(failure.getErrorMessage())
        log.failure("control socket: {action} failed", failure, action="call")
        raise Refused(f"internal error: {failure.getErrorMessage()}")


def _user_name(uid: int | None) -> str:
    if uid is None:
        return "unknown user"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class ControlFactory(Factory):
    """Builds L{ControlProtocol}s for one server."""

    noisy = False

    def __init__(self, server: Server):
        self.server = server

    def buildProtocol(self, addr):
        """A protocol for one smtpctl connection."""
        protocol = ControlProtocol(self.server)
        protocol.factory = self
        return protocol


class ControlService(service.Service):
    """Listens on the control socket while the server runs."""

    def __init__(self, reactor, path: str, server: Server):
        self.reactor = reactor
        self.path = path
        self.factory = ControlFactory(server)
        self.port = None

    def startService(self):
        """
        Listen (mode 0600). Runs after the mailroot lock is taken, so a socket
        already there is a dead server's and is replaced.
        """
        service.Service.startService(self)
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            log.error("The control socket path {path} is too long for a UNIX socket; "
                      "smtpctl cannot reach this server", path=self.path)
            return
        _remove_stale(self.path)
        description = f"unix:{_escape(self.path)}:mode=600:lockfile=0"
        d = serverFromString(self.reactor, description).listen(self.factory)
        d.addCallbacks(self._listening, self._failed)

    def _listening(self, port):
        self.port = port
        log.info("Control socket {path}", path=self.path)

    def _failed(self, failure):
        log.error("Cannot listen on the control socket {path}: {why}", path=self.path,
                  why=failure.getErrorMessage())

    def stopService(self):
        """Stop listening and remove the socket."""
        service.Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()


def _remove_stale(path: str) -> None:
    """Remove a socket left by a server that died (never any other kind of file)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:")


class NotRunning(Exception):
    """No server answers on the control socket."""


class ControlClient:
    """
    A blocking client of the control socket, for C{smtpctl}.

    @raise NotRunning: from L{call} when no server listens.
    """

    def __init__(self, path: str, timeout: float = 30.0):
        self.path = path
        self.timeout = timeout
        self._tag = 0

    def call(self, action: str, **arguments) -> object:
        """The result of C{admin.<action>(**arguments)} on the running server."""
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise NotRunning(f"{self.path} is too long for a control socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise NotRunning(f"no server listens on {self.path}") from e
            stream = sock.makefile("rb")
            answer = self._ask(sock, stream, Call, action=action,
                               arguments=json.dumps(arguments))
            text = [answer["result"]]
            for index in range(1, answer["parts"]):
                text.append(self._ask(sock, stream, Part, index=index)["result"])
            return json.loads("".join(text))
        finally:
            sock.close()

    def _ask(self, sock, stream, command, **objects) -> dict:
        self._tag += 1
        box = command.makeArguments(objects, None)
        box[b"_command"] = command.commandName
        box[b"_ask"] = str(self._tag).encode()
        sock.sendall(box.serialize())
        reply = _read_box(stream)
        if b"_error" in reply:
            raise Refused(reply.get(b"_error_description", b"refused").decode("utf-8", "replace"))
        return command.parseResponse(reply, None)


def _read_box(stream) -> amp.AmpBox:
    """One AMP box from a blocking stream."""
    box = amp.AmpBox()
    while True:
        key = stream.read(_length(stream))
        if not key:
            return box
        box[key] = stream.read(_length(stream))


def _length(stream) -> int:
    raw = stream.read(2)
    if len(raw) != 2:
        raise Refused("the server closed the connection")
    return struct.unpack("!H", raw)[0]
