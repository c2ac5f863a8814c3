"""Ingest through the real CLI in a subprocess: SIGKILL mid-download, re-run, exact counts."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from tests.chatgen import hangouts_export
from tests.helpers.imagegen import make_image
from tests.helpers.imageserver import ImageServer, split_chunks

N_IMAGES = 30


def _snapshot(data: Path) -> tuple[list[tuple], set[str]]:
    con = sqlite3.connect(data / "memetag.db")
    posts = con.execute(
        "SELECT p.source_id, p.status, i.sha256 FROM posts p LEFT JOIN images i"
        " ON i.id = p.image_id ORDER BY p.source_id"
    ).fetchall()
    con.close()
    files = {p.name for p in (data / "images").rglob("*") if p.is_file()}
    return posts, files


def _stored(data: Path) -> int:
    try:
        con = sqlite3.connect(data / "memetag.db", timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM posts WHERE status = 'stored'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


async def _memetag(data: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "memetag.cli", "--data", str(data), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


async def test_sigkill_mid_download_then_resume_matches_clean_run(tmp_path):
    async with ImageServer() as server:
        urls = []
        for i in range(N_IMAGES):
            data = make_image("JPEG", (64, 48), seed=100 + i)
            # Slow bodies, so the kill lands while downloads are in flight.
            server.add_stream(
                f"/img/{i}.jpg",
                lambda d=data: split_chunks(d, 4),
                delay=0.05,
                content_type="image/jpeg",
            )
            urls.append(server.url(f"/img/{i}.jpg"))
        export = hangouts_export(tmp_path / "Hangouts.json", urls)
        args = ("ingest", "hangouts", str(export), "--allow-private", "--no-progress",
                "--concurrency", "4")  # fmt: skip

        clean = tmp_path / "clean"
        proc = await _memetag(clean, *args)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()

        crashed = tmp_path / "crashed"
        proc = await _memetag(crashed, *args)
        for _ in range(600):
            if _stored(crashed) >= 5:
                break
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        partial = _stored(crashed)
        assert 0 < partial < N_IMAGES, "the kill should land mid-download"

        proc = await _memetag(crashed, *args)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()

    clean_posts, clean_files = _snapshot(clean)
    crashed_posts, crashed_files = _snapshot(crashed)
    assert len(clean_posts) == N_IMAGES and all(s == "stored" for _, s, _ in clean_posts)
    assert crashed_posts == clean_posts
    assert crashed_files == clean_files  # no orphan or temp files left behind
    assert len(clean_files) == N_IMAGES


async def test_rerun_adds_nothing(tmp_path):
    async with ImageServer() as server:
        urls = [server.url(f"/i/{i}.png") for i in range(4)]
        for i in range(4):
            server.add_image(f"/i/{i}.png", "PNG", seed=i)
        export = hangouts_export(tmp_path / "Hangouts.json", urls)
        data = tmp_path / "data"
        for attempt in range(2):
            proc = await _memetag(data, "ingest", "hangouts", str(export), "--allow-private",
                                  "--json")  # fmt: skip
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            if attempt == 1:
                assert '"new_posts": 0' in out.decode() and '"stored": 0' in out.decode()
        assert sum(server.hits.values()) == 4  # nothing fetched twice
