# -*- test-case-name: tests.test_tap -*-
"""
C{twistd smtpd}: command-line options and the service tree (assembly only).

    SMTPServer: binds the listeners, then locks the mailroot, then starts:
     +- ThreadPoolService (password checks)
     +- ThreadPoolService (mail authentication: SPF, DKIM, DMARC, ARC)
     +- TLSReporter ([tlsrpt] enabled: the relay's TLS outcomes on disk,
                    the daily RFC 8460 reports)
     +- QueueManager (scans the queue; local delivery, relay, bounces)
     +- RelayService (closes pooled connections and the resolver on stop)
     +- ClosingService (the LMTP agent's idle connections; the LDAP
                        directory's connection when [directory] is on, through
                        the DirectorySwitch that replaces it on reload)
     +- InboundService (drains sessions on stop)
     +- AdministrationService (control socket, reload; the manhole's listeners)
     +- WebService ([http]: metrics, health, status page; its listeners)
     +- SignalService (SIGHUP, SIGUSR1)
     +- ListenerGroup (every listen / submission / smtps endpoint, and the
                       [pop3] listen / pop3s endpoints of the POP3Server, the manhole's
                       and [http] listen; stops first)
"""

from __future__ import annotations

import os
import resource
import sys

from twisted.application import service
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from smtpd.admin.manhole import ManholeError
from smtpd.admin.service import AdministrationService
from smtpd.util import tls
from smtpd.web.site import WebError, WebService
from smtpd.pop3.server import POP3Server
from smtpd.queue.bounce import BounceBuilder
from smtpd.config import Config, ConfigError, load_config
from smtpd.delivery.drop import DropDelivery
from smtpd.delivery.lmtp import LMTPDelivery
from smtpd.admin.directory import DirectorySwitch
from smtpd.delivery.maildir import MaildirDelivery
from smtpd.config.preflight import creates_certificate, preflight
from smtpd.service.listeners import Listener, ListenerGroup, StartupError
from smtpd.service.privileges import UMASK, HandOver, run_as
from smtpd.service.server import SMTPServer
from smtpd.service.signals import SignalService
from smtpd.util.activity import ActivityLog
from smtpd.delivery.dnstiming import DNSLookups
from smtpd.delivery.mx import MXResolver, make_resolver
from smtpd.cleanup.authfilters import MailAuthFilters
from smtpd.cleanup.stage import Cleanup
from smtpd.inbound.policy import may_connect
from smtpd.inbound.registry import Inbound
from smtpd.inbound.sasl import DEFAULT_QUEUE
from smtpd.mailauth.https import https_agent
from smtpd.mailauth.lookup import DNSLookup
from smtpd.mailauth.tlsrpt.reporter import TLSReporter
from smtpd.mailauth.tlsrpt.store import OutcomeStore
from smtpd.pickup.sender import PickupSender
from smtpd.pickup.service import PickupService
from smtpd.inbound.session import LISTEN, SMTPS, SUBMISSION
from smtpd.queue.manager import QueueManager
from smtpd.queue.store import Queue
from smtpd.delivery.relay import RelayManager
from smtpd.delivery.tlsreporting import TLSReportRecorder
from smtpd.delivery.tlspolicy import tls_policies
from smtpd.directory.accounts import Users, UsersError

log = Logger()

# How long sessions in the middle of DATA may go on after SIGTERM.
SHUTDOWN_GRACE = 5.0

# Threads for blocking disk work (the reactor's pool; Twisted's default is
# 10). Maildir delivery uses one at a time while the disk keeps up (more only
# contend for the same folders and the GIL: bench/bench.py inbound) and up to
# MAILDIR_BATCHES on a slow disk, so that their fsyncs overlap; the rest stay
# free for the queue.
THREAD_POOL_SIZE = 16
MAILDIR_BATCHES = THREAD_POOL_SIZE // 2
# Four threads take a burst of logins (bcrypt cost 12 is ~0.25 s each); up to
# AUTH_QUEUE more checks wait, beyond that AUTH gets "454 4.7.0".
AUTH_THREADS = 4
AUTH_QUEUE = DEFAULT_QUEUE
# Mail authentication gets threads of its own (SPF evaluations waiting on DNS
# answers, DKIM signing and verification), so slow DNS never delays the queue's
# fsyncs and a flood of checks never starves delivery.
MAILAUTH_THREADS = 4


