# -*- test-case-name: tests.test_directory_ldap -*-
"""
Search filter templates (C{%s}, C{%u}, C{%d}) parsed once and filled per
address: ldaptor's filter parser costs milliseconds per call, too much for
every uncached RCPT. Values go into the parsed filter as raw assertion values,
so no address can ever add an operator to the filter.
"""

from __future__ import annotations

from ldaptor import ldapfilter
from ldaptor.protocols import pureldap

# Stand-ins for the placeholders while the template is parsed: characters no
# filter text or address contains.
_MARKS = {"s": "\x01s\x01", "u": "\x01u\x01", "d": "\x01d\x01"}


class FilterTemplate:
    """A filter template, parsed once; L{fill} gives the filter for an address."""

    def __init__(self, template: str):
        text = template.replace("%%", "\x02")
        for key, mark in _MARKS.items():
            text = text.replace("%" + key, mark)
        self.parsed = ldapfilter.parseFilter(text.replace("\x02", "%"))

    def fill(self, address: str) -> pureldap.LDAPFilter:
        """The filter for C{address} (its local part and domain for %u and %d)."""
        local, _, domain = address.rpartition("@")
        values = {_MARKS["s"]: address, _MARKS["u"]: local, _MARKS["d"]: domain}
        return _fill(self.parsed, values)


def _value(raw: bytes | str, values: dict[str, str]) -> str:
    """An assertion value with the placeholders replaced."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    for mark, value in values.items():
        text = text.replace(mark, value)
    return text


def _fill(node, values: dict[str, str]):
    """A copy of the filter C{node} with the placeholders of its values replaced."""
    if isinstance(node, (pureldap.LDAPFilter_and, pureldap.LDAPFilter_or)):
        return type(node)([_fill(child, values) for child in node.data])
    if isinstance(node, pureldap.LDAPFilter_not):
        return pureldap.LDAPFilter_not(_fill(node.value, values))
    if isinstance(node, pureldap.LDAPFilter_substrings):
        return pureldap.LDAPFilter_substrings(
            type=node.type,
            substrings=[type(part)(_value(part.value, values)) for part in node.substrings],
        )
    if isinstance(node, pureldap.LDAPAttributeValueAssertion):
        return type(node)(
            attributeDesc=node.attributeDesc,
            assertionValue=pureldap.LDAPAssertionValue(_value(node.assertionValue.value, values)),
        )
    return node
