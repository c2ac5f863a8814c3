"""Live tagging with the real discord.py client against the stand-in Discord and a tiny model.

Each test runs the product bot (``MemetagBot`` with its cogs and shared deps) and plays the
members through the stand-in's driver; what the bot did is read back from the stand-in's
records and from the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import pytest

from classifier.predictor import Result
from memetag.standin import StandinDiscord
from tests.helpers.bot_fixtures import EMOJIS, BotWorld, bot_world, record_model
from tests.helpers.imagegen import make_image
from tests.ml_helpers import encode, photo_like

pytest_plugins = ["tests.helpers.standin_fixtures"]


def jpeg(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    return encode(photo_like(*size, seed=seed), "JPEG", quality=85)


async def predicted(world: BotWorld, data: bytes) -> Result:
    """What the bot's own predictor says about ``data`` (the expected tags)."""
    return await world.deps.models.predictor.predict(data)


async def rows(world: BotWorld, sql: str, params: tuple = ()) -> list[tuple]:
    return [tuple(r) for r in await world.db.fetchall(sql, params)]


def reaction_puts(standin: StandinDiscord, message) -> list[str]:
    return [
        r.path.rsplit("/reactions/", 1)[1]
        for r in standin.requests_to("PUT", f"/channels/*/messages/{message.id}/reactions/*")
    ]


# -- modes ----------------------------------------------------------------------------------------


async def test_react_mode_adds_top_label_emojis_and_stores_exact_rows(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="react", max_reactions=2) as world:
        member_a = world.members[0]
        data = jpeg(1)
        message = await standin.post_message(
            standin.channel, member_a, "look", attachments=[("cat.jpg", data)]
        )
        await world.settle()
        expected = await predicted(world, data)
        emojis = [EMOJIS[n] for n in expected.predicted][:2]
        reactions = standin.reactions_on(message)
        assert list(reactions) == emojis
        assert all(users == [standin.bot_user] for users in reactions.values())

        db = world.db
        [post] = await rows(
            world,
            "SELECT p.id, p.source, p.source_id, p.conversation_id, p.status, pe.name, p.image_id"
            " FROM posts p JOIN people pe ON pe.id = p.author_id",
        )
        post_id, image_id = post[0], post[6]
        assert post[1:6] == (
            "discord",
            f"{message.id}:0",
            str(standin.channel.id),
            "stored",
            "Person A",
        )
        [(alias,)] = await rows(
            world, "SELECT source_ref FROM person_aliases WHERE source = 'discord'"
        )
        assert alias == str(member_a.id)
        assert await rows(
            world, "SELECT message_id, channel_id, guild_id, author_ref, reply_id FROM bot_messages"
        ) == [
            (
                str(message.id),
                str(standin.channel.id),
                str(standin.guild.id),
                str(member_a.id),
                None,
            )
        ]
        assert await rows(
            world, "SELECT message_id, position, post_id, spoiler FROM bot_message_images"
        ) == [(str(message.id), 0, post_id, 0)]
        [prediction] = await rows(
            world,
            "SELECT image_id, model_version, probabilities, sender_name, sender_probability"
            " FROM predictions",
        )
        assert prediction[:2] == (image_id, "v-test")

        assert json.loads(prediction[2]) == pytest.approx(expected.labels)
        assert prediction[3] == expected.sender
        [guess] = await rows(
            world,
            "SELECT post_id, guild_id, model_version, author, guess, majority_guess, recent_guess"
            " FROM live_guesses",
        )
        # The only post: no other post to base the baselines on yet.
        assert guess == (
            post_id,
            str(standin.guild.id),
            "v-test",
            "Person A",
            expected.sender,
            None,
            None,
        )
        files = list((world.cfg.images_dir).rglob("*.jpg"))
        assert len(files) == 1 and files[0].read_bytes() == data
        assert (await db.fetchone("SELECT sha256 FROM images"))["sha256"] in files[0].name


