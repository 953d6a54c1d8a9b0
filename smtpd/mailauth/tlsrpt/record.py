# -*- test-case-name: tests.test_tlsrpt -*-
"""
The TLS-RPT policy of a domain: the C{_smtp._tls.DOMAIN} TXT record
(RFC 8460 3), C{v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://...}.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from smtpd.mail.address import is_mailbox
from smtpd.mailauth.lookup import DNSLookup

VERSION = "v=TLSRPTv1"


@dataclass(frozen=True)
class ReportAddresses:
    """Where a domain wants its reports: mail addresses and https URLs."""

    mailto: tuple[str, ...] = ()
    https: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.mailto or self.https)


def parse_record(records: list[bytes]) -> ReportAddresses | None:
    """
    The addresses of the C{_smtp._tls} TXT records, or L{None}: records
    that do not start with C{v=TLSRPTv1} are ignored, and unless exactly one
    remains the domain does not take reports (RFC 8460 3). URIs of other
    schemes, and mailto URIs without a valid address, are left out.
    """
    found = [r.decode("utf-8", "replace") for r in records]
    found = [r for r in found if _version(r) == VERSION]
    if len(found) != 1:
        return None
    mailto: list[str] = []
    https: list[str] = []
    for field in found[0].split(";")[1:]:
        name, _, value = field.strip().partition("=")
        if name.strip() != "rua":
            continue
        for uri in value.split(","):
            uri = uri.strip()
            if uri.lower().startswith("mailto:"):
                address = unquote(uri[len("mailto:"):].split("?", 1)[0]).strip()
                if is_mailbox(address) and address not in mailto:
                    mailto.append(address)
            elif uri.lower().startswith("https://") and uri not in https:
                https.append(uri)
    return ReportAddresses(tuple(mailto), tuple(https))


def _version(record: str) -> str:
    """The C{v=} field of a record, spaces removed."""
    return record.split(";", 1)[0].replace(" ", "").strip()


async def report_addresses(lookup: DNSLookup, domain: str) -> ReportAddresses | None:
    """
    Where C{domain} wants its reports (L{None}: nowhere). A failed lookup
    raises L{smtpd.mailauth.lookup.TemporaryLookupError}.
    """
    return parse_record(await lookup.txt("_smtp._tls." + domain))
