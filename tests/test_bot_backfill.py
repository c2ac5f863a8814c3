"""``/tagger backfill`` against the real bot and the stand-in Discord's paged message history.

The history is seeded silently (messages posted while the bot was away), a live message marks
where live tagging began, and the backfill is rate limited and killed mid-way, then resumed by a
new bot process on the same store: the store must end with exactly one post per image.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import discord

from bot.app import MemetagBot
from bot.cogs.backfill import parse_message_id
from bot.deps import open_deps
from memetag.services.media import MediaLimits, discord_post, store_fetched_image
from memetag.standin import Interaction, Message, StandinDiscord, User, running_bot
from memetag.standin.model import ReactionEmoji
from store.db import open_database
from store.files import ImageFiles
from store.queries.backfill import (
    add_reaction_votes,
    get_backfill_cursor,
    get_first_live_message_id,
)
from store.queries.bot import record_tagged_message
from store.queries.votes import CastVote, cast_votes
from tests.helpers.bot_fixtures import BotWorld, make_config, record_model
from tests.helpers.imagegen import make_image

pytest_plugins = ["tests.helpers.standin_fixtures"]


@contextlib.asynccontextmanager
async def bot_process(
    standin: StandinDiscord,
    data_dir: Path,
    members: list[User],
    *,
    model: bool = True,
    **bot: Any,
) -> AsyncIterator[BotWorld]:
    """One run of the bot on ``data_dir`` (a new process, as far as the store can tell)."""
    bot.setdefault("channels", MappingProxyType({str(standin.channel.id): "react"}))
    cfg = make_config(data_dir, **bot)
    cfg = dataclasses.replace(cfg, people=MappingProxyType({str(m.id): m.name for m in members}))
    data_dir.mkdir(parents=True, exist_ok=True)
    async with open_database(cfg.db_path) as db:
        if model and not cfg.models_dir.exists():
            await record_model(cfg, db)
    async with open_deps(cfg, allow_private=True) as deps:
        client = MemetagBot(deps=deps, guild_ready_timeout=0.05)
        async with running_bot(standin, client, error_loggers=("discord", "bot")):
            await asyncio.wait_for(client.commands_synced.wait(), 10)
            yield BotWorld(standin, client, deps, cfg, members)


async def rows(world: BotWorld, sql: str, params: tuple = ()) -> list[tuple]:
    return [tuple(r) for r in await world.db.fetchall(sql, params)]


async def until(check: Callable[[], Awaitable[object]], timeout: float = 20.0) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.02)


async def answered(standin: StandinDiscord, interaction: Interaction) -> Interaction:
    await standin.wait_for(lambda: interaction.responded, what="an answer")
    return interaction


def react_silently(message: Message, emoji: str, users: list[User]) -> None:
    """Reactions made while the bot was away (no gateway event)."""
    message.reactions[ReactionEmoji.parse(emoji)] = [u.id for u in users]


async def test_backfill_pages_rate_limited_killed_and_resumed_stores_each_image_once(
    standin, tmp_path
):
    data = tmp_path / "data"
    a, b, c = [await standin.add_member(f"Person {x}") for x in "ABC"]
    admin = await standin.add_member("Admin")
    await standin.add_role("mods", discord.Permissions(manage_guild=True), members=[admin])
    members = [a, b, c, admin]
    channel = standin.channel
    cap = {"backfill_reaction_users": 3}

    # -- the history: 250 messages, an image in every fifth, some odd ones ------------------
    start = datetime.now(UTC) - timedelta(days=2)
    history: list[Message] = []
    expected: dict[str, bytes] = {}  # source id -> bytes the backfill must store
    preingested: list[Message] = []
    never: list[Message] = []  # messages whose images must not be fetched
    for i in range(250):
        when = start + timedelta(minutes=i)
        author = (a, b)[(i // 5) % 2]
        if i in (13, 17):  # an opted-out member's images
            image = make_image("PNG", seed=1000 + i)
            message = await standin.post_message(
                channel, c, attachments=[("c.png", image)], created_at=when, dispatch=False
            )
            never.append(message)
        elif i == 7:  # an image link Discord embedded
            image = make_image("PNG", seed=1007)
            message = await standin.post_message(
                channel,
                b,
                "look",
                embeds=[standin.image_embed(image)],
                created_at=when,
                dispatch=False,
            )
            expected[f"{message.id}:0"] = image
        elif i == 3:  # a text file, then an image: positions as the export numbers them
            image = make_image("PNG", seed=1003)
            message = await standin.post_message(
                channel,
                a,
                attachments=[("notes.txt", b"not an image"), ("p.png", image)],
                created_at=when,
                dispatch=False,
            )
            expected[f"{message.id}:1"] = image
        elif i % 5 == 0:
            seed = 5000 if i in (30, 35) else i  # 30 and 35: the same picture posted twice
            image = make_image("PNG", seed=seed)
            message = await standin.post_message(
                channel,
                author,
                attachments=[(f"{i}.png", image)],
                created_at=when,
                dispatch=False,
            )
            expected[f"{message.id}:0"] = image
            if i in (20, 25):
                preingested.append(message)
        else:
            message = await standin.post_message(
                channel, author, f"message {i}", created_at=when, dispatch=False
            )
        history.append(message)
    react_silently(history[40], "😂", [standin.bot_user, a, b, admin])  # capped at 3 users
    react_silently(history[40], "👍", [a])  # not a label emoji
    react_silently(history[45], "🐦", [c, admin])  # C opted out

    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(bot_process(standin, data, members, **cap))
        optout = await answered(standin, await standin.invoke_slash(c, "tagger optout"))
        assert optout.response.ephemeral
        # Two posts an `ingest discord-export` of the channel stored already.
        for message in preingested:
            post = discord_post(
                message_id=message.id,
                position=0,
                channel_id=channel.id,
                author_id=message.author.id,
                author_name=message.author.name,
                posted_at=message.created_at,
                url=standin.base_url + message.attachments[0].path,
            )
            await store_fetched_image(
                first.db, first.deps.files, post, expected[f"{message.id}:0"], limits=MediaLimits()
            )
        # Live tagging begins here; the message after it is the live tagger's, not history.
        live = await standin.post_message(
            channel, a, attachments=[("live.png", make_image("PNG", seed=7777))]
        )
        await first.settle()
        assert standin.reactions_on(live)  # tagged live
        after_live = await standin.post_message(
            channel, b, attachments=[("late.png", make_image("PNG", seed=7778))], dispatch=False
        )
        never.append(after_live)

        refused = await answered(
            standin, await standin.invoke_slash(b, "tagger backfill", {"channel": channel})
        )
        assert refused.response.ephemeral and "Manage Server" in refused.response.content

        async with standin.hold_downloads():
            started = await answered(
                standin, await standin.invoke_slash(admin, "tagger backfill", {"channel": channel})
            )
            await standin.wait_for(lambda: standin.downloads_waiting >= 1)
            # The next page request is rate limited (page 1 is being stored meanwhile).
            limited = standin.rate_limit("GET", f"/channels/{channel.id}/messages", retry_after=1.0)
        await standin.wait_for(lambda: limited.hits == 1, timeout=20)
        async with standin.hold_downloads():
            # Page 2 came after the 429; kill the bot while its images are downloading.
            await standin.wait_for(lambda: standin.downloads_waiting >= 1, timeout=20)
            cursor = await get_backfill_cursor(first.db, channel.id)
            assert (cursor.after_id, cursor.messages, cursor.done) == (history[99].id, 100, False)
            assert cursor.stop_before == live.id
            await stack.aclose()

    gets_before = len(standin.requests_to("GET", f"/channels/{channel.id}/messages"))
    async with bot_process(standin, data, members, **cap) as second:
        resumed = await answered(
            standin, await standin.invoke_slash(admin, "tagger backfill", {"channel": channel})
        )

        async def finished() -> bool:
            cursor = await get_backfill_cursor(second.db, channel.id)
            return cursor is not None and cursor.done

        await until(finished)
        await standin.wait_for(lambda: resumed.original.content.endswith("Done."))
        gets = standin.requests_to("GET", f"/channels/{channel.id}/messages")[gets_before:]
        assert [g.query.get("after") for g in gets] == [str(history[99].id), str(history[199].id)]
        assert all(g.query.get("limit") == "100" for g in gets) and limited.hits == 1

        # Exactly one post per image of the history, plus the live one; nothing else.
        posts = await rows(second, "SELECT source_id FROM posts WHERE status = 'stored'")
        assert sorted(p[0] for p in posts) == sorted([*expected, f"{live.id}:0"])
        # The text file was fetched, found not to be an image and never recorded.
        assert await rows(second, "SELECT COUNT(*) FROM posts") == [(len(expected) + 1,)]
        files = [p for p in second.cfg.images_dir.rglob("*") if p.is_file()]
        assert len(files) == len(set(expected.values())) + 1 == len(expected)  # 30 and 35 share
        for message in [*preingested, *never]:
            for attachment in message.attachments:
                assert standin.cdn_hits[attachment.id] == 0
        for message in history[:100]:
            for attachment in message.attachments:
                if message not in preingested and message not in never:
                    assert standin.cdn_hits[attachment.id] == 1
        # Authors are the sender labels; nobody's name was taken from C.
        people = await rows(
            second,
            "SELECT DISTINCT pe.name FROM posts p JOIN people pe ON pe.id = p.author_id",
        )
        assert sorted(people) == [("Person A",), ("Person B",)]

        # Old messages were never tagged: the bot reacted to the live message only, replied
        # nowhere, and edited only its own answer.
        puts = standin.requests_to("PUT", "/channels/*/messages/*/reactions/*")
        assert puts and all(f"/messages/{live.id}/" in r.path for r in puts)
        assert all(m.interaction is not None for m in standin.bot_messages(channel))
        assert not standin.requests_to("POST", f"/channels/{channel.id}/messages")

        # Reactions became votes: capped at 3 users (the bot's own and C's not counted).
        votes = await rows(
            second,
            "SELECT p.source_id, l.name, v.voter, v.vote, v.origin FROM label_votes v"
            " JOIN labels l ON l.id = v.label_id JOIN posts p ON p.image_id = v.image_id"
            " ORDER BY p.source_id, v.voter",
        )
        assert votes == sorted(
            [
                (f"{history[40].id}:0", "meme", f"discord:{a.id}", 1, "reaction"),
                (f"{history[40].id}:0", "meme", f"discord:{b.id}", 1, "reaction"),
                (f"{history[45].id}:0", "social_media", f"discord:{admin.id}", 1, "reaction"),
            ]
        )
        assert sorted(await rows(second, "SELECT message_id FROM vote_events")) == sorted(
            [(str(history[40].id),), (str(history[40].id),), (str(history[45].id),)]
        )

        cursor = await get_backfill_cursor(second.db, channel.id)
        new_images = len(expected) - len(preingested)
        assert (cursor.messages, cursor.images, cursor.votes) == (250, new_images, 3)
        assert resumed.original.content == (
            f"Backfill of #general: 250 messages read, {new_images} images stored, 3 votes "
            "from reactions. Done."
        )
        assert await rows(second, "SELECT action, outcome FROM audit_log ORDER BY id") == [
            ("tagger backfill", "refused: not an admin"),
            ("backfill", "started"),
            ("backfill", f"resumed after message {history[99].id}"),
        ]
        assert started.response.content.startswith("Backfill of #general")

        # Run again once done: only what came after (up to now) is read; nothing new is
        # stored twice, no vote is added twice.
        again = await answered(
            standin, await standin.invoke_slash(admin, "tagger backfill", {"channel": channel})
        )
        await standin.wait_for(lambda: again.original.content.endswith("Done."), timeout=20)
        # The live message (stored already), the one after it, and the bot's own answers.
        assert "1 image stored" in again.original.content
        assert "(1 image was stored already)" in again.original.content
        assert await rows(second, "SELECT COUNT(*) FROM posts") == [(len(expected) + 2,)]
        assert await rows(second, "SELECT COUNT(*) FROM label_votes") == [(3,)]


async def test_backfill_limit_stops_early_and_after_skips_older_messages(standin, tmp_path):
    a = await standin.add_member("Person A")
    owner = standin.owner  # the server owner may do everything
    start = datetime.now(UTC) - timedelta(hours=1)
    history = [
        await standin.post_message(
            standin.channel,
            a,
            attachments=[(f"{i}.png", make_image("PNG", seed=300 + i))],
            created_at=start + timedelta(seconds=i),
            dispatch=False,
        )
        for i in range(12)
    ]
    async with bot_process(standin, tmp_path / "data", [a], model=False) as world:
        first = await answered(
            standin,
            await standin.invoke_slash(
                owner,
                "tagger backfill",
                {"channel": standin.channel, "limit": 5, "after": str(history[1].id)},
            ),
        )
        await standin.wait_for(lambda: "Stopped" in first.original.content, timeout=20)
        assert first.original.content == (
            "Backfill of #general: 5 messages read, 5 images stored, 0 votes from reactions. "
            "Stopped: it read the 5 messages asked for. Run `/tagger backfill` on the channel "
            "again to go on from where it stopped."
        )
        assert sorted(r[0] for r in await rows(world, "SELECT source_id FROM posts")) == sorted(
            f"{m.id}:0" for m in history[2:7]
        )
        link = f"https://discord.com/channels/{standin.guild.id}/{standin.channel.id}/1"
        bad = await answered(
            standin,
            await standin.invoke_slash(
                owner, "tagger backfill", {"channel": standin.channel, "after": "yesterday"}
            ),
        )
        assert bad.response.ephemeral and "neither a message link" in bad.response.content
        rest = await answered(
            standin,
            await standin.invoke_slash(
                owner, "tagger backfill", {"channel": standin.channel, "after": link}
            ),
        )
        await standin.wait_for(lambda: rest.original.content.endswith("Done."), timeout=20)
        # Resumed where the limit stopped it (an earlier `after` does not go back).
        assert rest.original.content.startswith(
            "Backfill of #general: 10 messages read, 10 images stored"
        )
        assert await rows(world, "SELECT COUNT(*) FROM posts") == [(10,)]
        assert await rows(world, "SELECT outcome FROM audit_log ORDER BY id") == [
            ("started",),
            ("refused: 'yesterday' is neither a message link nor a message id",),
            (f"resumed after message {history[6].id}",),
        ]


def test_message_ids_from_links_and_ids():
    assert parse_message_id(" 123 ") == 123
    assert parse_message_id("https://discord.com/channels/1/2/345") == 345
    assert parse_message_id("https://ptb.discord.com/channels/@me/2/345") == 345
    assert parse_message_id("#general") is None


async def test_live_start_ignores_late_rows_and_old_reactions_never_replace_a_vote(db, tmp_path):
    now = datetime.now(UTC)
    edited_old = discord.utils.time_snowflake(now - timedelta(days=30))  # stored on a late edit
    live = discord.utils.time_snowflake(now - timedelta(minutes=5))
    later = discord.utils.time_snowflake(now - timedelta(minutes=1))
    for message_id in (edited_old, live, later):
        await record_tagged_message(
            db, message_id=str(message_id), channel_id="9", guild_id="1", author_ref="5", images=[]
        )
    assert await get_first_live_message_id(db, "9") == live
    assert await get_first_live_message_id(db, "9", after=live + 1) == later
    assert await get_first_live_message_id(db, "8") is None

    stored = await store_fetched_image(
        db,
        ImageFiles(tmp_path / "images"),
        discord_post(
            message_id=live,
            position=0,
            channel_id=9,
            author_id=5,
            author_name="Person A",
            posted_at=None,
            url=None,
        ),
        make_image("PNG", seed=40),
        limits=MediaLimits(),
    )
    image = stored.image_id
    # A member already said "not a meme" with Fix tags; their old reaction does not undo it.
    await cast_votes(
        db, [CastVote(image, "meme", -1)], voter="discord:1", origin="button", message_id=live
    )
    old = [(image, "meme", "discord:1"), (image, "meme", "discord:2")]
    assert await add_reaction_votes(db, old, message_id=live) == 1
    assert await add_reaction_votes(db, old, message_id=live) == 0  # read again: nothing new
    votes = await db.fetchall(
        "SELECT voter, vote, origin FROM label_votes WHERE image_id = ? ORDER BY voter", (image,)
    )
    assert [tuple(v) for v in votes] == [("discord:1", -1, "button"), ("discord:2", 1, "reaction")]
    events = await db.fetchall("SELECT voter, vote, origin FROM vote_events ORDER BY id")
    assert [tuple(e) for e in events] == [("discord:1", -1, "button"), ("discord:2", 1, "reaction")]
