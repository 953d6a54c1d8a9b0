# -*- test-case-name: tests.test_web_queue -*-
"""
The queue listing of the status page and of C{/api/queue}: one page, chosen
from the scheduler's ids in memory, with only that page's envelopes read; and
the search, which reads the queue a window at a time so one request never
reads more than L{SEARCH_WINDOW} envelopes (unless told otherwise), however
big the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpd.admin.api import Admin
from smtpd.web import views

# How many entries one search request looks at, at most.
SEARCH_WINDOW = 5000

# Entries read per step of a search (one thread hand-off each).
SEARCH_STEP = 500


@dataclass(frozen=True)
class Request:
    """
    What is asked: C{query} (empty: no search), C{page} (from 1),
    C{per_page}, and a start given as C{after} (a queue id: the page starts
    after it) and C{offset} (entries skipped after that); without either, the
    page number chooses the start. C{window}: how many entries a search
    looks at, at most.
    """

    query: str = ""
    page: int = 1
    per_page: int = views.PAGE_SIZE
    after: str | None = None
    offset: int | None = None
    window: int = SEARCH_WINDOW


async def listing(admin: Admin, asked: Request) -> dict:
    """
    One page of the queue: C{page}, C{pages}, C{total}, C{entries} and
    C{next} (give it as C{after} for what follows; L{None} at the end). A
    search adds C{scanned} and C{partial} (see L{search}).
    """
    if asked.query.strip():
        return await search(admin, asked)
    size = asked.per_page
    if asked.after is None and asked.offset is None:
        total = admin.queue_position()["total"]
        number = min(max(1, asked.page), _pages(total, size))
        start, entries = (number - 1) * size, await admin.queue(
            limit=size, offset=(number - 1) * size)
    else:
        place = admin.queue_position(asked.after)
        total, start = place["total"], place["position"] + (asked.offset or 0)
        entries = await admin.queue(limit=size, offset=asked.offset or 0, after=asked.after)
        number = min(start // size + 1, _pages(total, size))
    more = bool(entries) and start + len(entries) < total
    return {"page": number, "pages": _pages(total, size), "total": total,
            "entries": entries, "next": entries[-1]["id"] if more else None}


async def search(admin: Admin, asked: Request) -> dict:
    """
    The entries matching C{query} (L{views.search}) among at most
    C{window} entries (by default L{SEARCH_WINDOW}), in queue order, after C{after} (from the
    start when L{None}); the matches are paged by C{page} and C{per_page}
    as the listing is (C{total}: the matches found in the window). When the
    window ends before the queue does, C{partial} is true and C{next} is the
    last id looked at: the search goes on with C{after} set to it.
    C{scanned}: how many entries were looked at.
    """
    matches: list[dict] = []
    scanned, cursor, ended = 0, asked.after, False
    while scanned < asked.window:
        wanted = min(SEARCH_STEP, asked.window - scanned)
        batch = await admin.queue(limit=wanted, after=cursor)
        scanned += len(batch)
        matches.extend(views.search(batch, asked.query))
        if batch:
            cursor = batch[-1]["id"]
        if len(batch) < wanted:
            ended = True
            break
    if not ended:
        place = admin.queue_position(cursor)
        ended = place["position"] >= place["total"]
    found = views.page(matches, asked.page, asked.per_page)
    found.update(scanned=scanned, partial=not ended, next=None if ended else cursor)
    return found


def _pages(total: int, size: int) -> int:
    return max(1, -(-total // size))
