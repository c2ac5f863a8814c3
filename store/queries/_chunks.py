"""Queries over a long list of ids: an ``IN (...)`` list at most :data:`IN_CHUNK` long a time."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence

IN_CHUNK = 500  # ids per IN (...) list, well under SQLite's bound-parameter limit

# Database.fetchall, or a transaction's conn.execute_fetchall: (sql, parameters) -> rows.
Fetch = Callable[[str, tuple], Awaitable[Iterable[sqlite3.Row]]]


async def fetch_in_chunks(
    fetch: Fetch, sql: str, ids: Sequence[object], params: tuple = ()
) -> list[sqlite3.Row]:
    """Every row of ``sql`` over ``ids``: ``sql`` has one ``{marks}`` placeholder, the IN list,
    after ``params``; one statement per :data:`IN_CHUNK` ids."""
    rows: list[sqlite3.Row] = []
    for start in range(0, len(ids), IN_CHUNK):
        chunk = tuple(ids[start : start + IN_CHUNK])
        rows.extend(await fetch(sql.format(marks=",".join("?" * len(chunk))), (*params, *chunk)))
    return rows
