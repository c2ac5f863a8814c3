"""The Database object: one aiosqlite connection, WAL, foreign keys, numbered migrations."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import aiosqlite

from store.errors import StoreError

log = logging.getLogger(__name__)


def _migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) for every migrations/NNNN_*.sql, in order."""
    found = []
    for entry in resources.files("store.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise StoreError(f"store migrations are not numbered 1..N: {numbers}")
    return found


SCHEMA_VERSION = len(_migrations())


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Database:
    """Owns the connection. Writes go through ``transaction()`` (BEGIN IMMEDIATE)."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; rolled back if the block raises (or is cancelled)."""
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                await self.conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed: never leave the connection inside a
                # transaction, or the next write would fail for a reason nobody can see.
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise

    async def fetchall(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0])


async def _migrate(db: Database) -> None:
    current = await db.schema_version()
    migrations = _migrations()
    if current > len(migrations):
        raise StoreError(
            f"{db.path}: database schema v{current} is newer than this memetag (v{len(migrations)});"
            " upgrade memetag"
        )
    for number, name, sql in migrations[current:]:
        log.info("applying migration %s", name)
        # executescript commits on its own; wrap the script and the version bump in one transaction.
        script = f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;"
        try:
            await db.conn.executescript(script)
        except sqlite3.Error as exc:
            if db.conn.in_transaction:
                await db.conn.execute("ROLLBACK")
            # Another process opening the same fresh store may have applied it first.
            if await db.schema_version() >= number:
                continue
            raise StoreError(f"{db.path}: migration {name} failed: {exc}") from None


async def _check_readable(db: Database) -> None:
    """A read-only open cannot migrate: refuse a store that is empty or of another schema."""
    version = await db.schema_version()
    if version == 0:
        raise StoreError(f"{db.path}: no database here yet (run an ingest first)")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{db.path}: database schema v{version} is newer than this memetag "
            f"(v{SCHEMA_VERSION}); upgrade memetag"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"{db.path}: database schema v{version} is older than this memetag "
            f"(v{SCHEMA_VERSION}); run any ingest or train once to migrate it"
        )


@asynccontextmanager
async def open_database(path: Path, *, readonly: bool = False) -> AsyncIterator[Database]:
    """Open (creating and migrating if needed) the SQLite database at ``path``."""
    path = Path(path)
    if readonly and not path.exists():
        raise StoreError(f"{path}: no database here yet (run an ingest first)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open database: {exc}") from None
    conn.row_factory = sqlite3.Row
    db = Database(conn, path)
    try:
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                await _migrate(db)
            else:
                await _check_readable(db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a memetag database: {exc}") from None
        yield db
    finally:
        await conn.close()
