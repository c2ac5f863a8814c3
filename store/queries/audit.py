"""The audit log of admin actions taken from Discord (and the CLI)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from store.db import Database, utcnow
from store.queries._convert import from_iso


@dataclass(frozen=True)
class AuditEntry:
    id: int
    guild_id: str | None
    actor: str
    action: str
    arguments: dict
    outcome: str | None
    created_at: datetime


async def add_audit(
    db: Database,
    *,
    guild_id: str | None,
    actor: str,
    action: str,
    arguments: str = "{}",
    outcome: str | None = "ok",
) -> int:
    """Append one entry; ``arguments`` is a JSON object as text. Returns its id."""
    async with db.transaction() as conn:
        cur = await conn.execute(
            "INSERT INTO audit_log (guild_id, actor, action, arguments, outcome, created_at)"
            " VALUES (?,?,?,?,?,?)",
            (guild_id, actor, action, arguments, outcome, utcnow("milliseconds")),
        )
        return int(cur.lastrowid)


async def list_audit(
    db: Database, *, guild_id: str | None = None, limit: int = 100
) -> list[AuditEntry]:
    """The newest ``limit`` entries (of one guild when given), oldest first."""
    where, params = ("WHERE guild_id = ?", (guild_id,)) if guild_id else ("", ())
    rows = await db.fetchall(
        f"SELECT * FROM (SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?) ORDER BY id",
        (*params, limit),
    )
    return [
        AuditEntry(
            r["id"],
            r["guild_id"],
            r["actor"],
            r["action"],
            json.loads(r["arguments"]),
            r["outcome"],
            from_iso(r["created_at"]),
        )
        for r in rows
    ]
