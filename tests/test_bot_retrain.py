"""/tagger retrain with the real bot against the stand-in Discord and a small labelled store.

Training runs for real, in the worker process the bot starts (``memetag.services.retrain_worker``),
on the tiny random-init backbone at 64 px with few epochs. What the bot did is read back from
the stand-in's records and from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.cogs.retrain import Retrain
from memetag.standin import StandinDiscord
from store.queries.retrain import (
    claim_retrain,
    count_votes_since_last_retrain,
    finish_retrain_run,
)
from tests.helpers.bot_fixtures import BotWorld, bot_world
from tests.ml_helpers import encode, photo_like
from tests.test_train import generate
from tests.test_train_cli import fill_store

pytest_plugins = ["tests.helpers.standin_fixtures"]

N_IMAGES = 36
GOOD = {"epochs": 10, "min_posts_per_person": 3}
# A retrain with hyperparameters that barely train anything: heads at a vanishing learning rate
# and a sender head regularised down to the prior. It scores below the GOOD model.
BAD = {
    "epochs": 1,
    "lr": 1e-7,
    "sender_c": 1e-9,
    "sender_category_c": 1e-9,
    "min_posts_per_person": 3,
}
RUN_TIMEOUT = 240.0  # one worker run: imports and training on a busy 2-core machine
EDIT_EVERY_S = 0.5


def jpeg(seed: int) -> bytes:
    return encode(photo_like(96, 80, seed=seed), "JPEG", quality=85)


def use_train(world: BotWorld, **train: Any) -> None:
    """The bot's [train] section (what the next retrain uses); no decode threads."""
    cfg = world.deps.cfg
    cfg = dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, **train),
        model=dataclasses.replace(cfg.model, decode_workers=0),
    )
    world.deps.cfg = world.cfg = cfg


def retrain_cog(world: BotWorld) -> Retrain:
    cog = world.bot.get_cog("Retrain")
    assert cog is not None, "the retrain cog is not loaded"
    return cog  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def retrain_world(
    standin: StandinDiscord,
    data_dir: Path,
    train: dict[str, Any] = GOOD,
    labelled: int = N_IMAGES,
    **bot: Any,
) -> AsyncIterator[BotWorld]:
    """The bot over a store of ``labelled`` images with senders and labels (current model: the
    random v-test)."""
    if labelled:
        await fill_store(data_dir, generate(labelled, seed=3))
    async with bot_world(standin, data_dir, mode="react", **bot) as world:
        use_train(world, **train)
        cog = retrain_cog(world)
        cog.worker_nice = 0  # the machine running the tests is busy enough
        cog.edit_every_s = EDIT_EVERY_S
        yield world


async def finished(world: BotWorld) -> str:
    task = retrain_cog(world).task
    assert task is not None
    return await asyncio.wait_for(asyncio.shield(task), RUN_TIMEOUT)


async def rows(world: BotWorld, sql: str, params: tuple = ()) -> list[tuple]:
    return [tuple(r) for r in await world.db.fetchall(sql, params)]


def edits(standin: StandinDiscord, interaction) -> list:
    return standin.requests_to("PATCH", f"/webhooks/*/{interaction.token}/messages/@original")


async def current_version(world: BotWorld) -> str:
    [(version,)] = await rows(world, "SELECT version FROM models WHERE is_current = 1")
    return version


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


# -- the gate ------------------------------------------------------------------------------------


