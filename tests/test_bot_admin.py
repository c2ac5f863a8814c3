"""Admin subcommands of /tagger, command sync, logging and sharding: the real bot (MemetagBot
with its cogs and a tiny model) against the stand-in Discord, read back from the stand-in's
records and the store."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from types import MappingProxyType, SimpleNamespace

import discord

from bot.app import MemetagShardedBot, create_bot
from bot.cogs.admin import percentile
from bot.cogs.tagging import decide_labels
from bot.deps import open_deps
from bot.logs import configure_logging
from classifier.predictor import Result
from memetag.standin import StandinDiscord, running_bot
from store.db import open_database
from store.queries.audit import list_audit
from tests.helpers.bot_fixtures import EMOJIS, BotWorld, bot_world, make_config, record_model
from tests.ml_helpers import encode, photo_like

pytest_plugins = ["tests.helpers.standin_fixtures"]

REFUSED = "only members with the Manage Server permission can do that"


def jpeg(seed: int) -> bytes:
    return encode(photo_like(96, 80, seed=seed), "JPEG", quality=85)


async def make_admin(standin: StandinDiscord, name: str = "Admin 1"):
    user = await standin.add_member(name)
    role = await standin.add_role(
        f"mods of {name}", discord.Permissions(manage_guild=True), members=[user]
    )
    return user, role


async def tagger(world: BotWorld, user, name: str, options: dict | None = None, **kw) -> str:
    """Run ``/tagger <name>`` as ``user``; returns the (ephemeral) answer's text."""
    standin = world.standin
    interaction = await standin.invoke_slash(user, f"tagger {name}", options or {}, **kw)

    def answered() -> str | None:
        response = interaction.response
        if response is None:
            return None
        assert response.ephemeral, f"/tagger {name} answered in public"
        if response.type == 4:
            return response.content
        original = interaction.original
        return original.content if original is not None and original.content else None

    return await standin.wait_for(answered, 20)


async def audit_rows(world: BotWorld) -> list[tuple[str, dict, str]]:
    return [(e.action, e.arguments, e.outcome) for e in await list_audit(world.db)]


def reaction_emojis(standin: StandinDiscord, message) -> list[str]:
    return list(standin.reactions_on(message))


# -- who may -------------------------------------------------------------------------------------

ADMIN_CALLS = [
    ("status", {}),
    ("channel list", {}),
    ("channel enable", {}),
    ("channel disable", {}),
    ("mode", {"mode": "reply"}),
    ("threshold", {"label": "meme", "value": "0.3"}),
    ("labels", {}),
    ("models", {}),
    ("rollback", {}),
    ("reload", {}),
]


