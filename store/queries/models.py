"""Trained model versions and which one is current."""

from __future__ import annotations

import json

from store.db import Database, utcnow
from store.errors import StoreError
from store.queries._convert import from_iso
from store.rows import ModelRecord


def _model(r) -> ModelRecord:
    return ModelRecord(
        id=r["id"],
        version=r["version"],
        path=r["path"],
        metrics=json.loads(r["metrics"]),
        created_at=from_iso(r["created_at"]),
        is_current=bool(r["is_current"]),
    )


async def insert_model(
    db: Database, version: str, path: str, metrics: dict, *, make_current: bool
) -> ModelRecord:
    async with db.transaction() as conn:
        if make_current:
            await conn.execute("UPDATE models SET is_current = 0 WHERE is_current = 1")
        await conn.execute(
            "INSERT INTO models (version, path, metrics, created_at, is_current)"
            " VALUES (?, ?, ?, ?, ?)",
            (version, path, json.dumps(metrics, sort_keys=True), utcnow(), int(make_current)),
        )
    model = await get_model(db, version)
    assert model is not None
    return model


async def get_model(db: Database, version: str) -> ModelRecord | None:
    row = await db.fetchone("SELECT * FROM models WHERE version = ?", (version,))
    return _model(row) if row else None


async def get_current_model(db: Database) -> ModelRecord | None:
    row = await db.fetchone("SELECT * FROM models WHERE is_current = 1")
    return _model(row) if row else None


async def list_models(db: Database) -> list[ModelRecord]:
    rows = await db.fetchall("SELECT * FROM models ORDER BY created_at, id")
    return [_model(r) for r in rows]


async def set_current_model(db: Database, version: str) -> ModelRecord:
    async with db.transaction() as conn:
        async with conn.execute("SELECT id FROM models WHERE version = ?", (version,)) as cur:
            if await cur.fetchone() is None:
                raise StoreError(f"no model version {version!r} (see `memetag models`)")
        await conn.execute("UPDATE models SET is_current = 0 WHERE is_current = 1")
        await conn.execute("UPDATE models SET is_current = 1 WHERE version = ?", (version,))
    model = await get_model(db, version)
    assert model is not None
    return model
