"""What admins change from Discord: watched channels, per-guild thresholds; and the figures
``/tagger status`` and ``/tagger labels`` show (activity counts, votes per label)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from store.db import Database, utcnow


@dataclass(frozen=True)
class ChannelSetting:
    """One row of bot_channels: a config default or an admin's choice ('command')."""

    channel_id: str
    guild_id: str | None
    mode: str
    origin: str
    enabled: bool
    updated_by: str | None


@dataclass(frozen=True)
class Activity:
    """Stored posts, their images and members' votes: in the whole store and in one guild's
    watched channels (live posts the bot recorded there), in total and since ``day`` (UTC)."""

    posts: int
    posts_today: int
    images: int
    images_today: int
    votes: int
    votes_today: int
    guild_posts: int
    guild_posts_today: int
    guild_votes: int
    guild_votes_today: int


@dataclass(frozen=True)
class LabelCounts:
    """Members' current votes on a label (either sign) and the images whose net vote is > 0."""

    label: str
    votes: int
    positives: int


# -- channels ---------------------------------------------------------------------------------


async def list_channel_settings(db: Database) -> list[ChannelSetting]:
    """Every listed channel, enabled or not, config and command rows alike."""
    rows = await db.fetchall(
        "SELECT channel_id, guild_id, mode, origin, enabled, updated_by FROM bot_channels"
        " ORDER BY channel_id"
    )
    return [_channel_setting(r) for r in rows]


def _channel_setting(r) -> ChannelSetting:
    return ChannelSetting(
        r["channel_id"], r["guild_id"], r["mode"], r["origin"], bool(r["enabled"]), r["updated_by"]
    )


async def get_channel_setting(db: Database, channel_id: str) -> ChannelSetting | None:
    for setting in await list_channel_settings_for(db, [channel_id]):
        return setting
    return None


async def list_channel_settings_for(db: Database, channel_ids: list[str]) -> list[ChannelSetting]:
    if not channel_ids:
        return []
    marks = ",".join("?" * len(channel_ids))
    rows = await db.fetchall(
        "SELECT channel_id, guild_id, mode, origin, enabled, updated_by FROM bot_channels"
        f" WHERE channel_id IN ({marks}) ORDER BY channel_id",
        tuple(channel_ids),
    )
    return [_channel_setting(r) for r in rows]


async def set_channel(
    db: Database,
    *,
    channel_id: str,
    guild_id: str,
    mode: str,
    enabled: bool,
    actor: str,
) -> None:
    """An admin's choice for a channel: stored as a 'command' row, which the config's re-sync
    at start leaves alone (it wins over ``[bot] channels``)."""
    now = utcnow()
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO bot_channels (channel_id, guild_id, mode, origin, enabled, updated_by,"
            " updated_at) VALUES (?, ?, ?, 'command', ?, ?, ?)"
            " ON CONFLICT(channel_id) DO UPDATE SET guild_id = excluded.guild_id,"
            " mode = excluded.mode, origin = 'command', enabled = excluded.enabled,"
            " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            (channel_id, guild_id, mode, int(enabled), actor, now),
        )


# -- thresholds -------------------------------------------------------------------------------


async def set_guild_threshold(
    db: Database, guild_id: str, label: str, threshold: float, *, actor: str
) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO guild_thresholds (guild_id, label, threshold, updated_by, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(guild_id, label) DO UPDATE SET"
            " threshold = excluded.threshold, updated_by = excluded.updated_by,"
            " updated_at = excluded.updated_at",
            (guild_id, label, threshold, actor, utcnow()),
        )


async def delete_guild_threshold(db: Database, guild_id: str, label: str) -> bool:
    """Drop one override; True if there was one."""
    async with db.transaction() as conn:
        cur = await conn.execute(
            "DELETE FROM guild_thresholds WHERE guild_id = ? AND label = ?", (guild_id, label)
        )
        return cur.rowcount > 0


async def list_guild_thresholds(db: Database) -> dict[str, dict[str, float]]:
    """guild id -> label -> threshold, for every guild with an override."""
    rows = await db.fetchall(
        "SELECT guild_id, label, threshold FROM guild_thresholds ORDER BY guild_id, label"
    )
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        out.setdefault(r["guild_id"], {})[r["label"]] = float(r["threshold"])
    return out


# -- figures ----------------------------------------------------------------------------------


async def get_activity(db: Database, guild_id: str, day: date) -> Activity:
    """Counts for ``/tagger status`` (one read; ``day`` is compared on the stored UTC dates)."""
    since = day.isoformat()
    row = await db.fetchone(
        "SELECT"
        " (SELECT COUNT(*) FROM posts WHERE status = 'stored') AS posts,"
        " (SELECT COUNT(*) FROM posts WHERE status = 'stored' AND created_at >= :since)"
        "   AS posts_today,"
        " (SELECT COUNT(*) FROM images) AS images,"
        " (SELECT COUNT(*) FROM images WHERE created_at >= :since) AS images_today,"
        " (SELECT COUNT(*) FROM label_votes WHERE origin != 'ingest') AS votes,"
        " (SELECT COUNT(*) FROM label_votes WHERE origin != 'ingest' AND created_at >= :since)"
        "   AS votes_today,"
        " (SELECT COUNT(*) FROM bot_message_images bi JOIN bot_messages bm"
        "   ON bm.message_id = bi.message_id WHERE bm.guild_id = :guild) AS guild_posts,"
        " (SELECT COUNT(*) FROM bot_message_images bi JOIN bot_messages bm"
        "   ON bm.message_id = bi.message_id WHERE bm.guild_id = :guild"
        "   AND bm.created_at >= :since) AS guild_posts_today,"
        " (SELECT COUNT(*) FROM label_votes v WHERE v.origin != 'ingest' AND v.image_id IN"
        "   (SELECT p.image_id FROM bot_message_images bi JOIN bot_messages bm"
        "    ON bm.message_id = bi.message_id JOIN posts p ON p.id = bi.post_id"
        "    WHERE bm.guild_id = :guild)) AS guild_votes,"
        " (SELECT COUNT(*) FROM label_votes v WHERE v.origin != 'ingest'"
        "   AND v.created_at >= :since AND v.image_id IN"
        "   (SELECT p.image_id FROM bot_message_images bi JOIN bot_messages bm"
        "    ON bm.message_id = bi.message_id JOIN posts p ON p.id = bi.post_id"
        "    WHERE bm.guild_id = :guild)) AS guild_votes_today",
        {"since": since, "guild": guild_id},
    )
    return Activity(*(int(row[k] or 0) for k in row.keys()))


async def list_label_counts(db: Database) -> list[LabelCounts]:
    """Per label of the store (active or not): members' votes and positive images (net > 0)."""
    rows = await db.fetchall(
        "SELECT l.name,"
        " (SELECT COUNT(*) FROM label_votes v WHERE v.label_id = l.id) AS votes,"
        " (SELECT COUNT(*) FROM (SELECT 1 FROM label_votes v WHERE v.label_id = l.id"
        "   GROUP BY v.image_id HAVING SUM(v.vote) > 0)) AS positives"
        " FROM labels l ORDER BY l.id"
    )
    return [LabelCounts(r["name"], int(r["votes"]), int(r["positives"])) for r in rows]
