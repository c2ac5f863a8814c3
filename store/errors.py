"""Store errors: everything the database or the image files can refuse."""

from __future__ import annotations

import shlex
from pathlib import Path


class StoreError(Exception):
    """The database or image store cannot do what was asked."""


class ReadOnlyStore(StoreError):
    """The data dir or the database file cannot be written by this user."""

    def __init__(self, path: Path | str, what: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {what}")


class DatabaseCorrupt(StoreError):
    """SQLite found damaged pages: nothing should be written until the file is checked."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(
            f"{path}: database disk image is malformed — run "
            f"`sqlite3 {shlex.quote(str(path))} 'PRAGMA integrity_check'` or restore it from a backup"
        )


class StoreMismatch(StoreError):
    """The database and the image files do not belong together (a lost or replaced database)."""
