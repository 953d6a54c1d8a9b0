"""
A fuzz suite for the inbound session (hypothesis): random and mutated command
and data streams, cut into any segmentation, drive a real L{Inbound} with the
real queue on a temporary mailroot.

Whatever comes in: every reply line is a well-formed SMTP reply (three digits,
space or hyphen, text, CRLF) with an enhanced status code after EHLO; no
exception escapes (nothing is logged as an error); no file appears outside the
mailroot; the replies do not depend on how the stream was cut into segments;
and every accepted message is on disk byte for byte as sent, after
unstuffing, behind our Received header.

C{make test} runs a bounded number of examples; set C{SMTPD_FUZZ_EXAMPLES}
(for example 100000) for a long run.
"""

from __future__ import annotations

import base64
import os
import re
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from smtpd.directory.accounts import Users, hash_password
from smtpd.cleanup.stage import Cleanup
from smtpd.inbound.registry import Inbound
from smtpd.inbound.session import LISTEN
from smtpd.queue.store import Queue
from tests.inbound import make_config

EXAMPLES = int(os.environ.get("SMTPD_FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(
    max_examples=EXAMPLES or 60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=EXAMPLES is None,
    database=None if EXAMPLES is None else settings.default.database,
)

_REPLY_LINE = re.compile(rb"\A[2-5]\d\d[ -][^\r\n]*\Z")
_ENHANCED = re.compile(r"\A([245])\d\d[ -]([245])\.\d{1,3}\.\d{1,3}( |\Z)")
_QUEUED = re.compile(r"\A250 2\.0\.0 Ok: queued as ([0-9A-F]+)\Z")
_RECEIVED = re.compile(
    rb"\AReceived: from [^\r\n]+\r\n\tby localhost \(smtpd\) with E?SMTPS?A? id "
    rb"([0-9A-F]+)\r\n(\tfor <[^\r\n]+>;\r\n)?\t[^\r\n]+\r\n"
)


def run_now(f, *args, **kwargs):
    """Blocking work done at once: the session's Deferreds fire before dataReceived returns."""
    return defer.maybeDeferred(f, *args, **kwargs)


# ---------------------------------------------------------------- streams

SENDERS = [b"a@example.com", b"bob@localhost", b"", b"x@remote.example", b"Bob@ALIAS.test"]
RECIPIENTS = [
    b"postmaster@localhost",
    b"bob@localhost",
    b"nobody@localhost",
    b"x@remote.example",
    b"y@drop.test",
    b"z@alias.test",
]
WORDS = [b"MAIL", b"RCPT", b"DATA", b"AUTH", b"EHLO", b".", b"..", b"\r", b"\n", b"\r\n",
         b"\x00", b"\xff", b"<", b">", b":", b" ", b"=", b"*", b"FROM:", b"TO:"]

body_line = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
body_lines = st.lists(
    st.one_of(body_line, st.sampled_from([b".", b"..", b".x", b"", b"Received: x"])),
    max_size=12,
)


def stuffed(lines: list[bytes]) -> bytes:
    """The DATA stream for C{lines}: dot-stuffed, CRLF, then the end-of-data line."""
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


def plain(authzid: bytes, login: bytes, password: bytes) -> bytes:
    """An AUTH PLAIN initial response."""
    return base64.b64encode(authzid + b"\0" + login + b"\0" + password)


commands = st.one_of(
    st.sampled_from([
        b"EHLO client.example\r\n", b"HELO client.example\r\n", b"RSET\r\n", b"NOOP\r\n",
        b"VRFY bob\r\n", b"HELP\r\n", b"EXPN list\r\n", b"STARTTLS\r\n", b"DATA\r\n",
        b"AUTH LOGIN\r\n", b"AUTH PLAIN\r\n", b"AUTH CRAM-MD5\r\n", b"*\r\n", b"QUIT\r\n",
        b"BDAT 10 LAST\r\n", b"EHLO\r\n", b"MAIL FROM:<a@example.com> SIZE=99999999999\r\n",
        b"RCPT TO:<a@b> NOTIFY=NEVER ORCPT=rfc822;a@b\r\n", b"MAIL FROM:<a@example.com> BODY=8BITMIME RET=HDRS ENVID=x\r\n",
    ]),
    st.builds(lambda a: b"MAIL FROM:<" + a + b">\r\n", st.sampled_from(SENDERS)),
    st.builds(lambda a: b"RCPT TO:<" + a + b">\r\n", st.sampled_from(RECIPIENTS)),
    st.builds(lambda lines: b"DATA\r\n" + stuffed(lines), body_lines),
    st.builds(
        lambda z, l, p: b"AUTH PLAIN " + plain(z, l, p) + b"\r\n",
        st.sampled_from([b"", b"bob@localhost", b"ann@localhost"]),
        st.sampled_from([b"bob@localhost", b"BOB@localhost", b"eve@localhost"]),
        st.sampled_from([b"secret", b"wrong", b""]),
    ),
    st.builds(lambda s: base64.b64encode(s) + b"\r\n", st.sampled_from([b"bob@localhost", b"secret", b"x"])),
    st.builds(lambda n, c: b"NOOP " + c * n + b"\r\n", st.integers(400, 1100), st.sampled_from([b"x", b"\xc3\xa9"])),
    st.builds(lambda n: b"AUTH PLAIN " + b"A" * n + b"\r\n", st.integers(1000, 13000)),
    st.binary(max_size=80),
    st.lists(st.sampled_from(WORDS), max_size=8).map(b"".join),
)


@st.composite
def mutated(draw, stream: bytes) -> bytes:
    """C{stream} with a few bytes inserted, deleted or replaced."""
    data = bytearray(stream)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(st.one_of(st.binary(min_size=1, max_size=4), st.sampled_from(WORDS)))
        if action == "insert":
            data[at:at] = chunk
        elif action == "delete":
            del data[at : at + len(chunk)]
        else:
            data[at : at + len(chunk)] = chunk
    return bytes(data)


@st.composite
def segmented(draw, stream: bytes) -> list[bytes]:
    """C{stream} cut at random places (one octet at a time now and then)."""
    if stream and draw(st.integers(0, 9)) == 0:
        return [stream[i : i + 1] for i in range(len(stream))]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=30))))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:]) if b > a]


