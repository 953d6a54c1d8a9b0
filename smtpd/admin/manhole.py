# -*- test-case-name: tests.test_manhole -*-
"""
The manhole (SPEC 7): a Python shell inside the live process over telnet
and/or ssh, for the operators of C{[manhole] users}. Each login gets its own
namespace with C{admin} acting under the operator's name; results are
pretty-printed and Deferreds are printed when they fire.
"""

from __future__ import annotations

import os
import pprint
import pydoc
import sys
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch import manhole, manhole_ssh, telnet
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.ssh import keys
from twisted.cred import credentials, portal
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python import components
from zope.interface import implementer

from smtpd.admin.api import Admin, AdminError, Server
from smtpd.admin.operators import (
    OperatorChecker,
    OperatorsError,
    check,
    plain_passwords,
    read_operators,
)
from smtpd.config import Config
from smtpd.util.durable import fsync_directory, make_folder, write_file

log = Logger(namespace="smtpd.admin")

HOST_KEY = "ssh_host_ed25519_key"


class ManholeError(Exception):
    """The manhole cannot start; the message is one config error line."""


def host_key(folder: str) -> keys.Key:
    """The ssh host key in C{folder}, created (mode 0600) when missing."""
    path = os.path.join(folder, HOST_KEY)
    if not os.path.exists(path):
        make_folder(folder, 0o700)
        key = keys.Key(ed25519.Ed25519PrivateKey.generate())
        try:
            write_file(path, key.toString("openssh"), 0o600)
        except FileExistsError:
            pass  # made by someone else meanwhile: use theirs
        else:
            fsync_directory(folder)
            log.info("Created the ssh host key {path}", path=path)
    with open(path, "rb") as f:
        return keys.Key.fromString(f.read())


class AdminInterpreter(manhole.ManholeInterpreter):
    """The manhole's interpreter: results pretty-printed, Deferreds shown when they fire."""

    def displayhook(self, obj):
        """Show C{obj} (pretty-printed), or its result once a Deferred fires."""
        self.locals["_"] = obj
        if isinstance(obj, Deferred):
            waiting = [True]
            obj.addBoth(self._show_result, waiting)
            if waiting.pop():
                self.write("... (waiting for the result)")
        elif obj is not None:
            self.write(pprint.pformat(obj, width=100, sort_dicts=False))

    def _show_result(self, result, waiting: list):
        late = not waiting or waiting.pop() is None
        waiting.append(False)
        text = _result_text(result)
        self.write(text + ("\n" if late else ""), late)
        self.locals["_"] = result

    def write(self, data, isAsync=None, **kwargs):
        """Write to the terminal (C{isAsync}: redraw the prompt after)."""
        manhole.ManholeInterpreter.write(self, data, isAsync, **kwargs)


def _result_text(result) -> str:
    """What a fired Deferred's result looks like in the shell."""
    from twisted.python.failure import Failure

    if isinstance(result, Failure):
        if result.check(AdminError, KeyError, ValueError):
            return f"error: {result.getErrorMessage()}"
        return result.getTraceback()
    return pprint.pformat(result, width=100, sort_dicts=False)


class AdminManhole(manhole.ColoredManhole):
    """A colored manhole using L{AdminInterpreter}."""

    def connectionMade(self):
        """Set up the line editor and the interpreter."""
        manhole.ColoredManhole.connectionMade(self)
        self.interpreter = AdminInterpreter(self, self.namespace)


def admin_help(default) -> Callable[..., None]:
    """A C{help()} that prints plain text into the shell (no pager)."""

    def help(thing=default):
        """Show the documentation of C{thing} (default: the admin API)."""
        sys.stdout.write(pydoc.render_doc(thing, renderer=pydoc.plaintext))

    return help


def namespace(server: Server, operator: str) -> dict:
    """The globals of one operator's shell."""
    admin = Admin(server, operator)
    return {"admin": admin, "help": admin_help(admin)}


class TelnetShell(telnet.TelnetBootstrapProtocol):
    """
    The terminal over telnet: asks for line editing, window size and no
    go-ahead as Twisted's does, but a client that declines an option is
    normal, not an error to log.
    """

    def connectionMade(self):
        """Negotiate the options, then start the terminal and the manhole."""
        self.transport.negotiationMap[telnet.NAWS] = self.telnet_NAWS
        self.transport.negotiationMap[telnet.LINEMODE] = self.telnet_LINEMODE
        for option in (telnet.LINEMODE, telnet.NAWS, telnet.SGA):
            self.transport.do(option).addErrback(_declined)
        self.transport.will(telnet.ECHO).addErrback(_declined)
        self.protocol = self.protocolFactory(*self.protocolArgs, **self.protocolKwArgs)
        self.protocol.makeConnection(self)


def _declined(failure) -> None:
    failure.trap(telnet.OptionRefused, telnet.AlreadyEnabled, telnet.AlreadyNegotiating,
                 telnet.AlreadyDisabled)