async def test_gate_swaps_in_a_better_model_keeps_a_worse_one_and_force_promotes(standin, tmp_path):
    async with retrain_world(standin, tmp_path / "data") as world:
        admin, member = standin.owner, world.members[0]
        cog = retrain_cog(world)
        # Another process's retrain is running: refused, not queued.
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            elsewhere = {"host": socket.gethostname(), "bot_pid": other.pid}
            busy, created = await claim_retrain(
                world.db, guild_id=None, requested_by="discord:1", forced=False, detail=elsewhere
            )
            assert created
            refused = await standin.invoke_slash(admin, "tagger retrain")
            await standin.wait_for(lambda: refused.response)
            assert refused.response.ephemeral
            assert f"Retrain #{busy.id} is already running" in refused.response.content
        finally:
            other.kill()
            other.wait()
        # That process died without closing its row: the next request recovers it.
        started = await standin.invoke_slash(admin, "tagger retrain")
        await standin.wait_for(lambda: started.original)
        assert not started.response.ephemeral
        assert started.original.content.startswith("🔁 Retrain #2, asked by")
        await world.until(lambda: cog.running)

        # While it trains: a member may not retrain, a second admin request is refused ...
        denied = await standin.invoke_slash(member, "tagger retrain", {"force": True})
        again = await standin.invoke_slash(admin, "tagger retrain")
        await standin.wait_for(lambda: denied.response and again.response)
        assert denied.response.ephemeral and "Manage Server" in denied.response.content
        assert again.response.ephemeral and "#2 is already running" in again.response.content
        # ... and every image posted is tagged, with the old model.
        posted = [
            await standin.post_message(
                standin.channel, member, attachments=[(f"{i}.jpg", jpeg(100 + i))]
            )
            for i in range(4)
        ]
        await world.settle()
        assert cog.running, "the retrain ended before the images were tagged"
        tagged = await rows(
            world,
            "SELECT b.message_id, pr.model_version FROM bot_message_images b"
            " JOIN posts p ON p.id = b.post_id JOIN predictions pr ON pr.image_id = p.image_id",
        )
        assert sorted(tagged) == sorted((str(m.id), "v-test") for m in posted)

        text = await finished(world)
        version = await current_version(world)
        assert version != "v-test" and world.deps.models.version == version
        assert text.startswith(f"✅ Retrain #2: promoted `{version}` (score ")
        assert "now tagging with it (was v-test)" in text
        assert "new vs current v-test:" in text and "• categories, macro-F1: " in text
        assert "• sender, top-1: " in text and "; baselines: most frequent poster " in text
        await standin.wait_for(lambda: started.original.content == text)

        # One message, edited with progress, never more often than the limit.
        patches = edits(standin, started)
        contents = [p.body["content"] for p in patches]
        assert len(patches) >= 2 and contents[-1] == text
        progress = [c for c in contents[:-1] if re.search(r"embedding images \d+/\d+", c)]
        assert progress, contents
        gaps = [b.at - a.at for a, b in zip(patches, patches[1:], strict=False)]
        assert min(gaps) >= EDIT_EVERY_S * 0.9

        # The next image is tagged with the new model.
        after = await standin.post_message(
            standin.channel, member, attachments=[("n.jpg", jpeg(200))]
        )
        await world.settle()
        assert await rows(
            world,
            "SELECT pr.model_version FROM bot_message_images b JOIN posts p ON p.id = b.post_id"
            " JOIN predictions pr ON pr.image_id = p.image_id WHERE b.message_id = ?",
            (str(after.id),),
        ) == [(version,)]

        assert await rows(world, "SELECT id, status, version FROM retrain_runs ORDER BY id") == [
            (1, "failed", None),
            (2, "promoted", version),
        ]
        audited = await rows(
            world,
            "SELECT actor, arguments, outcome FROM audit_log"
            " WHERE action IN ('retrain', 'tagger retrain') ORDER BY id",
        )
        assert audited[:2] == [
            (f"discord:{admin.id}", '{"force": false}', "refused: #1 is running"),
            (f"discord:{admin.id}", '{"force": false}', "ok: run #2"),
        ]
        assert sorted(audited[2:]) == sorted(
            [
                (f"discord:{member.id}", "{}", "refused: not an admin"),
                (f"discord:{admin.id}", '{"force": false}', "refused: #2 is running"),
            ]
        )

        # A retrain with worse settings: its model is kept, not swapped in, and named.
        good = version
        use_train(world, **BAD)
        kept = await standin.invoke_slash(admin, "tagger retrain")
        await standin.wait_for(lambda: kept.original)
        text = await finished(world)
        [(status, version)] = await rows(
            world, "SELECT status, version FROM retrain_runs WHERE id = 3"
        )
        assert status == "kept" and version != good
        assert text.startswith(f"⏸️ Retrain #3: kept `{version}`, not promoted — score ")
        assert f"still tagging with `{good}`" in text and f"new vs current {good}:" in text
        assert f"`/tagger rollback version:{version}`" in text
        await standin.wait_for(lambda: kept.original.content == text)
        assert world.deps.models.version == good == await current_version(world)
        assert await rows(world, "SELECT is_current FROM models WHERE version = ?", (version,)) == [
            (0,)
        ]

        # force:true promotes whatever the score.
        forced = await standin.invoke_slash(admin, "tagger retrain", {"force": True})
        await standin.wait_for(lambda: forced.original)
        assert forced.original.content.startswith("🔁 Retrain #4 (force)")
        text = await finished(world)
        [(status, version)] = await rows(
            world, "SELECT status, version FROM retrain_runs WHERE id = 4"
        )
        assert status == "promoted"
        assert text.startswith(f"✅ Retrain #4: promoted `{version}` (forced), now tagging")
        assert world.deps.models.version == version == await current_version(world)


