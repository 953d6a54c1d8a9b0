# -*- test-case-name: tests.test_manhole -*-
"""
The operators who may log in to the manhole (C{[manhole] users}): a file of
C{name:bcrypt-hash} lines, written by C{smtpctl manhole-user add NAME}. A
plain password in place of the hash is still accepted, with a warning.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from collections.abc import Callable

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from smtpd.config import Config
from smtpd.config.endpoints import endpoint_parameters
from smtpd.directory.accounts import hash_password
from smtpd.mail.address import ip_literal
from smtpd.util.durable import fsync_directory, replace_file

log = Logger(namespace="smtpd.admin")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_BCRYPT = re.compile(rb"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}\Z")


class OperatorsError(Exception):
    """The operators file cannot be read, or a name or password is refused."""


def name_problem(name: str) -> str | None:
    """Why C{name} cannot be an operator name, or None."""
    if not _NAME.match(name):
        return (f"{name!r} is not an operator name: letters, digits, '.', '_' and '-', "
                "at most 64, starting with a letter or digit")
    return None


def read_operators(path: str) -> dict[str, bytes]:
    """
    The operators of the file at C{path}: name -> bcrypt hash or plain
    password. A missing file has none; blank lines and C{#} comments are skipped.

    @raise OperatorsError: when the file cannot be read or a line has no C{:}.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise OperatorsError(f"{path}: cannot read: {e.strerror}") from e
    operators = {}
    for number, line in enumerate(raw.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        name, colon, secret = line.partition(b":")
        if not colon or not name or not secret:
            raise OperatorsError(f"{path}: line {number}: expected name:bcrypt-hash")
        operators[name.decode("utf-8", "replace")] = secret
    return operators


def plain_passwords(operators: dict[str, bytes]) -> list[str]:
    """The names whose password is stored in plain text."""
    return [name for name, secret in operators.items() if not _BCRYPT.match(secret)]


def add_operator(path: str, name: str, password: str) -> None:
    """
    Add operator C{name} with a bcrypt hash of C{password}, or replace its
    password when it exists; other lines are kept.

    @raise OperatorsError: for a bad name, password or file.
    """
    problem = name_problem(name)
    if problem:
        raise OperatorsError(problem)
    try:
        stored = hash_password(password)
    except Exception as e:  # UsersError: empty, too long, NUL
        raise OperatorsError(str(e)) from None
    read_operators(path)
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    kept = [line for line in lines if line.partition(b":")[0].strip() != name.encode()]
    kept.append(name.encode() + b":" + stored)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, 0o755, exist_ok=True)
        replace_file(path, b"\n".join(kept) + b"\n", 0o600)
        fsync_directory(folder)
    except OSError as e:
        raise OperatorsError(f"{path}: cannot write: {e.strerror}") from e


@implementer(ICredentialsChecker)
class OperatorChecker:
    """
    Checks a manhole login against the operators file, read at each login
    (so C{smtpctl manhole-user add} needs no restart); bcrypt runs in a thread.
    A failed login is logged; a successful one too, unless C{log_success} is
    false (the web logs its form logins itself, and HTTP basic credentials
    come with every scrape).

    @param run_blocking: C{run_blocking(f, *args)}: a Deferred of C{f(*args)}.
    @param kind: what is logged in to, in the log lines (C{manhole}, C{web}).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str, run_blocking: Callable[..., Deferred],
                 kind: str = "manhole", log_success: bool = True):
        self.path = path
        self.run_blocking = run_blocking
        self.kind = kind
        self.log_success = log_success

    def requestAvatarId(self, credentials) -> Deferred[str]:
        """The operator's name when the password matches; else UnauthorizedLogin."""
        name = credentials.username
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        password = credentials.password
        if isinstance(password, str):
            password = password.encode("utf-8")
        # Telnet clients end lines with CR LF; the prompt keeps the CR.
        name, password = name.rstrip("\r"), password.rstrip(b"\r")
        d = self.run_blocking(self._check, name, password)
        d.addCallback(self._result, name)
        return d

    def _check(self, name: str, password: bytes) -> bool:
        try:
            secret = read_operators(self.path).get(name)
        except OperatorsError as e:
            log.error("{kind} login refused: {why}", kind=self.kind, why=str(e))
            return False
        if secret is None:
            return False
        if _BCRYPT.match(secret):
            return bcrypt.checkpw(password, secret)
        return hmac.compare_digest(password, secret)

    def _result(self, ok: bool, name: str) -> str:
        if not ok:
            log.warn("{kind} login failed for {name!r}", kind=self.kind, name=name)
            raise UnauthorizedLogin(name)
        if self.log_success:
            log.info("{kind} login: {name}", kind=self.kind, name=name)
        return name


def is_loopback(description: str) -> bool:
    """Whether an endpoint string listens only on this host (loopback or a UNIX socket)."""
    kind, bound = endpoint_parameters(description)
    if kind == "unix":
        return True
    address = ip_literal(bound.get("interface", ""))
    return address is not None and ipaddress.ip_address(address).is_loopback


def check(config: Config) -> list[str]:
    """
    The problems that stop the manhole from starting, one line each: an
    endpoint beyond loopback while the users file names nobody, or a users
    file that cannot be read.
    """
    section = config.manhole
    endpoints = [("telnet", e) for e in section.telnet] + [("ssh", e) for e in section.ssh]
    if not endpoints:
        return []
    try:
        operators = read_operators(section.users)
    except OperatorsError as e:
        return [f"{config.path}: [manhole] users: {e}"]
    if operators:
        return []
    return [
        f"{config.path}: [manhole] {kind} = {e}: listens beyond loopback and {section.users} "
        "names no users; expected an interface=127.0.0.1 endpoint, or users added with "
        "smtpctl manhole-user add NAME"
        for kind, e in endpoints if not is_loopback(e)
    ]
