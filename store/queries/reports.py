"""Read-only summaries: the CSV export and `memetag stats`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from store.db import Database
from store.queries._convert import from_iso
from store.rows import ExportRow, Stats


async def iter_export_rows(db: Database) -> AsyncIterator[ExportRow]:
    """One row per post whose image is stored, oldest first; labels are those with net votes > 0."""
    labels_rows = await db.fetchall(
        "SELECT v.image_id, l.name FROM label_votes v JOIN labels l ON l.id = v.label_id"
        " GROUP BY v.image_id, v.label_id HAVING SUM(v.vote) > 0 ORDER BY l.name"
    )
    labels: dict[int, list[str]] = {}
    for r in labels_rows:
        labels.setdefault(r["image_id"], []).append(r["name"])
    rows = db.iter_rows(
        "SELECT p.source, p.posted_at, p.conversation_name, p.conversation_id, p.url,"
        " pe.name AS sender, i.id AS image_id, i.sha256, i.ext"
        " FROM posts p JOIN images i ON i.id = p.image_id"
        " LEFT JOIN people pe ON pe.id = p.author_id"
        " WHERE p.status = 'stored' ORDER BY p.posted_at IS NULL, p.posted_at, p.id"
    )
    async with aclosing(rows):
        async for r in rows:
            yield ExportRow(
                filename=f"images/{r['sha256'][:2]}/{r['sha256']}.{r['ext']}",
                sender=r["sender"],
                timestamp=from_iso(r["posted_at"]),
                source=r["source"],
                labels=tuple(labels.get(r["image_id"], ())),
                conversation=r["conversation_name"] or r["conversation_id"],
                url=r["url"],
            )


async def get_stats(db: Database) -> Stats:
    async def counts(sql: str) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in await db.fetchall(sql)}

    async def scalar(sql: str) -> int:
        row = await db.fetchone(sql)
        return int(row[0])

    return Stats(
        posts_by_source=await counts("SELECT source, COUNT(*) FROM posts GROUP BY source"),
        image_posts_by_source=await counts(
            "SELECT source, COUNT(*) FROM posts WHERE status = 'stored' GROUP BY source"
        ),
        images=await scalar("SELECT COUNT(*) FROM images"),
        people=await scalar("SELECT COUNT(*) FROM people"),
        label_votes=await counts(
            "SELECT l.name, COUNT(*) FROM label_votes v JOIN labels l ON l.id = v.label_id"
            " GROUP BY l.name"
        ),
        pending=await scalar("SELECT COUNT(*) FROM posts WHERE status = 'pending'"),
        failures_by_reason=await counts(
            "SELECT failure_reason, COUNT(*) FROM posts WHERE status = 'failed'"
            " GROUP BY failure_reason"
        ),
        not_images=await scalar("SELECT COUNT(*) FROM posts WHERE status = 'not_image'"),
        models=await scalar("SELECT COUNT(*) FROM models"),
    )
