# -*- test-case-name: tests.test_mailauth_checks -*-
"""
The C{Authentication-Results:} header field (RFC 8601): written for this
server's authserv-id, and removed from incoming mail when it claims that id
(a forgery: only this server may speak for itself).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from smtpd.mailauth.arc import ARCResult
from smtpd.mailauth.dkimcheck import DKIMResult
from smtpd.mailauth.dmarc import DMARCResult
from smtpd.mailauth.headers import header_fields
from smtpd.mailauth.senderpolicy import SPFResult

FIELD = b"Authentication-Results"
# A property value is an RFC 2045 token (no tspecials such as / = @) or a
# [local-part@]domain (RFC 8601 2.2); anything else is quoted.
_TOKEN = re.compile(r"^(?:[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+|[A-Za-z0-9.+_-]*@[A-Za-z0-9.-]+)$")
_COMMENT = re.compile(rb"\((?:[^()\\]|\\.)*\)")


def _value(text: str) -> str:
    """C{text} as a property value: a token as is, anything else quoted."""
    if _TOKEN.match(text):
        return text
    cleaned = "".join(c for c in text if c.isprintable() and c not in '"\\')
    return f'"{cleaned}"'


def _comment(text: str) -> str:
    """A header comment, or "" when there is nothing to say."""
    cleaned = "".join(c for c in text if c.isprintable() and c not in "()\\")
    return f" ({cleaned})" if cleaned else ""


def spf_entry(spf: SPFResult) -> str:
    """C{spf=RESULT smtp.mailfrom=DOMAIN} or C{... smtp.helo=NAME}."""
    prop = "smtp.mailfrom" if spf.identity == "mailfrom" else "smtp.helo"
    return f"spf={spf.result}{_comment(spf.reason if spf.result != 'pass' else '')} {prop}={_value(spf.domain)}"


def dkim_entry(result: DKIMResult) -> str:
    """C{dkim=RESULT header.d=... header.s=... header.a=... header.b=...}."""
    parts = [f"dkim={result.result}{_comment(result.reason)}"]
    for name, value in (("header.d", result.domain), ("header.s", result.selector),
                        ("header.a", result.algorithm), ("header.b", result.b)):
        if value:
            parts.append(f"{name}={_value(value)}")
    return " ".join(parts)


def dmarc_entry(result: DMARCResult) -> str:
    """C{dmarc=RESULT (p=POLICY) header.from=DOMAIN}."""
    failed = result.result in ("fail", "temperror") and result.policy
    note = f"p={result.policy}" if failed else result.reason
    entry = f"dmarc={result.result}{_comment(note)}"
    if result.header_from:
        entry += f" header.from={_value(result.header_from)}"
    return entry


def arc_entry(result: ARCResult) -> str:
    """C{arc=RESULT (i=N)}: what dkimpy's sealer reads as the chain status."""
    note = f"i={result.instances}" if result.result == "pass" else result.reason
    return f"arc={result.result}{_comment(note)}"


def build_header(
    authserv_id: str,
    spf: Sequence[SPFResult],
    dkim: Sequence[DKIMResult] | None,
    dmarc: DMARCResult | None,
    arc: ARCResult | None = None,
) -> bytes:
    """
    The whole field, folded one method per line, CRLF-terminated. C{dkim}
    L{None} means not checked; an empty list means checked and unsigned.
    """
    entries = [spf_entry(s) for s in spf]
    if dkim is not None:
        entries.extend(dkim_entry(d) for d in dkim) if dkim else entries.append(
            "dkim=none (no signature)")
    if dmarc is not None:
        entries.append(dmarc_entry(dmarc))
    if arc is not None:
        entries.append(arc_entry(arc))
    if not entries:
        entries = ["none"]
    body = ";\r\n\t".join([authserv_id, *entries])
    return FIELD + b": " + body.encode("utf-8") + b"\r\n"


def authserv_id_of(value: bytes) -> str:
    """The authserv-id of an Authentication-Results value: its first token, comments skipped."""
    text = _COMMENT.sub(b" ", value.replace(b"\r\n", b" ")).strip()
    token = re.split(rb"[;\s]", text, maxsplit=1)[0] if text else b""
    return token.decode("utf-8", "replace").lower()


def remove_forged(header: bytes, authserv_id: str) -> tuple[bytes, int]:
    """
    C{header} without the Authentication-Results fields that claim
    C{authserv_id} (RFC 8601 5), and how many were removed.
    """
    ours = authserv_id.lower()
    kept, removed = [], 0
    for field in header_fields(header):
        if field.name.lower() == FIELD.lower() and authserv_id_of(
            field.raw.split(b":", 1)[1]
        ) == ours:
            removed += 1
            continue
        kept.append(field.raw)
    return b"".join(kept), removed


# A field longer than this is passed on as it is rather than held in memory.
MAX_HELD_FIELD = 64 * 1024


class ForgedResultsFilter:
    """
    L{remove_forged} for a message that streams through in chunks of any
    size: the header section is cut into whole fields, and Authentication-
    Results fields claiming C{authserv_id} are dropped; the body passes
    untouched. Feed it CRLF data (bare CR/LF already refused or normalised).
    """

    def __init__(self, authserv_id: str) -> None:
        self.ours = authserv_id.lower()
        self.removed = 0
        self._in_header = True
        self._line = b""
        self._field = b""
        self._passing = False

    def feed(self, data: bytes) -> bytes:
        """The part of C{data} that can be passed on now."""
        if not self._in_header:
            return data
        out: list[bytes] = []
        buffer, start = self._line + data, 0
        while self._in_header:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            self._take(buffer[start : end + 2], out)
            start = end + 2
        rest = buffer[start:]
        if self._in_header:
            self._line = rest
        else:
            out.append(rest)
            self._line = b""
        return b"".join(out)

    def finish(self) -> bytes:
        """Whatever is still held at the end of the data."""
        held = self._decide(self._field) + self._line
        self._field = self._line = b""
        return held

    def _take(self, line: bytes, out: list[bytes]) -> None:
        """One whole header line: continue the held field, or decide on it and start anew."""
        if line[:1] in (b" ", b"\t") and (self._field or self._passing):
            if self._passing:
                out.append(line)
            else:
                self._field += line
                if len(self._field) > MAX_HELD_FIELD:
                    out.append(self._field)
                    self._field, self._passing = b"", True
            return
        self._passing = False
        out.append(self._decide(self._field))
        if line == b"\r\n" or b":" not in line:
            # The end of the header section (or a line that is no field: body).
            self._in_header = False
            out.append(line)
            self._field = b""
        else:
            self._field = line

    def _decide(self, field: bytes) -> bytes:
        """C{field}, or nothing when it is a forged Authentication-Results."""
        name, _, value = field.partition(b":")
        if name.strip().lower() == FIELD.lower() and authserv_id_of(value) == self.ours:
            self.removed += 1
            return b""
        return field
