# -*- test-case-name: tests.test_ctl -*-
"""
C{smtpctl}: the administration command (SPEC 2), offline or against the
running server.

    smtpctl [--config PATH] [--http URL] [--user NAME] COMMAND ...
    smtpctl [--config PATH] check
    smtpctl [--config PATH] user add ADDR [--password-stdin]
    smtpctl [--config PATH] user del ADDR
    smtpctl [--config PATH] user list
    smtpctl [--config PATH] manhole-user add NAME [--password-stdin]
    smtpctl [--config PATH] status [--json]
    smtpctl [--config PATH] queue list [--json] [--limit N] | show ID [--json]
    smtpctl [--config PATH] queue retry [ID] | hold ID | release ID | delete ID [--bounce]
    smtpctl [--config PATH] sessions [--json] | sessions kill ID
    smtpctl [--config PATH] reload
    smtpctl [--config PATH] dkim keygen DOMAIN [--selector S] [--algorithm A]

The commands about the running server go through its control socket
(L{smtpd.admin.remote}); those that read may go through the JSON API of
C{[http]} instead (L{smtpd.admin.webclient}). Every failure is one or more
lines on stderr and exit status 1, never a traceback; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

from smtpd.admin import remote
from smtpd.admin.operators import OperatorsError, add_operator, check as check_manhole
from smtpd.admin.remote import CommandError
from smtpd.config import Config, ConfigError, load_config
from smtpd.config.dkimkeys import is_selector
from smtpd.config.values import parse_domain_name
from smtpd.mailauth.keys import (
    ALGORITHMS,
    ED25519_SHA256,
    RSA_SHA256,
    generate_key,
    key_from_pem,
    zone_entry,
)
from smtpd.config.preflight import preflight
from smtpd.util.durable import fsync_directory, make_folder, write_file
from smtpd.directory.accounts import Users, UsersError, add, normalize_address, remove
from smtpd.util.ownership import hand_over_to_deployment

DEFAULT_CONFIG = os.path.join("etc", "smtpd.ini")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtpctl",
        description="Administer an smtpd deployment, offline or through the running server.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH",
                        help=f"the configuration file (default: {DEFAULT_CONFIG})")
    parser.add_argument("--http", metavar="URL",
                        help="read through the server's JSON API at URL (status, queue list, "
                        "queue show, sessions) instead of the control socket; without it "
                        "the first [http] listen is used when the control socket cannot be "
                        "reached")
    parser.add_argument("--user", metavar="NAME",
                        help="the operator ([manhole] users) logging in to the JSON API "
                        "(default: $SMTPCTL_USER); the password is $SMTPCTL_PASSWORD, or "
                        "asked at the terminal")
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
    operator = commands.add_parser("manhole-user", help="manage the manhole operators")
    operator_commands = operator.add_subparsers(dest="action", required=True, metavar="ACTION")
    operator_add = operator_commands.add_parser(
        "add", help="add an operator (or change its password)")
    operator_add.add_argument("name")
    operator_add.add_argument("--password-stdin", action="store_true",
                              help="read the password from the first line of stdin")
    _json(commands.add_parser("status", help="the running server's state"))
    _queue_parser(commands)
    sessions = commands.add_parser("sessions", help="the running server's inbound sessions")
    _json(sessions)
    session_commands = sessions.add_subparsers(dest="action", metavar="ACTION")
    session_commands.add_parser("kill", help="close a session with 421 4.3.2").add_argument("id")
    commands.add_parser("reload", help="make the running server re-read its configuration")
    dkim = commands.add_parser("dkim", help="DKIM signing keys")
    dkim_commands = dkim.add_subparsers(dest="action", required=True, metavar="ACTION")
    keygen = dkim_commands.add_parser(
        "keygen", help="make a signing key for DOMAIN and print the DNS record to publish")
    keygen.add_argument("domain", metavar="DOMAIN")
    keygen.add_argument("--selector", help="the selector (default: s1 for RSA, e1 for Ed25519)")
    keygen.add_argument("--algorithm", choices=ALGORITHMS, default=RSA_SHA256,
                        help=f"the key type (default: {RSA_SHA256})")
    return parser


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _queue_parser(commands) -> None:
    queue = commands.add_parser("queue", help="inspect and control the queue")
    queue_commands = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    queue_list = queue_commands.add_parser(
        "list", help="list the queued messages, oldest first, a page at a time")
    queue_list.add_argument("--limit", type=int, metavar="N",
                            help="list at most the first N messages")
    _json(queue_list)
    show = queue_commands.add_parser("show", help="one message: envelope, recipients, header")
    show.add_argument("id")
    _json(show)
    retry = queue_commands.add_parser("retry", help="attempt one message (or all) now")
    retry.add_argument("id", nargs="?")
    queue_commands.add_parser("hold", help="stop attempting a message").add_argument("id")
    queue_commands.add_parser("release", help="attempt a held message again").add_argument("id")
    delete = queue_commands.add_parser("delete", help="remove a message")
    delete.add_argument("id")
    delete.add_argument("--bounce", action="store_true",
                        help="send the sender a non-delivery report first")


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
    problems = check_manhole(config)
    if problems:
        raise CommandError(*problems)
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
    if section is not None and section.type == "alias":
        local_part = address.rpartition("@")[0]
        raise CommandError(
            f"smtpctl: {domain} is an alias of {section.alias_of}: its accounts are those "
            f"of {section.alias_of}; add {local_part}@{section.alias_of} instead")
    if section is None or section.type != "local":
        raise CommandError(
            f"smtpctl: {domain} is not a local domain in {options.config}; "
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
    _tell_server(config)


def user_del(options: argparse.Namespace) -> None:
    """Remove an account."""
    config = _config(options.config)
    try:
        remove(config.auth.users, options.address)
    except UsersError as e:
        raise CommandError(*(f"smtpctl: {p}" for p in e.problems)) from e
    print(f"removed {options.address.lower()} from {config.auth.users}", file=sys.stdout)
    _hand_over(config)
    _tell_server(config)


def _tell_server(config: Config) -> None:
    """Make a running server re-read the accounts file (nothing to do when stopped)."""
    said = remote.reload_accounts(config)
    if said:
        print(said, file=sys.stdout)


def manhole_user_add(options: argparse.Namespace) -> None:
    """Add a manhole operator with a bcrypt hash of the password."""
    config = _config(options.config)
    password = _read_password(options.password_stdin)
    try:
        add_operator(config.manhole.users, options.name, password)
    except OperatorsError as e:
        raise CommandError(f"smtpctl: {e}") from e
    print(f"operator {options.name} written to {config.manhole.users}", file=sys.stdout)


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


def _remote(command):
    """A command of L{smtpd.admin.remote} with the configuration loaded."""
    return lambda options, clock: command(_config(options.config), options)


def _timed(command):
    """A command of L{smtpd.admin.remote} that shows ages: the configuration and the clock."""
    return lambda options, clock: command(_config(options.config), options, clock)


def _local(command):
    """A command that needs only its options."""
    return lambda options, clock: command(options)


_KEY_SUFFIX = {RSA_SHA256: "rsa", ED25519_SHA256: "ed25519"}
_DEFAULT_SELECTOR = {RSA_SHA256: "s1", ED25519_SHA256: "e1"}


def dkim_keygen(options: argparse.Namespace) -> None:
    """
    Write a new private key to etc/dkim/DOMAIN.rsa (or .ed25519) under the
    deployment root, mode 0600, never over an existing file; print the TXT
    record to publish and the config line that uses the key.
    """
    try:
        domain = parse_domain_name(options.domain)
    except ValueError as e:
        raise CommandError(f"smtpctl: {_printable(options.domain)}: {e}; expected a domain name") from e
    algorithm = options.algorithm
    selector = options.selector or _DEFAULT_SELECTOR[algorithm]
    if not is_selector(selector):
        raise CommandError(f"smtpctl: {_printable(selector)}: not a selector; expected DNS labels")
    root = os.path.dirname(os.path.dirname(os.path.abspath(options.config)))
    relative = os.path.join("etc", "dkim", f"{domain}.{_KEY_SUFFIX[algorithm]}")
    path = os.path.join(root, relative)
    if os.path.exists(path):
        raise CommandError(f"smtpctl: {path}: exists; remove it or choose another key")
    pem = generate_key(algorithm)
    make_folder(os.path.dirname(path))
    write_file(path, pem, 0o600)
    fsync_directory(os.path.dirname(path))
    key = key_from_pem(selector, pem)
    print(f"wrote {path} ({algorithm}, mode 0600)")
    print("publish this DNS record:")
    print(zone_entry(selector, domain, key.record))
    print(f"then add to [domain:{domain}] in {options.config}:")
    print(f"dkim = {selector}:{relative}")


def _printable(line: str) -> str:
    # Addresses and replies come from the network: no terminal escapes.
    return "".join(c if c.isprintable() else "?" for c in line)


_COMMANDS = {
    ("check", None): _local(check),
    ("user", "add"): _local(user_add),
    ("user", "del"): _local(user_del),
    ("user", "list"): _local(user_list),
    ("manhole-user", "add"): _local(manhole_user_add),
    ("status", None): _remote(remote.status),
    ("queue", "list"): _timed(remote.queue_list),
    ("queue", "show"): _timed(remote.queue_show),
    ("queue", "retry"): _remote(remote.queue_retry),
    ("queue", "hold"): _remote(remote.queue_hold),
    ("queue", "release"): _remote(remote.queue_release),
    ("queue", "delete"): _remote(remote.queue_delete),
    ("sessions", None): _timed(remote.sessions),
    ("sessions", "kill"): _remote(remote.sessions_kill),
    ("reload", None): _remote(remote.reload),
    ("dkim", "keygen"): _local(dkim_keygen),
}


def main(argv: Sequence[str] | None = None, clock=None) -> int:
    """
    Run C{smtpctl} with C{argv} (default: the command line); the exit
    status. C{clock} (anything with C{seconds()}) is what the tables' ages
    are measured against; by default the reactor's.
    """
    try:
        options = _parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    command = _COMMANDS[(options.command, getattr(options, "action", None))]
    if clock is None:
        from twisted.internet import reactor as clock
    try:
        command(options, clock)
    except CommandError as e:
        for line in e.lines:
            print(line, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"smtpctl: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0
