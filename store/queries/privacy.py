"""Members' privacy: opt-outs, forgetting a member, and forgetting a deleted Discord message.

Deleting data deletes image files too, but only files no post uses any more, and never a file
another writer (an ingest, another bot process) has just claimed: in the deleting transaction an
image left without posts loses its row, and its file is claimed in ``pending_files`` under a
stamp of ours — or left alone if a writer's claim is already there. After the commit a second
transaction deletes the file only if our stamp is still the claim and no image row came back
(a writer that claims the hash meanwhile rewrites the stamp; one that links it removes the
claim). A crash between the two leaves a stale claim, which ``store.orphans.sweep_orphans``
deletes after its grace period, as it does for any writer that died mid-write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiosqlite

from store.db import Database, utcnow
from store.files import ImageFiles
from store.queries._chunks import IN_CHUNK, fetch_in_chunks


@dataclass(frozen=True)
class ReleasedFile:
    """An image file whose row is gone, claimed under ``stamp`` until it is deleted."""

    sha256: str
    ext: str
    stamp: str


@dataclass(frozen=True)
class Forgotten:
    """What a deletion removed.

    ``votes`` are current votes (label_votes rows), ``vote_events`` gestures in the vote log;
    ``images`` image rows left without any post (their predictions, votes and review posts go
    with them), ``files_removed`` their files deleted; ``images_kept`` images another post still
    uses (kept with their file).
    """

    posts: int = 0
    votes: int = 0
    vote_events: int = 0
    images: int = 0
    files_removed: int = 0
    images_kept: int = 0
    person_deleted: bool = False


@dataclass(frozen=True)
class MemberData:
    """What ``forget_member`` would delete, counted before asking the member to confirm."""

    posts: int
    votes: int
    images: int  # images only their posts use: row and file deleted
    images_kept: int  # images someone else also posted: kept


# -- opt-outs -----------------------------------------------------------------------------------


async def list_opted_out(
    db: Database, author_source: str, author_refs: Iterable[int | str]
) -> set[str]:
    """Which of ``author_refs`` opted out (as strings)."""
    refs = sorted({str(r) for r in author_refs})
    rows = await fetch_in_chunks(
        db.fetchall,
        "SELECT author_ref FROM optouts WHERE author_source = ? AND author_ref IN ({marks})",
        refs,
        (author_source,),
    )
    return {r[0] for r in rows}


async def add_optout(db: Database, author_source: str, author_ref: int | str) -> bool:
    """Opt a member out; False if they already were."""
    async with db.transaction() as conn:
        cur = await conn.execute(
            "INSERT INTO optouts (author_source, author_ref, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT(author_source, author_ref) DO NOTHING",
            (author_source, str(author_ref), utcnow()),
        )
        return cur.rowcount > 0


async def remove_optout(db: Database, author_source: str, author_ref: int | str) -> bool:
    """Opt a member back in; False if they were not opted out."""
    async with db.transaction() as conn:
        cur = await conn.execute(
            "DELETE FROM optouts WHERE author_source = ? AND author_ref = ?",
            (author_source, str(author_ref)),
        )
        return cur.rowcount > 0


# -- deleting rows, then files ------------------------------------------------------------------


async def _delete_posts(conn: aiosqlite.Connection, post_ids: Sequence[int]) -> int:
    deleted = 0
    for start in range(0, len(post_ids), IN_CHUNK):
        chunk = list(post_ids[start : start + IN_CHUNK])
        cur = await conn.execute(
            f"DELETE FROM posts WHERE id IN ({','.join('?' * len(chunk))})", chunk
        )
        deleted += cur.rowcount
    return deleted


async def _release_unused_images(
    conn: aiosqlite.Connection, image_ids: Iterable[int]
) -> tuple[int, int, list[ReleasedFile]]:
    """Inside the deleting transaction, after the posts went: delete the rows of images no post
    uses any more and claim their files for deletion. Returns (deleted, kept, files)."""
    ids = sorted(set(image_ids))
    if not ids:
        return 0, 0, []
    used = {
        r[0]
        for r in await fetch_in_chunks(
            conn.execute_fetchall,
            "SELECT DISTINCT image_id FROM posts WHERE image_id IN ({marks})",
            ids,
        )
    }
    unused = [i for i in ids if i not in used]
    rows = await fetch_in_chunks(
        conn.execute_fetchall, "SELECT id, sha256, ext FROM images WHERE id IN ({marks})", unused
    )
    stamp = utcnow("microseconds")
    released: list[ReleasedFile] = []
    for image_id, sha256, ext in rows:
        await conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
        async with conn.execute("SELECT 1 FROM pending_files WHERE sha256 = ?", (sha256,)) as cur:
            claimed = await cur.fetchone() is not None
        if claimed:
            continue  # a writer is storing these bytes right now: the file is theirs
        await conn.execute(
            "INSERT INTO pending_files (sha256, ext, created_at) VALUES (?, ?, ?)",
            (sha256, ext, stamp),
        )
        released.append(ReleasedFile(sha256, ext, stamp))
    return len(rows), len(used), released


async def remove_released_files(
    db: Database, files: ImageFiles, released: Sequence[ReleasedFile]
) -> int:
    """Delete the files released by a committed deletion, unless a writer claimed or linked
    them since. Returns how many files were deleted."""
    if not released:
        return 0
    removed = 0
    async with db.transaction() as conn:
        for item in released:
            async with conn.execute(
                "SELECT created_at FROM pending_files WHERE sha256 = ?", (item.sha256,)
            ) as cur:
                claim = await cur.fetchone()
            if claim is None or claim[0] != item.stamp:
                continue  # claimed again (or linked) by a writer: its file now
            await conn.execute("DELETE FROM pending_files WHERE sha256 = ?", (item.sha256,))
            async with conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (item.sha256,)) as cur:
                if await cur.fetchone() is not None:
                    continue
            # Under the write lock: no writer can link this hash before the file is gone, and
            # one that links it later writes the file again (record_stored's ensure_file).
            if await asyncio.to_thread(files.remove, item.sha256, item.ext):
                removed += 1
    return removed


# -- a member ---------------------------------------------------------------------------------

_THEIR_POSTS = (
    "SELECT p.id, p.image_id FROM posts p WHERE p.source = ? AND p.author_id IN ("
    " SELECT person_id FROM person_aliases WHERE source = ? AND source_ref = ?)"
)


async def count_member_data(db: Database, source: str, ref: int | str, voter: str) -> MemberData:
    """What :func:`forget_member` would delete for this member (read only)."""
    posts = await db.fetchall(_THEIR_POSTS, (source, source, str(ref)))
    post_ids = {r[0] for r in posts}
    image_ids = sorted({r[1] for r in posts if r[1] is not None})
    rows = await fetch_in_chunks(
        db.fetchall, "SELECT id, image_id FROM posts WHERE image_id IN ({marks})", image_ids
    )
    shared = {r[1] for r in rows if r[0] not in post_ids}
    votes = await db.fetchone("SELECT COUNT(*) FROM label_votes WHERE voter = ?", (voter,))
    return MemberData(
        posts=len(post_ids),
        votes=int(votes[0]),
        images=len(image_ids) - len(shared),
        images_kept=len(shared),
    )


async def forget_member(
    db: Database, files: ImageFiles, *, source: str, ref: int | str, voter: str
) -> Forgotten:
    """Delete everything stored about one member of ``source`` and opt them out.

    Their posts from that source (with their links, guesses and labels), every vote and vote
    gesture of theirs, the images no other post uses (row, predictions, votes, file), their
    alias, and their person row unless posts from other sources still name them.
    """
    ref = str(ref)
    async with db.transaction() as conn:
        async with conn.execute(_THEIR_POSTS, (source, source, ref)) as cur:
            posts = [tuple(r) for r in await cur.fetchall()]
        async with conn.execute(
            "SELECT person_id FROM person_aliases WHERE source = ? AND source_ref = ?",
            (source, ref),
        ) as cur:
            person = await cur.fetchone()
        await conn.execute("DELETE FROM bot_messages WHERE author_ref = ?", (ref,))
        n_posts = await _delete_posts(conn, [p[0] for p in posts])
        cur = await conn.execute("DELETE FROM label_votes WHERE voter = ?", (voter,))
        n_votes = cur.rowcount
        cur = await conn.execute("DELETE FROM vote_events WHERE voter = ?", (voter,))
        n_events = cur.rowcount
        images, kept, released = await _release_unused_images(
            conn, [p[1] for p in posts if p[1] is not None]
        )
        person_deleted = False
        if person is not None:
            async with conn.execute(
                "SELECT 1 FROM posts WHERE author_id = ? LIMIT 1", (person[0],)
            ) as cur:
                still_named = await cur.fetchone() is not None
            if still_named:
                await conn.execute(
                    "DELETE FROM person_aliases WHERE source = ? AND source_ref = ?",
                    (source, ref),
                )
            else:
                await conn.execute("DELETE FROM people WHERE id = ?", (person[0],))
                person_deleted = True
        await conn.execute(
            "INSERT INTO optouts (author_source, author_ref, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT(author_source, author_ref) DO NOTHING",
            (source, ref, utcnow()),
        )
    removed = await remove_released_files(db, files, released)
    return Forgotten(
        posts=n_posts,
        votes=n_votes,
        vote_events=n_events,
        images=images,
        files_removed=removed,
        images_kept=kept,
        person_deleted=person_deleted,
    )


# -- a deleted message --------------------------------------------------------------------------


def _source_id_range(message_id: str) -> tuple[str, str]:
    # "<message id>:<n>" for every n: ';' sorts right after ':'.
    return f"{message_id}:", f"{message_id};"


async def _message_is_known(db: Database, source: str, message_id: str) -> bool:
    low, high = _source_id_range(message_id)
    row = await db.fetchone(
        "SELECT EXISTS (SELECT 1 FROM posts WHERE source = ? AND source_id >= ?"
        "  AND source_id < ?)"
        " OR EXISTS (SELECT 1 FROM bot_messages WHERE message_id = ? OR reply_id = ?)"
        " OR EXISTS (SELECT 1 FROM review_items WHERE message_id = ?)",
        (source, low, high, message_id, message_id, message_id),
    )
    return bool(row[0])


async def forget_message(
    db: Database, files: ImageFiles, *, source: str, message_id: int | str
) -> Forgotten:
    """A message was deleted: delete its posts (source ids ``<message id>:<n>``), the votes cast
    through it (the vote log's ``message_id``: reactions on it, "Fix tags" answers about it) and
    the images no other post uses. A vote stays when the member's latest gesture on that label
    and image was made elsewhere. Cheap when the store never saw the message."""
    message = str(message_id)
    if not await _message_is_known(db, source, message):
        return Forgotten()
    low, high = _source_id_range(message)
    n_votes = 0
    async with db.transaction() as conn:
        async with conn.execute(
            "SELECT id, image_id FROM posts WHERE source = ? AND source_id >= ? AND source_id < ?",
            (source, low, high),
        ) as cur:
            posts = [tuple(r) for r in await cur.fetchall()]
        async with conn.execute(
            "SELECT DISTINCT image_id, label, voter FROM vote_events WHERE message_id = ?",
            (message,),
        ) as cur:
            cast_here = [tuple(r) for r in await cur.fetchall()]
        for image_id, label, voter in cast_here:
            async with conn.execute(
                "SELECT message_id FROM vote_events WHERE image_id = ? AND label = ?"
                " AND voter = ? ORDER BY id DESC LIMIT 1",
                (image_id, label, voter),
            ) as cur:
                latest = await cur.fetchone()
            if latest is None or latest[0] != message:
                continue
            cur = await conn.execute(
                "DELETE FROM label_votes WHERE image_id = ? AND voter = ? AND origin != 'ingest'"
                " AND label_id = (SELECT id FROM labels WHERE name = ?)",
                (image_id, voter, label),
            )
            n_votes += cur.rowcount
        cur = await conn.execute("DELETE FROM vote_events WHERE message_id = ?", (message,))
        n_events = cur.rowcount
        await conn.execute("DELETE FROM bot_messages WHERE message_id = ?", (message,))
        await conn.execute("UPDATE bot_messages SET reply_id = NULL WHERE reply_id = ?", (message,))
        n_posts = await _delete_posts(conn, [p[0] for p in posts])
        images, kept, released = await _release_unused_images(
            conn, [p[1] for p in posts if p[1] is not None]
        )
    removed = await remove_released_files(db, files, released)
    return Forgotten(
        posts=n_posts,
        votes=n_votes,
        vote_events=n_events,
        images=images,
        files_removed=removed,
        images_kept=kept,
    )
