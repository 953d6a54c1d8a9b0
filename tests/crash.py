"""
The crash matrix's world: a real C{twistd -n smtpd} with local, alias, drop
and remote (a recording sink on 127.0.0.2) destinations, clients that send
messages with unique Message-IDs, and the audit of the mailroot afterwards.
"""

from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass, field

import bcrypt
from twisted.internet import defer, reactor

from tests.inbound import connect
from tests.support import SinkScript, start_smtp_sink
from tests.test_tap import Process, spawn

USERS = ("alice@localhost", "bob@localhost")
BIG = 200 * 1024  # past the spool's memory threshold: DATA spills to a file
# A copy repeated at the sink must follow the server's death this soon after
# the peer's 250 of the earlier copy (the window is milliseconds; the bound is
# generous for a loaded machine, where the death is noticed late).
REPEAT_BOUND = 3.0


@dataclass
class Sent:
    """One message a client sent, and whether the server answered 250."""

    message_id: str
    sender: str
    recipients: list[str]
    accepted: bool = False


@dataclass
class Tally:
    """What the audit found."""

    accepted: int = 0
    delivered: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    remote_duplicates: list[str] = field(default_factory=list)
    repeats_outside_window: list[str] = field(default_factory=list)
    repeat_gaps: list[float] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


