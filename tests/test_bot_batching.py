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
from store.queries.bot import (
    Baselines,
    LiveGuess,
    NewTaggedMessage,
    TaggedImage,
    get_message_state,
    get_post_authors,
    insert_live_guess,
    record_tagged_message,
    record_tagged_messages,
)
from store.queries.predictions import insert_prediction
from store.queries.privacy import add_optout
from store.rows import NewPrediction
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


# -- what is written after the tag ----------------------------------------------------------------

_AFTER_TAG = {
    "bot_messages": "SELECT message_id, channel_id, guild_id, author_ref, reply_id, created_at,"
    " updated_at FROM bot_messages ORDER BY message_id",
    "bot_message_images": "SELECT message_id, position, post_id, spoiler FROM bot_message_images"
    " ORDER BY message_id, position",
    "predictions": "SELECT image_id, model_version, probabilities, sender_name,"
    " sender_probability, created_at FROM predictions ORDER BY image_id",
    "live_guesses": "SELECT post_id, guild_id, model_version, author, guess, guess_probability,"
    " majority_guess, recent_guess, created_at FROM live_guesses ORDER BY post_id",
}


async def _after_tag(db) -> dict[str, list[tuple]]:
    return {table: [tuple(r) for r in await db.fetchall(sql)] for table, sql in _AFTER_TAG.items()}


def _without_times(snapshot: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    keep = {"bot_messages": slice(0, 5), "predictions": slice(0, 5), "live_guesses": slice(0, 8)}
    return {t: [row[keep.get(t, slice(None))] for row in rows] for t, rows in snapshot.items()}


async def test_what_is_written_after_the_tag_together_is_what_one_by_one_writes(tmp_path):
    """The bot writes the messages tagged meanwhile in one transaction (bot.cogs.tagging):
    the same rows, in the same timestamp formats, as a transaction per row."""
    images = [make_image("PNG", seed=11), make_image("JPEG", seed=12), make_image("PNG", seed=13)]
    # message 200 has two images (the second not predicted), message 201 one, with a reply
    posts = [_post(200, 0), _post(200, 1), _post(201, 0)]
    snapshots = []
    for name in ("one", "many"):
        async with open_database(tmp_path / f"{name}.db") as db:
            files = ImageFiles(tmp_path / name)
            checked = [
                (post, await check_fetched_image(post, data, limits=LIMITS), data)
                for post, data in zip(posts, images, strict=True)
            ]
            stored = await store_checked_posts(db, files, checked)
            messages = [
                NewTaggedMessage(
                    "200",
                    "42",
                    "9",
                    "7",
                    [TaggedImage(0, stored[0].post_id, True), TaggedImage(1, stored[1].post_id)],
                ),
                NewTaggedMessage("201", "42", "9", "8", [TaggedImage(0, stored[2].post_id)], "777"),
            ]
            predicted = [
                (stored[0], {"meme": 0.9, "photo": 0.1}, "Person A", 0.7),
                (stored[2], {"meme": 0.2, "photo": 0.8}, None, None),
            ]
            baselines = [Baselines("Person A", "Person B"), Baselines("Person B", None)]
            authors = await get_post_authors(db, [s.post_id for s, *_ in predicted] + [10**9])
            assert authors == {
                stored[0].post_id: "Person A",
                stored[2].post_id: "Person B",
                10**9: None,
            }
            if name == "one":
                for m in messages:
                    await record_tagged_message(
                        db,
                        message_id=m.message_id,
                        channel_id=m.channel_id,
                        guild_id=m.guild_id,
                        author_ref=m.author_ref,
                        images=m.images,
                        reply_id=m.reply_id,
                    )
                for (s, probs, guess, p), b in zip(predicted, baselines, strict=True):
                    await insert_prediction(db, s.image_id, "v1", probs, guess, p)
                    await insert_live_guess(
                        db,
                        post_id=s.post_id,
                        guild_id="9",
                        model_version="v1",
                        guess=guess,
                        guess_probability=p,
                        author=authors[s.post_id],
                        baselines=b,
                    )
            else:
                await record_tagged_messages(
                    db,
                    messages,
                    predictions=[
                        NewPrediction(s.image_id, "v1", probs, guess, p)
                        for s, probs, guess, p in predicted
                    ],
                    guesses=[
                        LiveGuess(s.post_id, "9", "v1", guess, p, authors[s.post_id], b)
                        for (s, _, guess, p), b in zip(predicted, baselines, strict=True)
                    ],
                )
            snapshots.append(await _after_tag(db))
    one, many = snapshots
    assert _without_times(many) == _without_times(one)
    assert len(many["bot_message_images"]) == 3 and len(many["live_guesses"]) == 2
    for table, column in (("bot_messages", 5), ("predictions", 5), ("live_guesses", 8)):
        for a, b in zip(one[table], many[table], strict=True):
            # same text shape: "...+00:00" to the second, or "...Z" to the microsecond
            assert len(a[column]) == len(b[column]) and a[column][-1] == b[column][-1], table


async def test_a_live_messages_state_is_one_read_of_its_tagged_images_and_its_authors_optout(
    tmp_path,
):
    async with open_database(tmp_path / "m.db") as db:
        files = ImageFiles(tmp_path / "f")
        post = _post(300, 2)
        data = make_image("PNG", seed=5)
        [stored] = await store_checked_posts(
            db, files, [(post, await check_fetched_image(post, data, limits=LIMITS), data)]
        )
        state = await get_message_state(db, "300", "discord", 7)
        assert (state.tagged, state.author_opted_out) == ([], False)
        await record_tagged_message(
            db,
            message_id="300",
            channel_id="42",
            guild_id="9",
            author_ref="7",
            images=[TaggedImage(2, stored.post_id, True)],
        )
        await add_optout(db, "discord", 8)
        state = await get_message_state(db, "300", "discord", 7)
        assert (state.tagged, state.author_opted_out) == (
            [TaggedImage(2, stored.post_id, True)],
            False,
        )
        state = await get_message_state(db, "300", "discord", "8")
        assert state.author_opted_out
        assert (await get_message_state(db, "301", "discord", 8)).tagged == []
