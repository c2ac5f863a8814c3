"""Members' votes from Discord: casting and withdrawing them, the vote log, and the read-only
look-ups the corrections need (a tagged message's images, their predictions and net votes).

``label_votes`` holds one current vote per member, label and image (the latest gesture wins,
whatever it was); ``vote_events`` logs every gesture as it happened, withdrawals included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiosqlite

from store.db import Database, utcnow
from store.queries._convert import from_iso
from store.queries.labels import ensure_label_ids
from store.rows import Prediction

DISCORD_VOTER_PREFIX = "discord:"


def discord_voter(user_id: int | str) -> str:
    """The voter name a Discord member's votes are stored under."""
    return f"{DISCORD_VOTER_PREFIX}{user_id}"


@dataclass(frozen=True)
class MessageImage:
    """One image of a message the bot tagged (``image_id`` is None while it is not stored)."""

    position: int
    post_id: int
    image_id: int | None
    spoiler: bool


@dataclass(frozen=True)
class TaggedMessage:
    """A Discord message the bot tagged, its reply (if it made one) and its images in order."""

    message_id: str
    channel_id: str
    guild_id: str | None
    author_ref: str | None
    reply_id: str | None
    images: tuple[MessageImage, ...]

    @property
    def image_ids(self) -> list[int]:
        """The stored images, in message order, each once (one picture posted twice counts once)."""
        seen: list[int] = []
        for image in self.images:
            if image.image_id is not None and image.image_id not in seen:
                seen.append(image.image_id)
        return seen

    @property
    def message_ids(self) -> tuple[str, ...]:
        """The message and its reply: a reaction on either counts for the images."""
        return (self.message_id,) if self.reply_id is None else (self.message_id, self.reply_id)


@dataclass(frozen=True)
class CastVote:
    image_id: int
    label: str
    vote: int  # +1 or -1


@dataclass(frozen=True)
class VoteEvent:
    image_id: int
    label: str
    voter: str
    vote: int  # +1, -1, or 0 for a withdrawn vote
    origin: str
    message_id: str | None
    created_at: str


async def get_tagged_message(db: Database, message_id: int | str) -> TaggedMessage | None:
    """The tagged message ``message_id`` is, or whose bot reply it is; None if the bot never
    stored it."""
    key = str(message_id)
    row = await db.fetchone(
        "SELECT message_id, channel_id, guild_id, author_ref, reply_id FROM bot_messages"
        " WHERE message_id = ? OR reply_id = ?",
        (key, key),
    )
    if row is None:
        return None
    images = await db.fetchall(
        "SELECT bmi.position, bmi.post_id, bmi.spoiler, p.image_id, p.status"
        " FROM bot_message_images bmi JOIN posts p ON p.id = bmi.post_id"
        " WHERE bmi.message_id = ? ORDER BY bmi.position",
        (row["message_id"],),
    )
    return TaggedMessage(
        message_id=row["message_id"],
        channel_id=row["channel_id"],
        guild_id=row["guild_id"],
        author_ref=row["author_ref"],
        reply_id=row["reply_id"],
        images=tuple(
            MessageImage(
                position=int(r["position"]),
                post_id=int(r["post_id"]),
                image_id=r["image_id"] if r["status"] == "stored" else None,
                spoiler=bool(r["spoiler"]),
            )
            for r in images
        ),
    )


async def _log_events(
    conn: aiosqlite.Connection,
    rows: Iterable[tuple[int, str, int]],
    voter: str,
    origin: str,
    message_id: str | None,
    now: str,
) -> None:
    await conn.executemany(
        "INSERT INTO vote_events (image_id, label, voter, vote, origin, message_id, created_at)"
        " VALUES (?,?,?,?,?,?,?)",
        [(image_id, label, voter, vote, origin, message_id, now) for image_id, label, vote in rows],
    )


async def cast_votes(
    db: Database,
    votes: Sequence[CastVote],
    *,
    voter: str,
    origin: str,
    message_id: int | str | None,
) -> None:
    """Record one member's gesture: each vote becomes their current vote on that label and image
    (replacing whatever gesture made the previous one) and is logged, all in one transaction.

    Args:
        message_id: the Discord message the gesture was made on, for the log.
    """
    if any(v.vote not in (-1, 1) for v in votes):
        raise ValueError("a vote is +1 or -1")
    if not votes:
        return
    now = utcnow()
    message = None if message_id is None else str(message_id)
    async with db.transaction() as conn:
        ids = await ensure_label_ids(conn, sorted({v.label for v in votes}))
        await conn.executemany(
            "INSERT INTO label_votes (image_id, label_id, voter, vote, origin, created_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(image_id, label_id, voter) DO UPDATE SET"
            " vote = excluded.vote, origin = excluded.origin, created_at = excluded.created_at",
            [(v.image_id, ids[v.label], voter, v.vote, origin, now) for v in votes],
        )
        await _log_events(
            conn, [(v.image_id, v.label, v.vote) for v in votes], voter, origin, message, now
        )


