# -*- test-case-name: tests.test_admin -*-
"""
Live reload (C{admin.reload()}, C{smtpctl reload}, SIGHUP): re-read
C{etc/smtpd.ini}, the accounts file, the TLS certificate, the DNS servers
(C{/etc/resolv.conf} when none are configured) and the [directory] (a new
connection when it changed, the cache flushed), and hand them to the parts
that read them at each new session or delivery attempt. A configuration with errors
changes nothing; listeners are never rebound (the report says when their
keys changed).
"""

from __future__ import annotations

import dataclasses

from twisted.logger import Logger

from smtpd.admin.directory import DirectoryError
from smtpd.cleanup.authfilters import BUILD_ERRORS
from smtpd.config import Config, ConfigError, load_config
from smtpd.delivery.mx import make_resolver
from smtpd.directory.accounts import Users, UsersError
from smtpd.util import tls

log = Logger(namespace="smtpd.admin")

# Keys read once at start: a change is reported, applied at the next restart.
AT_RESTART = frozenset({
    "server.listen", "server.submission", "server.smtps", "server.mailroot",
    "manhole.telnet", "manhole.ssh", "manhole.users", "manhole.ssh_key_dir",
    "http.listen", "http.login", "http.access_log",
    "logging.path", "logging.format", "logging.rotate", "logging.rotate_size",
    "tlsrpt.enabled",
})


def at_restart(key: str) -> bool:
    """Whether a changed C{section.key} applies only after a restart."""
    return key in AT_RESTART


def differences(old: Config, new: Config) -> list[str]:
    """The C{section.key} names whose values differ (C{domains} as one name)."""
    changed = []
    for field in dataclasses.fields(Config):
        if field.name in ("path", "root"):
            continue
        before, after = getattr(old, field.name), getattr(new, field.name)
        if field.name == "domains":
            if before != after:
                changed.append("domains")
            continue
        for key in dataclasses.fields(before):
            if getattr(before, key.name) != getattr(after, key.name):
                changed.append(f"{field.name}.{key.name}")
    return changed


