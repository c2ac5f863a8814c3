"""Failed posts: which image items could not be stored and why (`memetag failures`)."""

from __future__ import annotations

from store.db import Database
from store.queries._convert import from_iso
from store.rows import FailedPost


def _where(reason: str | None, source: str | None) -> tuple[str, tuple]:
    where, params = ["p.status = 'failed'"], []
    if reason is not None:
        where.append("p.failure_reason = ?")
        params.append(reason)
    if source is not None:
        where.append("p.source = ?")
        params.append(source)
    return " AND ".join(where), tuple(params)


async def list_failed_posts(
    db: Database,
    *,
    reason: str | None = None,
    source: str | None = None,
    limit: int | None = None,
) -> list[FailedPost]:
    """Failed posts, the most recent failure first, optionally of one reason and/or source."""
    where, params = _where(reason, source)
    sql = (
        "SELECT p.id, p.source, p.failure_reason, p.failure_detail, p.url, p.local_ref,"
        " COALESCE(p.conversation_name, p.conversation_id) AS conversation,"
        " pe.name AS sender, p.posted_at, p.updated_at, p.attempts"
        " FROM posts p LEFT JOIN people pe ON pe.id = p.author_id"
        f" WHERE {where} ORDER BY p.updated_at DESC, p.id"
    )
    if limit is not None:
        sql += " LIMIT ?"
        params += (limit,)
    return [
        FailedPost(
            post_id=r["id"],
            source=r["source"],
            reason=r["failure_reason"] or "unknown",
            detail=r["failure_detail"],
            url=r["url"],
            local_ref=r["local_ref"],
            conversation=r["conversation"],
            sender=r["sender"],
            posted_at=from_iso(r["posted_at"]),
            failed_at=from_iso(r["updated_at"]),
            attempts=r["attempts"],
        )
        for r in await db.fetchall(sql, params)
    ]


async def count_failed_posts(
    db: Database, *, reason: str | None = None, source: str | None = None
) -> dict[str, int]:
    """How many posts failed, per reason (most frequent first), under the same filters."""
    where, params = _where(reason, source)
    rows = await db.fetchall(
        "SELECT COALESCE(p.failure_reason, 'unknown') AS reason, COUNT(*) AS n FROM posts p"
        f" WHERE {where} GROUP BY 1 ORDER BY n DESC, reason",
        params,
    )
    return {r["reason"]: int(r["n"]) for r in rows}
