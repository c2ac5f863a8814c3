"""Running tallies behind the live sender guess's two baselines, kept without rescanning posts.

The majority baseline names the most frequent poster so far, the recent one the most frequent
poster of the last 30 days (ties: the first name in sort order), both over every stored image
post but the one being guessed: what ``store.queries.bot.get_baselines`` computes with a scan
of all posts (about 0.3 s at 100 000 posts). Here the counts are loaded once, then each live
post is added as it is guessed; posts other processes add (an ingest, a backfill) are counted
at the next reload, every ``reload_s`` seconds.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import Counter
from datetime import datetime, timedelta

from store.db import Database
from store.queries._convert import to_iso
from store.queries.bot import RECENT_DAYS, Baselines, count_posts_by_author, list_posts_since


def _top(counts: Counter[str], minus: str | None = None) -> str | None:
    best: tuple[int, str] | None = None
    for name, n in counts.items():
        n -= name == minus
        if n > 0 and (best is None or n > best[0] or (n == best[0] and name < best[1])):
            best = (n, name)
    return best[1] if best else None


class BaselineTally:
    """Per process: author counts overall and over the last 30 days, updated as posts arrive."""

    def __init__(self, db: Database, *, reload_s: float = 600.0) -> None:
        self._db = db
        self._reload_s = reload_s
        self._loaded_at: float | None = None
        self._up_to_id = 0  # posts with ids up to this are in the counts
        self._counted: set[int] = set()  # live posts added since the load
        self._uncounted: set[int] = set()  # ids up to _up_to_id the load did not count
        self._all: Counter[str] = Counter()
        self._recent: Counter[str] = Counter()
        self._window: list[tuple[str, str, int]] = []  # (posted_at, author, post id), sorted
        self._in_window: set[int] = set()
        self._lock = asyncio.Lock()

    async def _load(self, now: datetime) -> None:
        tally = await count_posts_by_author(self._db)
        since = now - timedelta(days=RECENT_DAYS)
        window = [
            row
            for row in await list_posts_since(self._db, since, tally.up_to_id)
            if row[2] not in tally.uncounted  # stored after the tally: counted when guessed
        ]
        self._up_to_id, self._all = tally.up_to_id, Counter(tally.counts)
        self._uncounted = set(tally.uncounted)
        self._window = window
        self._in_window = {post_id for _, _, post_id in window}
        self._recent = Counter(author for _, author, _ in window)
        self._counted = set()
        self._loaded_at = time.monotonic()

    def _expire(self, now: datetime) -> None:
        cutoff = to_iso(now - timedelta(days=RECENT_DAYS))
        drop = bisect.bisect_left(self._window, (cutoff,))
        for _, author, post_id in self._window[:drop]:
            self._recent[author] -= 1
            self._in_window.discard(post_id)
        del self._window[:drop]

    async def guess(
        self, post_id: int, author: str | None, posted_at: datetime | None, now: datetime
    ) -> Baselines:
        """The baselines for ``post_id`` (excluding it), then count it for the posts after it."""
        async with self._lock:
            stale = self._loaded_at is None or time.monotonic() - self._loaded_at > self._reload_s
            if stale:
                await self._load(now)
            self._expire(now)
            counted = (
                post_id <= self._up_to_id and post_id not in self._uncounted
            ) or post_id in self._counted
            result = Baselines(
                _top(self._all, author if counted else None),
                _top(self._recent, author if post_id in self._in_window else None),
            )
            if not counted and author is not None:
                self._counted.add(post_id)
                self._uncounted.discard(post_id)
                self._all[author] += 1
                when = to_iso(posted_at) if posted_at is not None else None
                if when is not None and when >= to_iso(now - timedelta(days=RECENT_DAYS)):
                    bisect.insort(self._window, (when, author, post_id))
                    self._in_window.add(post_id)
                    self._recent[author] += 1
            return result
