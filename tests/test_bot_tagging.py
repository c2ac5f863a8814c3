"""Live tagging with the real discord.py client against the stand-in Discord and a tiny model.

Each test runs the product bot (``MemetagBot`` with its cogs and shared deps) and plays the
members through the stand-in's driver; what the bot did is read back from the stand-in's
records and from the store.
"""

from __future__ import annotations

import pytest

from classifier.predictor import Result
from memetag.standin import StandinDiscord
from tests.helpers.bot_fixtures import EMOJIS, BotWorld, bot_world
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
        alice = world.members[0]
        data = jpeg(1)
        message = await standin.post_message(
            standin.channel, alice, "look", attachments=[("cat.jpg", data)]
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
        assert alias == str(alice.id)
        assert await rows(
            world, "SELECT message_id, channel_id, guild_id, author_ref, reply_id FROM bot_messages"
        ) == [
            (str(message.id), str(standin.channel.id), str(standin.guild.id), str(alice.id), None)
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
        import json

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
        alice = world.members[0]
        plain, hidden = jpeg(2), jpeg(3)
        message = await standin.post_message(
            standin.channel,
            alice,
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
        import hashlib

        digest = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
        # The text attachment is position 0 (every attachment counts, as in an export).
        assert got == [
            (f"{message.id}:1", "embed", digest(linked)),
            (f"{message.id}:2", "embed", digest(still)),
            (f"{message.id}:3", "embed", digest(bare)),
        ]
        assert await rows(world, "SELECT COUNT(*) FROM predictions") == [(3,)]
