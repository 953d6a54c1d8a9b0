# -*- test-case-name: tests.test_privilege -*-
"""
Least privilege under C{twistd --uid=smtpd --gid=smtpd}: started as root, the
server binds its ports and locks and prepares its mailroot in
C{privilegedStartService}; then L{HandOver} gives what root made (mailroot,
lock, a new self-signed certificate and key) to the user twistd switches to
right after, so that everything the server writes from then on is that
user's. The process umask is 077, as Postfix's: no file the server writes is
for other users.
"""

from __future__ import annotations

import os
import pwd
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from smtpd.config import Config
from smtpd.util.ownership import hand_over_deployment, user_name

log = Logger()

UMASK = 0o077


def run_as(options: Any) -> tuple[int, int] | None:
    """
    The (uid, gid) twistd switches to after C{privilegedStartService}
    (C{--uid}, C{--gid}; the user's own group when only C{--uid} is given),
    when this process runs as root; else L{None}.
    """
    parent = getattr(options, "parent", None)
    if parent is None or os.geteuid() != 0:
        return None
    uid, gid = parent.get("uid"), parent.get("gid")
    if uid is None or uid == 0:
        return None
    if gid is None:
        gid = pwd.getpwuid(uid).pw_gid
    return uid, gid


def deployment_files(config: Config) -> list[str]:
    """The files outside the mailroot that the server itself may create or rewrite."""
    files = [config.tls.certificate, config.tls.key, config.auth.users]
    if config.logging.path != "-":
        files.append(config.logging.path)
    if config.http.access_log:
        files.append(config.http.access_log)
    return files


class HandOver(service.Service):
    """
    Gives the deployment's files to C{uid}:C{gid} as root, once the listeners
    are bound and the mailroot is locked and made: added after the
    L{smtpd.service.listeners.ListenerGroup}, it runs after it.
    """

    def __init__(self, config: Config, uid: int, gid: int):
        self.config = config
        self.uid = uid
        self.gid = gid

    def privilegedStartService(self) -> None:
        """Change the owners (root only: this runs before twistd drops privileges)."""
        service.Service.privilegedStartService(self)
        changed = hand_over_deployment(self.config.root, self.config.server.mailroot,
                                       deployment_files(self.config), self.uid, self.gid)
        for path in changed:
            log.info("{path} now belongs to {user}", path=path, user=user_name(self.uid))