# -- after enough votes -----------------------------------------------------------------------------


async def test_retrains_by_itself_after_n_new_votes_and_posts_to_the_log_channel(standin, tmp_path):
    log_channel = await standin.add_text_channel("bot-log")
    # Only the live image below: the retrain starts, and fails quickly for want of data.
    async with retrain_world(
        standin,
        tmp_path / "data",
        labelled=0,
        retrain_after_votes=3,
        model_poll_s=0.1,
        log_channel=str(log_channel.id),
    ) as world:
        member = world.members[0]
        message = await standin.post_message(
            standin.channel, member, attachments=[("a.jpg", jpeg(7))]
        )
        await world.settle()
        for emoji in ("😂", "🐦"):
            await standin.add_reaction(member, message, emoji)
        # Two votes: below the threshold; a few watch rounds later still no retrain.
        await _until_votes(world, 2)
        await asyncio.sleep(0.4)
        assert await rows(world, "SELECT COUNT(*) FROM retrain_runs") == [(0,)]

        await standin.add_reaction(member, message, "📷")
        posted = await standin.wait_for(
            lambda: [
                m for m in standin.messages_in(log_channel) if m.author.id == standin.bot_user.id
            ],
            timeout=RUN_TIMEOUT,
        )
        [note] = posted
        assert note.content == (
            "Retrained by itself after 3 new votes:\n❌ Retrain #1 failed: not enough data to "
            "train: 1 stored image(s), need 2 or more. Still tagging with v-test."
        )
        assert await rows(world, "SELECT requested_by, status FROM retrain_runs") == [
            ("auto", "failed")
        ]
        # The count starts again from that retrain: no second one for the same votes.
        assert await count_votes_since_last_retrain(world.db) == 0
        await asyncio.sleep(0.3)
        assert await rows(world, "SELECT COUNT(*) FROM retrain_runs") == [(1,)]


