# -*- test-case-name: tests.test_layers -*-
"""
The package's layering (STYLE: data flows one way), checked by import-linter
against the contract in C{.importlinter} at the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LayersTests(unittest.TestCase):
    """The import contract."""

    def test_contract_kept(self):
        """
        No lower layer imports a higher one: delivery and queue never import
        inbound, nothing imports the assembly (tap), util and mail import no
        other part.
        """
        lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
        result = subprocess.run(
            [lint, "--config", os.path.join(ROOT, ".importlinter"), "--no-cache"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("1 kept, 0 broken", result.stdout)
