"""Predictions a model made for an image."""

from __future__ import annotations

import json
from collections.abc import Sequence

import aiosqlite

from store.db import Database, utcnow
from store.queries._convert import from_iso
from store.rows import NewPrediction, Prediction

_UPSERT = (
    "INSERT INTO predictions (image_id, model_version, probabilities, sender_name,"
    " sender_probability, created_at) VALUES (?,?,?,?,?,?)"
    " ON CONFLICT(image_id, model_version) DO UPDATE SET"
    " probabilities = excluded.probabilities, sender_name = excluded.sender_name,"
    " sender_probability = excluded.sender_probability, created_at = excluded.created_at"
)


async def insert_prediction(
    db: Database,
    image_id: int,
    model_version: str,
    probabilities: dict[str, float],
    sender_name: str | None,
    sender_probability: float | None,
) -> None:
    row = NewPrediction(image_id, model_version, probabilities, sender_name, sender_probability)
    async with db.transaction() as conn:
        await write_predictions(conn, [row], utcnow())


async def write_predictions(
    conn: aiosqlite.Connection, rows: Sequence[NewPrediction], now: str
) -> None:
    """Log ``rows`` inside the caller's transaction (one statement for all of them); a model's
    second prediction for an image replaces its first."""
    await conn.executemany(
        _UPSERT,
        [
            (
                r.image_id,
                r.model_version,
                json.dumps(r.probabilities, sort_keys=True),
                r.sender_name,
                r.sender_probability,
                now,
            )
            for r in rows
        ],
    )


async def list_predictions_for_image(db: Database, image_id: int) -> list[Prediction]:
    rows = await db.fetchall(
        "SELECT * FROM predictions WHERE image_id = ? ORDER BY created_at", (image_id,)
    )
    return [
        Prediction(
            image_id=r["image_id"],
            model_version=r["model_version"],
            probabilities=json.loads(r["probabilities"]),
            sender_name=r["sender_name"],
            sender_probability=r["sender_probability"],
            created_at=from_iso(r["created_at"]),
        )
        for r in rows
    ]
