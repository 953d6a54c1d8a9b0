# -*- test-case-name: tests.test_control -*-
"""
The administration part of the service tree: the manhole listeners, the
control socket, and the reload that SIGHUP, C{admin.reload()} and
C{smtpctl reload} run.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application import service
from twisted.internet.defer import Deferred

from smtpd.admin.api import Server
from smtpd.admin.control import ControlService, socket_path
from smtpd.admin.manhole import manhole_listeners
from smtpd.admin.reload import Reloader
from smtpd.config import Config


class AdministrationService(service.MultiService):
    """
    The control socket and the reload for one server, and the manhole's
    listeners for the service tree to bind with the others.

    @ivar server: the L{Server} every admin API instance acts on.
    @ivar listening: the manhole's C{(endpoint, factory)} pairs.
    """

    def __init__(self, config: Config, reactor, *, qmgr, queue, inbound, relay, activity,
                 run_blocking: Callable[..., Deferred], server_tls=None, configured=(),
                 resolver=None, mx=None, cleanup=None, filters=None, directory=None,
                 dns_lookups=None):
        service.MultiService.__init__(self)
        reloader = Reloader(config, inbound=inbound, qmgr=qmgr, relay=relay,
                            activity=activity, server_tls=server_tls, configured=configured,
                            mx=mx, reactor=reactor, cleanup=cleanup, filters=filters,
                            directory=directory, dns_lookups=dns_lookups)
        self.server = Server(reactor, qmgr, queue, inbound, run_blocking, config, reloader,
                             resolver)
        ControlService(reactor, socket_path(config.server.mailroot),
                       self.server).setServiceParent(self)
        self.listening = manhole_listeners(config, self.server, run_blocking)

    def reload(self) -> dict:
        """Re-read the configuration and the accounts (SIGHUP); the report."""
        return self.server.reload()