async def _until_votes(world: BotWorld, n: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await count_votes_since_last_retrain(world.db) < n:
        assert loop.time() < deadline, f"fewer than {n} votes recorded"
        await asyncio.sleep(0.02)


# -- the worker on its own -------------------------------------------------------------------------


def test_worker_refuses_a_bad_request():
    done = subprocess.run(
        [sys.executable, "-m", "memetag.services.retrain_worker"],
        input='{"config": {"nope": {}}, "data_dir": "/x"}',
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert done.returncode == 2
    assert done.stdout.startswith('{"event": "failed", "error": "bad retrain request: ')


# -- a run left 'running' -------------------------------------------------------------------------


async def test_a_running_row_is_recovered_only_once_abandoned(standin, tmp_path):
    async with retrain_world(standin, tmp_path / "data", labelled=0) as world:
        cog, db = retrain_cog(world), world.db

        async def claim() -> tuple[int, bool]:
            run, created = await cog.claim(guild_id=None, requested_by="discord:9", forced=False)
            return run.id, created

        async def leave_running(detail: dict) -> int:
            run, created = await claim_retrain(
                db, guild_id=None, requested_by="discord:1", forced=False, detail=detail
            )
            assert created
            return run.id

        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            # Another machine's run cannot be checked: refused until it is a day old.
            first = await leave_running({"host": "elsewhere", "bot_pid": 1})
            assert await claim() == (first, False)
            async with db.transaction() as conn:
                await conn.execute(
                    "UPDATE retrain_runs SET started_at = '2000-01-01T00:00:00.000+00:00'"
                    " WHERE id = ?",
                    (first,),
                )
            second, created = await claim()
            assert created and second == first + 1
            await finish_retrain_run(db, second, status="failed", outcome="test")
            # Here: a worker that outlived its bot is still training, so it is left alone.
            here = socket.gethostname()
            third = await leave_running(
                {"host": here, "bot_pid": dead_pid(), "worker_pid": other.pid}
            )
            assert await claim() == (third, False)
        finally:
            other.kill()
            other.wait()
        # Once that worker is gone too, the row is recovered.
        fourth, created = await claim()
        assert created and fourth == third + 1
        assert await rows(world, "SELECT id, status FROM retrain_runs ORDER BY id") == [
            (first, "failed"),
            (second, "failed"),
            (third, "failed"),
            (fourth, "running"),
        ]
        outcomes = await rows(
            world, "SELECT json_extract(detail, '$.outcome') FROM retrain_runs ORDER BY id"
        )
        assert outcomes[0][0].startswith("abandoned: still 'running' after 24 h")
        assert outcomes[2][0] == "interrupted: the process running it is gone"
        await finish_retrain_run(db, fourth, status="failed", outcome="test")


async def test_votes_are_counted_from_what_the_current_model_could_have_seen(tmp_path):
    from store.db import open_database
    from store.queries.models import insert_model
    from store.queries.votes import CastVote, cast_votes

    data = tmp_path / "data"
    [image, _] = await fill_store(data, generate(2, seed=5))
    async with open_database(data / "memetag.db") as db:

        async def vote(n: int) -> None:
            for _ in range(n):
                await cast_votes(
                    db,
                    [CastVote(image, "meme", 1)],
                    voter="discord:7",
                    origin="button",
                    message_id=None,
                )

        await vote(2)
        assert await count_votes_since_last_retrain(db) == 2  # no model, no retrain: all
        # A retrain starts, then more votes, then it records its model: the votes cast while
        # it trained are still new to that model.
        run, _ = await claim_retrain(
            db, guild_id=None, requested_by="auto", forced=False, detail={}
        )
        await vote(3)
        await insert_model(db, "v-new", "models/v-new.pt", {}, make_current=True)
        await finish_retrain_run(db, run.id, status="promoted", version="v-new", outcome="ok")
        assert await count_votes_since_last_retrain(db) == 3
        # `memetag train` records a model of its own later: counted from that model.
        async with db.transaction() as conn:
            await conn.execute("UPDATE vote_events SET created_at = '2000-01-01T00:00:00+00:00'")
            await conn.execute(
                "UPDATE retrain_runs SET started_at = '2000-01-01T00:00:00.000+00:00'"
            )
        await insert_model(db, "v-cli", "models/v-cli.pt", {}, make_current=True)
        await vote(1)
        assert await count_votes_since_last_retrain(db) == 1
