"""Shared fixtures: a real migrated SQLite store in tmp_path (the store is never mocked)."""

from __future__ import annotations

import pytest

from store.db import open_database


@pytest.fixture
async def db(tmp_path):
    async with open_database(tmp_path / "memetag.db") as database:
        yield database