async def test_reply_mode_one_quiet_reply_for_several_images_spoilers_kept(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="reply") as world:
        member_a = world.members[0]
        plain, hidden = jpeg(2), jpeg(3)
        message = await standin.post_message(
            standin.channel,
            member_a,
            "two",
            attachments=[("a.jpg", plain), ("b.jpg", hidden, True)],
        )
        await world.settle()
        [reply] = standin.bot_messages(standin.channel)
        assert reply.reference is message
        assert reply.mention_user_ids == [] and not reply.mention_everyone
        assert reply.allowed_mentions["parse"] == []
        assert not reply.allowed_mentions.get("replied_user")
        first, second = await predicted(world, plain), await predicted(world, hidden)
        lines = reply.content.splitlines()
        assert len(lines) == 2 and lines[0].startswith("1. ") and lines[1].startswith("2. ||")
        assert lines[1].endswith("||")
        top = first.predicted[0]
        assert (
            f"{EMOJIS[top]} {top.replace('_', ' ')} {round(first.labels[top] * 100)}%" in lines[0]
        )
        assert (
            f"looks like something {first.sender} would post "
            f"({round(first.sender_probability * 100)}%)" in lines[0]
        )
        assert second.sender in lines[1]
        assert standin.reactions_on(message) == {}
        assert await rows(world, "SELECT reply_id FROM bot_messages") == [(str(reply.id),)]
        assert await rows(
            world, "SELECT position, spoiler FROM bot_message_images ORDER BY position"
        ) == [(0, 0), (1, 1)]
        # The bot's own reply (it sees it come back through the gateway) is never tagged.
        assert len(standin.bot_messages()) == 1


async def test_reply_says_nothing_about_the_sender_when_unsure(standin, tmp_path):
    unsure = {"sender_min_confidence": 1.01}
    async with bot_world(standin, tmp_path / "data", mode="reply", checkpoint=unsure) as world:
        await standin.post_message(
            standin.channel, world.members[0], attachments=[("a.jpg", jpeg(4))]
        )
        await world.settle()
        [reply] = standin.bot_messages(standin.channel)
        assert "looks like" not in reply.content and "%" in reply.content
        assert "Person" not in reply.content
        [(guess, prob)] = await rows(world, "SELECT guess, guess_probability FROM live_guesses")
        assert guess is None and 0 < prob <= 1


async def test_silent_mode_stores_and_predicts_without_a_word(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="silent") as world:
        message = await standin.post_message(
            standin.channel, world.members[1], attachments=[("a.png", make_image("PNG", seed=5))]
        )
        await world.settle()
        assert standin.bot_messages() == [] and standin.reactions_on(message) == {}
        assert not standin.requests_to("PUT", "/channels/*/reactions/*")
        assert await rows(world, "SELECT COUNT(*) FROM predictions") == [(1,)]
        assert await rows(world, "SELECT author FROM live_guesses") == [("Person B",)]


async def test_other_bots_unwatched_channels_and_text_are_ignored(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="react") as world:
        other_bot = await standin.add_member(await standin.add_user("helper bot", bot=True))
        elsewhere = await standin.add_text_channel("off-topic")
        await standin.post_message(standin.channel, other_bot, attachments=[("a.jpg", jpeg(6))])
        await standin.post_message(elsewhere, world.members[0], attachments=[("b.jpg", jpeg(7))])
        await standin.post_message(standin.channel, world.members[0], "no image here")
        # Then one the bot does tag: everything before it has been handled by then.
        tagged = await standin.post_message(
            standin.channel, world.members[0], attachments=[("c.jpg", jpeg(8))]
        )
        await world.settle()
        assert await rows(world, "SELECT source_id FROM posts") == [(f"{tagged.id}:0",)]
        assert len(standin.requests_to("PUT", "/channels/*/reactions/*")) == len(
            standin.reactions_on(tagged)
        )


async def test_other_bots_are_tagged_when_configured(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="silent", ignore_bots=False) as world:
        other_bot = await standin.add_member(await standin.add_user("helper bot", bot=True))
        await standin.post_message(standin.channel, other_bot, attachments=[("a.jpg", jpeg(9))])
        await world.settle()
        assert await rows(world, "SELECT COUNT(*) FROM posts") == [(1,)]


