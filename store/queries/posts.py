"""Posts: recording what sources said, and each post's download outcome."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiosqlite

from store.db import Database, utcnow
from store.queries._chunks import fetch_in_chunks
from store.queries._convert import post_from_row, to_iso
from store.queries.labels import ensure_label_ids
from store.queries.people import resolve_person
from store.rows import NewPost, Post

_POST_COLUMNS = (
    "p.id, p.source, p.source_id, p.conversation_id, p.conversation_name, p.author_id,"
    " pe.name AS author_name, p.posted_at, p.url, p.fallback_urls, p.local_ref, p.media_hint, p.must_sniff,"
    " p.image_id, p.status, p.failure_reason, p.failure_detail, p.attempts, p.reaction_count"
)


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    already_known: int
    # The post id of each post given, in order, and whether this call recorded it (False: it
    # was known already, or listed earlier in the same batch).
    post_ids: list[tuple[int, bool]] = field(default_factory=list)


async def _rows_by_source_id(
    conn: aiosqlite.Connection, source: str, source_ids: Sequence[str]
) -> dict[str, tuple]:
    """source_id -> (id, reaction_count, author_id, posted_at, image_id) for those recorded."""
    rows = await fetch_in_chunks(
        conn.execute_fetchall,
        "SELECT source_id, id, reaction_count, author_id, posted_at, image_id FROM posts"
        " WHERE source = ? AND source_id IN ({marks})",
        source_ids,
        (source,),
    )
    return {row[0]: tuple(row[1:]) for row in rows}


async def find_post_ids(db: Database, source: str, source_ids: Sequence[str]) -> dict[str, int]:
    """source_id -> post id, for those of ``source_ids`` that are recorded."""
    rows = await fetch_in_chunks(
        db.fetchall,
        "SELECT source_id, id FROM posts WHERE source = ? AND source_id IN ({marks})",
        source_ids,
        (source,),
    )
    return {r[0]: int(r[1]) for r in rows}


async def insert_posts(
    db: Database, posts: Sequence[NewPost], people: Mapping[str, str]
) -> InsertResult:
    """Record posts in one transaction; a post already known (source, source_id) is left as is,
    except that its reaction count is refreshed (a newer export may have more reactions).

    A batch costs a handful of statements, not a few per post: lookups and inserts go by
    whole batches (one post at a time cost ~10 round trips to the database thread each).
    """
    inserted = known = 0
    now = utcnow()
    async with db.transaction() as conn:
        by_source: dict[str, list[NewPost]] = {}
        for post in posts:
            by_source.setdefault(post.source, []).append(post)
        await ensure_label_ids(conn, sorted({label for p in posts for label in p.labels}))
        people_ids: dict[tuple[str, str, str | None], int] = {}
        ids: dict[int, tuple[int, bool]] = {}  # id(post) -> (post id, recorded by this call)
        for source, group in by_source.items():
            existing = await _rows_by_source_id(conn, source, [p.source_id for p in group])
            new: dict[str, NewPost] = {}
            again: list[NewPost] = []  # listed twice in the batch: known once the first is in
            for post in group:
                if post.source_id in existing:
                    known += 1
                    await _refresh_known(conn, existing[post.source_id], post, people, now)
                elif post.source_id in new:
                    again.append(post)
                else:
                    new[post.source_id] = post
            rows = []
            for post in new.values():
                author_id = None
                if post.author_ref is not None:
                    key = (post.author_source or post.source, post.author_ref, post.author_name)
                    if key not in people_ids:
                        people_ids[key] = await resolve_person(conn, *key, people)
                    author_id = people_ids[key]
                rows.append(
                    (
                        post.source,
                        post.source_id,
                        post.conversation_id,
                        post.conversation_name,
                        author_id,
                        to_iso(post.posted_at),
                        post.url,
                        json.dumps(list(post.fallback_urls)) if post.fallback_urls else None,
                        post.local_ref,
                        post.media_hint,
                        int(post.must_sniff),
                        post.reaction_count,
                        now,
                        now,
                    )
                )
            if not rows:
                for post in group:
                    ids[id(post)] = (existing[post.source_id][0], False)
                continue
            await conn.executemany(
                "INSERT INTO posts (source, source_id, conversation_id, conversation_name,"
                " author_id, posted_at, url, fallback_urls, local_ref, media_hint, must_sniff,"
                " reaction_count, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            inserted += len(rows)
            added = await _rows_by_source_id(conn, source, list(new))
            await conn.executemany(
                "INSERT OR IGNORE INTO post_labels (post_id, label) VALUES (?, ?)",
                [(added[sid][0], label) for sid, post in new.items() for label in post.labels],
            )
            for post in again:
                known += 1
                await _refresh_known(conn, added[post.source_id], post, people, now)
            firsts = {id(p) for p in new.values()}
            for post in group:
                row = existing.get(post.source_id) or added[post.source_id]
                ids[id(post)] = (row[0], id(post) in firsts)
    return InsertResult(
        inserted=inserted, already_known=known, post_ids=[ids[id(p)] for p in posts]
    )


async def _refresh_known(
    conn: aiosqlite.Connection, row, post: NewPost, people: Mapping[str, str], now: str
) -> None:
    """What a later export may add to a post already recorded: newer reaction counts, labels
    (a labels CSV after the same folder was ingested as a tree), a sender or time it lacked."""
    post_id, reactions, author_id, posted_at, image_id = row
    if post.reaction_count is not None and reactions != post.reaction_count:
        await conn.execute(
            "UPDATE posts SET reaction_count = ?, updated_at = ? WHERE id = ?",
            (post.reaction_count, now, post_id),
        )
    if author_id is None and post.author_ref is not None:
        author_id = await resolve_person(
            conn, post.author_source or post.source, post.author_ref, post.author_name, people
        )
        await conn.execute(
            "UPDATE posts SET author_id = ?, updated_at = ? WHERE id = ?", (author_id, now, post_id)
        )
    if posted_at is None and post.posted_at is not None:
        await conn.execute(
            "UPDATE posts SET posted_at = ?, updated_at = ? WHERE id = ?",
            (to_iso(post.posted_at), now, post_id),
        )
    if post.labels:  # the labels exist: insert_posts made them for the whole batch
        await conn.executemany(
            "INSERT OR IGNORE INTO post_labels (post_id, label) VALUES (?, ?)",
            [(post_id, label) for label in post.labels],
        )
        if image_id is not None:
            await _apply_post_labels(conn, image_id, post_id, now)


_APPLY_POST_LABELS = (
    "INSERT OR IGNORE INTO label_votes (image_id, label_id, voter, vote, origin, created_at)"
    " SELECT ?, l.id, 'ingest:' || p.source, 1, 'ingest', ?"
    " FROM post_labels pl JOIN labels l ON l.name = pl.label"
    " JOIN posts p ON p.id = pl.post_id WHERE pl.post_id = ?"
)


async def _apply_post_labels(
    conn: aiosqlite.Connection, image_id: int, post_id: int, now: str
) -> None:
    """The labels a post carried become 'ingest' votes on its image (once per source)."""
    await conn.execute(_APPLY_POST_LABELS, (image_id, now, post_id))


async def list_posts_to_fetch(
    db: Database,
    source: str | None = None,
    *,
    retry_failed: bool = False,
    after_id: int = 0,
    limit: int | None = None,
) -> list[Post]:
    """Posts whose image still has to be fetched: pending ones, plus failed ones on a retry.

    In id order; ``after_id`` and ``limit`` read them a page at a time (keyset paging), so a
    caller working through a million posts never holds them all.
    """
    if retry_failed:
        # Unary + keeps SQLite off the status and source indexes: through them it would sort
        # every match on each page; walking the ids in order lets LIMIT stop early instead.
        where = "+p.status IN ('pending', 'failed') AND p.id > ?"
    else:
        where = "p.status = 'pending' AND p.id > ?"
    params: list = [after_id]
    if source is not None:
        where += " AND +p.source = ?" if retry_failed else " AND p.source = ?"
        params.append(source)
    page = ""
    if limit is not None:
        page = " LIMIT ?"
        params.append(limit)
    rows = await db.fetchall(
        f"SELECT {_POST_COLUMNS} FROM posts p LEFT JOIN people pe ON pe.id = p.author_id"
        f" WHERE {where} ORDER BY p.id{page}",
        tuple(params),
    )
    return [post_from_row(r) for r in rows]


async def count_posts_to_fetch(
    db: Database, source: str | None = None, *, retry_failed: bool = False
) -> int:
    """How many posts :func:`list_posts_to_fetch` would list, without reading them."""
    where = "status IN ('pending', 'failed')" if retry_failed else "status = 'pending'"
    params: tuple = ()
    if source is not None:
        where += " AND source = ?"
        params = (source,)
    row = await db.fetchone(f"SELECT COUNT(*) FROM posts WHERE {where}", params)
    return int(row[0]) if row else 0


async def get_post_by_source_id(db: Database, source: str, source_id: str) -> Post | None:
    """The post a source knows as ``source_id``, or None when it is not recorded."""
    row = await db.fetchone(
        f"SELECT {_POST_COLUMNS} FROM posts p LEFT JOIN people pe ON pe.id = p.author_id"
        " WHERE p.source = ? AND p.source_id = ?",
        (source, source_id),
    )
    return post_from_row(row) if row else None


async def list_posts(db: Database, source: str | None = None) -> list[Post]:
    params: tuple = ()
    where = ""
    if source is not None:
        where, params = " WHERE p.source = ?", (source,)
    rows = await db.fetchall(
        f"SELECT {_POST_COLUMNS} FROM posts p LEFT JOIN people pe ON pe.id = p.author_id"
        f"{where} ORDER BY p.id",
        params,
    )
    return [post_from_row(r) for r in rows]


@dataclass(frozen=True)
class StoredImage:
    """What the ingest learnt about a fetched image; the file is already in place."""

    sha256: str
    phash: str | None
    width: int
    height: int
    format: str
    ext: str
    bytes: int


@dataclass(frozen=True)
class StoreOutcome:
    image_id: int
    is_new: bool  # the image was not in the store before this post


async def record_stored(
    db: Database,
    post_id: int,
    image: StoredImage,
    *,
    ensure_file: Callable[[], object] | None = None,
) -> StoreOutcome:
    """Link a post to its (possibly already known) image and apply the post's own labels.

    Args:
        ensure_file: called (in a worker thread) inside the transaction, before the link is
            committed, to make sure the file is in place — writing it again if it is gone.
            Orphan sweeps delete files under the same write lock, so a file checked here
            cannot vanish before its row is committed. The file's claim is released.

    Returns the image's id and whether it is new to the store.
    """
    (outcome,) = await record_stored_many(db, [(post_id, image)], ensure_files=ensure_file)
    return outcome


# The per-post statements of record_stored_many, each run for a whole batch at once.
_RELEASE_CLAIM = "DELETE FROM pending_files WHERE sha256 = ?"
_INSERT_IMAGE = (
    "INSERT INTO images (sha256, phash, width, height, format, ext, bytes, created_at)"
    " VALUES (?,?,?,?,?,?,?,?)"
)
_LINK_POST = (
    "UPDATE posts SET status = 'stored', image_id = ?, failure_reason = NULL,"
    " failure_detail = NULL, attempts = attempts + 1, updated_at = ? WHERE id = ?"
)


async def _image_ids(conn: aiosqlite.Connection, hashes: Sequence[str]) -> dict[str, int]:
    """sha256 -> image id, for those of ``hashes`` that have an image row."""
    rows = await fetch_in_chunks(
        conn.execute_fetchall, "SELECT sha256, id FROM images WHERE sha256 IN ({marks})", hashes
    )
    return {row[0]: row[1] for row in rows}


async def record_stored_many(
    db: Database,
    stored: Sequence[tuple[int, StoredImage]],
    *,
    ensure_files: Callable[[], object] | None = None,
) -> list[StoreOutcome]:
    """Link many posts to their images in one transaction: :func:`record_stored` for a batch.

    A batch costs a handful of statements, not a few per post. Posts are linked in order: of
    several posts with bytes new to the store, the first is the one whose image is new.

    Args:
        stored: (post id, image) pairs; the images' files are already in place.
        ensure_files: called once (in a worker thread) inside the transaction, before any link
            is committed, to make sure every image's file is in place (see ``record_stored``).

    Returns one outcome per pair, in order.
    """
    if not stored:
        return []
    now = utcnow()
    images: dict[str, StoredImage] = {}
    for _, image in stored:
        images.setdefault(image.sha256, image)
    hashes = list(images)
    async with db.transaction() as conn:
        if ensure_files is not None:
            await asyncio.to_thread(ensure_files)
        await conn.executemany(_RELEASE_CLAIM, [(sha,) for sha in hashes])
        known = await _image_ids(conn, hashes)
        new = [images[sha] for sha in hashes if sha not in known]
        if new:
            await conn.executemany(
                _INSERT_IMAGE,
                [
                    (i.sha256, i.phash, i.width, i.height, i.format, i.ext, i.bytes, now)
                    for i in new
                ],
            )
            ids = {**known, **await _image_ids(conn, [i.sha256 for i in new])}
        else:
            ids = known
        await conn.executemany(_LINK_POST, [(ids[i.sha256], now, pid) for pid, i in stored])
        await conn.executemany(_APPLY_POST_LABELS, [(ids[i.sha256], now, pid) for pid, i in stored])
    outcomes = []
    fresh = {i.sha256 for i in new}
    for _, image in stored:
        is_new = image.sha256 in fresh
        fresh.discard(image.sha256)
        outcomes.append(StoreOutcome(image_id=ids[image.sha256], is_new=is_new))
    return outcomes


async def record_failure(
    db: Database, post_id: int, reason: str, detail: str, *, not_image: bool = False
) -> None:
    """Remember why a post's image could not be stored (``not_image``: a link that was no image)."""
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE posts SET status = ?, failure_reason = ?, failure_detail = ?,"
            " attempts = attempts + 1, updated_at = ? WHERE id = ?",
            ("not_image" if not_image else "failed", reason, detail[:500], utcnow(), post_id),
        )
