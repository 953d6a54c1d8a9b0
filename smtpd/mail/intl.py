# -*- test-case-name: tests.test_intl -*-
"""
Internationalized mail (RFC 6530-6533): the one place for IDNA domain forms
(A-label C{xn--bcher-kva.example} and U-label C{bücher.example} are the same
domain), Unicode local parts (NFC), and the RFC 6533 encodings of UTF-8
addresses in delivery status notifications and the ORCPT parameter.

IDNA is the C{idna} package (IDNA 2008 with the UTS 46 mapping), which
Twisted already requires through C{hyperlink}.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import idna

# Characters never allowed in a UTF-8 local part or a folder made of one:
# controls, surrogates, private use, unassigned, line and paragraph
# separators, and the format characters (bidi overrides and the like, which
# make a name display as another) except ZWNJ and ZWJ, needed by some scripts.
_BAD_CATEGORIES = {"Cc", "Cs", "Co", "Cn", "Zl", "Zp", "Cf"}
_JOINERS = {"\u200c", "\u200d"}
_EMBEDDED = re.compile(r"\\x\{([0-9A-Fa-f]{2,6})\}")


class IDNAError(ValueError):
    """A domain that is neither a valid A-label nor a valid U-label name."""


def is_utf8_char_ok(char: str) -> bool:
    """Whether non-ASCII C{char} may be part of a local part (RFC 6531 3.3)."""
    if char in _JOINERS:
        return True
    return unicodedata.category(char) not in _BAD_CATEGORIES


def normalize_local(local: str) -> str:
    """A local part in Unicode NFC (RFC 6530 10.1); ASCII is returned as it is."""
    return local if local.isascii() else unicodedata.normalize("NFC", local)


def u_label_domain(domain: str) -> str:
    """
    C{domain} checked as an internationalized domain name and made lower
    case NFC (U-labels; ASCII labels as they are).

    @raise IDNAError: when a label is not a valid U-label (IDNA 2008).
    """
    try:
        ascii_form = idna.encode(domain, uts46=True).decode("ascii")
        return idna.decode(ascii_form)
    except (idna.IDNAError, UnicodeError) as e:
        raise IDNAError(f"{domain!r} is not an internationalized domain name: {e}") from e


@functools.lru_cache(maxsize=4096)
def a_label_domain(domain: str) -> str:
    """
    The ASCII (A-label) form of C{domain}, lower case, for DNS and for
    comparing domains: C{bücher.example} and C{XN--BCHER-KVA.example} give
    C{xn--bcher-kva.example}. A name that IDNA refuses is only lower-cased
    (so it can match nothing it should not).
    """
    name = domain.lower().rstrip(".")
    if name.isascii():
        return name
    if name.startswith("*."):
        return "*." + a_label_domain(name[2:])
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return name


def domain_key(domain: str) -> str:
    """What makes two spellings of a domain the same domain (its A-label form)."""
    return a_label_domain(domain)


def address_key(address: str) -> str:
    """
    What makes two spellings of an account address the same: the local part
    NFC and lower case, the domain in A-label form.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return normalize_local(address).lower()
    return f"{normalize_local(local).lower()}@{a_label_domain(domain)}"


def ascii_address(address: str) -> str | None:
    """
    C{address} as it may go without SMTPUTF8: unchanged when ASCII, with its
    domain as A-labels when only the domain is internationalized; L{None}
    when the local part is not ASCII (it has no ASCII form).
    """
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    if not at or not local.isascii():
        return None
    ascii_domain = a_label_domain(domain)
    return f"{local}@{ascii_domain}" if ascii_domain.isascii() else None


def needs_smtputf8(address: str) -> bool:
    """Whether C{address} can only be sent with SMTPUTF8 (a non-ASCII local part)."""
    return ascii_address(address) is None


def unitext(value: str) -> str:
    """
    RFC 6533 3 utf-8-addr-unitext: C{value} with controls, space, C{\\},
    C{+} and C{=} as C{\\x{HH}}; other characters (UTF-8 too) as they are.
    """
    return "".join(
        f"\\x{{{ord(c):X}}}" if (ord(c) < 0x21 or c in "\\+=" or ord(c) == 0x7F) else c
        for c in value
    )


def addr_xtext(value: str) -> str:
    """
    RFC 6533 3 utf-8-addr-xtext: like L{unitext}, and every non-ASCII
    character as C{\\x{HHHH}} too, so the result is 7-bit (an ORCPT value
    toward a host without SMTPUTF8).
    """
    return "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in unitext(value))


def decode_embedded(value: str) -> str:
    """
    Undo L{unitext} and L{addr_xtext}: every C{\\x{HH..}} becomes its
    character.

    @raise ValueError: for an escape that is not a Unicode scalar value, or
        a backslash outside an escape.
    """
    if "\\" in _EMBEDDED.sub("", value):
        raise ValueError("backslash outside an escape")

    def char(match: re.Match) -> str:
        code = int(match.group(1), 16)
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"bad embedded character {match.group(0)}")
        return chr(code)

    return _EMBEDDED.sub(char, value)