async def test_embeds_gif_thumbnails_and_plain_links_are_images_too(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="silent") as world:
        linked, still, bare = jpeg(10), make_image("PNG", seed=11), jpeg(12)
        link_url, _ = standin.host_bytes(bare, "plain.jpg")
        message = await standin.post_message(
            standin.channel,
            world.members[0],
            f"see {link_url}",
            attachments=[("notes.txt", b"just text, not an image")],
            embeds=[
                standin.image_embed(linked, "linked.jpg"),
                standin.gifv_embed(b"\x00\x00\x00\x18ftypmp42 not a still", still),
            ],
        )
        await world.settle()
        got = await rows(
            world,
            "SELECT p.source_id, p.media_hint, i.sha256 FROM posts p"
            " JOIN images i ON i.id = p.image_id ORDER BY p.source_id",
        )

        digest = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
        # The text attachment is position 0 (every attachment counts, as in an export).
        assert got == [
            (f"{message.id}:1", "embed", digest(linked)),
            (f"{message.id}:2", "embed", digest(still)),
            (f"{message.id}:3", "embed", digest(bare)),
        ]
        assert await rows(world, "SELECT COUNT(*) FROM predictions") == [(3,)]


# -- robustness -----------------------------------------------------------------------------------


async def test_bad_attachments_are_logged_per_message_and_the_good_one_tagged(
    standin, tmp_path, caplog
):
    from tests.helpers.imagegen import make_bomb_png, truncate

    caplog.set_level(logging.INFO, logger="bot")
    limits = {"max_bytes": 200_000, "max_pixels": 1_000_000}
    async with bot_world(standin, tmp_path / "data", mode="react", ingest=limits) as world:
        good = jpeg(20)
        message = await standin.post_message(
            standin.channel,
            world.members[0],
            attachments=[
                ("broken.jpg", truncate(jpeg(21, (400, 300)), 0.3)),
                ("huge.png", make_image("PNG", (40, 40), seed=1) + b"\0" * 250_000),
                ("bomb.png", make_bomb_png()),
                ("notes.jpg", b"this is plain text, whatever the name says"),
                ("fine.jpg", good),
            ],
        )
        await world.settle()
        assert standin.reactions_on(message)  # the good image was tagged
        assert await rows(world, "SELECT source_id FROM posts") == [(f"{message.id}:4",)]
        reasons = {
            r.getMessage().split(": ", 1)[0]: r.getMessage()
            for r in caplog.records
            if r.name == "bot.cogs.tagging" and str(message.id) in r.getMessage()
        }
        text = "\n".join(reasons.values())
        for position, reason in [
            (0, "truncated"),
            (1, "too_large"),
            (2, "decompression_bomb"),
            (3, "not_image"),
        ]:
            assert f"image {position}: {reason}" in text, text
        assert world.tagging.stats.images_rejected == 4


async def test_no_model_still_stores_posts_logs_once_then_picks_up_a_new_model(
    standin, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="bot")
    async with bot_world(
        standin, tmp_path / "data", mode="react", model=False, model_poll_s=0.05
    ) as world:
        first = await standin.post_message(
            standin.channel, world.members[0], attachments=[("a.jpg", jpeg(30))]
        )
        second = await standin.post_message(
            standin.channel, world.members[1], attachments=[("b.jpg", jpeg(31))]
        )
        await world.settle()
        assert standin.reactions_on(first) == standin.reactions_on(second) == {}
        assert await rows(world, "SELECT COUNT(*) FROM posts WHERE status = 'stored'") == [(2,)]
        assert await rows(world, "SELECT COUNT(*) FROM predictions") == [(0,)]
        why = [r for r in caplog.records if "not tagging" in r.getMessage()]
        assert len(why) == 1 and "no trained model yet" in why[0].getMessage()

        # `memetag train` in another process records a model: the bot picks it up.
        await record_model(world.cfg, world.db, "v-later")
        await world.until(lambda: world.deps.models.version == "v-later")
        third = await standin.post_message(
            standin.channel, world.members[0], attachments=[("c.jpg", jpeg(32))]
        )
        await world.settle()
        assert standin.reactions_on(third)
        assert await rows(world, "SELECT model_version FROM predictions") == [("v-later",)]


