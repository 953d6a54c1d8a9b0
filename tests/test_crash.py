"""
The crash matrix: a real C{twistd -n smtpd} is killed with SIGKILL at each
named kill point (L{smtpd.util.faults}) while clients send mail to local,
alias, drop and remote recipients; it is restarted without the fault, and
every message that got a 250 must be delivered exactly once to each Maildir
and drop folder, at least once to the remote peer (more only for the window
between the peer's 250 and the envelope update), and no temporary file stays.

C{SMTPD_CRASH_LONG=N} (and C{SMTPD_CRASH_SEED}) adds a long run of N kills at
random points and random times; see the README.
"""

from __future__ import annotations

import os
import random
import time
from types import SimpleNamespace

from twisted.python import log
from twisted.trial import unittest

from smtpd.util.faults import POINTS
from tests.crash import REPEAT_BOUND, Tally, World, sleep

SEED = int(os.environ.get("SMTPD_CRASH_SEED", "1201"))
LONG = int(os.environ.get("SMTPD_CRASH_LONG", "0") or 0)
# Kill points inside a delivery attempt: a peer's 250 may already be in, the
# envelope not yet updated (the at-least-once window toward remote peers).
IN_ATTEMPT = ("maildir", "delivered", "bounced")
# Sent before and after the armed point, in order, so every point is passed.
PLAN = [
    ("sender@client.test", ["alice@localhost", "bob@localhost", "r1@remote.test"], 300),
    ("sender@client.test", ["alice@alias.test"], 300),
    ("sender@client.test", ["x@drop.test"], 300),
    ("alice@localhost", ["reject@remote.test"], 300),
    ("sender@client.test", ["bob@localhost"], 200 * 1024),
    ("sender@client.test", ["r2@remote.test", "alice@localhost"], 300),
]


class CrashMatrixTests(unittest.TestCase):
    """Each kill point once, then the audit."""

    timeout = 120

    async def crash_at(self, point: str):
        world = World(self, random.Random(f"{SEED}/{point}"))
        process, port = await world.start(f"{point}:1")
        for sender, recipients, size in PLAN:
            if process.ended.called:
                break
            await world.send(port, sender, recipients, size)
            await sleep(0.05)
        for _ in range(100):
            if process.ended.called:
                break
            await sleep(0.05)
        self.assertTrue(process.ended.called, f"kill point {point} never reached")
        self.assertIn(f"fault point {point} reached".encode(), process.output)
        self.assertEqual(process.signal, 9)
        process, port = await world.start()
        for sender, recipients, size in PLAN[:2]:
            await world.send(port, sender, recipients, size)
        await world.settle()
        tally = world.audit()
        self.assertEqual(tally.lost, [], process.output.decode(errors="replace")[-3000:])
        self.assertEqual(tally.duplicated, [])
        if point not in IN_ATTEMPT:
            self.assertEqual(tally.remote_duplicates, [])
        self.assertEqual(tally.repeats_outside_window, [])
        self.assertEqual(tally.leftovers, [])
        self.assertGreaterEqual(tally.accepted, 2)
        return tally

    async def test_spool(self):
        """Killed during DATA with the spool file partly written: nothing lost or left."""
        await self.crash_at("spool")

    async def test_store_data(self):
        """Killed between the queue data file and its envelope: the half entry is cleaned."""
        await self.crash_at("store-data")

    async def test_stored(self):
        """Killed between the durable queue write and the 250: delivered once after restart."""
        await self.crash_at("stored")

    async def test_maildir(self):
        """Killed after the first Maildir copy of a multi-recipient message: one copy each."""
        await self.crash_at("maildir")

    async def test_delivered(self):
        """
        Killed after the peer's 250, before the envelope update: local copies
        stay single; the remote copy may repeat (the window), nothing is lost.
        """
        await self.crash_at("delivered")

    async def test_bounced(self):
        """Killed after the NDR is durable, before the original is removed: one NDR."""
        await self.crash_at("bounced")

    def test_points_named(self):
        """Every kill point the server knows has a test here."""
        names = {n[len("test_"):].replace("_", "-") for n in dir(self) if n.startswith("test_")}
        self.assertLessEqual(set(POINTS), names)


