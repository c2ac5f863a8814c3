"""What the Discord bot keeps: watched channels, tagged messages and their images, live guesses.

Also the per-guild running accuracy of the live sender guesses against the two baselines as they
stood at each guess, and of the category guesses against the members' corrections.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiosqlite

from store.db import Database, utcnow
from store.queries._chunks import fetch_in_chunks
from store.queries._convert import to_iso
from store.queries.predictions import write_predictions
from store.rows import NewPrediction

# The "most active recently" baseline looks this far back from the guess.
RECENT_DAYS = 30


@dataclass(frozen=True)
class BotChannel:
    channel_id: str
    guild_id: str | None
    mode: str
    origin: str


@dataclass(frozen=True)
class TaggedImage:
    """One image of a tagged message: its position in the message and its post."""

    position: int
    post_id: int
    spoiler: bool = False


@dataclass(frozen=True)
class NewTaggedMessage:
    """A message the bot tagged, to be recorded with the posts its images are (``reply_id``:
    its reply). ``store.queries.votes.TaggedMessage`` is such a message as read back."""

    message_id: str
    channel_id: str
    guild_id: str | None
    author_ref: str | None
    images: Sequence[TaggedImage]
    reply_id: str | None = None


@dataclass(frozen=True)
class MessageState:
    """What the store knows of a live message before the bot takes its images."""

    tagged: list[TaggedImage]  # its images tagged already, by position
    author_opted_out: bool


@dataclass(frozen=True)
class Baselines:
    majority: str | None  # the most frequent poster so far
    recent: str | None  # the most frequent poster in the last RECENT_DAYS days


@dataclass(frozen=True)
class LiveGuess:
    """The model's sender guess for a live post, beside the baselines as they stood then."""

    post_id: int
    guild_id: str | None
    model_version: str | None
    guess: str | None
    guess_probability: float | None
    author: str | None  # the post's author as the store names them (the sender head's names)
    baselines: Baselines


@dataclass(frozen=True)
class GuildAccuracy:
    """Running accuracy in one guild (fractions are None until there is something to count).

    Sender: over live posts whose author the model could have named; ``guessed`` counts the
    posts where the model named someone (it stays silent when unsure), ``guess_right`` those it
    named right, and the baselines are scored on the same posts the model was scored on.
    Categories: over (image, label) pairs members voted on (net vote not zero), whether the
    logged prediction had the label at or above 0.5 exactly when the members' net vote is +1.
    """

    posts: int
    guessed: int
    guess_right: int
    majority_right: int
    recent_right: int
    category_votes: int
    category_agree: int

    @property
    def guess_accuracy(self) -> float | None:
        return self.guess_right / self.guessed if self.guessed else None

    @property
    def majority_accuracy(self) -> float | None:
        return self.majority_right / self.guessed if self.guessed else None

    @property
    def recent_accuracy(self) -> float | None:
        return self.recent_right / self.guessed if self.guessed else None

    @property
    def category_accuracy(self) -> float | None:
        return self.category_agree / self.category_votes if self.category_votes else None


# -- channels ---------------------------------------------------------------------------------


async def sync_config_channels(db: Database, channels: Mapping[str, str]) -> None:
    """Make the 'config' rows of bot_channels equal ``channels`` (channel id -> mode).

    Rows an admin command added ('command') are left alone, and win over the config.
    """
    now = utcnow()
    async with db.transaction() as conn:
        async with conn.execute(
            "SELECT channel_id FROM bot_channels WHERE origin = 'config'"
        ) as cur:
            old = {row[0] for row in await cur.fetchall()}
        for gone in sorted(old - set(channels)):
            await conn.execute(
                "DELETE FROM bot_channels WHERE channel_id = ? AND origin = 'config'", (gone,)
            )
        for channel_id, mode in channels.items():
            await conn.execute(
                "INSERT INTO bot_channels (channel_id, guild_id, mode, origin, updated_by,"
                " updated_at) VALUES (?, NULL, ?, 'config', NULL, ?)"
                " ON CONFLICT(channel_id) DO UPDATE SET mode = excluded.mode,"
                " updated_at = excluded.updated_at WHERE bot_channels.origin = 'config'",
                (channel_id, mode, now),
            )


