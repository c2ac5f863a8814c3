"""``/tagger review``: the real bot against the stand-in Discord, with known predictions.

Images are stored as the tagging cog stores live posts (discord posts in the guild's channel)
with a prediction of the current (tiny) model whose probabilities are set by the test, so which
image is nearest a decision threshold (0.5 for every label) is known exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.cogs.review import _Scoring
from memetag.services.media import MediaLimits, discord_post, store_fetched_image
from store.db import open_database
from store.queries import review as review_queries
from store.queries.audit import list_audit
from store.queries.predictions import insert_prediction, list_predictions_for_image
from store.queries.votes import CastVote, cast_votes, discord_voter
from store.rows import Prediction
from tests.helpers.bot_fixtures import bot_world
from tests.helpers.imagegen import make_image

pytest_plugins = ["tests.helpers.standin_fixtures"]

# Image name -> the tiny model's probabilities (thresholds 0.5, multi-label).
PREDICTIONS = {
    "near": {"meme": 0.51, "social_media": 0.10, "photo": 0.05},  # closeness 0.98
    "middling": {"meme": 0.70, "social_media": 0.45, "photo": 0.10},  # 0.90
    "sure": {"meme": 0.95, "social_media": 0.02, "photo": 0.03},  # 0.10
    "surest": {"meme": 0.99, "social_media": 0.01, "photo": 0.01},  # 0.02
}


async def store_image(world, name: str, seed: int, *, channel_id: int, probs=None) -> int:
    post = discord_post(
        message_id=9_000_000 + seed,
        position=0,
        channel_id=channel_id,
        author_id=world.members[0].id,
        author_name=world.members[0].name,
        posted_at=datetime(2024, 1, 1, tzinfo=UTC),
        url=None,
    )
    data = make_image("PNG", seed=seed)
    stored = await store_fetched_image(world.db, world.deps.files, post, data, limits=MediaLimits())
    if probs is not None:
        await insert_prediction(world.db, stored.image_id, "v-test", probs, None, None)
    return stored.image_id


async def world_with_images(standin, world) -> dict[str, int]:
    ids = {}
    for seed, (name, probs) in enumerate(PREDICTIONS.items(), start=1):
        ids[name] = await store_image(world, name, seed, channel_id=standin.channel.id, probs=probs)
    # Nearest of all, but already labelled by a vote: never a candidate.
    ids["voted"] = await store_image(
        world, "voted", 20, channel_id=standin.channel.id, probs={"meme": 0.5, "photo": 0.5}
    )
    await cast_votes(
        world.db,
        [CastVote(ids["voted"], "photo", 1)],
        voter="discord:1",
        origin="button",
        message_id=None,
    )
    # Nearest of all, but posted in another guild: never shown here.
    other = await standin.add_guild("Other Guild")
    other_channel = next(iter(other.text_channels))
    ids["elsewhere"] = await store_image(
        world, "elsewhere", 21, channel_id=other_channel.id, probs={"meme": 0.5}
    )
    return ids


def answer(interaction):
    """What the bot finally said: the deferred ("thinking") message once it was filled in."""
    original = interaction.original
    return original if original is not None and not original.loading else None


async def run_review(standin, user, n: int | None = None):
    options = {"n": n} if n is not None else {}
    interaction = await standin.invoke_slash(user, "tagger review", options)
    return await standin.wait_for(lambda: answer(interaction), timeout=20, what="the answer")


def review_posts(standin) -> dict[int, object]:
    """item id -> the stand-in's record of its review post."""
    posts = {}
    for message in standin.messages.values():
        for row in message.components:
            for c in row.get("components", []):
                cid = c.get("custom_id", "")
                if cid.startswith("memetag:rv-ok:"):
                    posts[int(cid.rsplit(":", 1)[1])] = message
    return posts


def button(message, custom_id: str) -> dict:
    for row in message.components:
        for c in row.get("components", []):
            if c.get("custom_id") == custom_id:
                return c
    raise AssertionError(f"no {custom_id} on the post")


async def label_votes(db, image_id: int) -> list[tuple[str, str, int, str]]:
    rows = await db.fetchall(
        "SELECT l.name, v.voter, v.vote, v.origin FROM label_votes v JOIN labels l"
        " ON l.id = v.label_id WHERE v.image_id = ? ORDER BY l.name, v.voter",
        (image_id,),
    )
    return [(r["name"], r["voter"], r["vote"], r["origin"]) for r in rows]


