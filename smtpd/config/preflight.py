# -*- test-case-name: tests.test_lifecycle -*-
"""
What start would refuse, checked without starting: the same function serves
C{smtpctl check} and C{twistd smtpd}, so a config that passes the check does
not then fail at start. Each problem is one line naming the file, the
section and key, the value and what is needed.
"""

from __future__ import annotations

import os

from smtpd.config.model import Config
from smtpd.util import tls

DEFAULT_CERTIFICATE = os.path.join("etc", "tls", "smtpd.pem")
DEFAULT_KEY = os.path.join("etc", "tls", "smtpd.key")


def preflight(config: Config) -> list[str]:
    """The problems that would stop C{config} from starting; [] when none."""
    where = config.path
    problems = []
    server = config.server
    if not (server.listen or server.submission or server.smtps):
        problems.append(
            f"{where}: [server] listen, submission and smtps are all empty: the server "
            "would serve nothing; expected at least one endpoint such as tcp:25"
        )
    problem = _folder_problem(server.mailroot, create=True)
    if problem:
        problems.append(f"{where}: [server] mailroot = {server.mailroot}: {problem}")
    if config.logging.path != "-":
        problem = _file_problem(config.logging.path)
        if problem:
            problems.append(f"{where}: [logging] path = {config.logging.path}: {problem}")
    if config.http.access_log:
        problem = _file_problem(config.http.access_log)
        if problem:
            problems.append(f"{where}: [http] access_log = {config.http.access_log}: {problem}")
    problems.extend(_tls_problems(config))
    return problems


def creates_certificate(config: Config) -> bool:
    """
    Whether start may create a self-signed certificate: only at the default
    paths (a configured path that does not exist is a mistake, not a request).
    """
    return (config.tls.certificate == os.path.join(config.root, DEFAULT_CERTIFICATE)
            and config.tls.key == os.path.join(config.root, DEFAULT_KEY))


def _tls_problems(config: Config) -> list[str]:
    where = config.path
    cert, key = config.tls.certificate, config.tls.key
    have_cert, have_key = os.path.exists(cert), os.path.exists(key)
    if have_cert and have_key:
        try:
            tls.options_for(config.tls)
        except tls.TLSError as e:
            return [f"{where}: [tls] certificate = {cert}, key = {key}: {e}"]
        return []
    if creates_certificate(config) and not have_cert:
        problem = _folder_problem(os.path.dirname(cert), create=True)
        return [f"{where}: [tls] certificate = {cert}: {problem}"] if problem else []
    missing = [f"{name} = {path}" for name, path, there in
               (("certificate", cert, have_cert), ("key", key, have_key)) if not there]
    return [
        f"{where}: [tls] {', '.join(missing)}: no such file; expected existing PEM "
        f"files (a self-signed certificate is created only at the default paths "
        f"{DEFAULT_CERTIFICATE} and {DEFAULT_KEY})"
    ]


def _folder_problem(path: str, create: bool) -> str | None:
    """Why folder C{path} cannot be used (or, with C{create}, created); None if it can."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return "not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return "the folder is not writable by this user"
        return None
    if not create:
        return "no such folder"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable by this user"
    return None


def _file_problem(path: str) -> str | None:
    """Why C{path} cannot be opened for appending; None if it can."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "a folder, expected a file"
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            return "the file is not writable by this user"
    elif not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable by this user"
    return None
