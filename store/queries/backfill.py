"""Channel history backfills: the per-channel cursor, where live tagging began, old reactions.

A backfill reads a channel's history oldest first, one page at a time, and moves the channel's
cursor (``backfill_cursors.after_id``) only once a page is fully stored, so a crash or restart
resumes at the first page not yet done; re-reading a page is harmless, because posts are keyed
by their source id and old reactions only add votes a member does not have yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from store.db import Database, utcnow
from store.queries.labels import ensure_label_ids


@dataclass(frozen=True)
class BackfillCursor:
    """Where a channel's backfill got to. Counts add up over every resumed run of one pass."""

    channel_id: str
    guild_id: str | None
    after_id: int | None  # the newest message id fully stored so far
    stop_before: int | None  # the pass ends before this message id
    messages: int
    images: int
    votes: int
    done: bool
    started_by: str | None
    updated_at: str


def _int(value: object) -> int | None:
    return None if value is None else int(value)


async def get_backfill_cursor(db: Database, channel_id: int | str) -> BackfillCursor | None:
    row = await db.fetchone(
        "SELECT channel_id, guild_id, after_id, stop_before, messages, images, votes, done,"
        " started_by, updated_at FROM backfill_cursors WHERE channel_id = ?",
        (str(channel_id),),
    )
    if row is None:
        return None
    return BackfillCursor(
        channel_id=row["channel_id"],
        guild_id=row["guild_id"],
        after_id=_int(row["after_id"]),
        stop_before=_int(row["stop_before"]),
        messages=int(row["messages"]),
        images=int(row["images"]),
        votes=int(row["votes"]),
        done=bool(row["done"]),
        started_by=row["started_by"],
        updated_at=row["updated_at"],
    )


async def start_backfill_pass(
    db: Database,
    *,
    channel_id: int | str,
    guild_id: int | str | None,
    after_id: int | None,
    stop_before: int,
    started_by: str,
) -> BackfillCursor:
    """Begin a new pass over a channel (counts from zero), replacing a finished one."""
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO backfill_cursors (channel_id, guild_id, after_id, stop_before, messages,"
            " images, votes, done, started_by, updated_at) VALUES (?, ?, ?, ?, 0, 0, 0, 0, ?, ?)"
            " ON CONFLICT(channel_id) DO UPDATE SET guild_id = excluded.guild_id,"
            " after_id = excluded.after_id, stop_before = excluded.stop_before, messages = 0,"
            " images = 0, votes = 0, done = 0, started_by = excluded.started_by,"
            " updated_at = excluded.updated_at",
            (
                str(channel_id),
                None if guild_id is None else str(guild_id),
                None if after_id is None else str(after_id),
                str(stop_before),
                started_by,
                utcnow(),
            ),
        )
    cursor = await get_backfill_cursor(db, channel_id)
    assert cursor is not None  # written just above
    return cursor


async def advance_backfill_cursor(
    db: Database,
    channel_id: int | str,
    *,
    after_id: int | None,
    messages: int,
    images: int,
    votes: int,
    done: bool,
) -> None:
    """Record a fully stored page: the cursor moves to ``after_id`` and the counts grow."""
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE backfill_cursors SET after_id = COALESCE(?, after_id),"
            " messages = messages + ?, images = images + ?, votes = votes + ?, done = ?,"
            " updated_at = ? WHERE channel_id = ?",
            (
                None if after_id is None else str(after_id),
                messages,
                images,
                votes,
                int(done),
                utcnow(),
                str(channel_id),
            ),
        )


# Discord snowflakes: milliseconds since 2015-01-01 in the bits above 22.
_DISCORD_EPOCH_S = 1420070400
# A message the bot stored within this long of its posting was seen live, not through a late
# edit of an old message (which the live tagger also stores) or a backfill.
LIVE_WITHIN_S = 86400


async def get_first_live_message_id(
    db: Database, channel_id: int | str, *, after: int | None = None
) -> int | None:
    """The oldest message of the channel the bot stored as it was posted (from ``after`` on).

    Rows of ``bot_messages`` written long after their message was posted (an old message
    edited later, a backfill) do not count: the live tagger saw them late.
    """
    row = await db.fetchone(
        "SELECT MIN(CAST(message_id AS INTEGER)) FROM bot_messages"
        " WHERE channel_id = ? AND CAST(message_id AS INTEGER) >= ?"
        " AND CAST(strftime('%s', created_at) AS INTEGER)"
        "  - ((CAST(message_id AS INTEGER) >> 22) / 1000 + ?) < ?",
        (str(channel_id), after or 0, _DISCORD_EPOCH_S, LIVE_WITHIN_S),
    )
    return None if row is None or row[0] is None else int(row[0])


async def add_reaction_votes(
    db: Database,
    votes: Iterable[tuple[int, str, str]],
    *,
    message_id: int | str,
) -> int:
    """Old label reactions as +1 votes (origin ``reaction``): (image id, label, voter) each.

    Only where the member has no current vote on that label and image: a later gesture of
    theirs (a "Fix tags" answer, a withdrawn and re-added reaction the live bot saw) stands, and
    reading the same message again adds nothing. Each vote added is logged in ``vote_events``
    under ``message_id``. Returns how many votes were added.
    """
    wanted: Sequence[tuple[int, str, str]] = sorted(set(votes))
    if not wanted:
        return 0
    now = utcnow()
    message = str(message_id)
    added = 0
    async with db.transaction() as conn:
        ids = await ensure_label_ids(conn, sorted({label for _, label, _ in wanted}))
        for image_id, label, voter in wanted:
            cur = await conn.execute(
                "INSERT INTO label_votes (image_id, label_id, voter, vote, origin, created_at)"
                " VALUES (?, ?, ?, 1, 'reaction', ?)"
                " ON CONFLICT(image_id, label_id, voter) DO NOTHING",
                (image_id, ids[label], voter, now),
            )
            if cur.rowcount:
                added += 1
                await conn.execute(
                    "INSERT INTO vote_events (image_id, label, voter, vote, origin, message_id,"
                    " created_at) VALUES (?, ?, ?, 1, 'reaction', ?, ?)",
                    (image_id, label, voter, message, now),
                )
    return added
