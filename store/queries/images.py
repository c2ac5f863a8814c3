"""Images: lookups, and the labelled view training reads."""

from __future__ import annotations

from store.db import Database
from store.queries._convert import from_iso, image_from_row
from store.rows import Image, LabelledImage

_IMAGE_COLUMNS = "i.id, i.sha256, i.phash, i.width, i.height, i.format, i.ext, i.bytes"


async def get_image(db: Database, image_id: int) -> Image | None:
    row = await db.fetchone(f"SELECT {_IMAGE_COLUMNS} FROM images i WHERE i.id = ?", (image_id,))
    return image_from_row(row) if row else None


async def get_image_by_sha256(db: Database, sha256: str) -> Image | None:
    row = await db.fetchone(f"SELECT {_IMAGE_COLUMNS} FROM images i WHERE i.sha256 = ?", (sha256,))
    return image_from_row(row) if row else None


async def list_image_hashes(db: Database) -> set[str]:
    rows = await db.fetchall("SELECT sha256 FROM images")
    return {r[0] for r in rows}


async def list_labelled_images(db: Database) -> list[LabelledImage]:
    """Every stored image with the sender and time of its first post and its net label votes.

    Net votes sum +1/-1 over all voters and origins, per label; the classifier decides what
    a net count means.
    """
    rows = await db.fetchall(
        "WITH first_post AS ("
        "  SELECT p.image_id, p.posted_at, pe.name AS sender, ROW_NUMBER() OVER ("
        "    PARTITION BY p.image_id ORDER BY p.posted_at IS NULL, p.posted_at, p.id) AS rn"
        "  FROM posts p LEFT JOIN people pe ON pe.id = p.author_id"
        "  WHERE p.status = 'stored')"
        f" SELECT {_IMAGE_COLUMNS}, fp.sender, fp.posted_at FROM images i"
        " JOIN first_post fp ON fp.image_id = i.id AND fp.rn = 1 ORDER BY i.id"
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
