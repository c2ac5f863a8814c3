"""The Database object: a write connection and a read connection (WAL), migrations, error mapping.

Writes go through ``transaction()`` (``BEGIN IMMEDIATE`` on the write connection, one at a time).
Reads (``fetchall``, ``fetchone``, ``iter_rows``) use a second connection, so a task reading
while another task's transaction is open sees only committed rows — as another process would.
A read made by the task that holds the transaction goes to the write connection, so a
transaction always sees its own writes (tasks it starts are other tasks: they see committed
rows only).

Every ``fetchall``/``fetchone`` is one job on the read connection (execute and fetch together),
so no statement is left open between two awaits: an open statement pins the connection's read
snapshot, and another task's read in that window would miss rows committed since — a task
could commit a row and then not find it. ``iter_rows``, which stays open while its caller
iterates, gets a connection of its own for the same reason.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import aiosqlite

from store.errors import DatabaseCorrupt, ReadOnlyStore, StoreError

log = logging.getLogger(__name__)

# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26


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


def utcnow(timespec: str = "seconds") -> str:
    """The current UTC time as ISO text; one ``timespec`` per column keeps them comparable."""
    return datetime.now(UTC).isoformat(timespec=timespec)


def is_writable(path: Path) -> bool:
    """Whether this user may write ``path`` (a file or folder) and create files beside it.

    ``os.access`` answers for the real user and knows read-only mounts; for root it says yes to
    any folder on a writable mount, and then nothing refuses the write either.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    return not path.exists() or os.access(path, os.W_OK)


def translate_error(exc: BaseException, path: Path) -> StoreError | None:
    """The one-line store error a SQLite or OS failure means for a user, or None if none fits."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary == _SQLITE_CORRUPT:
            return DatabaseCorrupt(path)
        if primary == _SQLITE_NOTADB:
            return StoreError(f"{path}: not a memetag database: {exc}")
        if primary in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_IOERR) and not is_writable(path):
            return _read_only(path)
        if primary == _SQLITE_FULL:
            return StoreError(f"{path}: the disk is full: {exc}")
        return None
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return _read_only(path)
        if exc.errno == errno.ENOSPC:
            return StoreError(f"{path}: the disk is full")
    return None


def _read_only(path: Path) -> ReadOnlyStore:
    return ReadOnlyStore(
        path,
        "read-only for this user — memetag writes the database, its -wal/-shm journal and its "
        "lock file in the data dir, even to read; make the data dir writable or use a copy",
    )


class Database:
    """Owns the connections. Writes go through ``transaction()`` (BEGIN IMMEDIATE)."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection | None,
        reader: aiosqlite.Connection,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._txn_task: asyncio.Task | None = None  # the task inside transaction(), if any

    @property
    def readonly(self) -> bool:
        return self._writer is None

    @property
    def conn(self) -> aiosqlite.Connection:
        """The write connection (migrations and tests); queries use ``transaction()``."""
        if self._writer is None:
            raise StoreError(f"{self.path}: the database was opened read-only")
        return self._writer

    def _in_own_transaction(self) -> bool:
        return self._txn_task is not None and self._txn_task is asyncio.current_task()

    def _read_conn(self) -> aiosqlite.Connection:
        if self._writer is not None and self._in_own_transaction():
            return self._writer  # inside our own transaction: see our own writes
        return self._reader

    def _raise_translated(self, exc: BaseException) -> None:
        translated = translate_error(exc, self.path)
        if translated is not None:
            raise translated from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; rolled back if the block raises (or is cancelled)."""
        writer = self.conn
        if self._in_own_transaction():
            raise RuntimeError("store transactions do not nest; use the connection you have")
        async with self._write_lock:
            begin = asyncio.ensure_future(writer.execute("BEGIN IMMEDIATE"))
            try:
                # Shielded: a cancelled wait (another process holding the write lock, a task
                # group stopping) does not stop the BEGIN already queued on the connection's
                # thread, so it is awaited and undone here, or the next write would fail with
                # "cannot start a transaction within a transaction".
                await asyncio.shield(begin)
            except asyncio.CancelledError:
                await asyncio.wait([begin])
                if not begin.cancelled() and begin.exception() is None and writer.in_transaction:
                    await writer.execute("ROLLBACK")
                raise
            except sqlite3.Error as exc:
                self._raise_translated(exc)
                raise
            self._txn_task = asyncio.current_task()
            try:
                yield writer
                await writer.execute("COMMIT")
            except BaseException as exc:
                # Also when COMMIT itself failed: never leave the connection inside a
                # transaction, or the next write would fail for a reason nobody can see.
                if writer.in_transaction:
                    try:
                        await writer.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.warning("rollback failed on %s", self.path, exc_info=True)
                self._raise_translated(exc)
                raise
            finally:
                self._txn_task = None

    async def fetchall(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        try:
            # One job: the statement is done before any other task's read can run.
            return list(await self._read_conn().execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            self._raise_translated(exc)
            raise

    async def fetchone(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        """The first row; for queries of one row (``LIMIT 1``, an aggregate, a key)."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def iter_rows(self, sql: str, params: tuple | dict = ()) -> AsyncIterator[sqlite3.Row]:
        """Stream a large result row by row (use with ``contextlib.aclosing``).

        Outside a transaction of this task the rows come from a read-only connection of their
        own, opened for this call: a statement held open across awaits on the shared read
        connection would freeze every other task's reads at its snapshot.
        """
        own = None
        try:
            if self._writer is not None and self._in_own_transaction():
                conn = self._writer
            else:
                own = conn = await _connect(self.path, readonly=True)
                await conn.execute("PRAGMA busy_timeout = 30000")
            async with conn.execute(sql, params) as cur:
                async for row in cur:
                    yield row
        except sqlite3.Error as exc:
            self._raise_translated(exc)
            raise
        finally:
            if own is not None:
                await own.close()

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
            translated = translate_error(exc, db.path)
            if translated is not None:
                raise translated from None
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


