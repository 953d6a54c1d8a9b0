# -*- test-case-name: tests.test_address -*-
"""
RFC 5321 paths and ESMTP parameters, as they arrive in MAIL and RCPT.

Everything here is strict: an address that passes never carries a CR, LF, NUL or
other control character, so it is safe in a header, a log line or a file name
component after the checks of the delivery agents.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from smtpd.mail.intl import IDNAError, decode_embedded, is_utf8_char_ok, u_label_domain

MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_PATH = 256  # RFC 5321 4.5.3.1.3, angle brackets included
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
# qtextSMTP (%d32-33 / %d35-91 / %d93-126) or quoted-pairSMTP (backslash %d32-126).
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
# RFC 6531 3.3: atext and qtextSMTP extended with UTF8-non-ascii.
_UATEXT = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_UDOT_STRING = re.compile(rf"{_UATEXT}+(?:\.{_UATEXT}+)*\Z")
_UQUOTED_STRING = re.compile(
    r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"\Z')
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_ADDRESS_LITERAL = re.compile(r"\[(?:[0-9.]+|IPv6:[0-9A-Fa-f:.]+)\]\Z")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")


class AddressError(ValueError):
    """The argument of MAIL or RCPT is not a valid RFC 5321 path."""


class ParameterError(ValueError):
    """An ESMTP parameter is malformed or not recognised."""

    def __init__(self, message: str, unknown: bool = False):
        super().__init__(message)
        self.unknown = unknown


def is_domain(name: str) -> bool:
    """Whether C{name} is a syntactically valid domain name or address literal."""
    return len(name) <= MAX_DOMAIN and bool(
        _DOMAIN.match(name) or _ADDRESS_LITERAL.match(name)
    )


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """
    C{ipaddress.ip_address(text)}, remembered: the same few addresses
    (clients, listeners, a smart host) come again on every connection and
    message, and parsing costs tens of microseconds. The objects are immutable.

    @raise ValueError: when C{text} is not an IP address.
    """
    return ipaddress.ip_address(text)


def ip_literal(text: str) -> str | None:
    """The normalised IP address that C{text} is (C{IPv6:} prefix allowed), or None."""
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    if not text or not (text[0].isdigit() or ":" in text):
        return None  # a name: no address starts otherwise
    try:
        return str(parse_ip(text))
    except ValueError:
        return None


def split_address(address: str) -> tuple[str, str]:
    """
    Split a mailbox at its last C{@}: C{('local', 'domain')}; the domain is "" for
    a bare local part such as C{postmaster}.
    """
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (domain, "")


def _check_mailbox(mailbox: str) -> str:
    local, domain = split_address(mailbox)
    if not domain:
        # RFC 5321 4.5.1: <Postmaster> without a domain must be accepted.
        if mailbox.lower() == "postmaster":
            return "postmaster"
        raise AddressError("address has no domain")
    if len(local.encode()) > MAX_LOCAL_PART:
        raise AddressError("local part longer than 64 octets")
    if local.isascii():
        if not (_DOT_STRING.match(local) or _QUOTED_STRING.match(local)):
            raise AddressError("bad local part")
    elif not ((_UDOT_STRING.match(local) or _UQUOTED_STRING.match(local))
              and all(c.isascii() or is_utf8_char_ok(c) for c in local)):
        raise AddressError("bad local part")
    return f"{local}@{_check_domain(domain)}"


def _check_domain(domain: str) -> str:
    """C{domain} valid (LDH labels, A-labels, or U-labels per IDNA 2008), lower case."""
    if domain.isascii():
        if not is_domain(domain):
            raise AddressError("bad domain")
        domain = domain.rstrip(".").lower()
        if "xn--" in domain:
            # An A-label must decode to a valid U-label (RFC 5890 2.3.2.1).
            try:
                u_label_domain(domain)
            except IDNAError:
                raise AddressError("bad A-label in domain") from None
        return domain
    try:
        domain = u_label_domain(domain.removesuffix("."))
    except IDNAError:
        raise AddressError("bad internationalized domain") from None
    if len(domain.encode()) > MAX_DOMAIN:
        raise AddressError("bad domain")
    return domain


def is_mailbox(address: str) -> bool:
    """
    Whether C{address} is a mailbox as RCPT and MAIL accept it
    (C{local@domain}, the local part a dot-string or a quoted string such
    as C{"john smith"}), so it may be sent in a path as it is.
    """
    try:
        _check_mailbox(address)
    except AddressError:
        return False
    return address.isascii() and address.isprintable()


def is_utf8_mailbox(address: str) -> bool:
    """Whether C{address} is a mailbox by RFC 6531 3.3 (UTF-8 allowed)."""
    try:
        _check_mailbox(address)
    except AddressError:
        return False
    return address.isprintable()


def parse_path(text: str, null_ok: bool) -> tuple[str, str]:
    """
    Parse the start of a MAIL/RCPT argument: C{<path> params...}.

    Source routes (C{<@a,@b:user@c>}) are accepted and ignored (RFC 5321 4.1.2).
    The domain is lower-cased and a trailing dot dropped. UTF-8 local parts
    and U-label domains (RFC 6531 3.3) pass here; whether the transaction
    may carry them (the SMTPUTF8 parameter) is the caller's to decide.

    @return: the mailbox ("" for C{<>}) and the rest of the line (parameters).
    @raise AddressError: on anything else.
    """
    if not text.startswith("<"):
        raise AddressError("address must be enclosed in <>")
    end = _path_end(text)
    path, rest = text[1:end], text[end + 1 :]
    if rest and not rest.startswith(" "):
        raise AddressError("junk after address")
    if len(text[: end + 1].encode()) > MAX_PATH:
        raise AddressError("path longer than 256 octets")
    if not path.isprintable():
        raise AddressError("address contains control characters")
    if path == "":
        if not null_ok:
            raise AddressError("null address not allowed here")
        return "", rest.strip()
    if path.startswith("@"):
        route, colon, path = path.partition(":")
        hops = route.split(",")
        if not colon or not all(h[:1] == "@" and is_domain(h[1:]) for h in hops):
            raise AddressError("bad source route")
    return _check_mailbox(path), rest.strip()


def _path_end(text: str) -> int:
    """The index of the C{>} that closes the path, skipping quoted strings."""
    quoted = False
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            return i
        i += 1
    raise AddressError("address must be enclosed in <>")


def parse_params(text: str) -> dict[str, str]:
    """
    Parse ESMTP parameters C{KEY[=VALUE] ...}; keys upper-cased.

    @raise ParameterError: on a malformed or repeated parameter.
    """
    params: dict[str, str] = {}
    for word in text.split():
        key, _, value = word.partition("=")
        key = key.upper()
        if not _KEYWORD.match(key) or key in params or not value.isprintable():
            raise ParameterError(f"bad parameter {word[:40]!r}")
        params[key] = value
    return params


def xtext_decode(value: str) -> str:
    """
    Decode RFC 3461 xtext (C{+2B} escapes).

    @raise ParameterError: when C{value} is not valid xtext.
    """
    if not _XTEXT.match(value):
        raise ParameterError("bad xtext")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


@dataclass(frozen=True)
class MailParams:
    """The parameters of MAIL FROM that we implement."""

    size: int | None = None
    body: str = ""
    ret: str = ""
    envid: str = ""
    smtputf8: bool = False
    requiretls: bool = False


@dataclass(frozen=True)
class RcptParams:
    """The parameters of RCPT TO that we implement (RFC 3461)."""

    notify: tuple[str, ...] = ()
    orcpt: str = ""


def mail_params(text: str) -> MailParams:
    """
    Validate the parameters of MAIL: SIZE (RFC 1870), BODY (RFC 6152, RFC
    3030 BINARYMIME), RET and ENVID (RFC 3461), SMTPUTF8 (RFC 6531, no
    value), REQUIRETLS (RFC 8689, no value), AUTH (RFC 4954, accepted and
    ignored).

    @raise ParameterError: with C{unknown=True} for a parameter we do not know.
    """
    params = parse_params(text)
    size = None
    if "SIZE" in params:
        if not params["SIZE"].isdigit() or len(params["SIZE"]) > 20:
            raise ParameterError("bad SIZE value")
        size = int(params.pop("SIZE"))
    body = params.pop("BODY", "").upper()
    if body not in ("", "7BIT", "8BITMIME", "BINARYMIME"):
        raise ParameterError("bad BODY value")
    smtputf8 = "SMTPUTF8" in params
    if params.pop("SMTPUTF8", ""):
        raise ParameterError("SMTPUTF8 takes no value")
    ret = params.pop("RET", "").upper()
    if ret not in ("", "FULL", "HDRS"):
        raise ParameterError("bad RET value")
    envid = xtext_decode(params.pop("ENVID", ""))
    if len(envid) > 100:
        raise ParameterError("ENVID longer than 100 characters")
    requiretls = "REQUIRETLS" in params
    if params.pop("REQUIRETLS", ""):
        raise ParameterError("REQUIRETLS takes no value")
    params.pop("AUTH", None)
    if params:
        raise ParameterError(f"unknown parameter {next(iter(params))}", unknown=True)
    return MailParams(size=size, body=body, ret=ret, envid=envid, smtputf8=smtputf8,
                      requiretls=requiretls)


_NOTIFY = {"NEVER", "SUCCESS", "FAILURE", "DELAY"}


def rcpt_params(text: str) -> RcptParams:
    """
    Validate the parameters of RCPT: NOTIFY and ORCPT (RFC 3461).

    @raise ParameterError: with C{unknown=True} for a parameter we do not know.
    """
    params = parse_params(text)
    notify: tuple[str, ...] = ()
    if "NOTIFY" in params:
        notify = tuple(v.upper() for v in params.pop("NOTIFY").split(","))
        if not set(notify) <= _NOTIFY or ("NEVER" in notify and len(notify) > 1):
            raise ParameterError("bad NOTIFY value")
    orcpt = params.pop("ORCPT", "")
    if orcpt:
        kind, semi, value = orcpt.partition(";")
        if not semi or not _KEYWORD.match(kind):
            raise ParameterError("bad ORCPT value")
        orcpt = f"{kind.lower()};{_orcpt_decode(kind, value)}"
        if not orcpt.isprintable():
            raise ParameterError("bad ORCPT value")
    if params:
        raise ParameterError(f"unknown parameter {next(iter(params))}", unknown=True)
    return RcptParams(notify=notify, orcpt=orcpt)


def _orcpt_decode(kind: str, value: str) -> str:
    """
    The address of an ORCPT: xtext, or for the C{utf-8} type (RFC 6533 3)
    utf-8-addr-xtext or -unitext (C{\\x{HH}} escapes, UTF-8 as it is).
    """
    if kind.lower() != "utf-8":
        return xtext_decode(value)
    if any(c in value for c in "+=") or not value.isprintable():
        raise ParameterError("bad ORCPT value")
    try:
        return decode_embedded(value)
    except ValueError:
        raise ParameterError("bad ORCPT value") from None