async def list_bot_channels(db: Database) -> list[BotChannel]:
    """The channels the bot watches now (an admin may have disabled a listed one)."""
    rows = await db.fetchall(
        "SELECT channel_id, guild_id, mode, origin FROM bot_channels WHERE enabled = 1"
        " ORDER BY channel_id"
    )
    return [BotChannel(r["channel_id"], r["guild_id"], r["mode"], r["origin"]) for r in rows]


# -- tagged messages --------------------------------------------------------------------------


async def record_tagged_message(
    db: Database,
    *,
    message_id: str,
    channel_id: str,
    guild_id: str | None,
    author_ref: str | None,
    images: Sequence[TaggedImage],
    reply_id: str | None = None,
) -> None:
    """Remember a message the bot tagged and which posts its images are (idempotent).

    A second call for the same message (an edit added an image) adds the new positions; a
    reply id once set is kept unless a new one is given.
    """
    message = NewTaggedMessage(message_id, channel_id, guild_id, author_ref, images, reply_id)
    await record_tagged_messages(db, [message])


async def record_tagged_messages(
    db: Database,
    messages: Sequence[NewTaggedMessage],
    *,
    predictions: Sequence[NewPrediction] = (),
    guesses: Sequence[LiveGuess] = (),
    now: datetime | None = None,
) -> None:
    """What the bot writes once it has tagged messages, in one transaction of four statements
    however many messages: the messages and their images (as :func:`record_tagged_message`),
    the prediction log (as ``insert_prediction``) and the live sender guesses (as
    :func:`insert_live_guess`). Measured in a burst of live images on 2 cores, a transaction
    per message and per row cost 11 round trips to the database thread an image."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    seconds = now.isoformat(timespec="seconds")  # as utcnow() writes these columns
    async with db.transaction() as conn:
        if messages:
            await _write_tagged(conn, messages, seconds)
        if predictions:
            await write_predictions(conn, predictions, seconds)
        if guesses:
            await _write_guesses(conn, guesses, to_iso(now))


async def _write_tagged(
    conn: aiosqlite.Connection, messages: Sequence[NewTaggedMessage], now: str
) -> None:
    await conn.executemany(
        "INSERT INTO bot_messages (message_id, channel_id, guild_id, author_ref, reply_id,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(message_id) DO UPDATE SET"
        " reply_id = COALESCE(excluded.reply_id, bot_messages.reply_id),"
        " updated_at = excluded.updated_at",
        [
            (m.message_id, m.channel_id, m.guild_id, m.author_ref, m.reply_id, now, now)
            for m in messages
        ],
    )
    await conn.executemany(
        "INSERT OR IGNORE INTO bot_message_images (message_id, position, post_id, spoiler)"
        " VALUES (?, ?, ?, ?)",
        [(m.message_id, i.position, i.post_id, int(i.spoiler)) for m in messages for i in m.images],
    )


async def set_reply_id(db: Database, message_id: str, reply_id: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE bot_messages SET reply_id = ?, updated_at = ? WHERE message_id = ?",
            (reply_id, utcnow(), message_id),
        )


async def get_reply_id(db: Database, message_id: str) -> str | None:
    row = await db.fetchone("SELECT reply_id FROM bot_messages WHERE message_id = ?", (message_id,))
    return row["reply_id"] if row else None


async def list_tagged_image_ids(db: Database, message_id: str) -> set[int]:
    """The stored images already tagged in a message (reposts inside it are shown once)."""
    rows = await db.fetchall(
        "SELECT p.image_id FROM bot_message_images bi JOIN posts p ON p.id = bi.post_id"
        " WHERE bi.message_id = ? AND p.image_id IS NOT NULL",
        (message_id,),
    )
    return {r["image_id"] for r in rows}


async def get_message_state(
    db: Database, message_id: str, author_source: str, author_ref: int | str
) -> MessageState:
    """The images of a message tagged already and whether its author opted out, in one read
    (the bot asks before it takes each live message)."""
    rows = await db.fetchall(
        "SELECT bi.position, bi.post_id, bi.spoiler,"
        " EXISTS(SELECT 1 FROM optouts WHERE author_source = ? AND author_ref = ?) AS opted_out"
        " FROM (SELECT 1) LEFT JOIN bot_message_images bi ON bi.message_id = ?"
        " ORDER BY bi.position",
        (author_source, str(author_ref), message_id),
    )
    tagged = [
        TaggedImage(r["position"], r["post_id"], bool(r["spoiler"]))
        for r in rows
        if r["position"] is not None
    ]
    return MessageState(tagged, bool(rows[0]["opted_out"]))


# -- live guesses and running accuracy --------------------------------------------------------


async def _top_author(db: Database, exclude_post: int, since: str | None) -> str | None:
    where = "p.image_id IS NOT NULL AND p.author_id IS NOT NULL AND p.id != ?"
    params: list[object] = [exclude_post]
    if since is not None:
        where += " AND p.posted_at >= ?"
        params.append(since)
    row = await db.fetchone(
        f"SELECT pe.name FROM posts p JOIN people pe ON pe.id = p.author_id WHERE {where}"
        " GROUP BY p.author_id ORDER BY COUNT(*) DESC, pe.name LIMIT 1",
        tuple(params),
    )
    return row[0] if row else None


async def get_post_authors(db: Database, post_ids: Sequence[int]) -> dict[int, str | None]:
    """The store's name for each post's author (None when the post has none), one read per
    500 posts."""
    ids = sorted(set(post_ids))
    found: dict[int, str | None] = dict.fromkeys(ids)
    rows = await fetch_in_chunks(
        db.fetchall,
        "SELECT p.id, pe.name FROM posts p JOIN people pe ON pe.id = p.author_id"
        " WHERE p.id IN ({marks})",
        ids,
    )
    found.update((r[0], r[1]) for r in rows)
    return found


@dataclass(frozen=True)
class AuthorCounts:
    """Stored image posts per author name among posts with ids up to ``up_to_id``;
    ``uncounted`` are the ids up to it that had no image yet (pending, failed, not images)."""

    up_to_id: int
    counts: dict[str, int]
    uncounted: frozenset[int]


async def count_posts_by_author(db: Database) -> AuthorCounts:
    """The per-author tally behind the majority baseline (one statement: one snapshot)."""
    rows = await db.fetchall(
        "WITH top AS (SELECT COALESCE(MAX(id), 0) AS m FROM posts)"
        " SELECT 'top', NULL, m FROM top"
        " UNION ALL SELECT 'count', pe.name, COUNT(*) FROM posts p"
        "   JOIN people pe ON pe.id = p.author_id, top"
        "   WHERE p.image_id IS NOT NULL AND p.id <= top.m GROUP BY p.author_id"
        " UNION ALL SELECT 'missing', NULL, p.id FROM posts p, top"
        "   WHERE p.id <= top.m AND (p.image_id IS NULL OR p.author_id IS NULL)"
    )
    up_to = 0
    counts: dict[str, int] = {}
    missing: set[int] = set()
    for kind, name, value in rows:
        if kind == "top":
            up_to = int(value)
        elif kind == "count":
            counts[name] = int(value)
        else:
            missing.add(int(value))
    return AuthorCounts(up_to, counts, frozenset(missing))


async def list_posts_since(
    db: Database, since: datetime, up_to_id: int
) -> list[tuple[str, str, int]]:
    """(posted_at ISO, author name, post id) of stored image posts since ``since``, oldest first."""
    rows = await db.fetchall(
        "SELECT p.posted_at, pe.name, p.id FROM posts p JOIN people pe ON pe.id = p.author_id"
        " WHERE p.image_id IS NOT NULL AND p.posted_at >= ? AND p.id <= ? ORDER BY p.posted_at",
        (to_iso(since), up_to_id),
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def get_baselines(db: Database, post_id: int, now: datetime) -> Baselines:
    """The two baseline guesses for a post: counted over every other stored post with an
    author (the history the model learnt from). Reads only: no write lock is held."""
    since = to_iso(now - timedelta(days=RECENT_DAYS))
    return Baselines(await _top_author(db, post_id, None), await _top_author(db, post_id, since))


async def insert_live_guess(
    db: Database,
    *,
    post_id: int,
    guild_id: str | None,
    model_version: str | None,
    guess: str | None,
    guess_probability: float | None,
    author: str | None,
    baselines: Baselines | None = None,
    now: datetime | None = None,
) -> Baselines:
    """Log the model's sender guess for a live post beside the baselines as they stand now.

    Args:
        author: the post's author as the store names them (the sender head's names).
        baselines: computed by the caller (a running tally, see ``bot.baselines``); by default
            :func:`get_baselines`, exact but a scan of every post.

    A post is guessed once; a second call leaves the first row.
    """
    now = now or datetime.now(UTC)
    if baselines is None:
        baselines = await get_baselines(db, post_id, now)
    guess_row = LiveGuess(
        post_id, guild_id, model_version, guess, guess_probability, author, baselines
    )
    async with db.transaction() as conn:
        await _write_guesses(conn, [guess_row], to_iso(now))
    return baselines


async def _write_guesses(
    conn: aiosqlite.Connection, guesses: Sequence[LiveGuess], now: str
) -> None:
    await conn.executemany(
        "INSERT OR IGNORE INTO live_guesses (post_id, guild_id, model_version, author, guess,"
        " guess_probability, majority_guess, recent_guess, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                g.post_id,
                g.guild_id,
                g.model_version,
                g.author,
                g.guess,
                g.guess_probability,
                g.baselines.majority,
                g.baselines.recent,
                now,
            )
            for g in guesses
        ],
    )


async def get_guild_accuracy(db: Database, guild_id: str | None) -> GuildAccuracy:
    """The running accuracy of the live guesses in one guild (see :class:`GuildAccuracy`)."""
    row = await db.fetchone(
        "SELECT COUNT(*) AS posts,"
        " SUM(guess IS NOT NULL) AS guessed,"
        " SUM(guess IS NOT NULL AND guess = author) AS guess_right,"
        " SUM(guess IS NOT NULL AND majority_guess = author) AS majority_right,"
        " SUM(guess IS NOT NULL AND recent_guess = author) AS recent_right"
        " FROM live_guesses WHERE guild_id IS ? AND author IS NOT NULL",
        (guild_id,),
    )
    # Category guesses: each (image, label) members voted on in this guild, against the
    # newest logged prediction of that image.
    votes = await db.fetchall(
        "SELECT v.image_id, l.name AS label, SUM(v.vote) AS net FROM label_votes v"
        " JOIN labels l ON l.id = v.label_id"
        " WHERE v.origin != 'ingest' AND v.image_id IN ("
        "   SELECT p.image_id FROM bot_message_images bi JOIN bot_messages bm"
        "   ON bm.message_id = bi.message_id JOIN posts p ON p.id = bi.post_id"
        "   WHERE bm.guild_id IS ? AND p.image_id IS NOT NULL)"
        " GROUP BY v.image_id, v.label_id HAVING SUM(v.vote) != 0",
        (guild_id,),
    )
    agree = counted = 0
    latest: dict[int, dict[str, float] | None] = {}
    for vote in votes:
        image_id = vote["image_id"]
        if image_id not in latest:
            found = await db.fetchone(
                "SELECT probabilities FROM predictions WHERE image_id = ?"
                " ORDER BY created_at DESC, id DESC LIMIT 1",
                (image_id,),
            )
            latest[image_id] = json.loads(found["probabilities"]) if found else None
        probabilities = latest[image_id]
        if probabilities is None or vote["label"] not in probabilities:
            continue
        counted += 1
        agree += (probabilities[vote["label"]] >= 0.5) == (vote["net"] > 0)
    return GuildAccuracy(
        posts=row["posts"] or 0,
        guessed=row["guessed"] or 0,
        guess_right=row["guess_right"] or 0,
        majority_right=row["majority_right"] or 0,
        recent_right=row["recent_right"] or 0,
        category_votes=counted,
        category_agree=agree,
    )
