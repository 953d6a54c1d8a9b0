# -*- test-case-name: tests.test_web -*-
"""
What the status page and the JSON API show, as plain data made from the admin
API's results: queue search and paging, and the qshape-style table.
"""

from __future__ import annotations

# Entries per page of the queue listing.
PAGE_SIZE = 50

# Upper bounds (minutes) of the qshape age buckets; the last column is older.
AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)


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
    Deferred messages by destination domain (of their pending recipients) and
    age: C{buckets} (column titles, minutes), C{rows} of C{[domain, total,
    counts...]}, most deferred first, and a C{TOTAL} row first.
    """
    columns = len(AGE_BUCKETS) + 1
    table: dict[str, list[int]] = {}
    for entry in entries:
        if entry["state"] != "deferred":
            continue
        minutes = max(0.0, now - entry["arrival"]) / 60
        column = next((i for i, b in enumerate(AGE_BUCKETS) if minutes <= b), columns - 1)
        domains = {r["address"].rpartition("@")[2].lower()
                   for r in entry["recipients"] if r["state"] == "pending"}
        for domain in domains:
            table.setdefault(domain, [0] * columns)[column] += 1
    totals = [sum(counts[i] for counts in table.values()) for i in range(columns)]
    rows = sorted(([d, sum(c), *c] for d, c in table.items()), key=lambda r: (-r[1], r[0]))
    titles = [str(b) for b in AGE_BUCKETS] + [f"{AGE_BUCKETS[-1]}+"]
    return {"buckets": titles, "rows": [["TOTAL", sum(totals), *totals], *rows]}
