"""Which image files are garbage, and deleting them safely while other processes write.

A content-addressed file is garbage only when this store can prove it: a writer claimed it
(``claim_image_file``), the claim is older than a grace period, and no image row uses the hash.
A file nobody claimed — a database that was lost, emptied or replaced by an older backup, a
file copied in by hand — is never deleted. Each deletion happens inside a write transaction,
and ``record_stored`` checks the file inside its own, so a writer that commits a row always
finds its file in place: the sweep and the commit cannot interleave.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from store.db import Database
from store.errors import StoreMismatch
from store.files import ImageFiles
from store.queries.images import is_store_empty, list_pending_files, take_stale_claim

log = logging.getLogger(__name__)

# A claim or temp file younger than this may belong to a writer that is still at work.
ORPHAN_GRACE_S = 3600.0
_BATCH = 100


async def check_files_belong(db: Database, files: ImageFiles) -> None:
    """Refuse to write when the database is empty but the image folder is not.

    That is what a deleted, truncated or replaced ``memetag.db`` looks like; writing into it
    would bury the problem.

    Raises:
        StoreMismatch: saying what happened and the two ways forward.
    """
    if not await is_store_empty(db):
        return
    count = await asyncio.to_thread(files.count_image_files)
    if count:
        raise StoreMismatch(
            f"{db.path}: the database holds no posts, but {files.root} holds {count} image "
            f"files: the database was deleted, emptied or replaced. Restore it from a backup, "
            f"or move {files.root} aside to start a new store (no file was touched)"
        )


async def sweep_orphans(db: Database, files: ImageFiles, *, grace_s: float = ORPHAN_GRACE_S) -> int:
    """Delete files left by writers that died before linking them. Returns how many."""
    removed = await asyncio.to_thread(files.remove_dead_temp_files, grace_s)
    cutoff = (datetime.now(UTC) - timedelta(seconds=grace_s)).isoformat(timespec="microseconds")
    stale = await list_pending_files(db, cutoff)
    for start in range(0, len(stale), _BATCH):
        async with db.transaction() as conn:
            for sha256, ext in stale[start : start + _BATCH]:
                # Decided and done under the write lock: no writer can commit this hash now.
                if await take_stale_claim(conn, sha256, cutoff):
                    if await asyncio.to_thread(files.remove, sha256, ext):
                        removed += 1
    return removed
