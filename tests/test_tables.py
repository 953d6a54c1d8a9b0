"""What smtpctl prints: sizes, ages, aligned columns, no terminal escapes."""

from twisted.trial import unittest

from smtpd.admin import tables

NOW = 1_800_000_000.0


def entry(**kw) -> dict:
    base = {"id": "ABC123", "sender": "a@example.com", "state": "deferred", "attempts": 2,
            "next_attempt": NOW + 900, "arrival": NOW - 7200, "size": 4096,
            "recipients": [{"address": "b@remote.example", "state": "pending",
                            "last_reply": "451 4.4.1 connection refused"}]}
    base.update(kw)
    return base


class TablesTests(unittest.TestCase):
    """The formatting helpers."""

    def test_human_size(self):
        """Octets in B, K, M, G with at most one decimal under ten."""
        self.assertEqual([tables.human_size(n) for n in (0, 512, 1536, 40960, 5 << 20, 3 << 30)],
                         ["0B", "512B", "1.5K", "40K", "5.0M", "3.0G"])

    def test_human_age(self):
        """Durations in their largest whole unit."""
        self.assertEqual([tables.human_age(s) for s in (-3, 45, 61, 7200, 3 * 86400 + 5)],
                         ["0s", "45s", "1m", "2h", "3d"])

    def test_queue_table(self):
        """One aligned row per message, its recipients below, a total line."""
        lines = tables.queue_table([entry(), entry(id="LONGERID99", state="held",
                                                   sender="", size=100)], NOW)
        self.assertEqual(lines[0].split(), ["ID", "SIZE", "AGE", "STATE", "TRIES", "NEXT",
                                            "SENDER"])
        self.assertEqual(lines[1].split(), ["ABC123", "4.0K", "2h", "deferred", "2", "in",
                                            "15m", "<a@example.com>"])
        self.assertEqual(lines[3].split()[-2:], ["held", "<>"])
        self.assertEqual(lines[1].index("4.0K"), lines[3].index("100B"))
        self.assertEqual(lines[2], "    b@remote.example  pending  (451 4.4.1 connection refused)")
        self.assertEqual(lines[-1], "-- 4.1K in 2 messages")

    def test_escapes_removed(self):
        """Network text cannot move the terminal's cursor."""
        bad = entry(sender="x\x1b[2J@example.com")
        bad["recipients"][0]["last_reply"] = "550 \x1b]0;owned\x07"
        text = "\n".join(tables.queue_table([bad], NOW) + tables.show_lines(bad, NOW))
        self.assertNotIn("\x1b", text)
        self.assertNotIn("\x07", text)

    def test_reload_lines(self):
        """A reload report: what changed, what waits for a restart, or the errors."""
        self.assertEqual(tables.reload_lines({"ok": True, "changed": [], "at_restart":
                                              ["server.listen"], "accounts": 3}),
                         ["reloaded: nothing changed",
                          "changed but applied only at restart: server.listen", "accounts: 3"])
        self.assertEqual(tables.reload_lines({"ok": True, "changed": ["checks.spf"],
                                              "accounts": 0, "filters": ["auth-results"]}),
                         ["reloaded: checks.spf", "accounts: 0",
                          "mail authentication filters: auth-results"])
        self.assertEqual(tables.reload_lines({"ok": False, "errors": ["x: bad"]}),
                         ["reload refused, nothing changed:", "x: bad"])
