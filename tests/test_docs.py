# -*- test-case-name: tests.test_docs -*-
"""The documentation that is generated stays generated: no drift from the schema."""

from __future__ import annotations

import os

from twisted.trial import unittest

from smtpd.config.reference import render, shipped_entries
from smtpd.config.schema import SCHEMA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ReferenceTests(unittest.TestCase):
    """docs/configuration.md."""

    def test_reference_is_current(self):
        """The committed reference is what `make docs` generates now."""
        with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
            committed = f.read()
        self.assertEqual(committed, render(), "run `make docs` and commit docs/configuration.md")

    def test_every_key_described(self):
        """Every key of the schema has a default and a description in the shipped file."""
        entries = shipped_entries()
        for section, (_, keys) in SCHEMA.items():
            for name in keys:
                self.assertIn((section, name), entries, f"[{section}] {name}")
                self.assertTrue(entries[(section, name)][1], f"[{section}] {name} has no comment")

    def test_readme_stands_alone(self):
        """The README and docs never send a reader outside the repository."""
        paths = [os.path.join(ROOT, "README.md")] + [
            os.path.join(ROOT, "docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
            if name.endswith(".md")
        ]
        for path in paths:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            self.assertNotIn("../shared", text, path)
            self.assertNotIn("SPEC.md", text, path)