# ---------------------------------------------------------------- the harness


class Harness:
    """A fresh server (config, accounts, queue on disk) for one stream."""

    runs = 0  # streams run in this process (reported in the long mode)

    def __init__(self, root: str, users: Users):
        Harness.runs += 1
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(os.path.join(root, "mailroot", "queue"))
        self.config = make_config(
            root,
            auth={"allow_plaintext": True},
            access={"max_errors": 100, "auth_failures": 50, "auth_failure_delay": 0.0},
            messages={"max_message_size": 4096},
        )
        self.queue_dir = os.path.join(root, "mailroot", "queue")
        self.clock = Clock()
        queue = Queue(self.queue_dir, self.clock, run_now)
        cleanup = Cleanup(self.config, queue, self.clock, run_now)
        self.inbound = Inbound(self.config, users, cleanup, self.clock, run_now)

    def run(self, segments: list[bytes]) -> bytes:
        """Feed C{segments} to one session; everything it wrote back."""
        session = self.inbound.factory(LISTEN).buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 25),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        session.makeConnection(transport)
        for segment in segments:
            if transport.disconnecting:
                break
            session.dataReceived(segment)
        session.connectionLost(Failure(ConnectionDone()))
        return transport.value()

    def stored(self, queue_id: str) -> bytes:
        """The data file of queue entry C{queue_id}."""
        with open(os.path.join(self.queue_dir, queue_id + ".eml"), "rb") as f:
            return f.read()


def replies(output: bytes) -> list[list[bytes]]:
    """The replies in C{output}, each a list of lines; fails on a line without CRLF."""
    assert output.endswith(b"\r\n") or not output, output[-100:]
    result, current = [], []
    for line in output.split(b"\r\n")[:-1]:
        current.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            result.append(current)
            current = []
    assert not current, current
    return result


def files_outside(root: str) -> set[str]:
    """Every file below C{root} but not below its mailroot."""
    found = set()
    for folder, dirs, names in os.walk(root):
        if os.path.relpath(folder, root).split(os.sep)[0] == "mailroot":
            continue
        found.update(os.path.join(folder, n) for n in names)
    return found


