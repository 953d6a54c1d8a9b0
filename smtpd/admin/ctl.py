# -*- test-case-name: tests.test_ctl -*-
"""
C{smtpctl}: the offline administration command (SPEC 2).

    smtpctl [--config PATH] check
    smtpctl [--config PATH] user add ADDR [--password-stdin]
    smtpctl [--config PATH] user del ADDR
    smtpctl [--config PATH] user list
    smtpctl [--config PATH] queue list

Every failure is one or more lines on stderr and exit status 1, never a
traceback; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Sequence

from twisted.internet import defer

from smtpd.config import Config, ConfigError, load_config
from smtpd.config.preflight import preflight
from smtpd.mail.envelope import Envelope
from smtpd.queue.store import Queue
from smtpd.directory.accounts import Users, UsersError, add, normalize_address, remove
from smtpd.util.ownership import hand_over_to_deployment

DEFAULT_CONFIG = os.path.join("etc", "smtpd.ini")


class CommandError(Exception):
    """A failure to report as lines on stderr with exit status 1."""

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtpctl", description="Administer an smtpd deployment offline.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH",
                        help=f"the configuration file (default: {DEFAULT_CONFIG})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("check", help="validate the configuration and the accounts file")
    user = commands.add_parser("user", help="manage the accounts in [auth] users")
    user_commands = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    user_add = user_commands.add_parser("add", help="add an account")
    user_add.add_argument("address")
    user_add.add_argument("--password-stdin", action="store_true",
                          help="read the password from the first line of stdin")
    user_del = user_commands.add_parser("del", help="remove an account")
    user_del.add_argument("address")
    user_commands.add_parser("list", help="list the accounts")
    queue = commands.add_parser("queue", help="inspect the queue")
    queue_commands = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    queue_commands.add_parser("list", help="list the queued messages")
    return parser


def _config(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        raise CommandError(*e.problems) from e


def _users(config: Config) -> Users:
    try:
        return Users.load(config.auth.users)
    except UsersError as e:
        raise CommandError(*e.problems) from e


def check(options: argparse.Namespace) -> None:
    """
    Validate the configuration, everything start would refuse (folders,
    certificate, listeners) and the accounts file it names.
    """
    config = _config(options.config)
    problems = preflight(config)
    if problems:
        raise CommandError(*problems)
    _users(config)
    print(f"{options.config}: OK", file=sys.stdout)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    try:
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password (again): ")
    except (EOFError, KeyboardInterrupt) as e:
        raise CommandError("smtpctl: no password given") from e
    if first != second:
        raise CommandError("smtpctl: the passwords do not match")
    return first


def user_add(options: argparse.Namespace) -> None:
    """Add an account at a local or alias domain of the configuration."""
    config = _config(options.config)
    try:
        address = normalize_address(options.address)
    except UsersError as e:
        raise CommandError(*(f"smtpctl: {p}" for p in e.problems)) from e
    domain = address.rpartition("@")[2]
    section = config.domain(domain)
    if section is None or section.type not in ("local", "alias"):
        raise CommandError(
            f"smtpctl: {domain} is not a local or alias domain in {options.config}; "
            f"add a [domain:{domain}] section with type = local")
    if address in _users(config):
        raise CommandError(f"smtpctl: {address} already exists")
    password = _read_password(options.password_stdin)
    try:
        add(config.auth.users, address, password)
    except UsersError as e:
        raise CommandError(*(f"smtpctl: {p}" for p in e.problems)) from e
    print(f"added {address} to {config.auth.users}", file=sys.stdout)
    _hand_over(config)


def user_del(options: argparse.Namespace) -> None:
    """Remove an account."""
    config = _config(options.config)
    try:
        remove(config.auth.users, options.address)
    except UsersError as e:
        raise CommandError(*(f"smtpctl: {p}" for p in e.problems)) from e
    print(f"removed {options.address.lower()} from {config.auth.users}", file=sys.stdout)
    _hand_over(config)


def _hand_over(config: Config) -> None:
    """
    Run as root, leave the accounts file to the user the deployment belongs
    to (the owner of the mailroot), so the server running as that user can
    still read it; say so.
    """
    user = hand_over_to_deployment(config.auth.users, config.server.mailroot)
    if user is not None:
        print(f"smtpctl: running as root: {config.auth.users} now belongs to {user}, "
              f"the owner of {config.server.mailroot}", file=sys.stdout)


def user_list(options: argparse.Namespace) -> None:
    """Print every account address, one per line."""
    for address in _users(_config(options.config)).addresses():
        print(address, file=sys.stdout)


def _when(seconds: float) -> str:
    if not seconds:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def queue_table(entries: Sequence[Envelope]) -> list[str]:
    """The lines of the C{queue list} table (times in UTC)."""
    if not entries:
        return ["queue is empty"]
    rows = [("ID", "ARRIVAL (UTC)", "SENDER", "STATE", "ATTEMPTS", "NEXT ATTEMPT (UTC)")]
    for e in entries:
        rows.append((e.id, _when(e.arrival), f"<{e.sender}>", e.state,
                     str(e.attempts), _when(e.next_attempt)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row, entry in zip(rows, [None, *entries]):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        for r in entry.recipients if entry is not None else ():
            reply = f"  {r.last_reply}" if r.last_reply else ""
            lines.append(f"    <{r.address}>  {r.state}{reply}")
    count = len(entries)
    lines.append(f"{count} message{'s' if count != 1 else ''}")
    return lines


def queue_list(options: argparse.Namespace) -> None:
    """Print the on-disk queue without touching it (the server may be running)."""
    from twisted.internet import reactor

    config = _config(options.config)
    queue = Queue(os.path.join(config.server.mailroot, "queue"), reactor, defer.maybeDeferred)
    try:
        entries = queue.scan(cleanup=False)
    except OSError as e:
        raise CommandError(f"smtpctl: cannot read {queue.directory}: {e.strerror}") from e
    for line in queue_table(entries):
        print(_printable(line), file=sys.stdout)


def _printable(line: str) -> str:
    # Addresses and replies come from the network: no terminal escapes.
    return "".join(c if c.isprintable() else "?" for c in line)


_COMMANDS = {
    ("check", None): check,
    ("user", "add"): user_add,
    ("user", "del"): user_del,
    ("user", "list"): user_list,
    ("queue", "list"): queue_list,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run C{smtpctl} with C{argv} (default: the command line); the exit status."""
    try:
        options = _parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    command = _COMMANDS[(options.command, getattr(options, "action", None))]
    try:
        command(options)
    except CommandError as e:
        for line in e.lines:
            print(line, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"smtpctl: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0