async def test_every_admin_command_refuses_a_member_and_audits_it(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data") as world:
        # Registered in the guild (command_sync "guild"), nothing left globally.
        assert [c["name"] for c in standin.registered_commands(standin.guild)].count("tagger") == 1
        assert standin.registered_commands() == []
        member = world.members[0]
        for name, options in ADMIN_CALLS:
            assert await tagger(world, member, name, options) == REFUSED, name
        rows = await audit_rows(world)
        assert [(a, o) for a, _, o in rows] == [
            (f"tagger {name}", "refused: not an admin") for name, _ in ADMIN_CALLS
        ]
        # Nothing changed.
        assert not await world.db.fetchall("SELECT * FROM guild_thresholds")
        assert not await world.db.fetchall("SELECT * FROM bot_channels WHERE origin = 'command'")


async def test_a_member_whose_role_lost_manage_server_after_sync_is_refused(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data") as world:
        admin, role = await make_admin(standin)
        assert (await tagger(world, admin, "status")).startswith("**memetag status**")
        await standin.set_role_permissions(role, discord.Permissions.none())
        assert await tagger(world, admin, "threshold", {"label": "meme", "value": "0.2"}) == REFUSED
        assert not await world.db.fetchall("SELECT * FROM guild_thresholds")
        assert [(a, o) for a, _, o in await audit_rows(world)] == [
            ("status", "ok"),
            ("tagger threshold", "refused: not an admin"),
        ]


# -- status ----------------------------------------------------------------------------------------


async def test_status_shows_model_queue_latency_counts_accuracy_overrides_and_last_error(
    standin, tmp_path
):
    async with bot_world(standin, tmp_path / "data", mode="react") as world:
        admin, _ = await make_admin(standin)
        person_a = world.members[0]
        for seed in (1, 2):
            await standin.post_message(
                standin.channel, person_a, "look", attachments=[("a.jpg", jpeg(seed))]
            )
        await world.settle()
        await world.until(lambda: len(world.tagging.stats.tag_s) == 2)
        await tagger(world, admin, "threshold", {"label": "photo", "value": "0.25"})
        logging.getLogger("bot.cogs.tagging").warning("could not tag message 42: 500 boom")
        text = await tagger(world, admin, "status")
        lines = text.splitlines()
        assert lines[0] == "**memetag status**"
        assert lines[1].startswith("Model: `v-test` (validation: categories macro-F1")
        assert lines[2].startswith("Queue: 0 waiting; since start 2 done, 0 dropped")
        assert lines[3].startswith("Tag latency since start: p50 ") and "(2 tagged)" in lines[3]
        assert lines[4].startswith("Today (UTC): 2 posts, 2 new images, 0 votes stored; here 2")
        assert lines[5].startswith("Total: 2 posts, 2 images, 0 votes stored; here 2 posts")
        assert lines[6].startswith("Live sender guesses here: model ")
        assert "Threshold overrides here: photo 0.25" in lines
        assert lines[-1].endswith("warning bot.cogs.tagging: could not tag message 42: 500 boom")
        assert "(2 live posts)" in lines[6]


def test_percentile_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0


# -- channels and modes ------------------------------------------------------------------------


async def test_channel_disable_stops_tagging_at_once_and_mode_changes_apply(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="react") as world:
        admin, _ = await make_admin(standin)
        person_a = world.members[0]
        channel_id = str(standin.channel.id)
        assert await tagger(world, admin, "channel list") == (
            f"<#{channel_id}>: react — config\nother channels: off"
        )
        text = await tagger(world, admin, "channel disable")
        assert text.startswith(f"Not watching <#{channel_id}>")
        ignored = await standin.post_message(
            standin.channel, person_a, "x", attachments=[("a.jpg", jpeg(3))]
        )
        await world.settle()  # the listeners ran: nothing queued, stored or shown
        assert not standin.reactions_on(ignored)
        assert not await world.db.fetchall("SELECT * FROM posts")
        assert "disabled (was react) — set by an admin" in await tagger(
            world, admin, "channel list"
        )

        assert "in **react** mode" in await tagger(world, admin, "channel enable")
        tagged = await standin.post_message(
            standin.channel, person_a, "x", attachments=[("b.jpg", jpeg(4))]
        )
        await world.settle()
        await world.until(lambda: standin.reactions_on(tagged))

        other = await standin.add_text_channel("memes")
        assert "in **reply** mode" in await tagger(
            world, admin, "mode", {"mode": "reply", "channel": other}
        )
        replied = await standin.post_message(other, person_a, "x", attachments=[("c.jpg", jpeg(5))])
        await world.settle()
        await world.until(lambda: standin.bot_messages(other))
        assert standin.bot_messages(other)[0].reference is replied
        rows = [
            tuple(r)
            for r in await world.db.fetchall(
                "SELECT channel_id, guild_id, mode, origin, enabled, updated_by FROM bot_channels"
                " ORDER BY updated_at, channel_id"
            )
        ]
        assert sorted(rows) == sorted(
            [
                (channel_id, str(standin.guild.id), "react", "command", 1, f"discord:{admin.id}"),
                (
                    str(other.id),
                    str(standin.guild.id),
                    "reply",
                    "command",
                    1,
                    f"discord:{admin.id}",
                ),
            ]
        )
        assert [(a, args) for a, args, _ in await audit_rows(world)] == [
            ("channel list", {}),
            ("channel disable", {"channel": channel_id, "mode": "react"}),
            ("channel list", {}),
            ("channel enable", {"channel": channel_id, "mode": "react"}),
            ("mode", {"channel": str(other.id), "mode": "reply"}),
        ]


# -- thresholds and labels ---------------------------------------------------------------------


async def test_a_threshold_override_applies_to_the_next_image_and_reset_restores(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="react", max_reactions=3) as world:
        admin, _ = await make_admin(standin)
        person_a = world.members[0]
        data = jpeg(7)
        expected = await world.deps.models.predictor.predict(data)
        # The least probable label: not predicted at the model's 0.5 unless all are.
        low = min(expected.labels, key=expected.labels.get)
        assert low not in expected.predicted

        assert "at least 0.001" in await tagger(
            world, admin, "threshold", {"label": low, "value": "0.001"}
        )
        first = await standin.post_message(
            standin.channel, person_a, "x", attachments=[("a.jpg", data)]
        )
        await world.settle()
        shown = await world.until(lambda: reaction_emojis(standin, first))
        assert EMOJIS[low] in shown

        assert "model's own threshold again" in await tagger(
            world, admin, "threshold", {"label": low, "value": "reset"}
        )
        second = await standin.post_message(
            standin.channel, person_a, "x", attachments=[("b.jpg", data)]
        )
        await world.settle()
        shown = await world.until(lambda: reaction_emojis(standin, second))
        assert shown == [EMOJIS[n] for n in expected.predicted][:3]

        # Refused values change nothing and are audited as failures.
        assert "between 0 and 1" in await tagger(
            world, admin, "threshold", {"label": low, "value": "1.5"}
        )
        assert "No label `nope`" in await tagger(
            world, admin, "threshold", {"label": "nope", "value": "0.5"}
        )
        assert [(a, o) for a, _, o in await audit_rows(world)] == [
            ("threshold", "ok"),
            ("threshold reset", "ok"),
            ("threshold", "failed: not a probability"),
            ("threshold", "failed: unknown label"),
        ]


async def test_overrides_and_disabled_channels_stay_in_their_guild(standin, tmp_path):
    """Under a default mode every channel is watched: guild A's override and disabled channel
    change nothing in guild B."""
    async with bot_world(
        standin, tmp_path / "data", mode=None, default_mode="react", max_reactions=3
    ) as world:
        admin, _ = await make_admin(standin)
        guild_b = await standin.add_guild("Guild B")
        [channel_b] = [c for c in standin.channels.values() if c.guild is guild_b]
        member_b = await standin.add_member("Person B2", guild=guild_b)
        data = jpeg(11)
        expected = await world.deps.models.predictor.predict(data)
        low = min(expected.labels, key=expected.labels.get)
        await tagger(world, admin, "threshold", {"label": low, "value": "0.001"})
        here = await standin.post_message(
            standin.channel, world.members[0], "x", attachments=[("a.jpg", data)]
        )
        there = await standin.post_message(channel_b, member_b, "x", attachments=[("a.jpg", data)])
        await world.settle()
        assert EMOJIS[low] in await world.until(lambda: reaction_emojis(standin, here))
        assert (
            await world.until(lambda: reaction_emojis(standin, there))
            == [EMOJIS[n] for n in expected.predicted][:3]
        )

        await tagger(world, admin, "channel disable")
        skipped = await standin.post_message(
            standin.channel, world.members[0], "x", attachments=[("b.jpg", jpeg(12))]
        )
        still = await standin.post_message(
            channel_b, member_b, "x", attachments=[("b.jpg", jpeg(12))]
        )
        await world.settle()
        await world.until(lambda: reaction_emojis(standin, still))
        assert not standin.reactions_on(skipped)


def test_decide_labels_under_overrides():
    ckpt = SimpleNamespace(
        version="v1", thresholds={"a": 0.5, "b": 0.5, "c": 0.5}, label_mode="multi"
    )
    predictor = SimpleNamespace(is_loaded=True, checkpoint=ckpt)
    result = Result(
        labels={"a": 0.6, "b": 0.3, "c": 0.1},
        predicted=["a"],
        sender=None,
        sender_probability=0.0,
        sender_probabilities={},
        model_version="v1",
    )
    assert decide_labels(result, {"b": 0.2}, predictor).predicted == ["a", "b"]
    # An override above the top label's probability removes it, even as the "at least one".
    assert decide_labels(result, {"a": 0.9}, predictor).predicted == []
    assert decide_labels(result, {"c": 0.05, "a": 0.9}, predictor).predicted == ["c"]
    ckpt.label_mode = "exclusive"
    assert decide_labels(result, {"b": 0.2}, predictor).predicted == ["a"]


async def test_labels_lists_emojis_votes_positives_and_what_the_model_emits(standin, tmp_path):
    checkpoint = {"emitted_labels": ["meme", "photo"]}
    async with bot_world(standin, tmp_path / "data", checkpoint=checkpoint) as world:
        admin, _ = await make_admin(standin)
        person_a = world.members[0]
        message = await standin.post_message(
            standin.channel, person_a, "x", attachments=[("a.jpg", jpeg(8))]
        )
        await world.settle()
        [(image_id,)] = [tuple(r) for r in await world.db.fetchall("SELECT id FROM images")]
        from store.queries.labels import add_vote

        await add_vote(world.db, image_id, "meme", "discord:1", 1, "reaction")
        await add_vote(world.db, image_id, "meme", "discord:2", 1, "reaction")
        await add_vote(world.db, image_id, "photo", "discord:1", -1, "button")
        assert message is not None
        text = await tagger(world, admin, "labels")
        lines = text.splitlines()
        assert "😂 meme: 2 votes, 1 positive ✓" in lines
        assert "📷 photo: 1 votes, 0 positive ✓" in lines
        assert "🐦 social_media: 0 votes, 0 positive —" in lines


# -- models ----------------------------------------------------------------------------------------


async def test_reload_rollback_and_models_swap_the_running_model(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", model_poll_s=3600) as world:
        admin, _ = await make_admin(standin)
        deps = world.deps
        assert deps.models.version == "v-test"
        # Another process trains a model and makes it current: reload picks it up now.
        await record_model(world.cfg, world.db, "v-two", seed=1)
        assert deps.models.version == "v-test"
        assert await tagger(world, admin, "reload") == "Now tagging with `v-two` (was `v-test`)."
        assert deps.models.version == "v-two"
        assert deps.models.predictor.model_version == "v-two"
        assert "unchanged" in await tagger(world, admin, "reload")

        assert await tagger(world, admin, "rollback") == "Now tagging with `v-test` (was `v-two`)."
        assert deps.models.predictor.model_version == "v-test"
        assert (
            await tagger(world, admin, "rollback") == "There is no earlier model to roll back to."
        )
        text = await tagger(world, admin, "rollback", {"version": "v-two"})
        assert text == "Now tagging with `v-two` (was `v-test`)."
        assert "no model version 'v-nope'" in await tagger(
            world, admin, "rollback", {"version": "v-nope"}
        )
        listing = (await tagger(world, admin, "models")).splitlines()
        assert listing[1].startswith("· `v-test` ") and listing[2].startswith("▶ `v-two` ")

        # Tagging goes on with the swapped model.
        message = await standin.post_message(
            standin.channel, world.members[0], "x", attachments=[("a.jpg", jpeg(9))]
        )
        await world.settle()
        await world.until(lambda: standin.reactions_on(message))
        [(version,)] = [
            tuple(r) for r in await world.db.fetchall("SELECT model_version FROM predictions")
        ]
        assert version == "v-two"
        assert [(a, args.get("version"), o) for a, args, o in await audit_rows(world)] == [
            ("reload", "v-two", "ok"),
            ("reload", "v-two", "ok: unchanged"),
            ("rollback", "v-test", "ok"),
            ("rollback", None, "failed: no earlier model"),
            ("rollback", "v-two", "ok"),
            ("rollback", "v-nope", "failed: unknown version"),
            ("models", None, "ok"),
        ]


# -- command sync ----------------------------------------------------------------------------------


async def test_a_guild_the_bot_joins_gets_the_commands_and_global_sync_is_the_option(
    standin, tmp_path
):
    async with bot_world(standin, tmp_path / "data") as world:
        joined = await standin.add_guild("Second Guild")
        await world.until(lambda: standin.registered_commands(joined))
        names = {c["name"] for c in standin.registered_commands(joined)}
        assert {"tagger", "Fix tags"} <= names
        assert standin.registered_commands() == []
    async with bot_world(standin, tmp_path / "data2", command_sync="global") as world:
        assert "tagger" in {c["name"] for c in standin.registered_commands()}


# -- logging -----------------------------------------------------------------------------------------


async def test_logs_are_json_lines_without_the_token_or_message_text(standin, tmp_path):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    levels = {n: logging.getLogger(n).level for n in ("bot", "memetag", "discord", "store")}
    stream = io.StringIO()
    secret_text = "the secret words of member one 7731"
    try:
        configure_logging(level="DEBUG", json_lines=True, secrets=(standin.token,), stream=stream)
        async with bot_world(standin, tmp_path / "data", mode="reply") as world:
            admin, _ = await make_admin(standin)
            message = await standin.post_message(
                standin.channel, world.members[0], secret_text, attachments=[("a.jpg", jpeg(10))]
            )
            await world.settle()
            await world.until(lambda: standin.bot_messages(standin.channel))
            await tagger(world, admin, "status")
            logging.getLogger("bot.test").warning("token in a message: %s", standin.token)
            assert message is not None
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) > 5
    entries = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "event"} <= set(e) for e in entries)
    assert any(e["logger"].startswith("bot") for e in entries)
    assert standin.token not in text
    assert "token in a message: [token]" in text
    assert secret_text not in text and "secret words" not in text