class World:
    """
    A deployment and its sink. C{rng} picks the mixes of recipients, so a
    seed makes a run reproducible.
    """

    def __init__(self, testcase, rng: random.Random):
        self.testcase = testcase
        self.rng = rng
        self.sink = start_smtp_sink(testcase, "127.0.0.2", script=SinkScript(
            rcpt={"reject@remote.test": "550 5.1.1 no such user"}))
        root = os.path.abspath(testcase.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        self.mailroot = os.path.join(root, "mailroot")
        self.config = os.path.join(root, "etc", "smtpd.ini")
        with open(self.config, "w") as f:
            f.write(
                "[server]\nhostname = mx.test\nlisten = tcp:0:interface=127.0.0.1\n"
                f"[delivery]\nsmart_host = [127.0.0.2]:{self.sink.port}\n"
                "outbound_tls = none\noutbound_timeout = 10s\n"
                "[logging]\nformat = json\n"
                "[domain:localhost]\ntype = local\n"
                "[domain:alias.test]\ntype = alias\nalias_of = localhost\n"
                "[domain:drop.test]\ntype = drop\n"
            )
        hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
        with open(os.path.join(root, "etc", "users"), "w") as f:
            f.writelines(f"{u}:{hashed}\n" for u in USERS)
        self.sent: list[Sent] = []
        self.counter = 0
        # When each server process was seen to end (time.monotonic()).
        self.deaths: list[float] = []

    async def start(self, fault: str = "") -> tuple[Process, int]:
        """Start the server (armed with kill point C{fault}); it and its port."""
        env = {"SMTPD_FAULT": fault} if fault else {}
        process = spawn(self.testcase, [
            "twistd", "-n", "--pidfile=", "--logfile=-", "smtpd", "--config", self.config,
        ], env)
        process.ended.addBoth(self._died)
        match = await process.wait_for(rb"Listening on \S+ \(127\.0\.0\.1:(\d+)\)")
        return process, int(match.group(1))

    def _died(self, result):
        self.deaths.append(time.monotonic())
        return result

    def mix(self) -> tuple[str, list[str], int]:
        """A random sender, recipients and size."""
        kinds = [["alice@localhost", "bob@localhost", "r1@remote.test"],
                 ["alice@alias.test"], ["x@drop.test"], ["r2@remote.test"],
                 ["bob@localhost"], ["alice@localhost", "x@drop.test"]]
        recipients = self.rng.choice(kinds)
        sender = "sender@client.test"
        if self.rng.random() < 0.15:
            sender, recipients = "alice@localhost", ["reject@remote.test"]
        size = BIG if self.rng.random() < 0.15 else 300
        return sender, recipients, size

    async def send(self, port: int, sender: str, recipients: list[str], size: int) -> Sent:
        """One message over a new connection; stops quietly when the server dies."""
        self.counter += 1
        sent = Sent(f"<crash.{self.counter}.{self.rng.randrange(1 << 30)}@client.test>",
                    sender, recipients)
        self.sent.append(sent)
        try:
            client = await connect(self.testcase, port)
        except Exception:
            return sent
        await client.wait(1)
        lines = [b"EHLO c.test\r\n", f"MAIL FROM:<{sender}>\r\n".encode()]
        lines += [f"RCPT TO:<{r}>\r\n".encode() for r in recipients] + [b"DATA\r\n"]
        for line in lines:
            await _command(client, line)
        body = (f"Message-ID: {sent.message_id}\r\nSubject: crash\r\n\r\n".encode()
                + b"x" * 76 + b"\r\n") * max(1, size // 78)
        reply = await _command(client, body.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                                     + body.split(b"\r\n\r\n", 1)[1] + b".\r\n")
        sent.accepted = reply.startswith("250 2.0.0")
        if not client.closed:
            client.transport.loseConnection()
        return sent

    async def settle(self, timeout: float = 20.0) -> None:
        """Wait until the queue holds no entry (everything delivered or bounced)."""
        queue = os.path.join(self.mailroot, "queue")
        for _ in range(int(timeout / 0.05)):
            if not [n for n in _names(queue) if n.endswith(".json")]:
                return
            await sleep(0.05)
        raise AssertionError(f"queue not empty: {_names(queue)}")

    def audit(self) -> Tally:
        """
        Count every message's copies: 250 means exactly one copy per local
        mailbox (and drop file), at least one at the sink; more than one at the
        sink is recorded as a remote duplicate (allowed only for the window
        between the peer's 250 and the envelope update).
        """
        tally = Tally()
        copies = self._local_copies()
        remote: dict[tuple[str, str], list[float]] = {}
        for m in self.sink.messages:
            mid = _message_id(m.data)
            for r in m.recipients:
                remote.setdefault((mid, r), []).append(m.received_at)
        for sent in self.sent:
            tally.accepted += sent.accepted
            counts = []
            for r in sent.recipients:
                if r.endswith("@remote.test"):
                    if r == "reject@remote.test":
                        n = copies.get((sent.message_id, "ndr:alice@localhost"), 0)
                    else:
                        times = remote.get((sent.message_id, r), [])
                        n = min(1, len(times))
                        if len(times) > 1:
                            tally.remote_duplicates.append(f"{sent.message_id} {r}")
                            self._check_repeats(tally, f"{sent.message_id} {r}", times)
                else:
                    n = copies.get((sent.message_id, _mailbox(r)), 0)
                counts.append(n)
            if any(n > 1 for n in counts):
                tally.duplicated.append(sent.message_id)
            if sent.accepted and not all(counts):
                tally.lost.append(f"{sent.message_id} {sent.recipients} {counts}")
            elif sent.accepted:
                tally.delivered += 1
        tally.leftovers = leftovers(self.mailroot)
        return tally

    def _check_repeats(self, tally: Tally, what: str, times: list[float]) -> None:
        """
        A copy repeated at the sink is allowed only when the server died
        between the peer's 250 of the earlier copy and the next copy (the
        window between the 250 and the envelope update): note how long after
        the 250 it died, or that it did not.
        """
        for earlier, later in zip(times, times[1:]):
            deaths = [d for d in self.deaths if earlier <= d <= later]
            if deaths and deaths[0] - earlier <= REPEAT_BOUND:
                tally.repeat_gaps.append(deaths[0] - earlier)
            else:
                tally.repeats_outside_window.append(
                    f"{what}: copy at {earlier:.3f} repeated at {later:.3f} with no death "
                    f"within {REPEAT_BOUND} s of the first copy (deaths: "
                    f"{[round(d, 3) for d in self.deaths if earlier <= d <= later]})")

    def _local_copies(self) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        for user in USERS:
            local, domain = user.split("@")
            for sub in ("new", "cur"):
                folder = os.path.join(self.mailroot, "mailbox", domain, local, sub)
                for name in _names(folder):
                    data = _read(os.path.join(folder, name))
                    ndr = data.startswith(b"Return-Path: <>")
                    for mid in _message_ids(data) if ndr else [_message_id(data)]:
                        key = (mid, ("ndr:" if ndr else "") + user)
                        found[key] = found.get(key, 0) + 1
        drop = os.path.join(self.mailroot, "drop")
        for name in _names(drop):
            if name.startswith("."):
                continue  # a temporary file (counted by leftovers)
            key = (_message_id(_read(os.path.join(drop, name))), "drop")
            found[key] = found.get(key, 0) + 1
        return found


async def _command(client, data: bytes) -> str:
    """Send C{data}; its reply, or C{""} when the connection closed first."""
    n = len(client.replies) + 1
    if not client.closed:
        client.send(data)
    replies = await client.wait(n)
    return replies[-1] if len(replies) >= n else ""


def _mailbox(recipient: str) -> str:
    if recipient.endswith("@drop.test"):
        return "drop"
    return recipient.split("@")[0] + "@localhost"


def leftovers(mailroot: str) -> list[str]:
    """Temporary files anywhere in the mailroot, and files in Maildir tmp/ folders."""
    found = []
    for folder, _, files in os.walk(mailroot):
        for name in files:
            if name.endswith(".tmp") or os.path.basename(folder) == "tmp":
                found.append(os.path.join(folder, name))
    return found


def _message_id(data: bytes) -> str:
    match = re.search(rb"^Message-ID: (<[^>]*>)", data, re.M | re.I)
    return match.group(1).decode() if match else ""


def _message_ids(data: bytes) -> list[str]:
    return sorted({m.decode() for m in re.findall(rb"Message-ID: (<crash[^>]*>)", data, re.I)})


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def sleep(seconds: float) -> defer.Deferred:
    """A Deferred firing after C{seconds} of real time."""
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
