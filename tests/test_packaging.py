# -*- test-case-name: tests.test_packaging -*-
"""
The package as a user installs it: a wheel built from the checkout, installed
into a fresh virtual environment, gives a working C{twistd smtpd} (the dropin
is in the wheel) and C{smtpctl}.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args: list[str], cwd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command; its output as text."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


class WheelTests(unittest.TestCase):
    """pip install . into a fresh venv."""

    timeout = 600

    def test_wheel_in_fresh_venv(self):
        """
        The wheel holds the twistd dropin; installed (with its dependencies)
        into a new venv, `twistd smtpd --help` and `smtpctl --help` work from an
        unrelated directory.
        """
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work, ROOT],
                    cwd=work)
        self.assertEqual(built.returncode, 0, built.stderr)
        [wheel] = glob.glob(os.path.join(work, "smtpd-*.whl"))
        venv = os.path.join(work, "venv")
        base = getattr(sys, "_base_executable", sys.executable)
        made = run([base, "-m", "venv", venv], cwd=work)
        self.assertEqual(made.returncode, 0, made.stderr)
        installed = run([os.path.join(venv, "bin", "pip"), "install", "-q", wheel], cwd=work)
        self.assertEqual(installed.returncode, 0, installed.stderr)
        twistd = run([os.path.join(venv, "bin", "twistd"), "smtpd", "--help"], cwd=work)
        self.assertEqual(twistd.returncode, 0, twistd.stderr)
        self.assertIn("--config", twistd.stdout)
        smtpctl = run([os.path.join(venv, "bin", "smtpctl"), "--help"], cwd=work)
        self.assertEqual(smtpctl.returncode, 0, smtpctl.stderr)
        self.assertIn("check", smtpctl.stdout)
