"""Images: lookups, the labelled view training reads, and claims on files being written."""

from __future__ import annotations

from collections.abc import Iterable

import aiosqlite

from store.db import Database, utcnow
from store.queries._convert import from_iso, image_from_row
from store.rows import Image, LabelledImage

_IMAGE_COLUMNS = "i.id, i.sha256, i.phash, i.width, i.height, i.format, i.ext, i.bytes"


async def get_image(db: Database, image_id: int) -> Image | None:
    row = await db.fetchone(f"SELECT {_IMAGE_COLUMNS} FROM images i WHERE i.id = ?", (image_id,))
    return image_from_row(row) if row else None


async def get_image_by_sha256(db: Database, sha256: str) -> Image | None:
    row = await db.fetchone(f"SELECT {_IMAGE_COLUMNS} FROM images i WHERE i.sha256 = ?", (sha256,))
    return image_from_row(row) if row else None


async def list_labelled_images(db: Database) -> list[LabelledImage]:
    """Every stored image with the sender and time of its first post and its net label votes.

    Net votes sum +1/-1 over all voters and origins, per label; the classifier decides what
    a net count means. Ordered, and same-time posts of one image ranked, by properties of the
    data (content hash; source and its message id), never by the ids ingest happened to assign:
    the same images must train the same model whatever order they were ingested in.
    """
    rows = await db.fetchall(
        "WITH first_post AS ("
        "  SELECT p.image_id, p.posted_at, pe.name AS sender, ROW_NUMBER() OVER ("
        "    PARTITION BY p.image_id"
        "    ORDER BY p.posted_at IS NULL, p.posted_at, p.source, p.source_id) AS rn"
        "  FROM posts p LEFT JOIN people pe ON pe.id = p.author_id"
        "  WHERE p.status = 'stored')"
        f" SELECT {_IMAGE_COLUMNS}, fp.sender, fp.posted_at FROM images i"
        " JOIN first_post fp ON fp.image_id = i.id AND fp.rn = 1 ORDER BY i.sha256"
    )
    votes = await db.fetchall(
        "SELECT v.image_id, l.name, SUM(v.vote) AS net FROM label_votes v"
        " JOIN labels l ON l.id = v.label_id GROUP BY v.image_id, v.label_id"
    )
    by_image: dict[int, dict[str, int]] = {}
    for v in votes:
        by_image.setdefault(v["image_id"], {})[v["name"]] = int(v["net"])
    return [
        LabelledImage(
            image=image_from_row(r),
            sender=r["sender"],
            posted_at=from_iso(r["posted_at"]),
            net_votes=by_image.get(r["id"], {}),
        )
        for r in rows
    ]


async def claim_image_file(db: Database, sha256: str, ext: str) -> None:
    """Announce that this writer is about to write the file for ``sha256``; commit it first.

    ``record_stored`` removes the claim when the file is linked to an image. A claim left behind
    means the writer died in between, and only then may the sweep delete the file.
    """
    await claim_image_files(db, [(sha256, ext)])


async def claim_image_files(db: Database, claims: Iterable[tuple[str, str]]) -> None:
    """:func:`claim_image_file` for many (sha256, ext) files, in one transaction."""
    claims = list(claims)
    if not claims:
        return
    async with db.transaction() as conn:
        now = utcnow("microseconds")  # stamped under the write lock, as the sweep reads it
        rows = [(sha256, ext, now) for sha256, ext in claims]
        await conn.executemany(
            "INSERT INTO pending_files (sha256, ext, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT(sha256) DO UPDATE SET ext = excluded.ext,"
            " created_at = excluded.created_at",
            rows,
        )


async def list_pending_files(db: Database, created_before: str) -> list[tuple[str, str]]:
    """(sha256, ext) of claims older than ``created_before``, oldest first.

    ``created_before`` is ISO time with microseconds, as the claims are written.
    """
    rows = await db.fetchall(
        "SELECT sha256, ext FROM pending_files WHERE created_at < ? ORDER BY created_at, sha256",
        (created_before,),
    )
    return [(r["sha256"], r["ext"]) for r in rows]


async def take_stale_claim(conn: aiosqlite.Connection, sha256: str, created_before: str) -> bool:
    """Inside the sweep's transaction: drop a claim that is still older than ``created_before``.

    Returns True when its file is garbage: the claim was stale and no image row uses the hash.
    A claim refreshed meanwhile (a writer is at it again) is left alone and returns False.
    """
    async with conn.execute(
        "SELECT 1 FROM pending_files WHERE sha256 = ? AND created_at < ?",
        (sha256, created_before),
    ) as cur:
        if await cur.fetchone() is None:
            return False
    await conn.execute("DELETE FROM pending_files WHERE sha256 = ?", (sha256,))
    async with conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (sha256,)) as cur:
        return await cur.fetchone() is None


async def is_store_empty(db: Database) -> bool:
    """True when the database holds no post and no image (new, emptied or replaced)."""
    row = await db.fetchone(
        "SELECT NOT EXISTS (SELECT 1 FROM posts) AND NOT EXISTS (SELECT 1 FROM images)"
    )
    return bool(row[0])