async def _connect(path: Path, *, readonly: bool) -> aiosqlite.Connection:
    if readonly:
        # mode=ro: the export and stats can never write, whatever a bug asks for.
        target, uri = f"file:{quote(str(path.absolute()))}?mode=ro", True
    else:
        target, uri = str(path), False
    conn = await aiosqlite.connect(target, uri=uri, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def _open_error(exc: sqlite3.Error, path: Path) -> StoreError:
    translated = translate_error(exc, path)
    if translated is not None:
        return translated
    return StoreError(f"{path}: cannot open database: {exc}")


@asynccontextmanager
async def open_database(path: Path, *, readonly: bool = False) -> AsyncIterator[Database]:
    """Open (creating and migrating if needed) the SQLite database at ``path``.

    Raises:
        ReadOnlyStore: the data dir cannot be written by this user.
        DatabaseCorrupt: SQLite reports damaged pages.
        StoreError: anything else that makes the file unusable as a memetag store.
    """
    path = Path(path)
    if readonly and not path.exists():
        raise StoreError(f"{path}: no database here yet (run an ingest first)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise translate_error(exc, path) or StoreError(f"{path.parent}: {exc}") from None
    if not readonly and not is_writable(path):
        raise _read_only(path)
    opened: list[aiosqlite.Connection] = []
    try:
        try:
            if readonly:
                reader = await _connect(path, readonly=True)
                opened.append(reader)
                await reader.execute("PRAGMA busy_timeout = 30000")
                db = Database(path, None, reader)
                await _check_readable(db)
            else:
                writer = await _connect(path, readonly=False)
                opened.append(writer)
                await writer.execute("PRAGMA journal_mode = WAL")
                await writer.execute("PRAGMA foreign_keys = ON")
                await writer.execute("PRAGMA synchronous = NORMAL")
                await writer.execute("PRAGMA busy_timeout = 30000")
                reader = await _connect(path, readonly=False)
                opened.append(reader)
                await reader.execute("PRAGMA foreign_keys = ON")  # as the writer, for PRAGMA reads
                await reader.execute("PRAGMA busy_timeout = 30000")
                await reader.execute("PRAGMA query_only = ON")
                db = Database(path, writer, reader)
                await _migrate(db)
        except sqlite3.Error as exc:
            raise _open_error(exc, path) from None
        yield db
    finally:
        # The reader first: the last connection to close checkpoints the WAL and removes it.
        for conn in reversed(opened):
            try:
                await conn.close()
            except sqlite3.Error as exc:
                # Everything was committed or rolled back already; a damaged file can still
                # refuse the final checkpoint. Say so without hiding the block's own error.
                log.warning("%s: closing the database failed: %s", path, exc)