class Options(usage.Options):
    """C{twistd smtpd --config PATH}."""

    optParameters = [
        ["config", "c", "etc/smtpd.ini", "The configuration file (smtpd.ini)."],
    ]

    def postOptions(self):
        """
        Read and validate the configuration now, so that every problem is shown
        at once, one line each, before twistd daemonises; then exit 1.
        """
        try:
            config = load_config(self["config"])
        except ConfigError as e:
            problems = e.problems
        else:
            problems = preflight(config)
        if problems:
            for line in problems:
                print(line, file=sys.stderr)
            raise SystemExit(1)
        self["parsed"] = config


class ThreadPoolService(service.Service):
    """A thread pool of its own, started and stopped with the server."""

    def __init__(self, size: int, name: str):
        self.pool = ThreadPool(minthreads=0, maxthreads=size, name=name)

    def runner(self, reactor):
        """C{run_blocking(f, *args)} for this pool: a Deferred of the result."""
        return lambda f, *a, **kw: deferToThreadPool(reactor, self.pool, f, *a, **kw)

    def startService(self):
        """Start the threads."""
        service.Service.startService(self)
        self.pool.start()

    def stopService(self):
        """Stop the threads (work under way finishes first)."""
        service.Service.stopService(self)
        self.pool.stop()


class RelayService(service.Service):
    """On stop: closes the relay's pooled connections."""

    def __init__(self, relay: RelayManager):
        self.relay = relay

    def stopService(self):
        """Close idle outbound connections."""
        service.Service.stopService(self)
        return self.relay.stop()


class InboundService(service.Service):
    """Owns the inbound sessions: on stop, lets DATA finish, then closes them."""

    def __init__(self, inbound: Inbound, log_: ActivityLog):
        self.inbound = inbound
        self.activity = log_

    def startService(self):
        """Open the activity log."""
        service.Service.startService(self)
        self.activity.open()

    def stopService(self):
        """Drain sessions for up to L{SHUTDOWN_GRACE} seconds, then close the log."""
        service.Service.stopService(self)
        d = self.inbound.shutdown(SHUTDOWN_GRACE)
        d.addBoth(lambda _: self.activity.close())
        return d


def load_tls(config: Config, clock) -> tls.ReloadableTLS:
    """
    The server TLS options ([tls] certificate, key, min_version, ciphers); a
    self-signed certificate is created when missing, at the default paths
    only (preflight refuses other missing paths). C{reload(config.tls)}
    re-reads them.
    """
    cert, key = config.tls.certificate, config.tls.key
    if creates_certificate(config):
        if tls.ensure_certificate(cert, key, config.server.hostname, clock.seconds()):
            log.info("Created a self-signed certificate {cert}", cert=cert)
    return tls.ReloadableTLS(tls.options_for(config.tls))


def delivery_agents(config: Config, reactor, run_blocking, relay: RelayManager,
                    lmtp: LMTPDelivery) -> dict:
    """The delivery agents by name (C{[domain:NAME] type} and the queue's registry)."""
    mailroot = config.server.mailroot
    agents = [
        MaildirDelivery(mailroot, config.server.hostname, reactor, run_blocking,
                        max_batches=MAILDIR_BATCHES),
        DropDelivery(mailroot, reactor, run_blocking),
        relay,
        lmtp,
    ]
    return {agent.name: agent for agent in agents}


def lmtp_agent(config: Config, reactor) -> LMTPDelivery:
    """The agent of C{type = lmtp} domains, with the [delivery] limits."""
    return LMTPDelivery(reactor, config.server.hostname, timeout=config.delivery.outbound_timeout,
                        max_messages=config.delivery.max_messages_per_connection,
                        max_connections=config.delivery.outbound_connections_per_domain)


class ClosingService(service.Service):
    """On stop: closes the connections a part keeps open (its C{stop()})."""

    def __init__(self, part):
        self.part = part

    def stopService(self):
        """Close the idle connections."""
        service.Service.stopService(self)
        return self.part.stop()


def add_directory(top, config: Config, switch: DirectorySwitch) -> None:
    """
    With [directory] url set: the LDAP directory answers RCPT (through a
    L{RecipientResolver}), AUTH and POP3 logins, and the queue routes the
    recipients it vouched for without etc/users; C{switch} replaces it on
    reload (its C{current} is the one in use) and closes it at stop.
    """
    switch.use(switch.prepare(config), config)
    ClosingService(switch).setServiceParent(top)


