"""/tagger stats, export, explain and "Why this tag?" against the real bot and the stand-in.

The bot runs with its real deps and a tiny random-init model (tests.helpers.bot_fixtures);
posts and live guesses are seeded through the store's own write paths, so every number the
bot shows is checked against rows the test knows.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import discord
import pytest

from bot.cogs import insights as insights_module
from memetag.cli import main
from memetag.services.media import MediaLimits, discord_post, store_fetched_image
from memetag.standin import StandinDiscord
from memetag.standin.model import Interaction, Message
from store.queries import votes
from store.queries.audit import list_audit
from store.queries.bot import Baselines, insert_live_guess
from store.queries.insights import (
    list_label_counts,
    list_message_images,
    list_top_posters,
    list_weekly_accuracy,
)
from tests.helpers.bot_fixtures import BotWorld, bot_world
from tests.helpers.imagegen import make_image

pytest_plugins = ["tests.helpers.standin_fixtures"]

PNG = b"\x89PNG\r\n\x1a\n"
MONDAY = datetime(2026, 11, 2, 12, tzinfo=UTC)


async def answer(standin: StandinDiscord, interaction: Interaction, timeout: float = 30) -> Message:
    """The interaction's final answer (after a defer, the message that replaced "thinking…")."""

    def done() -> Message | None:
        original = interaction.original
        return original if original is not None and not original.loading else None

    return await standin.wait_for(done, timeout, what="the interaction's answer")


async def admin(standin: StandinDiscord, name: str = "Admin 1"):
    user = await standin.add_member(name)
    await standin.add_role("admins", discord.Permissions(manage_guild=True), members=[user])
    return user


def link(standin: StandinDiscord, message: Message, guild_id: int | None = None) -> str:
    guild = guild_id or standin.guild.id
    return f"https://discord.com/channels/{guild}/{message.channel.id}/{message.id}"


async def seed(world: BotWorld) -> list[int]:
    """Image posts of Person A (3) and Person B (2), votes, and live guesses over two weeks."""
    standin, deps = world.standin, world.deps
    a, b = world.members
    authors = [a, a, a, b, b]
    image_ids = []
    for i, author in enumerate(authors):
        message = await standin.post_message(
            standin.channel,
            author,
            "",
            attachments=[("x.png", make_image("PNG", seed=900 + i))],
            dispatch=False,
        )
        post = discord_post(
            message_id=message.id,
            position=0,
            channel_id=standin.channel.id,
            author_id=author.id,
            author_name=author.name,
            posted_at=message.created_at,
            url=standin.base_url + message.attachments[0].path,
        )
        stored = await store_fetched_image(
            deps.db,
            deps.files,
            post,
            make_image("PNG", seed=900 + i),
            limits=MediaLimits(),
            people=world.cfg.people,
        )
        image_ids.append(stored.image_id)
        # Week 1 (3 posts): model right 2 of 3 guessed, majority right 1; week 2: model unsure
        # once, right once; the recent baseline right on every post.
        guess, majority = [
            ("Person A", "Person A"),
            ("Person A", "Person B"),
            ("Person B", "Person B"),
            (None, "Person A"),
            ("Person B", "Person A"),
        ][i]
        await insert_live_guess(
            deps.db,
            post_id=stored.post_id,
            guild_id=str(standin.guild.id),
            model_version="v-test",
            guess=guess,
            guess_probability=0.7 if guess else 0.2,
            author=author.name,
            baselines=Baselines(majority, author.name),
            now=MONDAY + timedelta(days=7 * (i >= 3), hours=i),
        )
    voter = votes.discord_voter(a.id)
    await votes.cast_votes(
        deps.db,
        [
            votes.CastVote(image_ids[0], "meme", 1),
            votes.CastVote(image_ids[1], "meme", 1),
            votes.CastVote(image_ids[2], "photo", 1),
            votes.CastVote(image_ids[3], "photo", -1),
        ],
        voter=voter,
        origin="button",
        message_id=None,
    )
    return image_ids


