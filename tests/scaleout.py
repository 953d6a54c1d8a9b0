"""
The world of the scale-out test: a private Postfix that resolves names
through a test DNS server (a mount namespace of its own, where
/etc/resolv.conf names that server), smtpd nodes as real twistd processes on
loopback addresses of their own, and the tally of Postfix's log against the
messages in Dovecot.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field

from tests.engines import find_engine
from tests.postfix import PostfixInstance
from tests.slapd import SUFFIX
from tests.test_tap import Process, spawn

# Postfix's log: which queue id carries which Message-ID, and each delivery.
CLEANUP = re.compile(r"postfix/cleanup\[\d+\]: (\w+): message-id=<([^>]+)>")
# Postfix's own words for the RFC 1047 window: the data went out, the reply never came.
IN_DOUBT = re.compile(r"postfix/smtp\[\d+\]: (\w+): lost connection with .* -- "
                      r"message may be sent more than once")
DELIVERY = re.compile(r"postfix/smtp\[\d+\]: (\w+): to=<[^>]+>, relay=([^\[,]+)\[[^\]]*\]:\d+"
                      r".*? status=(\w+) \((.*)\)$")


MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]+)>", re.MULTILINE | re.IGNORECASE)


class NamespacedPostfix(PostfixInstance):
    """
    A L{PostfixInstance} started in a mount namespace of its own, where
    C{resolv_conf} is bind-mounted over /etc/resolv.conf: every process of
    the instance (the master and the smtp clients it forks) resolves through
    the nameserver that file names, and nothing else on the machine does.
    Postfix's SMTP client uses the system resolver (res_search), which reads
    only /etc/resolv.conf and always asks port 53.
    """

    def __init__(self, folder: str, resolv_conf: str, **options) -> None:
        super().__init__(folder, **options)
        self.resolv_conf = resolv_conf

    def command(self, program: str, *args: str, timeout: float = 30,
                stdin: bytes | None = None) -> subprocess.CompletedProcess:
        """C{postfix start} runs inside the namespace; other commands as usual."""
        if program != "postfix" or args != ("start",):
            return super().command(program, *args, timeout=timeout, stdin=stdin)
        script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
        return subprocess.run(
            [find_engine("unshare"), "--mount", "--propagation", "private", "sh", "-c", script,
             "sh", self.resolv_conf, find_engine("postfix"), "-c", self.config_directory,
             "start"],
            capture_output=True, timeout=timeout, text=True)


def namespaced_postfix(case, dns_address: str, **options) -> NamespacedPostfix:
    """A started L{NamespacedPostfix} whose resolver is C{dns_address}:53; stopped at cleanup."""
    folder = tempfile.mkdtemp(prefix="postfix-")
    case.addCleanup(shutil.rmtree, folder, True)
    resolv_conf = os.path.join(folder, "resolv.conf")
    with open(resolv_conf, "w") as f:
        f.write(f"nameserver {dns_address}\noptions timeout:1 attempts:2\n")
    instance = NamespacedPostfix(folder, resolv_conf, **options)
    case.addCleanup(instance.stop)
    instance.start()
    return instance


def private_loopback(rng: random.Random) -> str:
    """A random address in 127.0.0.0/8 that no one else is likely to use (not .0 or .255)."""
    return f"127.{rng.randrange(40, 250)}.{rng.randrange(1, 250)}.{rng.randrange(1, 250)}"


def common_free_port(addresses: list[str]) -> int:
    """A TCP port free on every one of C{addresses} a moment ago."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            try:
                for address in addresses[1:]:
                    with socket.socket() as other:
                        other.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free on all of {addresses}")


NODE_INI = """\
[server]
hostname = {name}
listen = tcp:{port}:interface={address}
[delivery]
retry = 2s
[directory]
url = {ldap}
base = {suffix}
bind_dn = cn=smtpd,ou=services,{suffix}
bind_password = service-secret
[logging]
path = activity.log
format = json
[domain:example.com]
type = lmtp
lmtp = tcp:127.0.0.1:{lmtp}
"""