async def test_a_model_that_fails_to_load_leaves_the_bot_storing(standin, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    data = tmp_path / "data"
    async with bot_world(standin, data, mode="react", model_poll_s=0.05) as world:
        # Replace the current model's file with garbage: the rewrite is noticed, the load fails
        # and the model already loaded keeps tagging.
        path = world.cfg.models_dir / "v-test.pt"
        path.write_bytes(b"not a checkpoint")
        await world.until(lambda: any("failed to load" in r.getMessage() for r in caplog.records))
        message = await standin.post_message(
            standin.channel, world.members[0], attachments=[("a.jpg", jpeg(33))]
        )
        await world.settle()
        assert standin.reactions_on(message)


async def test_started_with_a_broken_model_it_stores_tags_nothing_says_why_once(
    standin, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="bot")
    async with bot_world(standin, tmp_path / "data", mode="react", model="broken") as world:
        assert world.deps.models.predictor is None
        messages = [
            await standin.post_message(
                standin.channel, world.members[0], attachments=[(f"{i}.jpg", jpeg(34 + i))]
            )
            for i in range(2)
        ]
        await world.settle()
        assert all(standin.reactions_on(m) == {} for m in messages)
        assert await rows(world, "SELECT COUNT(*) FROM posts WHERE status = 'stored'") == [(2,)]
        why = [r for r in caplog.records if "not tagging" in r.getMessage()]
        assert len(why) == 1 and "v-test failed to load" in why[0].getMessage()


async def test_message_deleted_while_downloading_is_not_tagged_and_raises_nothing(
    standin, tmp_path
):
    async with bot_world(standin, tmp_path / "data", mode="reply") as world:
        async with standin.hold_downloads():
            message = await standin.post_message(
                standin.channel, world.members[0], attachments=[("a.jpg", jpeg(40))]
            )
            await standin.wait_for(lambda: standin.downloads_waiting == 1)
            await standin.delete_message(message)
        await world.settle()
        assert standin.bot_messages() == []
        assert world.tagging.stats.deleted_before_tag == 1
        # A deleted message's posts and files go with it, also when it was deleted mid-store.
        assert await rows(world, "SELECT COUNT(*) FROM posts") == [(0,)]
        assert not any(p.is_file() for p in world.cfg.images_dir.rglob("*"))


async def test_message_deleted_as_the_tag_goes_out_is_not_an_error(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="react") as world:
        standin.fail_next(
            "PUT",
            "/channels/*/messages/*/reactions/*",
            status=404,
            code=10008,
            message="Unknown Message",
        )
        message = await standin.post_message(
            standin.channel, world.members[0], attachments=[("a.jpg", jpeg(41))]
        )
        await world.settle()
        assert standin.reactions_on(message) == {}
        assert world.tagging.stats.deleted_before_tag == 1


async def test_an_edit_that_adds_an_image_tags_only_the_new_one(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="reply") as world:
        first, later = jpeg(50), jpeg(51)
        message = await standin.post_message(
            standin.channel, world.members[0], "here", attachments=[("a.jpg", first)]
        )
        await world.settle()
        [reply] = standin.bot_messages(standin.channel)
        assert reply.content.count("\n") == 0
        await standin.edit_message(message, "here, and this", embeds=[standin.image_embed(later)])
        await world.settle()
        # The same reply now lists both images; nothing was tagged twice.
        assert standin.bot_messages(standin.channel) == [reply]
        assert reply.content.startswith("1. ") and "\n2. " in reply.content
        assert await rows(world, "SELECT source_id FROM posts ORDER BY source_id") == [
            (f"{message.id}:0",),
            (f"{message.id}:1",),
        ]
        await standin.edit_message(message, "just words now")
        await world.settle()
        assert len(standin.requests_to("POST", "/channels/*/messages")) == 1
        assert len(standin.requests_to("PATCH", "/channels/*/messages/*")) == 1


async def test_an_edit_after_a_restart_rewrites_the_one_reply_and_keeps_the_correction(
    standin, tmp_path
):
    from bot.render import CHECK

    data = tmp_path / "data"
    async with bot_world(standin, data, mode="reply") as world:
        message = await standin.post_message(
            standin.channel, world.members[0], "here", attachments=[("a.jpg", jpeg(52))]
        )
        await world.settle()
        [reply] = standin.bot_messages(standin.channel)
        await standin.add_reaction(world.members[1], message, "😂")  # a vote for meme
        await world.until(lambda: reply.content.endswith(CHECK))
        assert "\n" not in reply.content
    # A fresh bot process on the same store: the client has never seen the message.
    async with bot_world(standin, data, mode="reply", model=False) as world:
        await standin.edit_message(
            message, "here, and this", embeds=[standin.image_embed(jpeg(53))]
        )
        await world.until(lambda: "\n2. " in reply.content)
        await world.settle()
        # The one reply lists both images and still shows the members' correction.
        assert standin.bot_messages(standin.channel) == [reply]
        assert len(standin.requests_to("POST", "/channels/*/messages")) == 1
        first, second = reply.content.removesuffix(CHECK).strip().split("\n")
        assert first.startswith("1. ") and "meme" in first and second.startswith("2. ")
        assert reply.content.endswith(CHECK)
        assert await rows(
            world,
            "SELECT position, reply_id FROM bot_message_images JOIN bot_messages"
            " USING (message_id) ORDER BY position",
        ) == [(0, str(reply.id)), (1, str(reply.id))]


async def test_rate_limited_reactions_are_retried_after_retry_after(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="react", max_reactions=1) as world:
        standin.rate_limit("PUT", "/channels/*/messages/*/reactions/*", retry_after=0.2, times=2)
        message = await standin.post_message(
            standin.channel, world.members[0], attachments=[("a.jpg", jpeg(60))]
        )
        await world.settle()
        assert len(standin.reactions_on(message)) == 1
        statuses = [r.status for r in standin.requests_to("PUT", "/channels/*/reactions/*")]
        assert statuses == [429, 429, 204]


async def test_reconnect_and_resume_mid_burst_loses_nothing_and_tags_nothing_twice(
    standin, tmp_path
):
    async with bot_world(standin, tmp_path / "data", mode="react", max_reactions=1) as world:
        author = world.members[0]

        async def post(i: int):
            return await standin.post_message(
                standin.channel, author, attachments=[(f"{i}.jpg", jpeg(100 + i))]
            )

        before = [await post(i) for i in range(6)]
        async with standin.gateway_paused():  # the bot is offline; these are replayed on RESUME
            missed = [await post(10 + i) for i in range(6)]
        await standin.wait_for(lambda: standin.gateway.connected)
        after = [await post(20 + i) for i in range(6)]
        # Discord may deliver an event twice: the second delivery is no second tag.
        await standin.redeliver(before[0])
        await standin.redeliver(missed[0])
        messages = before + missed + after
        await world.until(lambda: all(standin.reactions_on(m) for m in messages))
        await world.settle()
        assert standin.gateway.resume_count >= 1 and standin.gateway.identify_count == 1
        for message in messages:
            assert len(reaction_puts(standin, message)) == 1, message.id
        assert await rows(world, "SELECT COUNT(*), COUNT(DISTINCT source_id) FROM posts") == [
            (18, 18)
        ]
        assert await rows(world, "SELECT COUNT(*) FROM bot_messages") == [(18,)]


async def test_a_full_queue_skips_and_counts_and_never_blocks(standin, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    async with bot_world(
        standin, tmp_path / "data", mode="react", max_reactions=1, queue_size=3, workers=1
    ) as world:
        author = world.members[0]
        async with standin.hold_downloads():
            messages = [
                await standin.post_message(
                    standin.channel, author, attachments=[(f"{i}.jpg", jpeg(200 + i))]
                )
                for i in range(10)
            ]
            # One in the worker (its download held), three waiting, six skipped; posting
            # never waited for the bot.
            await standin.wait_for(lambda: standin.downloads_waiting == 1)
            await world.until(lambda: world.tagging.queue.stats.dropped == 6)
        await world.settle()
        tagged = [m for m in messages if standin.reactions_on(m)]
        assert tagged == messages[:4]
        full = [r for r in caplog.records if "work queue full" in r.getMessage()]
        assert len(full) == 1  # the first skip, then every 100th
        late = await standin.post_message(
            standin.channel, author, attachments=[("late.jpg", jpeg(299))]
        )
        await world.settle()
        assert standin.reactions_on(late)


async def test_a_burst_of_100_images_keeps_the_heartbeat_answered(tmp_path):
    async with StandinDiscord.start(heartbeat_interval_ms=100) as standin:
        with standin.patch_client():
            async with bot_world(standin, tmp_path / "data", mode="react", max_reactions=1) as w:
                images = [make_image("JPEG", (64, 48), seed=300 + i) for i in range(100)]
                loop = asyncio.get_running_loop()
                start = loop.time()
                messages = [
                    await standin.post_message(
                        standin.channel, w.members[i % 2], attachments=[(f"{i}.jpg", images[i])]
                    )
                    for i in range(100)
                ]
                await w.until(lambda: all(standin.reactions_on(m) for m in messages), 60)
                end = loop.time()
                beats = [t for t in standin.gateway.heartbeat_times if start <= t <= end]
                gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
                assert len(beats) >= 2 and max(gaps) < 1.0, gaps
                assert w.bot.latency < 1.0
                assert w.tagging.queue.stats.dropped == 0
                await w.settle()
                for table in ("predictions", "live_guesses", "bot_message_images"):
                    assert await rows(w, f"SELECT COUNT(*) FROM {table}") == [(100,)], table
                # What follows the tag went in with other messages' (one transaction a run).
                records = w.tagging.records
                print("after-tag writes:", records.items, "messages in", records.runs, "runs")
                assert records.items == 100 and records.runs < records.items
        standin.check()


# -- running accuracy ------------------------------------------------------------------------------


async def test_live_guesses_keep_baselines_and_a_running_accuracy_per_guild(standin, tmp_path):
    from store.queries.bot import get_guild_accuracy
    from store.queries.labels import add_vote

    async with bot_world(standin, tmp_path / "data", mode="silent") as world:
        member_a, member_b = world.members
        posts = [member_b, member_b, member_b, member_a]
        for i, author in enumerate(posts):
            await standin.post_message(
                standin.channel, author, attachments=[(f"{i}.jpg", jpeg(400 + i))]
            )
            await world.settle()  # one at a time: each guess sees the posts before it
        got = await rows(
            world,
            "SELECT author, guess, majority_guess, recent_guess FROM live_guesses ORDER BY post_id",
        )
        assert [g[0] for g in got] == ["Person B", "Person B", "Person B", "Person A"]
        assert [g[2] for g in got] == [None, "Person B", "Person B", "Person B"]
        assert [g[3] for g in got] == [None, "Person B", "Person B", "Person B"]
        guesses = [g[1] for g in got]
        accuracy = await get_guild_accuracy(world.db, str(standin.guild.id))
        assert accuracy.posts == 4 and accuracy.guessed == 4
        assert accuracy.guess_right == sum(g == a for g, (a, *_) in zip(guesses, got, strict=True))
        assert accuracy.majority_right == 2 and accuracy.recent_right == 2
        assert accuracy.majority_accuracy == 0.5

        # Members' corrections score the category guesses.
        [(image_id, probabilities)] = await rows(
            world,
            "SELECT image_id, probabilities FROM predictions ORDER BY id LIMIT 1",
        )
        meme = json.loads(probabilities)["meme"]
        await add_vote(world.db, image_id, "meme", f"discord:{member_a.id}", 1, "reaction")
        accuracy = await get_guild_accuracy(world.db, str(standin.guild.id))
        assert accuracy.category_votes == 1 and accuracy.category_agree == int(meme >= 0.5)
        other = await get_guild_accuracy(world.db, "another guild")
        assert other.posts == 0 and other.guess_accuracy is None


async def test_channels_come_from_the_store_and_a_disabled_one_is_not_watched(standin, tmp_path):
    async with bot_world(standin, tmp_path / "data", mode="react") as world:
        assert await rows(world, "SELECT channel_id, mode, origin FROM bot_channels") == [
            (str(standin.channel.id), "react", "config")
        ]
        async with world.db.transaction() as conn:
            await conn.execute("UPDATE bot_channels SET enabled = 0")
        await world.tagging.reload_channels()
        await standin.post_message(
            standin.channel, world.members[0], attachments=[("a.jpg", jpeg(500))]
        )
        await world.settle()
        assert await rows(world, "SELECT COUNT(*) FROM posts") == [(0,)]


async def test_no_permission_to_reply_is_logged_once_and_posts_are_still_stored(
    standin, tmp_path, caplog
):
    import discord

    caplog.set_level(logging.INFO, logger="bot")
    async with bot_world(standin, tmp_path / "data", mode="reply") as world:
        await standin.set_overwrite(
            standin.channel, standin.bot_role, deny=discord.Permissions(send_messages=True)
        )
        for i in range(2):
            await standin.post_message(
                standin.channel, world.members[0], attachments=[(f"{i}.jpg", jpeg(600 + i))]
            )
        await world.settle()
        assert standin.bot_messages() == []
        assert await rows(world, "SELECT COUNT(*) FROM posts WHERE status = 'stored'") == [(2,)]
        assert await rows(world, "SELECT COUNT(*) FROM predictions") == [(2,)]
        said = [r for r in caplog.records if "cannot reply in channel" in r.getMessage()]
        assert len(said) == 1


# -- what the reply looks like ---------------------------------------------------------------------


def test_reply_text_shapes():
    from bot.render import ShownImage, reply_text

    one = ShownImage(
        labels=[("social_media", 0.914), ("meme", 0.4)],
        sender="Person *A*",
        sender_probability=0.62,
        emojis=EMOJIS,
    )
    assert reply_text([one]) == (
        r"🐦 social media 91% · 😂 meme 40% — looks like something Person \*A\* would post (62%)"
    )
    unsure = ShownImage(labels=[("photo", 0.55)], sender=None, sender_probability=0.3)
    hidden = ShownImage(labels=[("meme", 0.8)], spoiler=True)
    assert reply_text([unsure, hidden], emojis=EMOJIS) == "1. 📷 photo 55%\n2. ||😂 meme 80%||"
    corrected = ShownImage(labels=[("meme", None)], emojis=EMOJIS)
    assert reply_text([corrected], corrected=True) == "😂 meme ✓"
    other = ShownImage(labels=[], sender="other", sender_probability=0.9)
    assert reply_text([other]) == "no tags"
    many = [ShownImage(labels=[("meme", 0.5)] * 40, emojis=EMOJIS)] * 10
    assert len(reply_text(many)) <= 1900


def test_emoji_maps_accept_the_variation_selector_either_way(tmp_path):
    from bot.render import emoji_label, label_emoji, reaction_emojis
    from memetag.config import AppConfig

    cfg = AppConfig()
    assert label_emoji(cfg)["comic_strip"] == "🗯️"
    by_emoji = emoji_label(cfg)
    assert by_emoji["🗯️"] == by_emoji["🗯"] == "comic_strip"
    assert by_emoji["😂"] == "meme"
    ranked = reaction_emojis([("meme", 0.2), ("photo", 0.9), ("meme", 0.7)], EMOJIS, 2)
    assert ranked == ["📷", "😂"]


async def test_baseline_tally_matches_a_full_scan(db):
    """The running tally gives what scanning every post gives, post after post."""
    import random
    from datetime import UTC, datetime, timedelta

    from bot.baselines import BaselineTally
    from store.queries.bot import get_baselines
    from store.queries.posts import StoredImage, insert_posts, record_stored
    from store.rows import NewPost

    rng = random.Random(3)
    now = datetime.now(UTC)
    people = ["Person A", "Person B", "Person C", "Person D"]

    async def add(i: int, days_ago: float, stored: bool = True) -> tuple[int, str]:
        author = rng.choice(people)
        post = NewPost(
            "discord",
            f"{i}:0",
            "c",
            None,
            "discord",
            author,
            author,
            now - timedelta(days=days_ago),
            None,
            None,
        )
        await insert_posts(db, [post], {})
        row = await db.fetchone("SELECT id FROM posts WHERE source_id = ?", (f"{i}:0",))
        if stored:
            image = StoredImage(f"{i:064x}", "0" * 16, 1, 1, "PNG", "png", 1)
            await record_stored(db, row["id"], image)
        return row["id"], author

    for i in range(40):  # history: some old, some recent, some never stored
        await add(i, rng.uniform(0, 90), stored=rng.random() > 0.1)
    tally = BaselineTally(db, reload_s=1e9)
    for i in range(40, 80):
        post_id, author = await add(i, 0)
        expected = await get_baselines(db, post_id, now)
        assert await tally.guess(post_id, author, now, now) == expected, i
        if i % 10 == 0:  # a guess repeated for a post already counted changes nothing
            assert await tally.guess(post_id, author, now, now) == expected


async def test_a_rewritten_model_file_is_swapped_in(standin, tmp_path, caplog):
    import os

    from classifier.checkpoint import save_checkpoint
    from tests.ml_helpers import make_checkpoint

    caplog.set_level(logging.INFO, logger="bot")
    async with bot_world(standin, tmp_path / "data", mode="react", model_poll_s=0.05) as world:
        data = jpeg(700)
        before = await predicted(world, data)
        path = world.cfg.models_dir / "v-test.pt"
        stat = path.stat()
        ckpt = make_checkpoint(world.cfg.model, version="v-test", finetuned=True, seed=5)
        save_checkpoint(ckpt, path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        loads = lambda: [r for r in caplog.records if "tagging with model v-test" in r.getMessage()]  # noqa: E731
        await world.until(lambda: len(loads()) == 2)
        after = await predicted(world, data)
        assert after.labels != before.labels


async def test_a_channel_that_discord_slows_down_does_not_hold_up_the_others(standin, tmp_path):
    # Discord paces each channel's reactions on its own; here one every 0.1 s. A burst in one
    # channel waits on that pace in its workers, but not in all of them: the other channel's
    # image gets a free worker and its tag at once.
    other = await standin.add_text_channel("other")
    channels = {str(standin.channel.id): "react", str(other.id): "react"}
    async with bot_world(standin, tmp_path / "data", channels=channels, max_reactions=1) as world:
        standin.rate_limits.set("PUT", "/channels/*/messages/*/reactions/*/@me", limit=1, per_s=0.1)
        author = world.members[0]
        burst = [
            await standin.post_message(
                standin.channel, author, attachments=[(f"{i}.jpg", jpeg(300 + i))]
            )
            for i in range(30)
        ]
        elsewhere = await standin.post_message(other, author, attachments=[("b.jpg", jpeg(299))])
        await world.settle()
        puts = standin.requests_to("PUT", "/channels/*/messages/*/reactions/*/@me")
        tagged = [r.path.split("/")[4] for r in puts if r.status == 204]
        assert sorted(tagged) == sorted(str(m.id) for m in [*burst, elsewhere])
        # Before: the 16 workers all waited on the first channel's pace, and the other image
        # came after about 15 of its tags.
        assert tagged.index(str(elsewhere.id)) < 8, tagged.index(str(elsewhere.id))