async def test_stats_and_export_for_admins_only(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode=None) as world:
        await seed(world)
        boss = await admin(standin)
        member = world.members[1]
        db = world.db

        # Members are refused, ephemerally, and the refusal is audited.
        for name in ("tagger stats", "tagger export"):
            refused = await standin.invoke_slash(member, name)
            await standin.wait_for(lambda r=refused: r.responded)
            assert refused.response.ephemeral and "Manage Server" in refused.response.content
            assert not refused.original.attachments

        stats = await answer(standin, await standin.invoke_slash(boss, "tagger stats"))
        assert stats.ephemeral
        [chart] = stats.attachments
        assert chart.filename == "memetag-stats.png" and chart.data.startswith(PNG)
        text = stats.content
        # The numbers are the store's.
        counts = {c.label: c for c in await list_label_counts(db)}
        assert (counts["meme"].positive_images, counts["meme"].member_votes) == (2, 2)
        assert (counts["photo"].positive_images, counts["photo"].member_votes) == (1, 2)
        assert "😂 meme: 2 · 2 votes" in text
        assert "📷 photo: 1 · 2 votes" in text
        assert "🐦 social media: 0 · 0 votes" in text
        assert [(p.name, p.images) for p in await list_top_posters(db)] == [
            ("Person A", 3),
            ("Person B", 2),
        ]
        assert "1. Person A: 3\n2. Person B: 2" in text
        weeks = await list_weekly_accuracy(db, str(standin.guild.id))
        assert [(w.week, w.posts, w.guessed, w.guess_right, w.majority_right) for w in weeks] == [
            ("2026-11-02", 3, 3, 2, 1),
            ("2026-11-09", 2, 1, 1, 0),
        ]
        assert "all: 75% · 25% · 100% (4 of 5 posts guessed)" in text
        assert "week of 2026-11-02: 67% · 33% · 100% (3 of 3)" in text
        assert "week of 2026-11-09: 100% · 0% · 100% (1 of 2)" in text

        exported = await answer(standin, await standin.invoke_slash(boss, "tagger export"))
        assert exported.ephemeral and exported.content.startswith("5 rows")
        [csv_file] = exported.attachments
        out = tmp_path / "cli.csv"
        code = await asyncio.to_thread(
            main, ["--data", str(world.cfg.data_dir), "export", "--csv", str(out)]
        )
        assert code == 0
        assert csv_file.filename == "memetag-export.csv"
        assert csv_file.data == out.read_bytes()

        # Past the cap: no file, and where to get the whole CSV instead.
        world.deps.cfg = dataclasses.replace(
            world.cfg, bot=dataclasses.replace(world.cfg.bot, export_max_bytes=300)
        )
        capped = await answer(standin, await standin.invoke_slash(boss, "tagger export"))
        assert not capped.attachments
        assert "larger than 300 bytes" in capped.content
        assert "memetag export --csv" in capped.content

        audit = [(e.actor, e.action, e.outcome) for e in await list_audit(db)]
        assert audit == [
            (f"discord:{member.id}", "tagger stats", "refused: not an admin"),
            (f"discord:{member.id}", "tagger export", "refused: not an admin"),
            (f"discord:{boss.id}", "stats", "ok"),
            (f"discord:{boss.id}", "export", f"ok: 5 rows, {len(csv_file.data)} bytes"),
            (f"discord:{boss.id}", "export", "refused: larger than 300 bytes"),
        ]


async def test_explain_by_link_and_why_this_tag_for_any_member(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="react") as world:
        poster, member = world.members
        posted = await standin.post_message(
            standin.channel, poster, "look", attachments=[("cat.png", make_image("PNG", seed=5))]
        )
        await world.settle()
        [image] = await list_message_images(world.db, posted.id)
        assert image.position == 0

        # Any member, by link: the overlay and the probabilities, only for them.
        asked = await standin.invoke_slash(
            member, "tagger explain", {"message": link(standin, posted)}
        )
        shown = await answer(standin, asked)
        assert shown.ephemeral
        [overlay] = shown.attachments
        assert overlay.filename == "explain.png" and overlay.data.startswith(PNG)
        head, probabilities, note = shown.content.split("\n")
        assert head.startswith("**Why ")
        assert "%" in probabilities and "model v-test" in note
        cache = insights_module.shared(world.deps).explainers
        first = cache._explainer
        assert first is not None and first.checkpoint is world.deps.models.predictor.checkpoint

        # A chosen label, then the sender (the tiny model is unsure or names someone).
        chosen = await answer(
            standin,
            await standin.invoke_slash(
                member, "tagger explain", {"message": link(standin, posted), "label": "photo"}
            ),
        )
        assert chosen.content.startswith("**Why 📷 photo**") and chosen.attachments
        spaced = await answer(
            standin,
            await standin.invoke_slash(
                member,
                "tagger explain",
                {"message": link(standin, posted), "label": "social media"},
            ),
        )
        assert spaced.content.startswith("**Why 🐦 social media**")
        assert cache._explainer is first  # one Explainer per serving model
        sender = await answer(
            standin,
            await standin.invoke_slash(
                member, "tagger explain", {"message": link(standin, posted), "label": "sender"}
            ),
        )
        assert sender.attachments and ("unsure" in sender.content or "would post" in sender.content)

        # "Why this tag?": the top tag, ephemeral.
        why = await answer(
            standin, await standin.invoke_message_context_menu(member, "Why this tag?", posted)
        )
        assert why.ephemeral and why.attachments[0].data.startswith(PNG)
        assert why.content.startswith("**Why ")

        # Refusals: one clear ephemeral line each.
        text_only = await standin.post_message(standin.channel, poster, "no picture here")
        refusals = {
            "not a link": "not a message link",
            link(standin, text_only): "no stored image",
            link(standin, posted, guild_id=1234): "not in this server",
        }
        for given, expected in refusals.items():
            refused = await standin.invoke_slash(member, "tagger explain", {"message": given})
            said = await answer(standin, refused)
            assert said.ephemeral and expected in said.content and not said.attachments
        unknown = await answer(
            standin,
            await standin.invoke_slash(
                member, "tagger explain", {"message": link(standin, posted), "label": "cats"}
            ),
        )
        assert "has no label 'cats'" in unknown.content
        why_not = await answer(
            standin, await standin.invoke_message_context_menu(member, "Why this tag?", text_only)
        )
        assert why_not.ephemeral and "no stored image" in why_not.content

        # A spoilered image's overlay is spoilered too.
        hidden = await standin.post_message(
            standin.channel, poster, "", attachments=[("b.png", make_image("PNG", seed=7), True)]
        )
        await world.settle()
        spoiled = await answer(
            standin, await standin.invoke_message_context_menu(member, "Why this tag?", hidden)
        )
        assert spoiled.attachments[0].filename == "SPOILER_explain.png"

        # A member who can't read the channel doesn't get its images by link.
        elsewhere = await standin.add_text_channel("elsewhere")
        await standin.set_overwrite(
            standin.channel, member, deny=discord.Permissions(read_message_history=True)
        )
        barred = await answer(
            standin,
            await standin.invoke_slash(
                member, "tagger explain", {"message": link(standin, posted)}, channel=elsewhere
            ),
        )
        assert "can't read that channel" in barred.content and not barred.attachments

        # Explain changes nothing, so it is not in the admin audit log.
        assert await list_audit(world.db) == []