class FuzzTests(unittest.TestCase):
    """Random and mutated streams in any segmentation."""

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.users = Users({"bob@localhost": hash_password("secret", 4)})
        if EXAMPLES:
            started = Harness.runs
            self.addCleanup(
                lambda: print(f"\n{self.id()}: {Harness.runs - started} streams run")
            )

    def check_replies(self, output: bytes) -> list[str]:
        """Every line well formed, enhanced codes after EHLO; the replies as text."""
        texts, ehlo_seen = [], False
        for reply in replies(output):
            for line in reply:
                self.assertRegex(line, _REPLY_LINE)
                self.assertEqual(line[:3], reply[0][:3], reply)
            first = reply[0].decode("utf-8")
            is_greeting = first.startswith("250-localhost") or first == "250 localhost"
            if ehlo_seen and not is_greeting and first[0] in "245":
                self.assertRegex(first, _ENHANCED)
                self.assertEqual(first[0], _ENHANCED.match(first).group(2))
            ehlo_seen = ehlo_seen or first.startswith("250-localhost")
            texts.append("\n".join(l.decode("utf-8") for l in reply))
        return texts

    def exchange(self, name: str, segments: list[bytes]) -> tuple[Harness, list[str]]:
        """Run C{segments} on a fresh server; check what every stream must satisfy."""
        root = os.path.join(self.base, name)
        harness = Harness(root, self.users)
        before = files_outside(root) | set(os.listdir("."))
        output = harness.run(segments)
        self.assertEqual(self.flushLoggedErrors(), [])
        texts = self.check_replies(output)
        self.assertEqual(files_outside(root) | set(os.listdir(".")), before)
        for text in texts:
            queued = _QUEUED.match(text)
            if queued:
                stored = harness.stored(queued.group(1))
                self.assertRegex(stored, _RECEIVED)
                self.assertTrue(stored.endswith(b"\r\n"), stored[-50:])
                self.assertNotRegex(stored, rb"\r(?!\n)|(?<!\r)\n")
        return harness, texts

    def same_replies(self, stream: bytes, segments: list[bytes]) -> list[str]:
        """The replies to C{stream} in one piece and cut into C{segments} are the same."""
        _, whole = self.exchange("whole", [stream])
        _, cut = self.exchange("cut", segments)
        ids = re.compile(r"queued as [0-9A-F]+")
        self.assertEqual([ids.sub("queued", t) for t in cut], [ids.sub("queued", t) for t in whole])
        return cut

    @FUZZ
    @given(st.data())
    def test_random_streams(self, data):
        """Random command sequences, mutated, in any segmentation: invariants hold."""
        items = data.draw(st.lists(commands, max_size=25))
        stream = data.draw(mutated(b"".join(items)))
        self.same_replies(stream, data.draw(segmented(stream)))

    @FUZZ
    @given(st.data())
    def test_accepted_messages_byte_exact(self, data):
        """Valid transactions with any message lines: each stored exactly as sent, unstuffed."""
        messages = data.draw(st.lists(body_lines, min_size=1, max_size=4))
        sender = data.draw(st.sampled_from([b"a@example.com", b""]))
        stream = b"EHLO client.example\r\n"
        for lines in messages:
            stream += (b"MAIL FROM:<" + sender + b">\r\nRCPT TO:<postmaster@localhost>\r\n"
                       b"DATA\r\n" + stuffed(lines))
        stream += b"QUIT\r\n"
        texts = self.same_replies(stream, data.draw(segmented(stream)))
        harness, texts = self.exchange("exact", data.draw(segmented(stream)))
        queued = [m.group(1) for m in map(_QUEUED.match, texts) if m]
        self.assertEqual(len(queued), len(messages), texts)
        for queue_id, lines in zip(queued, messages):
            stored = harness.stored(queue_id)
            header = _RECEIVED.match(stored)
            self.assertEqual(header.group(1).decode(), queue_id)
            self.assertEqual(stored[header.end():], b"".join(l + b"\r\n" for l in lines))