class Reloader:
    """
    Re-reads the configuration and hands it out.

    @param config: the configuration in force.
    @param inbound: the L{Inbound} registry (C{config}, C{users}, C{tls_options}).
    @param qmgr: the queue manager (C{config}, C{users}).
    @param relay: the relay manager (C{reconfigure(config)}).
    @param activity: the activity log (C{hostname}).
    @param server_tls: the L{tls.ReloadableTLS} every TLS listener uses, or None.
    @param configured: more parts whose C{config} attribute is replaced, and
        C{users} when they have one (cleanup, POP3).
    @param mx: the relay's L{MXResolver}: it gets a new resolver for
        C{[delivery] dns_servers} (or C{/etc/resolv.conf}) as they are now.
    @param reactor: for that resolver.
    @param cleanup: the cleanup stage whose mail authentication filters
        (DKIM signing, the C{[checks]}) are built anew by C{filters}, a
        L{smtpd.cleanup.authfilters.MailAuthFilters}.
    @param dns_lookups: the L{DNSLookups} that resolver reports its queries to.
    @param directory: the L{DirectorySwitch} of the [directory], or None: a
        changed section gets a new directory (new connection, empty cache);
        an unchanged one has its cache flushed.
    """

    def __init__(self, config: Config, *, inbound, qmgr, relay, activity, server_tls=None,
                 configured=(), mx=None, reactor=None, cleanup=None, filters=None,
                 directory=None, dns_lookups=None):
        self.config = config
        self.inbound = inbound
        self.qmgr = qmgr
        self.relay = relay
        self.activity = activity
        self.server_tls = server_tls
        self.configured = list(configured)
        self.mx = mx
        self.reactor = reactor
        self.cleanup = cleanup
        self.filters = filters if cleanup is not None else None
        self.directory = directory
        self.dns_lookups = dns_lookups

    def reload(self) -> dict:
        """
        Read and apply; the report is C{{"ok": True, "changed": [...],
        "at_restart": [...], "accounts": n, "filters": [...]}} (C{filters}:
        the mail authentication filters now in force, built anew) or
        C{{"ok": False, "errors": [...]}} (nothing changed, the old filters
        stay).
        """
        try:
            new, users, options, resolver, filters = self._read()
            directory = self._new_directory(new)
        except (ConfigError, UsersError, DirectoryError) as e:
            for line in e.problems:
                log.error("reload refused: {problem}", problem=line)
            return {"ok": False, "errors": list(e.problems)}
        except tls.TLSError as e:
            log.error("reload refused: {problem}", problem=str(e))
            return {"ok": False, "errors": [str(e)]}
        changed = differences(self.config, new)
        self._apply(new, users, options, resolver, filters)
        self._switch_directory(directory, new)
        report = {
            "ok": True,
            "changed": [c for c in changed if not at_restart(c)],
            "at_restart": [c for c in changed if at_restart(c)],
            "accounts": len(users),
        }
        if filters is not None:
            report["filters"] = [f.name for f in filters]
        log.info("reloaded {path}: changed {changed}; needs a restart: {restart}; "
                 "{accounts} accounts", path=new.path,
                 changed=", ".join(report["changed"]) or "nothing",
                 restart=", ".join(report["at_restart"]) or "nothing",
                 accounts=len(users))
        return report

    def reload_accounts(self) -> dict:
        """
        Re-read only the accounts file (after C{smtpctl user add/del}):
        C{{"ok": True, "accounts": n}} or C{{"ok": False, "errors": [...]}}.
        """
        try:
            users = Users.load(self.config.auth.users)
        except UsersError as e:
            for line in e.problems:
                log.error("accounts reload refused: {problem}", problem=line)
            return {"ok": False, "errors": list(e.problems)}
        self.inbound.users = users
        self._route_by(users)
        for part in self.configured:
            if hasattr(part, "users"):
                part.users = users
        log.info("reloaded {path}: {accounts} accounts", path=self.config.auth.users,
                 accounts=len(users))
        return {"ok": True, "accounts": len(users)}

    def _route_by(self, users: Users) -> None:
        """
        The accounts the queue routes by: the file's, unless a directory
        vouches for the recipients (it stays in charge until a restart).
        """
        if getattr(self.inbound, "directory", None) is None:
            self.qmgr.users = users

    def _new_directory(self, new: Config):
        """
        A new directory when C{new}'s [directory] differs from the one in
        force (C{False}: keep the directory, None: none any more).

        @raise DirectoryError: the new section cannot be used.
        """
        if self.directory is None or new.directory == self.config.directory:
            return False
        return self.directory.prepare(new)

    def _switch_directory(self, directory, new: Config) -> None:
        """Use C{directory} (from L{_new_directory}), or flush the cache of the one kept."""
        if self.directory is None:
            return
        if directory is False:
            self.directory.flush()
            return
        self.directory.use(directory, new)
        log.info("directory: now {url}", url=new.directory.url or "off (the accounts file)")

    def _read(self):
        """
        The new configuration, accounts, TLS options, resolver and mail
        authentication filters; raises on any problem.
        """
        new = load_config(self.config.path)
        users = Users.load(new.auth.users)
        options = None
        if self.server_tls is not None:
            options = tls.options_for(new.tls)
        resolver = filters = None
        if self.mx is not None or self.filters is not None:
            resolver = make_resolver(new.delivery.dns_servers, self.reactor,
                                     lookups=self.dns_lookups)
        if self.filters is not None:
            try:
                filters = self.filters.build(new, resolver)
            except BUILD_ERRORS as e:
                raise ConfigError([f"{new.path}: mail authentication: {e}"]) from None
        return new, users, options, resolver, filters

    def _apply(self, new: Config, users: Users, options, resolver, filters) -> None:
        """Hand the new configuration to every part that reads it per session or attempt."""
        self.config = new
        self.inbound.config = new
        self.inbound.users = users
        recipients = getattr(self.inbound, "recipients", None)
        if recipients is not None and hasattr(recipients, "config"):
            recipients.config = new
        self.qmgr.config = new
        self._route_by(users)
        self.relay.reconfigure(new)
        self.activity.hostname = new.server.hostname
        for part in self.configured:
            part.config = new
            if hasattr(part, "users"):
                part.users = users
        if self.mx is not None:
            self.mx.use_resolver(resolver)
        if filters is not None:
            self.filters.install(self.cleanup, filters)
        if options is not None:
            self.server_tls.options = options
