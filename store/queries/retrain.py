"""Retrains started from Discord (``retrain_runs``): one running at a time, and the votes since.

At most one row is ``running`` (a partial unique index), so two processes sharing the store can
never train at once. ``detail`` is a JSON object: while running, who runs it (host, the bot's
and the worker's process ids) and the newest vote event when it began; once finished, also the
outcome sentence.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from store.db import Database, utcnow
from store.queries._convert import from_iso

RetrainStatus = Literal["running", "promoted", "kept", "failed"]


@dataclass(frozen=True)
class RetrainRun:
    id: int
    guild_id: str | None
    requested_by: str  # "discord:<user id>" or "auto"
    forced: bool
    status: RetrainStatus
    version: str | None
    detail: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None


def _run(r: sqlite3.Row) -> RetrainRun:
    try:
        detail = json.loads(r["detail"]) if r["detail"] else {}
    except ValueError:
        detail = {"outcome": r["detail"]}
    return RetrainRun(
        id=int(r["id"]),
        guild_id=r["guild_id"],
        requested_by=r["requested_by"],
        forced=bool(r["forced"]),
        status=r["status"],
        version=r["version"],
        detail=detail if isinstance(detail, dict) else {"outcome": str(detail)},
        started_at=from_iso(r["started_at"]),  # type: ignore[arg-type]
        finished_at=from_iso(r["finished_at"]),
    )


async def claim_retrain(
    db: Database,
    *,
    guild_id: str | None,
    requested_by: str,
    forced: bool,
    detail: dict[str, Any],
) -> tuple[RetrainRun, bool]:
    """Start a run unless one is running. Returns (the new run, True) or (the running one, False).

    ``detail`` gets ``last_vote_event``: the newest vote event now, from which
    :func:`count_votes_since_last_retrain` counts.
    """
    async with db.transaction() as conn:
        async with conn.execute("SELECT * FROM retrain_runs WHERE status = 'running'") as cur:
            running = await cur.fetchone()
        if running is not None:
            return _run(running), False
        async with conn.execute("SELECT COALESCE(MAX(id), 0) FROM vote_events") as cur:
            (last_event,) = await cur.fetchone()
        body = json.dumps({**detail, "last_vote_event": int(last_event)}, sort_keys=True)
        try:
            cur = await conn.execute(
                "INSERT INTO retrain_runs (guild_id, requested_by, forced, status, detail,"
                " started_at) VALUES (?, ?, ?, 'running', ?, ?)",
                (guild_id, requested_by, int(forced), body, utcnow("milliseconds")),
            )
        except sqlite3.IntegrityError:  # pragma: no cover - BEGIN IMMEDIATE serialises writers
            async with conn.execute("SELECT * FROM retrain_runs WHERE status = 'running'") as c2:
                return _run(await c2.fetchone()), False
        run_id = int(cur.lastrowid)
        async with conn.execute("SELECT * FROM retrain_runs WHERE id = ?", (run_id,)) as cur:
            return _run(await cur.fetchone()), True


async def get_retrain_run(db: Database, run_id: int) -> RetrainRun | None:
    row = await db.fetchone("SELECT * FROM retrain_runs WHERE id = ?", (run_id,))
    return _run(row) if row else None


async def get_running_retrain(db: Database) -> RetrainRun | None:
    row = await db.fetchone("SELECT * FROM retrain_runs WHERE status = 'running'")
    return _run(row) if row else None


async def get_last_retrain(db: Database) -> RetrainRun | None:
    """The most recently started run, whatever its status."""
    row = await db.fetchone("SELECT * FROM retrain_runs ORDER BY id DESC LIMIT 1")
    return _run(row) if row else None


async def list_retrains(db: Database, *, limit: int = 20) -> list[RetrainRun]:
    """The newest ``limit`` runs, newest first."""
    rows = await db.fetchall("SELECT * FROM retrain_runs ORDER BY id DESC LIMIT ?", (limit,))
    return [_run(r) for r in rows]


async def update_retrain_detail(db: Database, run_id: int, **fields: Any) -> None:
    """Merge ``fields`` into a running run's detail (e.g. the worker's process id)."""
    async with db.transaction() as conn:
        async with conn.execute(
            "SELECT detail FROM retrain_runs WHERE id = ? AND status = 'running'", (run_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return
        detail = json.loads(row["detail"] or "{}")
        detail.update(fields)
        await conn.execute(
            "UPDATE retrain_runs SET detail = ? WHERE id = ?",
            (json.dumps(detail, sort_keys=True), run_id),
        )


async def finish_retrain_run(
    db: Database,
    run_id: int,
    *,
    status: RetrainStatus,
    version: str | None = None,
    outcome: str,
    **fields: Any,
) -> bool:
    """Close a running run with its outcome. False if it was no longer running (already closed
    by the worker, or recovered as stale), which leaves it as it was."""
    if status == "running":
        raise ValueError("a run is finished as promoted, kept or failed")
    async with db.transaction() as conn:
        async with conn.execute(
            "SELECT detail FROM retrain_runs WHERE id = ? AND status = 'running'", (run_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return False
        detail = json.loads(row["detail"] or "{}")
        detail.update(fields, outcome=outcome)
        await conn.execute(
            "UPDATE retrain_runs SET status = ?, version = ?, detail = ?, finished_at = ?"
            " WHERE id = ? AND status = 'running'",
            (status, version, json.dumps(detail, sort_keys=True), utcnow("milliseconds"), run_id),
        )
        return True


async def count_votes_since_last_retrain(db: Database) -> int:
    """Member votes (vote events other than withdrawals) the current model has not seen.

    Counted from the last retrain's start (by vote event id: what its training could have
    seen), unless the current model is newer and not that retrain's (``memetag train`` ran
    since): then from that model's creation; every vote when there is neither.
    """
    run = await get_last_retrain(db)
    model = await db.fetchone("SELECT version, created_at FROM models WHERE is_current = 1")
    model_at = from_iso(model["created_at"]) if model else None
    if run is not None and (
        model is None or run.started_at >= model_at or run.version == model["version"]
    ):
        row = await db.fetchone(
            "SELECT COUNT(*) AS n FROM vote_events WHERE id > ? AND vote != 0",
            (int(run.detail.get("last_vote_event", 0)),),
        )
    elif model is not None:
        row = await db.fetchone(
            "SELECT COUNT(*) AS n FROM vote_events WHERE vote != 0 AND created_at >= ?",
            (model["created_at"],),
        )
    else:
        row = await db.fetchone("SELECT COUNT(*) AS n FROM vote_events WHERE vote != 0")
    return int(row["n"]) if row else 0
