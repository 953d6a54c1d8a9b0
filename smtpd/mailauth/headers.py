# -*- test-case-name: tests.test_mailauth_headers -*-
"""
The header block of an RFC 5322 message as raw fields: enough to find the
From: domain, to remove forged fields and to prepend new ones without
touching a byte of the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import getaddresses


@dataclass(frozen=True)
class HeaderField:
    """
    One header field as it appears in the message.

    @ivar name: the field name as written (C{b"From"}).
    @ivar raw: the whole field, folded lines and final CRLF included.
    """

    name: bytes
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value after the colon, decoded leniently."""
        text = self.raw.split(b":", 1)[1] if b":" in self.raw else b""
        unfolded = text.replace(b"\r\n", b"").replace(b"\n", b"")
        return unfolded.decode("utf-8", "replace").strip()


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """
    C{(header, body)}: the header block with the CRLF that ends its last field,
    and everything after the empty line. A message without an empty line is
    all header.
    """
    if message.startswith(b"\r\n"):
        return b"", message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message, b""
    return message[: end + 2], message[end + 4 :]


def header_fields(header: bytes) -> list[HeaderField]:
    """The fields of a header block, in order; continuation lines stay with their field."""
    fields: list[HeaderField] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = HeaderField(last.name, last.raw + line)
        else:
            name = line.split(b":", 1)[0].strip() if b":" in line else b""
            fields.append(HeaderField(name, line))
    return fields


def field_values(header: bytes, name: str) -> list[str]:
    """The values of every field called C{name} (case-insensitive)."""
    wanted = name.lower().encode("ascii")
    return [f.value for f in header_fields(header) if f.name.lower() == wanted]


def from_domains(header: bytes) -> set[str]:
    """The lower-case domains of every address in the From: fields."""
    values = field_values(header, "From")
    domains = set()
    for _, address in getaddresses(values):
        if "@" in address:
            domains.add(address.rsplit("@", 1)[1].lower().rstrip("."))
    return domains


def from_domain(header: bytes) -> str | None:
    """
    The one domain of the From: field (RFC 5322 author), or L{None} when there
    is no From:, no domain, or authors from more than one domain.
    """
    domains = from_domains(header)
    if len(domains) != 1 or len(field_values(header, "From")) != 1:
        return None
    return domains.pop()
