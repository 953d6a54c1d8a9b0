# -*- test-case-name: tests.test_users -*-
"""
The accounts file C{etc/users} (SPEC 3, [auth] users): one C{address:bcrypt-hash}
per line, blank lines and C{#} comments allowed. Each address is both a local
mailbox and an AUTH login. Addresses may be internationalized (RFC 6531): a
UTF-8 local part (kept in NFC) and a domain in U-labels or A-labels; two
spellings of one domain are one account (L{smtpd.mail.intl.address_key}).

L{Users} is the parsed, read-only view; L{add} and L{remove} rewrite the file
atomically (temporary file, fsync, rename, mode 0600).
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import secrets
from collections.abc import Iterable

import bcrypt

from smtpd.mail.intl import address_key, is_utf8_char_ok, normalize_local, u_label_domain
from smtpd.mail.intl import IDNAError
from smtpd.util.durable import fsync_directory, replace_file

# RFC 5321 atext without "/" (a local part is also a Maildir folder name).
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-=?^_`{|}~]+\Z")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}\Z")
DEFAULT_ROUNDS = 12
MAX_PASSWORD = 72  # bcrypt ignores (or, since bcrypt 5, refuses) longer passwords


class UsersError(Exception):
    """
    The accounts file or an account request is not acceptable.

    @ivar problems: one line per problem (C{file:line: what}).
    """

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def address_problem(address: str) -> str | None:
    """Why C{address} is not an acceptable account address, or L{None}."""
    localpart, at, domain = address.rpartition("@")
    if not at or not localpart:
        return f"{address!r} is not local@domain"
    if len(localpart.encode("utf-8")) > 64:
        return f"{address!r}: local part longer than 64 octets"
    if not all(_atom_ok(atom) for atom in localpart.split(".")):
        return (f"{address!r}: the local part must be letters (UTF-8 too), digits, dots "
                f"(not leading, trailing or doubled) and !#$%&'*+-=?^_`{{|}}~")
    if not domain.isascii():
        try:
            domain = u_label_domain(domain)
        except IDNAError:
            return f"{address!r}: {domain!r} is not an internationalized domain name"
        return None
    labels = domain.lower().split(".")
    if len(domain) > 253 or not all(_LABEL.match(label) for label in labels):
        return f"{address!r}: {domain!r} is not a DNS domain name"
    return None


def _atom_ok(atom: str) -> bool:
    """An atom of an account's local part: atext without "/", or UTF-8 letters."""
    if atom.isascii():
        return _ATEXT.match(atom) is not None
    return bool(atom) and all(
        (_ATEXT.match(c) is not None) if c.isascii() else is_utf8_char_ok(c) for c in atom)


def normalize_address(address: str) -> str:
    """
    The stored form of account C{address}: lower case, the local part in
    Unicode NFC, an internationalized domain in U-labels as written.

    @raise UsersError: when it is not acceptable.
    """
    problem = address_problem(address)
    if problem is not None:
        raise UsersError(problem)
    return _stored(address)


def _stored(address: str) -> str:
    """The written form of a valid account address (see L{normalize_address})."""
    localpart, _, domain = address.rpartition("@")
    if not domain.isascii():
        domain = u_label_domain(domain)
    return f"{normalize_local(localpart).lower()}@{domain.lower()}"


@functools.lru_cache(maxsize=8)
def _dummy_hash(rounds: int) -> bytes:
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds))


class Users:
    """
    The accounts: address to bcrypt hash. Looked up by
    L{smtpd.mail.intl.address_key}: case, Unicode normalization and the
    A-label or U-label spelling of the domain do not matter.
    """

    def __init__(self, hashes: dict[str, bytes] | None = None):
        hashes = dict(hashes or {})
        self._names = {address_key(a): a for a in hashes}
        self._hashes = {address_key(a): h for a, h in hashes.items()}

    @classmethod
    def load(cls, path: str) -> Users:
        """
        Read the accounts file at C{path}; a missing file means no accounts.

        @raise UsersError: with one C{path:line: problem} per malformed line.
        """
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return cls()
        except OSError as e:
            raise UsersError(f"{path}: cannot read: {e.strerror}") from e
        hashes, problems = _parse(path, raw)
        if problems:
            raise UsersError(problems)
        return cls(hashes)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and address_key(address) in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def addresses(self) -> list[str]:
        """Every account address as written (lower case), sorted."""
        return sorted(self._names.values())

    def check_password(self, address: str, password: bytes) -> bool:
        """
        Whether C{password} is the password of account C{address}. Blocking
        (bcrypt); takes about as long for an unknown address as for a known
        one, so timing does not reveal which accounts exist.
        """
        stored = self._hashes.get(address_key(address))
        known = stored is not None
        if stored is None:
            stored = _dummy_hash(self._rounds())
        candidate = password if len(password) <= MAX_PASSWORD else password[:MAX_PASSWORD]
        try:
            matches = bcrypt.checkpw(candidate, stored)
        except ValueError:
            return False
        return known and matches and len(password) <= MAX_PASSWORD

    def _rounds(self) -> int:
        for stored in self._hashes.values():
            return int(stored[4:6])
        return DEFAULT_ROUNDS


