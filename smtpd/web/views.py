# -*- test-case-name: tests.test_web -*-
"""
What the status page and the JSON API show, as plain data made from the admin
API's results: queue search and paging, and the qshape-style table.
"""

from __future__ import annotations

from smtpd.admin import shape

# Entries per page of the queue listing.
PAGE_SIZE = 50

# Upper bounds (minutes) of the qshape age buckets; the last column is older.
AGE_BUCKETS = shape.AGE_BUCKETS


def search(entries: list[dict], query: str) -> list[dict]:
    """
    The entries whose id, sender or a recipient contains C{query} (case
    blind); C{@example.com} or C{example.com} finds a destination domain.
    """
    query = query.strip().lower()
    if not query:
        return entries
    return [e for e in entries if query in e["id"].lower() or query in e["sender"].lower()
            or any(query in r["address"].lower() for r in e["recipients"])]


def page(entries: list[dict], number: int, size: int = PAGE_SIZE) -> dict:
    """Page C{number} (from 1) of C{entries}: C{page}, C{pages}, C{total}, C{entries}."""
    pages = max(1, -(-len(entries) // size))
    number = min(max(1, number), pages)
    start = (number - 1) * size
    return {"page": number, "pages": pages, "total": len(entries),
            "entries": entries[start:start + size]}


def qshape(entries: list[dict], now: float) -> dict:
    """
    Deferred entries (as the admin API lists them) by destination domain of
    their pending recipients and age (L{smtpd.admin.shape.table}).
    """
    return shape.table(
        ((e["arrival"], frozenset(r["address"].rpartition("@")[2].lower()
                                  for r in e["recipients"] if r["state"] == "pending"))
         for e in entries if e["state"] == "deferred"), now)