async def withdraw_reaction_votes(
    db: Database,
    image_ids: Sequence[int],
    label: str,
    *,
    voter: str,
    message_id: int | str,
    still_reacting_on: Sequence[int | str] = (),
) -> int:
    """A member took their label reaction off ``message_id``: log it (vote 0) and delete their
    current vote on each image, but only a vote a reaction made (a later "Fix tags" answer
    stands) and only if no reaction of theirs with that label is still on one of
    ``still_reacting_on`` (the same images' other message: the image message or the bot's reply),
    as far as the log says.

    Returns how many current votes were deleted.
    """
    if not image_ids:
        return 0
    now = utcnow()
    message = str(message_id)
    others = [str(m) for m in still_reacting_on if str(m) != message]
    deleted = 0
    async with db.transaction() as conn:
        await _log_events(
            conn, [(image_id, label, 0) for image_id in image_ids], voter, "reaction", message, now
        )
        async with conn.execute("SELECT id FROM labels WHERE name = ?", (label,)) as cur:
            found = await cur.fetchone()
        if found is None:
            return 0
        for image_id in image_ids:
            if others and await _reaction_stands(conn, image_id, label, voter, others):
                continue
            cur = await conn.execute(
                "DELETE FROM label_votes WHERE image_id = ? AND label_id = ? AND voter = ?"
                " AND origin = 'reaction'",
                (image_id, found[0], voter),
            )
            deleted += cur.rowcount
    return deleted


async def _reaction_stands(
    conn: aiosqlite.Connection, image_id: int, label: str, voter: str, message_ids: Sequence[str]
) -> bool:
    """Whether the voter's latest reaction gesture with ``label`` on one of ``message_ids`` for
    this image was an add (their reaction is still there)."""
    for message_id in message_ids:
        async with conn.execute(
            "SELECT vote FROM vote_events WHERE image_id = ? AND label = ? AND voter = ?"
            " AND origin = 'reaction' AND message_id = ? ORDER BY id DESC LIMIT 1",
            (image_id, label, voter, message_id),
        ) as cur:
            row = await cur.fetchone()
        if row is not None and row[0] == 1:
            return True
    return False


async def list_net_votes(db: Database, image_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Per image, the net vote (sum over every voter and origin) of each label voted on."""
    net: dict[int, dict[str, int]] = {image_id: {} for image_id in image_ids}
    if not image_ids:
        return net
    marks = ",".join("?" * len(image_ids))
    rows = await db.fetchall(
        "SELECT v.image_id, l.name, SUM(v.vote) AS net FROM label_votes v"
        f" JOIN labels l ON l.id = v.label_id WHERE v.image_id IN ({marks})"
        " GROUP BY v.image_id, v.label_id",
        tuple(image_ids),
    )
    for r in rows:
        net[r["image_id"]][r["name"]] = int(r["net"])
    return net


async def list_member_votes(
    db: Database, image_ids: Sequence[int], voter: str
) -> dict[int, dict[str, int]]:
    """Per image, one voter's current vote on each label they voted on."""
    votes: dict[int, dict[str, int]] = {image_id: {} for image_id in image_ids}
    if not image_ids:
        return votes
    marks = ",".join("?" * len(image_ids))
    rows = await db.fetchall(
        "SELECT v.image_id, l.name, v.vote FROM label_votes v JOIN labels l ON l.id = v.label_id"
        f" WHERE v.voter = ? AND v.image_id IN ({marks})",
        (voter, *image_ids),
    )
    for r in rows:
        votes[r["image_id"]][r["name"]] = int(r["vote"])
    return votes


async def get_latest_predictions(db: Database, image_ids: Sequence[int]) -> dict[int, Prediction]:
    """Per image, the most recent prediction logged for it (images never predicted are absent)."""
    if not image_ids:
        return {}
    marks = ",".join("?" * len(image_ids))
    rows = await db.fetchall(
        "SELECT image_id, model_version, probabilities, sender_name, sender_probability,"
        f" created_at FROM predictions WHERE image_id IN ({marks}) ORDER BY created_at, id",
        tuple(image_ids),
    )
    latest: dict[int, Prediction] = {}
    for r in rows:  # later rows replace earlier ones
        latest[r["image_id"]] = Prediction(
            image_id=r["image_id"],
            model_version=r["model_version"],
            probabilities=json.loads(r["probabilities"]),
            sender_name=r["sender_name"],
            sender_probability=r["sender_probability"],
            created_at=from_iso(r["created_at"]),
        )
    return latest


async def list_vote_events(db: Database, image_id: int | None = None) -> list[VoteEvent]:
    """The vote log, oldest first (one image's, or everything)."""
    where, params = ("WHERE image_id = ?", (image_id,)) if image_id is not None else ("", ())
    rows = await db.fetchall(
        "SELECT image_id, label, voter, vote, origin, message_id, created_at FROM vote_events"
        f" {where} ORDER BY id",
        params,
    )
    return [
        VoteEvent(
            image_id=r["image_id"],
            label=r["label"],
            voter=r["voter"],
            vote=int(r["vote"]),
            origin=r["origin"],
            message_id=r["message_id"],
            created_at=r["created_at"],
        )
        for r in rows
    ]