def _parse(path: str, raw: bytes) -> tuple[dict[str, bytes], list[str]]:
    hashes: dict[str, bytes] = {}
    seen: set[str] = set()
    problems = []
    for number, line in enumerate(raw.split(b"\n"), 1):
        where = f"{path}:{number}"
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            problems.append(f"{where}: not UTF-8")
            continue
        if not text or text.startswith("#"):
            continue
        address, colon, stored = text.partition(":")
        address, stored = address.strip(), stored.strip()
        problem = address_problem(address) if colon else "expected address:bcrypt-hash"
        if problem is None and not _BCRYPT.match(stored):
            problem = f"the password of {address} is not a bcrypt hash"
        if problem is None and address_key(address) in seen:
            problem = f"{address} appears twice"
        if problem is not None:
            problems.append(f"{where}: {problem}")
            continue
        seen.add(address_key(address))
        hashes[_stored(address)] = stored.encode("ascii")
    return hashes, problems


def hash_password(password: bytes | str, rounds: int = DEFAULT_ROUNDS) -> bytes:
    """
    The bcrypt hash of C{password}.

    @raise UsersError: for an empty password or one longer than 72 octets.
    """
    if isinstance(password, str):
        password = password.encode("utf-8")
    if not password:
        raise UsersError("the password is empty")
    if len(password) > MAX_PASSWORD:
        raise UsersError(f"the password is longer than {MAX_PASSWORD} octets")
    if b"\0" in password:
        raise UsersError("the password contains a NUL character")
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds))


def add(path: str, address: str, password: bytes | str, rounds: int = DEFAULT_ROUNDS) -> str:
    """
    Add account C{address} with C{password} to the file at C{path} (created
    when missing), keeping every other line. Returns the stored address.

    @raise UsersError: for a bad address or password, an existing account or
        a malformed file.
    """
    address = normalize_address(address)
    stored = hash_password(password, rounds)
    with _locked(path):
        raw = _read_existing(path)
        hashes, problems = _parse(path, raw)
        if problems:
            raise UsersError(problems)
        if address in Users(hashes):
            raise UsersError(f"{address} already exists")
        if raw and not raw.endswith(b"\n"):
            raw += b"\n"
        _rewrite(path, raw + address.encode("utf-8") + b":" + stored + b"\n")
    return address


def remove(path: str, address: str) -> None:
    """
    Remove account C{address} from the file at C{path}, keeping every other
    line.

    @raise UsersError: when there is no such account or the file is malformed.
    """
    key = address_key(address)
    with _locked(path):
        raw = _read_existing(path)
        hashes, problems = _parse(path, raw)
        if problems:
            raise UsersError(problems)
        if address not in Users(hashes):
            raise UsersError(f"{address.lower()} does not exist")
        kept = [line for line in raw.split(b"\n")
                if address_key(line.partition(b":")[0].strip().decode("utf-8")) != key]
        _rewrite(path, b"\n".join(kept))


def _read_existing(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""
    except OSError as e:
        raise UsersError(f"{path}: cannot read: {e.strerror}") from e


class _locked:
    """Hold an exclusive lock on the folder of C{path}: one writer at a time."""

    def __init__(self, path: str):
        self._folder = os.path.dirname(os.path.abspath(path))
        self._fd = -1

    def __enter__(self) -> None:
        try:
            os.makedirs(self._folder, 0o755, exist_ok=True)
            self._fd = os.open(self._folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise UsersError(f"{self._folder}: {e.strerror}") from e
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)


def _rewrite(path: str, content: bytes) -> None:
    try:
        replace_file(path, content, 0o600)
        fsync_directory(os.path.dirname(os.path.abspath(path)))
    except OSError as e:
        raise UsersError(f"{path}: cannot write: {e.strerror}") from e
