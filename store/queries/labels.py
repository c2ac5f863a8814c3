"""Labels (the category set) and members' votes on them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiosqlite

from store.db import Database, utcnow
from store.queries._convert import from_iso
from store.rows import Label, Vote


@dataclass(frozen=True)
class LabelDef:
    name: str
    emoji: str | None
    description: str


async def ensure_label_ids(conn: aiosqlite.Connection, names: Iterable[str]) -> dict[str, int]:
    """Ids for label names, creating unknown ones (no emoji) inside the caller's transaction."""
    ids = {}
    for name in names:
        await conn.execute(
            "INSERT INTO labels (name, description) VALUES (?, '') ON CONFLICT(name) DO NOTHING",
            (name,),
        )
        async with conn.execute("SELECT id FROM labels WHERE name = ?", (name,)) as cur:
            ids[name] = (await cur.fetchone())[0]
    return ids


async def sync_labels(db: Database, defs: Sequence[LabelDef]) -> None:
    """Make the configured labels exist with their emoji and description."""
    async with db.transaction() as conn:
        for d in defs:
            await conn.execute(
                "INSERT INTO labels (name, emoji, description, active) VALUES (?, ?, ?, 1)"
                " ON CONFLICT(name) DO UPDATE SET emoji = excluded.emoji,"
                " description = excluded.description, active = 1",
                (d.name, d.emoji, d.description),
            )


async def list_labels(db: Database) -> list[Label]:
    rows = await db.fetchall("SELECT id, name, emoji, description, active FROM labels ORDER BY id")
    return [
        Label(r["id"], r["name"], r["emoji"], r["description"], bool(r["active"])) for r in rows
    ]


async def add_vote(
    db: Database, image_id: int, label: str, voter: str, vote: int, origin: str
) -> None:
    """Record (or change) one voter's vote on one label of one image: the latest gesture wins."""
    if vote not in (-1, 1):
        raise ValueError("vote must be +1 or -1")
    async with db.transaction() as conn:
        ids = await ensure_label_ids(conn, [label])
        await conn.execute(
            "INSERT INTO label_votes (image_id, label_id, voter, vote, origin, created_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(image_id, label_id, voter) DO UPDATE SET"
            " vote = excluded.vote, origin = excluded.origin, created_at = excluded.created_at",
            (image_id, ids[label], voter, vote, origin, utcnow()),
        )


async def list_votes_for_image(db: Database, image_id: int) -> list[Vote]:
    rows = await db.fetchall(
        "SELECT v.image_id, l.name, v.voter, v.vote, v.origin, v.created_at FROM label_votes v"
        " JOIN labels l ON l.id = v.label_id WHERE v.image_id = ? ORDER BY v.id",
        (image_id,),
    )
    return [
        Vote(
            r["image_id"], r["name"], r["voter"], r["vote"], r["origin"], from_iso(r["created_at"])
        )
        for r in rows
    ]