class RepeatAuditTests(unittest.TestCase):
    """The audit allows a repeat at the sink only right after a death."""

    def test_repeat_needs_a_death_in_the_window(self):
        """
        A second copy is in the window when the server died within the bound
        after the first copy's 250 and before the second; otherwise (no death,
        or a death long after the 250) it is reported.
        """
        world = SimpleNamespace(deaths=[10.2, 50.0])
        tally = Tally()
        World._check_repeats(world, tally, "in", [10.0, 11.0])
        self.assertEqual(tally.repeats_outside_window, [])
        self.assertAlmostEqual(tally.repeat_gaps[0], 0.2)
        World._check_repeats(world, tally, "none", [20.0, 21.0])
        World._check_repeats(world, tally, "late", [40.0, 51.0])
        self.assertEqual([r.split(":")[0] for r in tally.repeats_outside_window],
                         ["none", "late"])
        self.assertGreater(50.0 - 40.0, REPEAT_BOUND)


class WindowTests(unittest.TestCase):
    """The at-least-once window toward a remote peer, measured."""

    timeout = 60

    async def test_window(self):
        """
        From the peer's 250 at the end of DATA to the queue entry's envelope
        being gone (removed, durably) is short: measured over 10 messages,
        each under a second; the figures go to the test log.
        """
        world = World(self, random.Random(SEED))
        process, port = await world.start()
        queue = os.path.join(world.mailroot, "queue")
        windows = []
        for _ in range(10):
            before = len(world.sink.messages)
            await world.send(port, "sender@client.test", ["r2@remote.test"], 300)
            while len(world.sink.messages) == before:
                await sleep(0.0005)
            answered = time.monotonic()
            while any(n.endswith(".json") for n in os.listdir(queue)):
                await sleep(0.0005)
            windows.append(time.monotonic() - answered)
        windows.sort()
        log.msg(f"window peer 250 -> envelope removed: median {windows[5] * 1000:.1f} ms, "
              f"max {windows[-1] * 1000:.1f} ms")
        self.assertLess(windows[-1], 1.0)


class LongCrashTests(unittest.TestCase):
    """
    The long mode: C{SMTPD_CRASH_LONG=N} kills, each at a random kill point
    (and a random passage of it) or at a random time, with random mixes of
    recipients, seeded by C{SMTPD_CRASH_SEED}; one audit at the end.
    """

    timeout = 60 * 60

    async def test_long(self):
        """N kills: nothing that got a 250 is lost, no Maildir copy repeats, no temp file."""
        if not LONG:
            raise unittest.SkipTest("long mode: set SMTPD_CRASH_LONG=N (see the README)")
        rng = random.Random(SEED)
        world = World(self, rng)
        kills = 0
        while kills < LONG:
            timed = rng.random() < 0.3
            fault = "" if timed else f"{rng.choice(POINTS)}:{rng.randint(1, 3)}"
            process, port = await world.start(fault)
            deadline = time.monotonic() + rng.uniform(0.05, 1.5)
            for _ in range(12):
                if process.ended.called or (timed and time.monotonic() > deadline):
                    break
                await world.send(port, *world.mix())
            if not process.ended.called:
                if not timed:
                    await sleep(0.3)  # a point may still be reached by an attempt
                if not process.ended.called:
                    process.transport.signalProcess("KILL")
            await process.ended
            kills += 1
        process, port = await world.start()
        await world.settle(60.0)
        tally = world.audit()
        gaps = sorted(tally.repeat_gaps)
        log.msg(f"crash long mode seed {SEED}: kills {kills}, accepted {tally.accepted}, "
                f"delivered {tally.delivered}, lost {len(tally.lost)}, duplicated "
                f"{len(tally.duplicated)}, remote repeats {len(tally.remote_duplicates)} "
                f"(death after the peer's 250: max {max(gaps, default=0) * 1000:.0f} ms), "
                f"repeats outside the window {len(tally.repeats_outside_window)}, "
                f"sent {len(world.sent)}, temporary files {len(tally.leftovers)}")
        self.assertEqual(tally.lost, [])
        self.assertEqual(tally.duplicated, [])
        self.assertEqual(tally.repeats_outside_window, [])
        self.assertEqual(tally.leftovers, [])