def build(config: Config, reactor) -> service.MultiService:
    """The whole server for C{config} on C{reactor}."""
    reactor.suggestThreadPoolSize(THREAD_POOL_SIZE)
    pool = reactor.getThreadPool()

    def run_blocking(f, *args, **kwargs):
        return deferToThreadPool(reactor, pool, f, *args, **kwargs)

    tls_options = load_tls(config, reactor)
    users = Users.load(config.auth.users)
    mailroot = config.server.mailroot
    queue = Queue(os.path.join(mailroot, "queue"), reactor, run_blocking)
    activity = ActivityLog(
        config.logging.format, config.logging.path, reactor, config.server.hostname,
        rotate=config.logging.rotate, rotate_size=config.logging.rotate_size,
    )
    listeners: list[Listener] = []
    group = ListenerGroup(listeners)
    top = SMTPServer(mailroot, group)
    # Password checks (bcrypt, ~0.3 s each) get threads of their own, so a
    # flood of AUTH attempts cannot delay the fsyncs that answer "250".
    auth_pool = ThreadPoolService(AUTH_THREADS, "smtpd-auth")
    auth_pool.setServiceParent(top)
    # Every DNS query is timed; the [http] metrics subscribe to the reports.
    dns_lookups = DNSLookups()
    resolver = make_resolver(config.delivery.dns_servers, reactor, lookups=dns_lookups)
    mailauth_pool = ThreadPoolService(MAILAUTH_THREADS, "smtpd-mailauth")
    mailauth_pool.setServiceParent(top)
    mailauth = MailAuthFilters(reactor, mailauth_pool.runner(reactor))
    cleanup = Cleanup(config, queue, reactor, run_blocking,
                      filters=mailauth.build(config, resolver))
    inbound = Inbound(
        config, users, cleanup, reactor, auth_pool.runner(reactor), tls_options, activity,
        resolver=resolver, auth_limit=AUTH_THREADS + AUTH_QUEUE,
    )
    for kind, endpoints in (
        (LISTEN, config.server.listen),
        (SUBMISSION, config.server.submission),
        (SMTPS, config.server.smtps),
    ):
        for description in endpoints:
            factory = inbound.factory(kind)
            if kind == SMTPS:
                factory = TLSMemoryBIOFactory(tls_options, False, factory)
            listeners.append(Listener(reactor, description, factory, config.access.proxy_from))

    mx = MXResolver(resolver, reactor, config.server.hostname)
    policies = tls_policies(config, resolver, reactor, mailauth_pool.runner(reactor),
                            dns_lookups=dns_lookups)
    relay = RelayManager(config, reactor, mx, local_endpoints=group.addresses,
                         run_blocking=run_blocking, policies=policies)
    tlsrpt = add_tlsrpt(top, config, reactor, resolver, run_blocking, cleanup, relay)
    reloaded = [cleanup, *tlsrpt]
    lmtp = lmtp_agent(config, reactor)
    qmgr = QueueManager(
        config,
        queue,
        reactor,
        users=users,
        agents=delivery_agents(config, reactor, run_blocking, relay, lmtp),
        bounces=BounceBuilder(config.server.hostname, reactor),
        log=activity,
        run_blocking=run_blocking,
        # The reports the queue makes (NDRs, DSNs) are new messages: they
        # enter through cleanup like every other.
        submit=cleanup.submit,
    )
    # Everything enters through cleanup, which hands it to the queue manager's
    # intake (local mail delivered at once, the rest stored); reports too.
    cleanup.accept = qmgr.accept
    inbound.etrn = qmgr.flush_domain
    qmgr.setServiceParent(top)
    RelayService(relay).setServiceParent(top)
    ClosingService(lmtp).setServiceParent(top)
    InboundService(inbound, activity).setServiceParent(top)
    top.pickup = add_pickup(top, config, cleanup, reactor, run_blocking)
    top.pop3 = add_pop3(listeners, config, reactor, users, auth_pool.runner(reactor),
                        run_blocking, tls_options, activity, throttle=inbound.throttle)
    directory_switch = DirectorySwitch(reactor, inbound, qmgr, top.pop3)
    admin = AdministrationService(
        config, reactor, qmgr=qmgr, queue=queue, inbound=inbound, relay=relay,
        activity=activity, run_blocking=run_blocking, server_tls=tls_options,
        configured=[*reloaded, top.pop3], resolver=resolver, mx=mx, cleanup=cleanup,
        filters=mailauth, directory=directory_switch, dns_lookups=dns_lookups,
    )
    admin.setServiceParent(top)
    # The manhole's listeners are bound first with the others (bind or exit 1).
    listeners.extend(Listener(reactor, description, factory)
                     for description, factory in admin.listening)
    web = WebService(config, admin.server, reactor, run_blocking, tls_options, listeners,
                     dns_lookups=dns_lookups)
    web.setServiceParent(top)
    # The [http] listeners too (TLS beyond loopback).
    listeners.extend(Listener(reactor, description, factory)
                     for description, factory in web.listening)
    def reopen_logs() -> None:
        activity.reopen()
        web.reopen()

    SignalService(reactor, admin.reload, reopen_logs).setServiceParent(top)
    group.setServiceParent(top)
    add_directory(top, config, directory_switch)
    top.directory = directory_switch
    top.inbound = inbound
    top.tlsrpt = tlsrpt[0] if tlsrpt else None
    top.qmgr = qmgr
    top.admin = admin
    top.web = web
    top.reload = admin.reload
    return top


