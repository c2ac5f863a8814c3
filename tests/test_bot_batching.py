"""The tagging workers' shared commits: bot.batching.Batcher and media.store_checked_posts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bot.batching import Batcher, BatcherClosed
from memetag.services.media import (
    MediaLimits,
    check_fetched_image,
    discord_post,
    store_checked_posts,
    store_fetched_image,
)
from store.db import open_database
from store.files import ImageFiles
from tests.helpers.imagegen import make_image

LIMITS = MediaLimits()


class _Recorder:
    """A run function that records its batches and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_on: str | None = None

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail_on in items:
            raise OSError(f"disk full at {self.fail_on}")
        return [item.upper() for item in items]


async def test_a_lone_item_runs_at_once_and_the_ones_meanwhile_run_together():
    run = _Recorder()
    batcher = Batcher(run, max_items=3, key=lambda s: s[0])
    assert await asyncio.wait_for(batcher.submit("a1"), 1) == "A1"
    run.gate.clear()
    first = asyncio.create_task(batcher.submit("b1"))
    await asyncio.sleep(0)  # b1's run starts and waits on the gate
    later = [asyncio.create_task(batcher.submit(s)) for s in ("c1", "d1", "c2", "e1", "f1")]
    await asyncio.sleep(0)
    run.gate.set()
    assert await first == "B1"
    assert [await t for t in later] == ["C1", "D1", "C2", "E1", "F1"]
    # At most 3 a run; c2 shares its key with c1, so it waits for the next run.
    assert run.batches == [["a1"], ["b1"], ["c1", "d1", "e1"], ["c2", "f1"]]
    assert (batcher.runs, batcher.items) == (4, 7)
    await batcher.close()


async def test_a_failed_run_fails_its_callers_only_and_close_fails_the_waiting():
    run = _Recorder()
    batcher = Batcher(run, max_items=2)
    run.fail_on = "x"
    run.gate.clear()
    held = asyncio.create_task(batcher.submit("w"))
    await asyncio.sleep(0)
    failing = [asyncio.create_task(batcher.submit(s)) for s in ("x", "y")]
    fine = asyncio.create_task(batcher.submit("z"))
    await asyncio.sleep(0)
    run.gate.set()
    assert await held == "W"
    for task in failing:
        with pytest.raises(OSError, match="disk full at x"):
            await task
    assert await fine == "Z"

    run.gate.clear()
    running = asyncio.create_task(batcher.submit("p"))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(batcher.submit("q"))
    await asyncio.sleep(0)
    await batcher.close()
    for task in (running, waiting):
        with pytest.raises(BatcherClosed):
            await task
    with pytest.raises(BatcherClosed):
        await batcher.submit("r")


async def test_a_cancelled_caller_is_left_out_of_the_next_run():
    run = _Recorder()
    batcher = Batcher(run, max_items=5)
    run.gate.clear()
    first = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(batcher.submit("b"))
    kept = asyncio.create_task(batcher.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    run.gate.set()
    assert (await first, await kept) == ("A", "C")
    assert run.batches == [["a"], ["c"]]
    await batcher.close()


def _post(message: int, position: int = 0):
    return discord_post(
        message_id=message,
        position=position,
        channel_id=42,
        author_id=7 + message % 2,
        author_name=f"Person {'AB'[message % 2]}",
        posted_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        url=f"https://cdn.example/{message}/{position}.png",
        conversation_name="Guild / general",
    )


async def _snapshot(db) -> list[tuple]:
    sql = (
        "SELECT p.source, p.source_id, p.conversation_id, p.conversation_name, pe.name,"
        " p.posted_at, p.url, p.status, i.sha256, i.phash, i.width, i.height, i.format, i.ext,"
        " i.bytes FROM posts p JOIN people pe ON pe.id = p.author_id"
        " JOIN images i ON i.id = p.image_id ORDER BY p.source_id"
    )
    return [tuple(r) for r in await db.fetchall(sql)]


async def test_posts_committed_together_are_stored_as_one_by_one(tmp_path):
    images = [make_image("PNG", seed=1), make_image("JPEG", seed=2), make_image("PNG", seed=1)]
    items = [(_post(100 + i), data) for i, data in enumerate(images)]  # the third is a repost

    async with open_database(tmp_path / "one.db") as db:
        files = ImageFiles(tmp_path / "one")
        single = [
            await store_fetched_image(db, files, post, data, limits=LIMITS) for post, data in items
        ]
        expected = await _snapshot(db)

    async with open_database(tmp_path / "many.db") as db:
        files = ImageFiles(tmp_path / "many")
        checked = [
            (post, await check_fetched_image(post, data, limits=LIMITS), data)
            for post, data in items
        ]
        together = await store_checked_posts(db, files, checked)
        assert await _snapshot(db) == expected
        assert [(s.created, s.new_image, s.sha256) for s in together] == [
            (s.created, s.new_image, s.sha256) for s in single
        ]
        assert together[0].image_id == together[2].image_id != together[1].image_id
        assert all(
            s.path.read_bytes() == data for s, (_, data) in zip(together, items, strict=True)
        )

        # Again (a replayed event): known and stored with the same bytes, nothing written.
        again = await store_checked_posts(db, files, checked[:2])
        assert [(s.post_id, s.created) for s in again] == [(s.post_id, False) for s in together[:2]]
        assert await _snapshot(db) == expected

        with pytest.raises(ValueError, match="listed twice"):
            await store_checked_posts(db, files, [checked[0], checked[0]])
