"""The review queue: images posted for members to label, and the look-ups that choose them.

An image is a review candidate when it is stored, not yet resolved (no label has a net vote
above zero, so training does not take it as labelled yet), not awaiting answers in an open
review post, was posted in the guild asking (a tagged message of that guild, or a live or
backfilled Discord post in one of its channels: another guild's images are never shown), and
no post of it is by a member who opted out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from store.db import Database, utcnow

OPEN = "open"
ANSWERED = "answered"
CLOSED = "closed"


@dataclass(frozen=True)
class ReviewCandidate:
    """A stored, unresolved image of the guild."""

    image_id: int
    sha256: str
    ext: str
    spoiler: bool


@dataclass(frozen=True)
class ReviewItem:
    id: int
    image_id: int
    guild_id: str | None
    channel_id: str | None
    message_id: str | None
    reason: str
    score: float | None
    status: str


@dataclass(frozen=True)
class NewReviewItem:
    image_id: int
    reason: str  # 'uncertain' or 'random'
    score: float | None


async def list_review_candidates(
    db: Database, *, guild_id: str, channel_ids: Sequence[str] = (), limit: int = 5000
) -> list[ReviewCandidate]:
    """The guild's stored images that still need a label (see module doc), most recently posted
    first, at most ``limit``.

    Args:
        channel_ids: the guild's channels and threads: Discord posts there count as the guild's
            even when the bot did not tag them (backfilled history).
    """
    channels = [str(c) for c in channel_ids]
    in_channels = (
        f"OR (p.source = 'discord' AND p.conversation_id IN ({','.join('?' * len(channels))}))"
        if channels
        else ""
    )
    rows = await db.fetchall(
        "SELECT i.id, i.sha256, i.ext, MAX(p.posted_at) AS last_posted,"
        " MAX(COALESCE(bmi.spoiler, 0)) AS spoiler"
        " FROM images i JOIN posts p ON p.image_id = i.id AND p.status = 'stored'"
        " LEFT JOIN bot_message_images bmi ON bmi.post_id = p.id"
        " LEFT JOIN bot_messages bm ON bm.message_id = bmi.message_id"
        f" WHERE (bm.guild_id = ? {in_channels})"
        " AND NOT EXISTS (SELECT 1 FROM review_items r WHERE r.image_id = i.id"
        "   AND r.status = 'open')"
        " AND NOT EXISTS (SELECT 1 FROM label_votes v WHERE v.image_id = i.id"
        "   GROUP BY v.label_id HAVING SUM(v.vote) > 0)"
        " AND NOT EXISTS (SELECT 1 FROM posts p2"
        "   JOIN person_aliases a ON a.person_id = p2.author_id"
        "   JOIN optouts o ON o.author_source = a.source AND o.author_ref = a.source_ref"
        "   WHERE p2.image_id = i.id)"
        " AND NOT EXISTS (SELECT 1 FROM bot_message_images b2"
        "   JOIN bot_messages m2 ON m2.message_id = b2.message_id"
        "   JOIN posts p3 ON p3.id = b2.post_id"
        "   JOIN optouts o2 ON o2.author_source = 'discord' AND o2.author_ref = m2.author_ref"
        "   WHERE p3.image_id = i.id)"
        " GROUP BY i.id ORDER BY last_posted DESC, i.id DESC LIMIT ?",
        (str(guild_id), *channels, int(limit)),
    )
    return [ReviewCandidate(int(r["id"]), r["sha256"], r["ext"], bool(r["spoiler"])) for r in rows]


async def list_open_review_image_ids(db: Database) -> set[int]:
    """Images awaiting answers in an open review post (any guild)."""
    rows = await db.fetchall("SELECT image_id FROM review_items WHERE status = 'open'")
    return {int(r["image_id"]) for r in rows}


async def open_review_items(
    db: Database, items: Sequence[NewReviewItem], *, guild_id: str | None, channel_id: str | None
) -> dict[int, int]:
    """Open a review item per image, skipping images already open (another review got there
    first). Returns image id -> review item id for those opened."""
    opened: dict[int, int] = {}
    now = utcnow()
    async with db.transaction() as conn:
        for item in items:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO review_items (image_id, guild_id, channel_id, reason,"
                " score, status, created_at) VALUES (?,?,?,?,?,'open',?)",
                (item.image_id, guild_id, channel_id, item.reason, item.score, now),
            )
            if cur.rowcount:
                opened[item.image_id] = int(cur.lastrowid)
    return opened


async def set_review_message(
    db: Database, item_id: int, *, channel_id: str, message_id: str
) -> None:
    """Where the review post for ``item_id`` went."""
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE review_items SET channel_id = ?, message_id = ? WHERE id = ?",
            (channel_id, message_id, item_id),
        )


async def close_review_items(db: Database, item_ids: Sequence[int]) -> None:
    """Close items whose post could not be made (their images may be picked again)."""
    if not item_ids:
        return
    async with db.transaction() as conn:
        await conn.executemany(
            "UPDATE review_items SET status = 'closed' WHERE id = ? AND status = 'open'",
            [(i,) for i in item_ids],
        )


async def mark_review_answered(db: Database, item_id: int) -> bool:
    """A member answered the post: the item stops awaiting answers. True if it was open."""
    async with db.transaction() as conn:
        cur = await conn.execute(
            "UPDATE review_items SET status = 'answered', answered_at = ?"
            " WHERE id = ? AND status = 'open'",
            (utcnow(), item_id),
        )
        return bool(cur.rowcount)


async def get_review_item(db: Database, item_id: int) -> ReviewItem | None:
    row = await db.fetchone("SELECT * FROM review_items WHERE id = ?", (item_id,))
    return _item(row) if row is not None else None


async def list_review_items(db: Database, *, guild_id: str | None = None) -> list[ReviewItem]:
    """Every review item (of one guild when given), oldest first."""
    where, params = ("WHERE guild_id = ?", (guild_id,)) if guild_id else ("", ())
    rows = await db.fetchall(f"SELECT * FROM review_items {where} ORDER BY id", params)
    return [_item(r) for r in rows]


async def get_guild_thresholds(db: Database, guild_id: str) -> dict[str, float]:
    """The guild's per-label threshold overrides (label -> threshold)."""
    rows = await db.fetchall(
        "SELECT label, threshold FROM guild_thresholds WHERE guild_id = ?", (str(guild_id),)
    )
    return {r["label"]: float(r["threshold"]) for r in rows}


def _item(r) -> ReviewItem:
    return ReviewItem(
        id=int(r["id"]),
        image_id=int(r["image_id"]),
        guild_id=r["guild_id"],
        channel_id=r["channel_id"],
        message_id=r["message_id"],
        reason=r["reason"],
        score=r["score"],
        status=r["status"],
    )