def add_tlsrpt(top, config: Config, reactor, resolver, run_blocking, cleanup: Cleanup,
               relay: RelayManager) -> tuple:
    """
    With [tlsrpt] enabled: the store of TLS outcomes (C{mailroot/tlsrpt/})
    subscribed to the relay's outcomes, and the daily reports, queued
    through C{cleanup} and posted over verified HTTPS. Returns the
    reporter and the recorder (both read the config: reload replaces it),
    or nothing.
    """
    if not config.tlsrpt.enabled:
        return ()
    store = OutcomeStore(os.path.join(config.server.mailroot, "tlsrpt"), reactor, run_blocking)
    lookup = DNSLookup(resolver)
    reporter = TLSReporter(config, store, lookup, cleanup.submit, reactor,
                           agent=https_agent(reactor, lookup), reactor=reactor)
    recorder = TLSReportRecorder(store, config)
    relay.tls_outcomes.subscribe(recorder)
    reporter.setServiceParent(top)
    return reporter, recorder


def add_pop3(listeners: list[Listener], config: Config, reactor, users, check_passwords,
             run_blocking, tls_options, activity, throttle=None) -> POP3Server:
    """
    The POP3 service ([pop3] listen and pop3s): its listeners join
    C{listeners}, bound with the others. Password checks share the AUTH
    threads, mailbox scans the disk threads; [access] allow/deny apply as for
    SMTP, and failed logins count in SMTP AUTH's C{throttle}.
    """
    pop3 = POP3Server(config, users, reactor, check_passwords, run_blocking,
                      tls_options, activity, may_connect=may_connect, throttle=throttle)
    for endpoints, implicit_tls in ((config.pop3.listen, False), (config.pop3.pop3s, True)):
        for description in endpoints:
            listeners.append(Listener(reactor, description, pop3.factory(implicit_tls),
                                      config.access.proxy_from))
    return pop3


def add_pickup(top, config: Config, cleanup: Cleanup, reactor, run_blocking) -> PickupService:
    """The pickup folder watcher (SPEC 4), sending through C{cleanup}."""
    mailroot = config.server.mailroot
    sender = PickupSender(cleanup, os.path.join(mailroot, "badmail"), run_blocking)
    pickup = PickupService(os.path.join(mailroot, "pickup"), sender, reactor)
    pickup.setServiceParent(top)
    return pickup


def raise_file_limit() -> int:
    """
    Raise the soft limit on open files to the hard limit, so that as many
    sessions as the system allows fit in this process; returns the new limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit: the kernel's usual ceiling (fs.nr_open).
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as e:
        log.warn("Cannot raise the open files limit to {wanted}: {e}", wanted=wanted, e=e)
        return soft
    return wanted


def _quiet_startup_errors(hook=sys.excepthook):
    """
    A L{StartupError} raised while twistd starts the services (a listener that
    cannot bind, the mailroot locked) was logged as one line already: exit 1
    without a traceback. Anything else is shown as Python would.
    """

    def excepthook(kind, value, traceback):
        if isinstance(value, StartupError):
            return
        hook(kind, value, traceback)

    sys.excepthook = excepthook


def makeService(options: Options) -> service.IService:
    """twistd's entry point: the service tree for the validated configuration."""
    from twisted.internet import reactor

    config = options["parsed"]
    raise_file_limit()
    os.umask(UMASK)
    try:
        top = build(config, reactor)
    except (ManholeError, WebError) as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(1)
    except (tls.TLSError, UsersError, OSError) as e:
        print(f"{config.path}: cannot start: {e}", file=sys.stderr)
        raise SystemExit(1)
    # twistd --uid/--gid as root: what root made goes to that user before the switch.
    account = run_as(options)
    if account is not None:
        HandOver(config, *account).setServiceParent(top)
    _quiet_startup_errors()
    return top