@pytest.mark.timeout(60)
async def test_review_posts_the_most_uncertain_images_and_taps_become_votes(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", review_random_share=0.0) as world:
        ids = await world_with_images(standin, world)
        admin = standin.owner
        first = await run_review(standin, admin, 2)
        assert first.ephemeral
        assert "Posted 2 images for review" in first.content

        items = await review_queries.list_review_items(world.db)
        assert [(i.image_id, i.reason, i.status) for i in items] == [
            (ids["near"], "uncertain", "open"),
            (ids["middling"], "uncertain", "open"),
        ]
        assert items[0].score == pytest.approx(0.98)
        posts = review_posts(standin)
        assert sorted(posts) == [i.id for i in items]
        thread = posts[items[0].id].channel
        assert thread.is_thread and thread.parent_id == standin.channel.id
        near_post = posts[items[0].id]
        assert near_post.attachments, "the review post shows the image"
        assert "Current tags: 😂 meme 51 %" in near_post.content
        assert button(near_post, f"memetag:rv:{items[0].id}:meme")["style"] == 3  # green: tagged
        assert button(near_post, f"memetag:rv:{items[0].id}:photo")["style"] == 2

        # Asked again while both are open: the next most uncertain, never the same image twice.
        await run_review(standin, admin, 2)
        items = await review_queries.list_review_items(world.db)
        assert [i.image_id for i in items] == [
            ids["near"],
            ids["middling"],
            ids["sure"],
            ids["surest"],
        ]
        # Nothing left: the voted image and the other guild's image are never candidates.
        last = await run_review(standin, admin, 3)
        assert "Nothing to review" in last.content
        assert len(await review_queries.list_review_items(world.db)) == 4

        # A label tap is a vote (origin button) and answers the item; tapping again flips it.
        member = world.members[1]
        voter = discord_voter(member.id)
        item = items[0]
        tap = await standin.click_button(member, near_post, f"memetag:rv:{item.id}:social_media")
        await standin.wait_for(lambda: tap.followups, what="the tap's thanks")
        assert await label_votes(world.db, ids["near"]) == [("social_media", voter, 1, "button")]
        assert (await review_queries.get_review_item(world.db, item.id)).status == "answered"
        assert tap.followups[0].ephemeral
        near_post = standin.messages[near_post.id]
        assert "from members' votes" in near_post.content
        assert button(near_post, f"memetag:rv:{item.id}:social_media")["style"] == 3
        again = await standin.click_button(member, near_post, f"memetag:rv:{item.id}:social_media")
        await standin.wait_for(lambda: again.followups, what="the second tap's thanks")
        assert await label_votes(world.db, ids["near"]) == [("social_media", voter, -1, "button")]

        # "All correct": +1 for each current tag (meme at 0.70; social_media at 0.45 is not).
        middling = posts[items[1].id]
        ok = await standin.click_button(member, middling, f"memetag:rv-ok:{items[1].id}")
        await standin.wait_for(lambda: ok.followups, what="the all-correct thanks")
        assert await label_votes(world.db, ids["middling"]) == [("meme", voter, 1, "button")]
        assert (await review_queries.get_review_item(world.db, items[1].id)).status == "answered"

        # Answered and labelled: a new review does not ask about the middling image again.
        await run_review(standin, admin, 5)
        reposted = [i.image_id for i in await review_queries.list_review_items(world.db)][4:]
        assert ids["middling"] not in reposted

        audit = [(e.action, e.arguments, e.outcome) for e in await list_audit(world.db)]
        assert audit[0] == ("review", {"n": 2}, "ok")


@pytest.mark.timeout(60)
async def test_review_buttons_work_after_a_restart(standin, tmp_path):
    data = tmp_path / "data"
    async with bot_world(standin, data, review_random_share=0.0) as world:
        ids = await world_with_images(standin, world)
        await run_review(standin, standin.owner, 1)
        (item,) = await review_queries.list_review_items(world.db)
        post = review_posts(standin)[item.id]
    # A fresh bot process on the same store: the post's buttons still reach the votes.
    async with bot_world(standin, data, review_random_share=0.0, model=False) as world:
        member = world.members[0]
        tap = await standin.click_button(member, post, f"memetag:rv:{item.id}:photo")
        await standin.wait_for(lambda: tap.followups, what="the tap's thanks")
        assert await label_votes(world.db, ids["near"]) == [
            ("photo", discord_voter(member.id), 1, "button")
        ]


@pytest.mark.timeout(60)
async def test_review_random_share_and_non_admin_refused(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", review_random_share=1.0) as world:
        await world_with_images(standin, world)
        # Never predicted: the review predicts it with the current model and logs that.
        unseen = await store_image(world, "unseen", 30, channel_id=standin.channel.id)
        refused = await run_review_refused(standin, world.members[0])
        assert refused.ephemeral and "Manage Server" in refused.content
        assert await review_queries.list_review_items(world.db) == []
        audit = [(e.action, e.outcome) for e in await list_audit(world.db)]
        assert audit == [("tagger review", "refused: not an admin")]

        await run_review(standin, standin.owner, 2)
        items = await review_queries.list_review_items(world.db)
        assert len(items) == 2 and {i.reason for i in items} == {"random"}
        logged = await list_predictions_for_image(world.db, unseen)
        assert [p.model_version for p in logged] == ["v-test"]


async def run_review_refused(standin, user):
    interaction = await standin.invoke_slash(user, "tagger review", {"n": 3})
    await standin.wait_for(lambda: interaction.responded, what="the refusal")
    return interaction.response


async def test_guild_overrides_and_a_flat_sender_raise_the_score(tmp_path):
    async with open_database(tmp_path / "store.db") as db:
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO guild_thresholds (guild_id, label, threshold, updated_at)"
                " VALUES ('7', 'meme', 0.95, '2024-01-01T00:00:00Z')"
            )
        overrides = await review_queries.get_guild_thresholds(db, "7")
        assert overrides == {"meme": 0.95}
        assert await review_queries.get_guild_thresholds(db, "8") == {}
    now = datetime(2024, 1, 1, tzinfo=UTC)
    sure = Prediction(1, "v", PREDICTIONS["sure"], None, None, now)
    near = Prediction(2, "v", PREDICTIONS["near"], None, None, now)
    plain = _Scoring(version="v", checkpoint=None, thresholds={}, overrides={})
    guild = _Scoring(version="v", checkpoint=None, thresholds={}, overrides=overrides)
    assert plain.of(near, None) > plain.of(sure, None)
    # This guild decides meme at 0.95: the "sure" image sits right on it.
    assert guild.of(sure, None) == pytest.approx(1.0)
    assert guild.of(sure, None) > guild.of(near, None)
    # A flat sender distribution makes a label-sure image worth asking about.
    assert plain.of(sure, [1 / 3] * 3) > plain.of(sure, [0.98, 0.01, 0.01])