@dataclass
class Node:
    """One smtpd node: its name, address, deployment root and running process."""

    name: str
    address: str
    port: int
    root: str
    process: Process | None = None

    @property
    def config(self) -> str:
        """Its etc/smtpd.ini."""
        return os.path.join(self.root, "etc", "smtpd.ini")

    @property
    def queue(self) -> str:
        """Its queue folder."""
        return os.path.join(self.root, "mailroot", "queue")

    def queued(self) -> int:
        """How many messages its queue holds."""
        try:
            return sum(1 for name in os.listdir(self.queue) if name.endswith(".json"))
        except FileNotFoundError:
            return 0

    def queued_message_ids(self) -> set[str]:
        """The Message-IDs of the messages its queue holds (entries with an envelope)."""
        found = set()
        for name in os.listdir(self.queue):
            stem, ext = os.path.splitext(name)
            if ext != ".json" or not os.path.exists(os.path.join(self.queue, stem + ".eml")):
                continue
            with open(os.path.join(self.queue, stem + ".eml"), "rb") as f:
                message_id = MESSAGE_ID.search(f.read())
            if message_id:
                found.add(message_id[1].decode())
        return found

    async def start(self, case) -> None:
        """Run C{twistd -n smtpd} on its config until it listens."""
        self.process = spawn(case, ["twistd", "-n", "--pidfile=", "--logfile=-", "smtpd",
                                    "--config", self.config])
        await self.process.wait_for(rb"Listening on \S+ \(" + self.address.encode() + rb":")

    def kill(self) -> None:
        """SIGKILL the process."""
        self.process.transport.signalProcess("KILL")


def make_node(case, name: str, address: str, port: int, ldap: str, lmtp: int) -> Node:
    """A node deployment (its own root and mailroot) for the shared directory and store."""
    root = os.path.abspath(case.mktemp())
    os.makedirs(os.path.join(root, "etc"))
    node = Node(name, address, port, root)
    with open(node.config, "w") as f:
        f.write(NODE_INI.format(name=name, port=port, address=address, ldap=ldap,
                                suffix=SUFFIX, lmtp=lmtp))
    return node


@dataclass
class Tally:
    """What Postfix says it did, and what Dovecot holds, per Message-ID."""

    sent: int = 0
    accepted_by: dict[str, int] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    in_doubt: set[str] = field(default_factory=set)
    delivered: dict[str, int] = field(default_factory=dict)
    unfinished: set[str] = field(default_factory=set)

    @property
    def lost(self) -> list[str]:
        """Message-IDs that got a 250 and never reached the store."""
        return sorted(m for m in self.accepted if m not in self.delivered)

    @property
    def unexplained_duplicates(self) -> list[str]:
        """
        Duplicates outside the two windows no SMTP or LMTP hop can close
        (RFC 1047): Postfix logged it as possibly sent twice (the node died
        after the data, before its 250), or it was still in the killed node's
        queue (the store took it, the node died before recording that).
        """
        return [m for m in self.duplicates if m not in self.in_doubt | self.unfinished]

    @property
    def duplicates(self) -> list[str]:
        """Message-IDs stored more than once."""
        return sorted(m for m, n in self.delivered.items() if n > 1)


def tally(postfix_log: str, stored: list[bytes], sent: int) -> Tally:
    """
    Read Postfix's log (the 250s each node gave, the deliveries it could not
    be sure of) and count each Message-ID in the store.
    """
    result = Tally(sent=sent)
    ids: dict[str, str] = {}
    for line in postfix_log.splitlines():
        if found := CLEANUP.search(line):
            ids[found[1]] = found[2]
        elif found := IN_DOUBT.search(line):
            result.in_doubt.add(ids.get(found[1], found[1]))
        elif found := DELIVERY.search(line):
            queue_id, relay, status, reply = found.groups()
            message_id = ids.get(queue_id, queue_id)
            if status == "sent" and reply.startswith("250"):
                result.accepted.add(message_id)
                result.accepted_by[relay] = result.accepted_by.get(relay, 0) + 1
            elif "may be sent more than once" in reply:
                result.in_doubt.add(message_id)
    for data in stored:
        found = MESSAGE_ID.search(data)
        if found:
            key = found[1].decode()
            result.delivered[key] = result.delivered.get(key, 0) + 1
    return result
