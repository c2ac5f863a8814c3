"""Keeping the store's label table in step with the configured label set."""

from __future__ import annotations

from memetag.config import AppConfig
from store.db import Database
from store.queries.labels import LabelDef, sync_labels


async def sync_configured_labels(db: Database, cfg: AppConfig) -> None:
    await sync_labels(db, [LabelDef(s.name, s.emoji, s.description) for s in cfg.labels])
