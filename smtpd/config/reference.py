# -*- test-case-name: tests.test_docs -*-
"""
The configuration reference, generated so that it cannot drift: keys,
accepted values and IIS names come from the schema, defaults and one-line
descriptions from the shipped C{etc/smtpd.ini} (which the tests hold to the
schema's defaults).

    python -m smtpd.config.reference docs/configuration.md
"""

from __future__ import annotations

import os
import re
import sys

from smtpd.config.schema import DOMAIN_KEYS, DOMAIN_SCHEMA, SCHEMA

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "etc", "smtpd.ini")

_ENTRY = re.compile(r"^([a-z_0-9]+)\s*=\s*(.*?)\s*(?:[;#]\s?(.*))?$")
_SECTION = re.compile(r"^\[([^\]]+)\]")
_IIS = re.compile(r"\s*\(IIS: [^)]*\)")


def shipped_entries(path: str = SHIPPED) -> dict[tuple[str, str], tuple[str, str]]:
    """
    C{(section, key) -> (value as written, description)} from the comments of
    the shipped file: the text after the value, and the comment lines that
    continue it (indented under it).
    """
    entries: dict[tuple[str, str], tuple[str, str]] = {}
    section, last = "", None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            header = _SECTION.match(line)
            if header:
                section, last = header[1], None
                continue
            entry = _ENTRY.match(line)
            if entry:
                last = (section, entry[1])
                entries[last] = (entry[2], (entry[3] or "").strip())
                continue
            stripped = line.strip()
            if last and line.startswith(" ") and stripped.startswith(";"):
                value, text = entries[last]
                entries[last] = (value, f"{text} {stripped[1:].strip()}".strip())
            else:
                last = None
    return entries


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else ""


def _describe(text: str) -> str:
    """A description without the IIS note (it has its own column)."""
    return _cell(_IIS.sub("", text).strip())


def render(shipped: str = SHIPPED) -> str:
    """The reference page, Markdown."""
    entries = shipped_entries(shipped)
    lines = [
        "# Configuration reference",
        "",
        "Generated from the configuration schema and the shipped `etc/smtpd.ini` by",
        "`python -m smtpd.config.reference docs/configuration.md` (`make docs`); the test",
        "suite fails when this page and the schema disagree.",
        "",
        "The file is INI without interpolation. Durations: `600`, `600s`, `15m`, `4h`, `2d`.",
        "Sizes: `0` (unlimited), bytes, `2048K` (K = 1024 bytes), `10M` (M = 1024K). Lists:",
        "comma or whitespace separated. Relative paths resolve against the deployment root,",
        "the parent of the folder that holds the file. Unknown sections and keys are errors.",
        "",
        "A bad value stops `smtpctl check` and the start with one line per problem, exit",
        "status 1, no traceback:",
        "",
        "    etc/smtpd.ini: [section] key = VALUE: what is wrong; expected <accepted values>",
        "",
    ]
    for section, (_, keys) in SCHEMA.items():
        lines += [f"## [{section}]", "", "| key | default | accepted | IIS 6.0 | meaning |",
                  "|---|---|---|---|---|"]
        for name, key in keys.items():
            value, text = entries.get((section, name), ("", ""))
            shown = f"`{value}`" if value else "(empty)"
            iis = key.iis or ", ".join(m[6:-1] for m in re.findall(r"\(IIS: [^)]*\)", text))
            lines.append(f"| `{name}` | {shown} | {_cell(key.expected)} | "
                         f"{_cell(iis)} | {_describe(text)} |")
        lines.append("")
    lines += ["## [domain:NAME]", "",
              "One section per domain; the first `local` one is the default domain. The keys",
              "a section may hold depend on its `type`:", "",
              "| key | types | accepted | IIS 6.0 |", "|---|---|---|---|"]
    for name, key in DOMAIN_SCHEMA.items():
        types = ", ".join(t for t, allowed in DOMAIN_KEYS.items() if name in allowed)
        lines.append(f"| `{name}` | {types} | {_cell(key.expected)} | {_cell(key.iis)} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Write the reference to C{argv[0]}, or print it."""
    text = render()
    if argv:
        with open(argv[0], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
