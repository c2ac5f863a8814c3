"""Row conversion helpers shared by the query modules."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

from store.rows import Image, Post


def to_iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def from_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def image_from_row(row: sqlite3.Row, prefix: str = "") -> Image:
    return Image(
        id=row[f"{prefix}id"],
        sha256=row[f"{prefix}sha256"],
        phash=row[f"{prefix}phash"],
        width=row[f"{prefix}width"],
        height=row[f"{prefix}height"],
        format=row[f"{prefix}format"],
        ext=row[f"{prefix}ext"],
        bytes=row[f"{prefix}bytes"],
    )


def post_from_row(row: sqlite3.Row) -> Post:
    return Post(
        id=row["id"],
        source=row["source"],
        source_id=row["source_id"],
        conversation_id=row["conversation_id"],
        conversation_name=row["conversation_name"],
        author_id=row["author_id"],
        author_name=row["author_name"],
        posted_at=from_iso(row["posted_at"]),
        url=row["url"],
        fallback_urls=tuple(json.loads(row["fallback_urls"] or "[]")),
        local_ref=row["local_ref"],
        media_hint=row["media_hint"],
        must_sniff=bool(row["must_sniff"]),
        image_id=row["image_id"],
        status=row["status"],
        failure_reason=row["failure_reason"],
        failure_detail=row["failure_detail"],
        attempts=row["attempts"],
        reaction_count=row["reaction_count"],
    )
