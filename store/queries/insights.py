"""Read-only summaries for the bot's ``/tagger stats`` and ``explain``: label counts, top
posters, the live sender guesses' accuracy per week, and the stored images of one Discord
message."""

from __future__ import annotations

from dataclasses import dataclass

from store.db import Database


@dataclass(frozen=True)
class LabelCount:
    """One label: images whose net vote is positive (what training takes as positives), and
    the current votes members cast on it in Discord (ingested labels not counted)."""

    label: str
    positive_images: int
    member_votes: int


@dataclass(frozen=True)
class PosterCount:
    name: str
    images: int  # stored image posts


@dataclass(frozen=True)
class WeekAccuracy:
    """The live sender guesses made in one week (Monday, UTC), scored like
    :class:`store.queries.bot.GuildAccuracy`: over posts with a known author, ``guessed``
    where the model named someone, and the baselines on those same posts."""

    week: str  # ISO date of the week's Monday
    posts: int
    guessed: int
    guess_right: int
    majority_right: int
    recent_right: int

    def _share(self, right: int) -> float | None:
        return right / self.guessed if self.guessed else None

    @property
    def guess_accuracy(self) -> float | None:
        return self._share(self.guess_right)

    @property
    def majority_accuracy(self) -> float | None:
        return self._share(self.majority_right)

    @property
    def recent_accuracy(self) -> float | None:
        return self._share(self.recent_right)


@dataclass(frozen=True)
class MessageImageFile:
    """A stored image of a Discord message (live, backfilled or from an export): its position in
    the message (the ``<message_id>:<n>`` numbering), post, image file and channel."""

    position: int
    post_id: int
    image_id: int
    sha256: str
    ext: str
    channel_id: str | None
    spoiler: bool


async def list_label_counts(db: Database) -> list[LabelCount]:
    """Every label that has votes, by positive images (most first), then name."""
    rows = await db.fetchall(
        "SELECT l.name,"
        " (SELECT COUNT(*) FROM (SELECT 1 FROM label_votes v WHERE v.label_id = l.id"
        "   GROUP BY v.image_id HAVING SUM(v.vote) > 0)) AS positives,"
        " (SELECT COUNT(*) FROM label_votes v WHERE v.label_id = l.id"
        "   AND v.origin != 'ingest') AS member_votes"
        " FROM labels l ORDER BY positives DESC, l.name"
    )
    return [LabelCount(r["name"], int(r["positives"]), int(r["member_votes"])) for r in rows]


async def list_top_posters(db: Database, limit: int = 10) -> list[PosterCount]:
    """The people with the most stored image posts, most first (ties by name)."""
    rows = await db.fetchall(
        "SELECT pe.name, COUNT(*) AS n FROM posts p JOIN people pe ON pe.id = p.author_id"
        " WHERE p.status = 'stored' AND p.image_id IS NOT NULL"
        " GROUP BY p.author_id ORDER BY n DESC, pe.name LIMIT ?",
        (limit,),
    )
    return [PosterCount(r["name"], int(r["n"])) for r in rows]


async def list_weekly_accuracy(
    db: Database, guild_id: str | None, *, weeks: int = 26
) -> list[WeekAccuracy]:
    """The last ``weeks`` weeks that had live guesses in ``guild_id``, oldest first."""
    rows = await db.fetchall(
        "SELECT * FROM ("
        " SELECT date(created_at, 'weekday 0', '-6 days') AS week, COUNT(*) AS posts,"
        " SUM(guess IS NOT NULL) AS guessed,"
        " SUM(guess IS NOT NULL AND guess = author) AS guess_right,"
        " SUM(guess IS NOT NULL AND majority_guess = author) AS majority_right,"
        " SUM(guess IS NOT NULL AND recent_guess = author) AS recent_right"
        " FROM live_guesses WHERE guild_id IS ? AND author IS NOT NULL"
        " GROUP BY week ORDER BY week DESC LIMIT ?) ORDER BY week",
        (guild_id, weeks),
    )
    return [
        WeekAccuracy(
            week=r["week"],
            posts=int(r["posts"]),
            guessed=int(r["guessed"] or 0),
            guess_right=int(r["guess_right"] or 0),
            majority_right=int(r["majority_right"] or 0),
            recent_right=int(r["recent_right"] or 0),
        )
        for r in rows
    ]


async def list_message_images(db: Database, message_id: int | str) -> list[MessageImageFile]:
    """The stored images of Discord message ``message_id``, in message order."""
    prefix = f"{message_id}:"
    # A range on the (source, source_id) index: ";" sorts right after ":".
    rows = await db.fetchall(
        "SELECT p.id AS post_id, p.source_id, p.conversation_id, i.id AS image_id, i.sha256,"
        " i.ext, COALESCE(bmi.spoiler, 0) AS spoiler"
        " FROM posts p JOIN images i ON i.id = p.image_id"
        " LEFT JOIN bot_message_images bmi ON bmi.post_id = p.id"
        " WHERE p.source = 'discord' AND p.source_id >= ? AND p.source_id < ?"
        " AND p.status = 'stored'",
        (prefix, f"{message_id};"),
    )
    found: list[MessageImageFile] = []
    for r in rows:
        tail = str(r["source_id"])[len(prefix) :]
        if not tail.isdigit():
            continue
        found.append(
            MessageImageFile(
                position=int(tail),
                post_id=int(r["post_id"]),
                image_id=int(r["image_id"]),
                sha256=r["sha256"],
                ext=r["ext"],
                channel_id=r["conversation_id"],
                spoiler=bool(r["spoiler"]),
            )
        )
    return sorted(found, key=lambda f: f.position)