async def test_explainer_follows_the_serving_model(standin, tmp_path):
    from tests.helpers.bot_fixtures import record_model

    async with bot_world(standin, tmp_path / "data", mode="react") as world:
        poster, member = world.members
        posted = await standin.post_message(
            standin.channel, poster, "", attachments=[("a.png", make_image("PNG", seed=6))]
        )
        await world.settle()
        ask = {"message": link(standin, posted)}
        await answer(standin, await standin.invoke_slash(member, "tagger explain", ask))
        cache = insights_module.shared(world.deps).explainers
        first = cache._explainer
        await record_model(world.cfg, world.db, version="v-next", seed=1)
        assert await world.deps.models.refresh()
        again = await answer(standin, await standin.invoke_slash(member, "tagger explain", ask))
        assert "model v-next" in again.content
        assert cache._explainer is not first
        assert cache._explainer.model_version == "v-next"

        # A stored file the model cannot read: one line, not a hanging "thinking…".
        [image] = await list_message_images(world.db, posted.id)
        path = world.deps.files.path_for(image.sha256, image.ext)
        path.chmod(0o644)
        path.write_bytes(b"not an image any more")
        broken = await answer(standin, await standin.invoke_slash(member, "tagger explain", ask))
        assert broken.content.startswith("I couldn't explain that image: ")
        assert not broken.attachments


async def test_renders_wait_their_turn_and_a_full_queue_is_refused():
    heavy = insights_module.Heavy(at_once=1, waiting=1)
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    def blocking() -> str:
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)
        return "done"

    first = asyncio.create_task(heavy.run(blocking))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(heavy.run(lambda: "second"))
    await asyncio.sleep(0.05)
    with pytest.raises(insights_module.Busy):
        await heavy.run(lambda: "third")
    gate.set()
    assert await first == "done" and await second == "second"


def test_unsure_sender_is_said_as_unsure_and_not_named():
    from classifier.predictor import Result, SenderCandidate

    result = Result(
        labels={"meme": 0.8, "photo": 0.1},
        predicted=["meme"],
        sender=None,
        sender_probability=0.4,
        sender_probabilities={"Person A": 0.4, "Person B": 0.35},
        model_version="v1",
        sender_candidates=(SenderCandidate("Person A", 0.4), SenderCandidate("Person B", 0.35)),
    )
    line = insights_module.probabilities_line(result, {"meme": "😂"})
    assert line == "😂 meme 80% · photo 10% — sender unsure"
    assert "Person" not in line
    named = dataclasses.replace(result, sender="Person A")
    assert insights_module.probabilities_line(named, {}).endswith(
        "looks like something Person A would post (40%)"
    )
    assert "Person" not in insights_module.probabilities_line(named, {}, with_sender=False)


def test_message_links():
    parse = insights_module.parse_message_link
    assert parse("https://discord.com/channels/1/2/3") == (1, 2, 3)
    assert parse("<https://ptb.discordapp.com/channels/1/2/3>") == (1, 2, 3)
    assert parse("https://discord.com/channels/@me/2/3") == (None, 2, 3)
    for bad in ("https://example.com/channels/1/2/3", "3", "https://discord.com/channels/1/2"):
        with pytest.raises(insights_module.Refusal):
            parse(bad)
