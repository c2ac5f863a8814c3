"""A second writer beside an ingest (the bot, another CLI): nothing committed or about to be
committed is lost, whatever the sweep decides and whenever it runs."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

from ingest.errors import MemberMissing
from ingest.parsers.base import ParsedPost, ParseStats
from ingest.pipeline import run_ingest
from store.db import open_database
from store.files import ImageFiles
from store.orphans import ORPHAN_GRACE_S, sweep_orphans
from store.queries.images import claim_image_file
from store.queries.posts import StoredImage, insert_posts, list_posts_to_fetch, record_stored
from store.rows import NewPost
from tests.helpers.imagegen import make_image

# A writer process that stores images the way the bot will: claim, write, (a pause), link.
WRITER = r"""
import asyncio, hashlib, sys
from pathlib import Path
from store.db import open_database
from store.files import ImageFiles
from store.queries.images import claim_image_file
from store.queries.posts import StoredImage, insert_posts, list_posts_to_fetch, record_stored
from store.rows import NewPost

async def main(db_path, images, n):
    files = ImageFiles(Path(images))
    async with open_database(Path(db_path)) as db:
        await insert_posts(db, [NewPost("bot", f"b{i}", "c", None, None, None, None, None, None,
                                        None) for i in range(n)], {})
        for i, post in enumerate(await list_posts_to_fetch(db, "bot")):
            data = f"image {i} the bot fetched ".encode() * 40
            sha = hashlib.sha256(data).hexdigest()
            await claim_image_file(db, sha, "png")
            put = lambda sha=sha, data=data: files.write(sha, "png", data)
            await asyncio.to_thread(put)
            await asyncio.sleep(0.005)  # written, not yet committed: what a sweep must respect
            await record_stored(db, post.id, StoredImage(sha, None, 1, 1, "PNG", "png",
                                len(data)), ensure_file=put)
            print(sha, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


class _Folder:
    def __init__(self, members: dict[str, bytes]) -> None:
        self.members = members

    def read_bytes(self, member: str, max_bytes: int) -> bytes:
        if member not in self.members:
            raise MemberMissing("export", member)
        return self.members[member]


def _parsed(n: int, offset: int = 0) -> tuple[list[ParsedPost], _Folder]:
    members = {f"{i}.png": make_image("PNG", seed=offset + i) for i in range(n)}
    posts = [
        ParsedPost(
            source="folder",
            source_id=f"f{offset + i}",
            conversation_id=None,
            conversation_name=None,
            author_ref="Person A",
            author_name="Person A",
            posted_at=datetime(2022, 1, 1, tzinfo=UTC),
            url=None,
            local_ref=f"{i}.png",
        )
        for i in range(n)
    ]
    return posts, _Folder(members)


def _check_every_image_has_its_file(db_path: Path, files: ImageFiles) -> int:
    con = sqlite3.connect(db_path)
    try:
        rows = con.execute("SELECT sha256, ext FROM images").fetchall()
        claims = con.execute("SELECT COUNT(*) FROM pending_files").fetchone()[0]
    finally:
        con.close()
    for sha, ext in rows:
        path = files.path_for(sha, ext)
        assert path.exists(), f"image {sha} is in the store but its file is gone"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert claims == 0  # every claim was either linked or swept
    return len(rows)


async def test_a_file_another_writer_is_about_to_commit_survives_an_ingest(tmp_path):
    db_path = tmp_path / "memetag.db"
    files = ImageFiles(tmp_path / "images")
    async with open_database(db_path) as ingest_db, open_database(db_path) as bot_db:
        # The bot fetched an image, claimed it and wrote its file; it has not committed yet.
        await insert_posts(
            bot_db, [NewPost("bot", "b1", "c", None, None, None, None, None, None, None)], {}
        )
        (post,) = await list_posts_to_fetch(bot_db, "bot")
        data = make_image("PNG", seed=99)
        sha = hashlib.sha256(data).hexdigest()
        await claim_image_file(bot_db, sha, "png")
        files.write(sha, "png", data)

        # An ingest runs from start to end meanwhile (its sweep included)...
        parsed, reader = _parsed(3)
        s = await run_ingest(
            ingest_db, files, parsed, ParseStats(), source="folder", people={}, reader=reader
        )
        assert s.stored == 3 and s.orphans_swept == 0
        assert files.path_for(sha, "png").exists()  # a fresh claim is never swept
        # ...and even a sweep that takes every claim for a dead writer's (the bot was paused
        # for longer than the grace period) cannot make the bot commit a row without its file.
        assert await sweep_orphans(ingest_db, files, grace_s=0) == 1
        assert not files.path_for(sha, "png").exists()

        def put() -> None:
            files.write(sha, "png", data)

        await record_stored(
            bot_db,
            post.id,
            StoredImage(sha, None, 64, 48, "PNG", "png", len(data)),
            ensure_file=put,
        )
    assert _check_every_image_has_its_file(db_path, files) == 4


async def test_ingests_and_sweeps_beside_a_writer_process_lose_nothing(tmp_path):
    db_path = tmp_path / "memetag.db"
    files = ImageFiles(tmp_path / "images")
    n_bot = 40
    async with open_database(db_path) as db:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(db_path), str(files.root), str(n_bot),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        writer = asyncio.create_task(proc.communicate())
        sweeps = ingests = 0
        while not writer.done():
            # The harshest sweep there is (every claim looks stale), as often as possible...
            await sweep_orphans(db, files, grace_s=0)
            sweeps += 1
            if sweeps % 10 == 0:
                # ...and whole ingests of new images in between, at the usual grace.
                parsed, reader = _parsed(2, offset=100 * ingests)
                await run_ingest(
                    db,
                    files,
                    parsed,
                    ParseStats(),
                    source="folder",
                    people={},
                    reader=reader,
                    orphan_grace_s=ORPHAN_GRACE_S,
                )
                ingests += 1
            await asyncio.sleep(0)
        out, err = await writer
    assert proc.returncode == 0, err.decode()
    committed = out.decode().split()
    assert len(committed) == n_bot
    total = _check_every_image_has_its_file(db_path, files)
    assert total == n_bot + 2 * ingests
    # Nothing lies around either: every file on disk is a stored image.
    on_disk = {p.name for p in files.root.rglob("*") if p.is_file()}
    assert len(on_disk) == total