@implementer(portal.IRealm)
class TelnetRealm:
    """Telnet logins: a manhole whose C{admin} acts as the operator."""

    def __init__(self, server: Server):
        self.server = server

    def requestAvatar(self, avatarId, mind, *interfaces):
        """A terminal manhole for operator C{avatarId}."""
        if telnet.ITelnetProtocol not in interfaces:
            raise NotImplementedError()
        shell = TelnetShell(
            insults.ServerProtocol, AdminManhole, namespace(self.server, _text(avatarId)))
        return telnet.ITelnetProtocol, shell, lambda: None


class SSHShellSession(manhole_ssh.TerminalSession):
    """An ssh session running the manhole; window changes and EOF are not errors."""

    def windowChanged(self, newWindowSize):
        """The client's terminal was resized: nothing to redraw for a shell prompt."""

    def eofReceived(self):
        """The client will send no more: the shell ends when the channel closes."""


@implementer(portal.IRealm)
class SSHRealm:
    """SSH logins: an interactive session (with a pty) running the manhole."""

    def __init__(self, server: Server):
        self.server = server

    def requestAvatar(self, avatarId, mind, *interfaces):
        """A conch user whose shell is a manhole for operator C{avatarId}."""
        if IConchUser not in interfaces:
            raise NotImplementedError()
        names = namespace(self.server, _text(avatarId))
        holder = components.Componentized()
        user = manhole_ssh.TerminalUser(holder, avatarId)
        shell = SSHShellSession(holder)
        shell.chainedProtocolFactory = lambda: insults.ServerProtocol(AdminManhole, names)
        holder.setComponent(IConchUser, user)
        holder.setComponent(ISession, shell)
        return IConchUser, user, lambda: None


def _text(name) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


class OperatorLogin(telnet.AuthenticatingTelnetProtocol):
    """
    The telnet login prompts. Unlike Twisted's, the password is checked even
    when the client refused to let the server echo (netcat, scripted
    clients): Twisted's waits for an echo negotiation that then never ends.
    """

    def telnet_User(self, line):
        """Take the name; ask for the password (without echo when the client agrees)."""
        self.username = line
        self.transport.will(telnet.ECHO).addErrback(_declined)
        self.transport.write(b"Password: ")
        return "Password"

    def telnet_Password(self, line):
        """Check the name and password; on success the manhole takes over."""
        username, password = self.username, line
        del self.username
        d = self.transport.wont(telnet.ECHO)
        d.addErrback(_declined)
        d.addCallback(lambda _: self.portal.login(
            credentials.UsernamePassword(username, password), None, telnet.ITelnetProtocol))
        d.addCallbacks(self._logged_in, self._refused)
        return "Discard"

    def _logged_in(self, result) -> None:
        interface, protocol, logout = result
        self.protocol = protocol
        self.logout = logout
        self.state = "Command"
        protocol.makeConnection(self.transport)
        self.transport.protocol = protocol

    def _refused(self, failure) -> None:
        failure.trap(UnauthorizedLogin)
        self.transport.write(b"\nAuthentication failed\n")
        self.transport.write(b"Username: ")
        self.state = "User"


class TelnetFactory(ServerFactory):
    """Telnet connections: the login prompts, then the manhole."""

    noisy = False

    def __init__(self, realm_portal: portal.Portal):
        self.portal = realm_portal

    def buildProtocol(self, addr):
        """A telnet transport asking for the operator's name and password."""
        transport = telnet.TelnetTransport(OperatorLogin, self.portal)
        transport.factory = self
        return transport


def manhole_listeners(config: Config, server: Server,
                      run_blocking: Callable[..., Deferred]) -> list[tuple[str, ServerFactory]]:
    """
    The C{(endpoint, factory)} pairs of C{[manhole] telnet} and C{ssh}, for
    the server's listeners (bound with the others, before anything starts).

    @raise ManholeError: when C{check} finds a problem or the host key
        cannot be made.
    """
    problems = check(config)
    if problems:
        raise ManholeError(problems[0])
    section = config.manhole
    if not (section.telnet or section.ssh):
        return []
    _warn_plain(section.users)
    checker = OperatorChecker(section.users, run_blocking)
    pairs: list[tuple[str, ServerFactory]] = []
    telnet_factory = TelnetFactory(portal.Portal(TelnetRealm(server), [checker]))
    pairs.extend((description, telnet_factory) for description in section.telnet)
    if section.ssh:
        pairs.extend((description, _ssh_factory(config, server, checker))
                     for description in section.ssh)
    return pairs


def _ssh_factory(config: Config, server: Server, checker) -> manhole_ssh.ConchFactory:
    section = config.manhole
    try:
        key = host_key(section.ssh_key_dir)
    except (OSError, ValueError, keys.BadKeyError) as e:
        raise ManholeError(f"{config.path}: [manhole] ssh_key_dir: cannot make or read "
                           f"{os.path.join(section.ssh_key_dir, HOST_KEY)}: {e}") from e
    factory = manhole_ssh.ConchFactory(portal.Portal(SSHRealm(server), [checker]))
    factory.noisy = False
    factory.publicKeys = {key.sshType(): key.public()}
    factory.privateKeys = {key.sshType(): key}
    return factory


def _warn_plain(path: str) -> None:
    try:
        names = plain_passwords(read_operators(path))
    except OperatorsError:
        return
    for name in names:
        log.warn("manhole user {name} has a plain-text password in {path}; replace it with "
                 "`smtpctl manhole-user add {name}`", name=name, path=path)
