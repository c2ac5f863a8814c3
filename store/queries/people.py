"""People and their per-source aliases."""

from __future__ import annotations

from collections.abc import Mapping

import aiosqlite

from store.db import Database, utcnow
from store.rows import Person


async def _ensure_person(conn: aiosqlite.Connection, name: str) -> int:
    await conn.execute(
        "INSERT INTO people (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
        (name, utcnow()),
    )
    rows = await conn.execute_fetchall("SELECT id FROM people WHERE name = ?", (name,))
    return int(rows[0][0])


async def _name_taken(conn: aiosqlite.Connection, name: str, source: str, ref: str) -> bool:
    """Whether ``name`` already belongs to someone known under another alias."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM people p JOIN person_aliases a ON a.person_id = p.id"
        " WHERE p.name = ? AND NOT (a.source = ? AND a.source_ref = ?) LIMIT 1",
        (name, source, ref),
    )
    return bool(rows)


async def resolve_person(
    conn: aiosqlite.Connection,
    source: str,
    source_ref: str,
    display_name: str | None,
    overrides: Mapping[str, str],
) -> int:
    """Person id for an alias, creating it. Must run inside a transaction.

    The configured ``[people]`` name wins; otherwise the source's display name, then the id itself.
    An alias already mapped keeps its person unless the config now names someone else.
    """
    wanted = overrides.get(source_ref)
    # One job on the connection's thread a statement (execute_fetchall, not a cursor): the bot
    # resolves its posts' authors in every commit.
    rows = await conn.execute_fetchall(
        "SELECT a.person_id, p.name, a.display_name FROM person_aliases a"
        " LEFT JOIN people p ON p.id = a.person_id WHERE a.source = ? AND a.source_ref = ?",
        (source, source_ref),
    )
    if rows:
        person_id, name, known_display = rows[0]
        if wanted is None or (name == wanted and known_display == display_name):
            return int(person_id)  # the config's name, mapped as it is: nothing to change
    name = wanted or display_name or source_ref
    if wanted is None and name != source_ref and await _name_taken(conn, name, source, source_ref):
        # Two accounts that merely share a display name (two "Alex", every "Deleted User") are
        # not one person; only [people] merges ids. Sources whose id is the name (a CSV's
        # sender column) do share it, on purpose.
        name = f"{name} ({source_ref})"
    person_id = await _ensure_person(conn, name)
    await conn.execute(
        "INSERT INTO person_aliases (source, source_ref, person_id, display_name)"
        " VALUES (?, ?, ?, ?) ON CONFLICT(source, source_ref) DO UPDATE SET"
        " person_id = excluded.person_id, display_name = excluded.display_name",
        (source, source_ref, person_id, display_name),
    )
    return person_id


async def list_people(db: Database) -> list[Person]:
    rows = await db.fetchall("SELECT id, name FROM people ORDER BY name")
    return [Person(id=r["id"], name=r["name"]) for r in rows]


async def get_person_by_alias(db: Database, source: str, source_ref: str) -> Person | None:
    row = await db.fetchone(
        "SELECT p.id, p.name FROM people p JOIN person_aliases a ON a.person_id = p.id"
        " WHERE a.source = ? AND a.source_ref = ?",
        (source, source_ref),
    )
    return Person(id=row["id"], name=row["name"]) if row else None