# -- sharding ------------------------------------------------------------------------------------


async def test_a_sharded_process_identifies_with_its_shard_and_tags(standin, tmp_path):
    channels = MappingProxyType({str(standin.channel.id): "react"})
    cfg = make_config(tmp_path / "data", shard_count=2, shard_ids=(1,), channels=channels)
    cfg.data_dir.mkdir(parents=True)
    async with open_database(cfg.db_path) as db:
        await record_model(cfg, db)
    async with open_deps(cfg, allow_private=True) as deps:
        bot = create_bot(deps, guild_ready_timeout=0.05)
        assert isinstance(bot, MemetagShardedBot)
        assert (bot.shard_count, bot.shard_ids) == (2, [1])
        async with running_bot(standin, bot, error_loggers=("discord", "bot")):
            await asyncio.wait_for(bot.commands_synced.wait(), 10)
            assert standin.gateway.session.identify["shard"] == [1, 2]
            assert bot.get_guild(standin.guild.id) is not None
            author = await standin.add_member("Person A")
            message = await standin.post_message(
                standin.channel, author, "x", attachments=[("a.jpg", jpeg(13))]
            )
            await standin.wait_for(lambda: standin.reactions_on(message), 20)
    plain = make_config(tmp_path / "data")
    async with open_deps(plain, allow_private=True) as deps:
        assert not isinstance(create_bot(deps), MemetagShardedBot)
