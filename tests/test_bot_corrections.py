"""Members' corrections against the real discord.py client and the stand-in Discord.

The cog is loaded the way ``memetag bot`` loads it (``setup(bot)`` with ``bot.deps``). A
"tagged message" is set up as the tagging cog leaves it: the member's message, its images
stored as live discord posts, a logged prediction, the bot_messages rows and (reply mode) the
bot's reply carrying the persistent buttons. Every test then reads the store for exact rows.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from types import SimpleNamespace

import discord
import pytest

from bot import render
from bot.cogs.corrections import Corrections, ImageTags, predicted_labels
from bot.deps import open_deps
from bot.views import MAX_OPTIONS, LabelChoice, PickerImage, build_picker_view, build_reply_view
from classifier.dataset import resolve_label_votes
from memetag.cli import main
from memetag.config import AppConfig, LabelSpec
from memetag.services.media import MediaLimits, discord_post, store_fetched_image
from store.queries import bot as bot_queries
from store.queries import votes
from store.queries.admin import set_guild_threshold
from store.queries.images import list_labelled_images
from store.queries.labels import list_votes_for_image
from store.queries.predictions import insert_prediction
from store.rows import Prediction
from tests.helpers.bot_fixtures import bot_world
from tests.helpers.discord_standin import Message, StandinDiscord, User, make_test_bot
from tests.helpers.imagegen import make_image

pytest_plugins = ["tests.helpers.standin_fixtures"]

LABELS = [s.name for s in AppConfig().labels]
EMOJI = render.label_emoji(AppConfig())


@dataclass
class Tagged:
    message: Message  # the member's image message (stand-in record)
    reply: Message | None  # the bot's reply (stand-in record), reply mode only
    image_ids: list[int]


@pytest.fixture
async def deps(tmp_path):
    cfg = AppConfig(data_dir=tmp_path / "data")
    async with open_deps(cfg) as opened:
        yield opened


@pytest.fixture
async def corrections_bot(standin, start_bot, deps):
    bot = make_test_bot()
    bot.deps = deps
    await bot.load_extension("bot.cogs.corrections")
    bot = await start_bot(bot)
    await bot.tree.sync()
    return bot


async def tag(
    standin: StandinDiscord,
    bot: discord.Client,
    deps,
    author: User,
    predictions: list[dict[str, float]],
    *,
    reply: bool = True,
    spoiler: bool = False,
    dispatch: bool = True,
    sender: tuple[str, float] | None = None,
) -> Tagged:
    """What the tagging cog leaves behind for a message with one image per prediction."""
    images = [
        make_image("PNG", seed=len(standin.messages) * 10 + i) for i in range(len(predictions))
    ]
    message = await standin.post_message(
        standin.channel,
        author,
        "look",
        attachments=[(f"{i}.png", data, spoiler) for i, data in enumerate(images)],
        dispatch=dispatch,
    )
    shown, tagged_images, image_ids = [], [], []
    for position, (data, probs) in enumerate(zip(images, predictions, strict=True)):
        post = discord_post(
            message_id=message.id,
            position=position,
            channel_id=standin.channel.id,
            author_id=author.id,
            author_name=author.name,
            posted_at=message.created_at,
            url=standin.base_url + message.attachments[position].path,
        )
        stored = await store_fetched_image(deps.db, deps.files, post, data, limits=MediaLimits())
        await insert_prediction(deps.db, stored.image_id, "v1", probs, *(sender or (None, None)))
        image_ids.append(stored.image_id)
        tagged_images.append(bot_queries.TaggedImage(position, stored.post_id, spoiler))
        top = predicted_labels(
            Prediction(stored.image_id, "v1", probs, None, None, message.created_at)
        )
        shown.append(
            render.ShownImage(
                [(n, probs[n]) for n in top],
                sender=sender[0] if sender else None,
                sender_probability=sender[1] if sender else None,
                spoiler=spoiler,
                emojis=EMOJI,
            )
        )
    reply_record = None
    if reply:
        channel = bot.get_channel(standin.channel.id)
        sent = await channel.send(
            render.reply_text(shown),
            reference=channel.get_partial_message(message.id),
            view=build_reply_view(message.id),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        reply_record = standin.messages[sent.id]
    await bot_queries.record_tagged_message(
        deps.db,
        message_id=str(message.id),
        channel_id=str(standin.channel.id),
        guild_id=str(standin.guild.id),
        author_ref=str(author.id),
        images=tagged_images,
        reply_id=str(reply_record.id) if reply_record else None,
    )
    return Tagged(message, reply_record, image_ids)


async def current_votes(db, image_id: int) -> list[tuple[str, str, int, str]]:
    return sorted(
        (v.label, v.voter, v.vote, v.origin) for v in await list_votes_for_image(db, image_id)
    )


async def events(db, image_id: int) -> list[tuple[str, str, int, str, str | None]]:
    return [
        (e.label, e.voter, e.vote, e.origin, e.message_id)
        for e in await votes.list_vote_events(db, image_id)
    ]


async def wait_events(standin, db, image_id: int, count: int):
    async def enough() -> bool:
        return len(await votes.list_vote_events(db, image_id)) >= count

    for _ in range(200):
        if await enough():
            return await events(db, image_id)
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} vote events: {await events(db, image_id)}")


def voter(user: User) -> str:
    return f"discord:{user.id}"


# -- reactions ----------------------------------------------------------------------------------


async def test_reaction_add_remove_add_is_one_vote_and_every_gesture_is_logged(
    standin, corrections_bot, deps
):
    db = deps.db
    member_a = await standin.add_member("member_a")
    tagged = await tag(standin, corrections_bot, deps, member_a, [{"meme": 0.91, "news": 0.2}])
    [image] = tagged.image_ids
    assert tagged.reply.content == "😂 meme 91%"
    assert [c["custom_id"] for c in tagged.reply.components[0]["components"]] == [
        f"memetag:ok:{tagged.message.id}",
        f"memetag:fix:{tagged.message.id}",
    ]

    member_b = await standin.add_member("member_b")
    await standin.add_reaction(member_b, tagged.message, "👍")  # not a label emoji: no vote
    await standin.add_reaction(member_b, tagged.message, "😂")
    await wait_events(standin, db, image, 1)
    assert await current_votes(db, image) == [("meme", voter(member_b), 1, "reaction")]
    await standin.remove_reaction(member_b, tagged.message, "😂")
    await wait_events(standin, db, image, 2)
    assert await current_votes(db, image) == []
    await standin.add_reaction(member_b, tagged.message, "😂")
    await wait_events(standin, db, image, 3)
    assert await current_votes(db, image) == [("meme", voter(member_b), 1, "reaction")]
    mid = str(tagged.message.id)
    assert await events(db, image) == [
        ("meme", voter(member_b), 1, "reaction", mid),
        ("meme", voter(member_b), 0, "reaction", mid),
        ("meme", voter(member_b), 1, "reaction", mid),
    ]
    logged = await votes.list_vote_events(db, image)
    assert all(e.created_at for e in logged)

    # The reply now shows the members' tag, without a confidence, and a ✓.
    await standin.wait_for(lambda: tagged.reply.content == "😂 meme ✓")
    assert tagged.reply.edited_at is not None
    assert tagged.reply.components  # the buttons stay


async def test_the_bots_own_reactions_never_count(standin, corrections_bot, deps):
    db = deps.db
    member_a = await standin.add_member("member_a")
    tagged = await tag(standin, corrections_bot, deps, member_a, [{"meme": 0.9}], reply=False)
    [image] = tagged.image_ids
    channel = corrections_bot.get_channel(standin.channel.id)
    # react mode: the bot puts the label emoji on the message itself
    await channel.get_partial_message(tagged.message.id).add_reaction("😂")
    await standin.wait_for(lambda: standin.reactions_on(tagged.message))
    # A member's reaction after it is handled after it: once that is in, nothing else came.
    await standin.add_reaction(member_a, tagged.message, "📰")
    assert await wait_events(standin, db, image, 1) == [
        ("news", voter(member_a), 1, "reaction", str(tagged.message.id))
    ]
    await asyncio.sleep(0.05)
    assert await current_votes(db, image) == [("news", voter(member_a), 1, "reaction")]


async def test_reaction_on_the_reply_counts_for_every_image_and_stays_while_the_other_does(
    standin, corrections_bot, deps
):
    db = deps.db
    member_a = await standin.add_member("member_a")
    member_b = await standin.add_member("member_b")
    tagged = await tag(
        standin,
        corrections_bot,
        deps,
        member_a,
        [{"meme": 0.8, "simpsons": 0.3}, {"meme": 0.1, "simpsons": 0.7}],
        spoiler=True,
    )
    first, second = tagged.image_ids
    assert tagged.reply.content == "1. ||😂 meme 80%||\n2. ||🍩 simpsons 70%||"
    await standin.add_reaction(member_b, tagged.reply, "🍩")
    await standin.add_reaction(member_b, tagged.message, "🍩")
    await wait_events(standin, db, second, 2)
    for image in (first, second):
        assert await current_votes(db, image) == [("simpsons", voter(member_b), 1, "reaction")]
    # Off the reply, still on the message: the vote stands.
    await standin.remove_reaction(member_b, tagged.reply, "🍩")
    await wait_events(standin, db, second, 3)
    assert await current_votes(db, first) == [("simpsons", voter(member_b), 1, "reaction")]
    await standin.remove_reaction(member_b, tagged.message, "🍩")
    assert [e[2:] for e in await wait_events(standin, db, first, 4)] == [
        (1, "reaction", str(tagged.reply.id)),
        (1, "reaction", str(tagged.message.id)),
        (0, "reaction", str(tagged.reply.id)),
        (0, "reaction", str(tagged.message.id)),
    ]
    assert await current_votes(db, first) == await current_votes(db, second) == []
    # Back to the model's tags (nothing resolved), still marked as heard.
    await standin.wait_for(
        lambda: tagged.reply.content == "1. ||😂 meme 80%||\n2. ||🍩 simpsons 70%|| ✓"
    )


async def test_raw_events_count_on_uncached_messages_and_unknown_messages_are_ignored(
    standin, corrections_bot, deps
):
    db = deps.db
    member_a = await standin.add_member("member_a")
    # Tagged before a restart: the client has never seen the message.
    tagged = await tag(
        standin, corrections_bot, deps, member_a, [{"meme": 0.9}], reply=False, dispatch=False
    )
    assert tagged.message.id not in {m.id for m in corrections_bot.cached_messages}
    stranger = await standin.post_message(standin.channel, member_a, "never tagged", dispatch=False)
    await standin.add_reaction(member_a, stranger, "😂")
    await standin.add_reaction(member_a, tagged.message, "📷")
    [image] = tagged.image_ids
    assert await wait_events(standin, db, image, 1) == [
        ("photo", voter(member_a), 1, "reaction", str(tagged.message.id))
    ]
    await standin.remove_reaction(member_a, stranger, "😂")
    await standin.add_reaction(member_a, tagged.message, "😂")
    await wait_events(standin, db, image, 2)
    assert len(await votes.list_vote_events(db)) == 2  # nothing for the stranger message


# -- Fix tags -----------------------------------------------------------------------------------


def _options(message: Message, position: int = 0) -> dict[str, bool]:
    for row in message.components:
        for c in row.get("components", []):
            if c.get("custom_id", "").endswith(f":{position}") and c["type"] == 3:
                return {o["value"]: bool(o.get("default")) for o in c["options"]}
    raise AssertionError(f"no picker for image {position} in {message.components}")


async def test_fix_tags_button_then_select_records_plus_and_minus_and_marks_the_reply(
    standin, corrections_bot, deps
):
    db = deps.db
    member_a = await standin.add_member("member_a")
    member_b = await standin.add_member("member_b")
    tagged = await tag(
        standin,
        corrections_bot,
        deps,
        member_a,
        [{"meme": 0.62, "news": 0.55, "photo": 0.1}],
        sender=("Member A", 0.62),
    )
    [image] = tagged.image_ids
    assert tagged.reply.content == (
        "😂 meme 62% · 📰 news 55% — looks like something Member A would post (62%)"
    )
    opened = await standin.click_button(member_b, tagged.reply, f"memetag:fix:{tagged.message.id}")
    picker = await standin.wait_for(lambda: opened.original)
    assert picker.ephemeral and opened.response.type == 4
    assert picker.content.startswith("**Fix tags**")
    options = _options(picker)
    assert list(options) == LABELS  # every label offered, in config order
    assert [n for n, ticked in options.items() if ticked] == ["meme", "news"]
    ok = picker.component(f"memetag:ok:{tagged.message.id}")
    assert ok["label"] == "These tags are right" and not ok.get("disabled")

    # "It's a meme and a photo, not news": one close of the list.
    submitted = await standin.select(
        member_b, picker, f"memetag:pick:{tagged.message.id}:0", ["meme", "photo"]
    )
    await standin.wait_for(lambda: submitted.response)
    assert submitted.response.type == 7
    assert picker.content.startswith("✓ Saved: 😂 meme, 📷 photo — not 📰 news.")
    assert [n for n, ticked in _options(picker).items() if ticked] == ["meme", "photo"]
    assert await current_votes(db, image) == [
        ("meme", voter(member_b), 1, "button"),
        ("news", voter(member_b), -1, "button"),
        ("photo", voter(member_b), 1, "button"),
    ]
    assert sorted(await events(db, image)) == sorted(
        [
            ("meme", voter(member_b), 1, "button", str(tagged.message.id)),
            ("photo", voter(member_b), 1, "button", str(tagged.message.id)),
            ("news", voter(member_b), -1, "button", str(tagged.message.id)),
        ]
    )
    await standin.wait_for(
        lambda: (
            tagged.reply.content
            == "😂 meme · 📷 photo — looks like something Member A would post (62%) ✓"
        )
    )
    public = [m for m in standin.messages_in(standin.channel) if m.author == standin.bot_user]
    assert public == [tagged.reply]  # the picker was ephemeral: nothing else public

    # Changing the answer: unticking photo now is a -1 for photo (it was ticked); latest wins.
    again = await standin.select(member_b, picker, f"memetag:pick:{tagged.message.id}:0", ["meme"])
    await standin.wait_for(lambda: again.response)
    assert await current_votes(db, image) == [
        ("meme", voter(member_b), 1, "button"),
        ("news", voter(member_b), -1, "button"),
        ("photo", voter(member_b), -1, "button"),
    ]
    await standin.wait_for(
        lambda: tagged.reply.content == "😂 meme — looks like something Member A would post (62%) ✓"
    )


async def test_taking_a_reaction_off_keeps_a_later_fix_tags_answer(standin, corrections_bot, deps):
    db = deps.db
    member_a = await standin.add_member("member_a")
    member_b = await standin.add_member("member_b")
    tagged = await tag(standin, corrections_bot, deps, member_a, [{"meme": 0.9}])
    [image] = tagged.image_ids
    await standin.add_reaction(member_b, tagged.message, "😂")
    await wait_events(standin, db, image, 1)
    opened = await standin.click_button(member_b, tagged.reply, f"memetag:fix:{tagged.message.id}")
    picker = await standin.wait_for(lambda: opened.original)
    assert [n for n, ticked in _options(picker).items() if ticked] == ["meme"]
    submitted = await standin.select(member_b, picker, f"memetag:pick:{tagged.message.id}:0", [])
    await standin.wait_for(lambda: submitted.response)
    assert picker.content.startswith("✓ Saved: not 😂 meme.")
    await standin.wait_for(lambda: tagged.reply.content == "no tags ✓")
    await standin.remove_reaction(member_b, tagged.message, "😂")
    assert [e[2] for e in await wait_events(standin, db, image, 3)] == [1, -1, 0]
    assert await current_votes(db, image) == [("meme", voter(member_b), -1, "button")]


async def test_a_slow_store_defers_the_answer_instead_of_missing_discords_deadline(
    standin, corrections_bot, deps
):
    db = deps.db
    member_a = await standin.add_member("member_a")
    tagged = await tag(standin, corrections_bot, deps, member_a, [{"meme": 0.9}], reply=False)
    [image] = tagged.image_ids
    corrections_bot.get_cog("Corrections").answer_within_s = 0.05
    opened = await standin.invoke_message_context_menu(member_a, "Fix tags", tagged.message)
    picker = await standin.wait_for(lambda: opened.original)
    async with db.transaction():  # a long write elsewhere holds the store's write lock
        picked = await standin.select(
            member_a, picker, f"memetag:pick:{tagged.message.id}:0", ["meme", "weird"]
        )
        await standin.wait_for(lambda: picked.response)
        assert picked.response.type == 6  # deferred update: the member sees it is working
    await standin.wait_for(lambda: picker.content.startswith("✓ Saved: 😂 meme, 🤪 weird."))
    assert await current_votes(db, image) == [
        ("meme", voter(member_a), 1, "button"),
        ("weird", voter(member_a), 1, "button"),
    ]


async def test_context_menu_works_without_a_reply_and_these_tags_are_right_is_one_tap(
    standin, corrections_bot, deps
):
    db = deps.db
    member_a = await standin.add_member("member_a")
    member_b = await standin.add_member("member_b")
    assert [c["name"] for c in standin.registered_commands()] == ["Fix tags"]
    tagged = await tag(
        standin, corrections_bot, deps, member_a, [{"meme": 0.3, "lotr": 0.8}], reply=False
    )
    [image] = tagged.image_ids
    opened = await standin.invoke_message_context_menu(member_b, "Fix tags", tagged.message)
    picker = await standin.wait_for(lambda: opened.original)
    assert picker.ephemeral
    assert [n for n, ticked in _options(picker).items() if ticked] == ["lotr"]
    tapped = await standin.click_button(member_b, picker, f"memetag:ok:{tagged.message.id}")
    await standin.wait_for(lambda: tapped.response)
    assert tapped.response.type == 7
    assert picker.content == "✓ Thanks — noted: 💍 lotr." and picker.components == []
    assert await current_votes(db, image) == [("lotr", voter(member_b), 1, "button")]
    assert await events(db, image) == [
        ("lotr", voter(member_b), 1, "button", str(tagged.message.id))
    ]

    # A message the bot never tagged: told so, nothing stored.
    plain = await standin.post_message(standin.channel, member_a, "no images here")
    asked = await standin.invoke_message_context_menu(member_b, "Fix tags", plain)
    answer = await standin.wait_for(lambda: asked.response)
    assert answer.ephemeral and "nothing to fix" in answer.content
    assert len(await votes.list_vote_events(db)) == 1


async def test_the_picker_starts_from_the_tags_the_guilds_thresholds_decided(
    standin, corrections_bot, deps
):
    """With `/tagger threshold meme 0.25` the bot tagged meme at 0.3; the picker shows it
    ticked, so one tap confirms it and deselecting it is a -1, as for any shown tag."""
    db = deps.db
    member_a = await standin.add_member("member_a")
    member_b = await standin.add_member("member_b")
    await set_guild_threshold(db, str(standin.guild.id), "meme", 0.25, actor="test")
    tagged = await tag(
        standin, corrections_bot, deps, member_a, [{"meme": 0.3, "lotr": 0.8}], reply=False
    )
    [image] = tagged.image_ids
    opened = await standin.invoke_message_context_menu(member_b, "Fix tags", tagged.message)
    picker = await standin.wait_for(lambda: opened.original)
    assert sorted(n for n, ticked in _options(picker).items() if ticked) == ["lotr", "meme"]
    tapped = await standin.click_button(member_b, picker, f"memetag:ok:{tagged.message.id}")
    await standin.wait_for(lambda: tapped.response)
    assert await current_votes(db, image) == [
        ("lotr", voter(member_b), 1, "button"),
        ("meme", voter(member_b), 1, "button"),
    ]


async def test_tags_are_right_on_the_reply_is_one_tap_and_the_reply_is_marked(
    standin, corrections_bot, deps
):
    db = deps.db
    member_a = await standin.add_member("member_a")
    member_b = await standin.add_member("member_b")
    tagged = await tag(standin, corrections_bot, deps, member_a, [{"meme": 0.7, "weird": 0.6}])
    [image] = tagged.image_ids
    tapped = await standin.click_button(member_b, tagged.reply, f"memetag:ok:{tagged.message.id}")
    answer = await standin.wait_for(lambda: tapped.response)
    assert answer.type == 4 and answer.ephemeral
    assert answer.content == "✓ Thanks — noted: 😂 meme, 🤪 weird."
    assert await current_votes(db, image) == [
        ("meme", voter(member_b), 1, "button"),
        ("weird", voter(member_b), 1, "button"),
    ]
    await standin.wait_for(lambda: tagged.reply.content == "😂 meme · 🤪 weird ✓")


async def test_fix_tags_on_the_reply_through_the_menu_and_a_tie_is_unknown(
    standin, corrections_bot, deps
):
    db = deps.db
    member_a = await standin.add_member("member_a")
    member_b = await standin.add_member("member_b")
    member_c = await standin.add_member("member_c")
    tagged = await tag(standin, corrections_bot, deps, member_a, [{"meme": 0.9, "news": 0.1}])
    [image] = tagged.image_ids
    # member_b: a meme and news; member_c, through the menu on the reply: a meme, not news.
    await standin.add_reaction(member_b, tagged.reply, "😂")
    await standin.add_reaction(member_b, tagged.reply, "📰")
    await wait_events(standin, db, image, 2)
    opened = await standin.invoke_message_context_menu(member_c, "Fix tags", tagged.reply)
    picker = await standin.wait_for(lambda: opened.original)
    assert [n for n, ticked in _options(picker).items() if ticked] == ["meme", "news"]
    submitted = await standin.select(
        member_c, picker, f"memetag:pick:{tagged.message.id}:0", ["meme"]
    )
    await standin.wait_for(lambda: submitted.response)
    [item] = [i for i in await list_labelled_images(db) if i.image.id == image]
    assert item.net_votes == {"meme": 2, "news": 0}
    targets, mask = resolve_label_votes(item.net_votes, LABELS)
    meme, news, photo = (LABELS.index(n) for n in ("meme", "news", "photo"))
    assert (targets[meme], mask[meme]) == (1.0, True)
    assert not mask[news]  # a tie stays unknown
    assert (targets[photo], mask[photo]) == (0.0, True)  # silence on a tagged image
    await standin.wait_for(lambda: tagged.reply.content == "😂 meme ✓")


# -- the product bot end to end ----------------------------------------------------------------


async def test_product_bot_reply_buttons_fix_tags_and_the_reply_gets_its_check(standin, tmp_path):
    """MemetagBot with both cogs and a tiny model: the tagging cog's reply carries the buttons,
    the picker is ticked with what the model predicted (its own thresholds), and a fix lands."""
    async with bot_world(standin, tmp_path / "data", mode="reply") as world:
        person_a, person_b = world.members
        assert "Fix tags" in [c["name"] for c in standin.registered_commands(standin.guild)]
        data = make_image("JPEG", (96, 80), seed=5)
        message = await standin.post_message(
            standin.channel, person_a, "look", attachments=[("a.jpg", data)]
        )
        await world.settle()
        [reply] = standin.bot_messages(standin.channel)
        expected = await world.deps.models.predictor.predict(data)
        [[ok, fix]] = [row["components"] for row in reply.components]
        assert (ok["custom_id"], fix["custom_id"]) == (
            f"memetag:ok:{message.id}",
            f"memetag:fix:{message.id}",
        )
        [(image,)] = [tuple(r) for r in await world.db.fetchall("SELECT id FROM images")]

        opened = await standin.click_button(person_b, reply, fix["custom_id"])
        picker = await standin.wait_for(lambda: opened.original)
        options = _options(picker)
        assert expected.predicted
        assert [n for n, ticked in options.items() if ticked] == [
            n for n in options if n in expected.predicted
        ]
        wrong = next(n for n in options if n not in expected.predicted)
        done = await standin.select(person_b, picker, f"memetag:pick:{message.id}:0", [wrong])
        await standin.wait_for(lambda: done.response)
        assert await current_votes(world.db, image) == sorted(
            [(wrong, voter(person_b), 1, "button")]
            + [(n, voter(person_b), -1, "button") for n in expected.predicted]
        )
        emoji = {s.name: s.emoji for s in world.cfg.labels}[wrong]
        await standin.wait_for(
            lambda: reply.content.startswith(f"{emoji} {wrong.replace('_', ' ')}")
        )
        assert reply.content.endswith(" ✓") and "%" not in reply.content.split(" — ")[0]


# -- from Discord to training and export --------------------------------------------------------


async def test_corrections_reach_training_and_the_csv_export(
    standin, corrections_bot, deps, tmp_path
):
    db = deps.db
    member_a = await standin.add_member("member_a")
    member_b = await standin.add_member("member_b")
    tagged = await tag(
        standin, corrections_bot, deps, member_a, [{"meme": 0.9}, {"news": 0.8}], reply=False
    )
    first, second = tagged.image_ids
    opened = await standin.invoke_message_context_menu(member_b, "Fix tags", tagged.message)
    picker = await standin.wait_for(lambda: opened.original)
    assert [n for n, t in _options(picker, 1).items() if t] == ["news"]
    done = await standin.select(
        member_b, picker, f"memetag:pick:{tagged.message.id}:1", ["photo", "trump"]
    )
    await standin.wait_for(lambda: done.response)
    assert picker.content.startswith("✓ Saved for image 2: 📷 photo, 🍊 trump — not 📰 news.")
    await standin.add_reaction(member_b, tagged.message, "🤪")
    await wait_events(standin, db, first, 1)

    nets = {i.image.id: i.net_votes for i in await list_labelled_images(db)}
    assert nets == {first: {"weird": 1}, second: {"photo": 1, "trump": 1, "news": -1, "weird": 1}}

    out = tmp_path / "labels.csv"
    code = await asyncio.to_thread(
        main, ["--data", str(deps.cfg.data_dir), "export", "--csv", str(out)]
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert [(r["source"], r["sender"], r["labels"]) for r in rows] == [
        ("discord", "member_a", "weird"),
        ("discord", "member_a", "photo trump weird"),
    ]


# -- pieces -------------------------------------------------------------------------------------


def test_predicted_labels_follow_the_checkpoint_that_made_them():
    probs = {"meme": 0.45, "news": 0.3, "photo": 0.7}
    prediction = Prediction(1, "v2", probs, None, None, None)
    multi = SimpleNamespace(
        version="v2",
        emitted_labels=["meme", "news", "photo"],
        thresholds={"meme": 0.4, "news": 0.5, "photo": 0.6},
        label_mode="multi",
    )
    assert predicted_labels(prediction, multi) == ["photo", "meme"]
    exclusive = SimpleNamespace(**{**vars(multi), "label_mode": "exclusive"})
    assert predicted_labels(prediction, exclusive) == ["photo"]
    other = SimpleNamespace(**{**vars(multi), "version": "v3"})
    assert predicted_labels(prediction, other) == ["photo"]  # 0.5 without the right model
    assert predicted_labels(Prediction(1, "v2", {"a": 0.2, "b": 0.3}, None, None, None)) == ["b"]
    # Under a guild's overrides, as the tagging cog decided the tag it posted there.
    assert predicted_labels(prediction, multi, {"news": 0.25}) == ["photo", "meme", "news"]
    assert predicted_labels(prediction, multi, {"photo": 0.8}) == ["meme"]
    assert predicted_labels(prediction, exclusive, {"meme": 0.1}) == ["photo"]
    assert predicted_labels(prediction, other, {"meme": 0.4}) == ["photo", "meme"]


def test_current_tags_follow_the_training_rule():
    base = ImageTags(1, 0, False, predicted=("meme", "news"), probabilities={"meme": 0.9})
    assert base.current == ["meme", "news"] and base.resolved == []
    voted_down = ImageTags(1, 0, False, predicted=("meme", "news"), net={"news": -1})
    assert voted_down.current == ["meme"] and voted_down.resolved == []
    resolved = ImageTags(1, 0, False, predicted=("meme",), net={"photo": 2, "meme": 0})
    assert resolved.current == resolved.resolved == ["photo"]


def test_picker_offers_at_most_25_labels_keeping_the_ticked_and_predicted():
    labels = [LabelChoice(f"l{i:02d}", None) for i in range(30)]
    view = build_picker_view(7, [PickerImage(0, ("l29",))], labels, keep={0: ("l28",)})
    picker, button = view.children
    select = picker.item
    values = [o.value for o in select.options]
    assert len(values) == MAX_OPTIONS and {"l28", "l29"} <= set(values)
    assert select.max_values == MAX_OPTIONS and select.min_values == 0
    assert [o.value for o in select.options if o.default] == ["l29"]
    assert button.custom_id == "memetag:ok:7"
    nothing = build_picker_view(7, [PickerImage(0, ())], labels[:3])
    assert nothing.children[-1].item.disabled  # nothing to confirm
    many = build_picker_view(7, [PickerImage(i, ("l00",)) for i in range(6)], labels[:3])
    assert [c.custom_id for c in many.children] == [
        *(f"memetag:pick:7:{i}" for i in range(4)),
        "memetag:ok:7",
    ]


async def test_cog_is_built_from_bot_deps(deps):
    bot = make_test_bot()
    bot.deps = deps
    await bot.load_extension("bot.cogs.corrections")
    cog = bot.get_cog("Corrections")
    # load_extension imports the module afresh: compare by name, not class identity
    assert type(cog).__name__ == Corrections.__name__ and cog.db is deps.db
    assert [c.name for c in bot.tree.get_commands(type=discord.AppCommandType.message)] == [
        "Fix tags"
    ]
    await bot.unload_extension("bot.cogs.corrections")
    assert bot.tree.get_commands(type=discord.AppCommandType.message) == []


def test_label_emoji_with_variation_selector_maps_to_its_label():
    cfg = AppConfig(labels=(LabelSpec("comic_strip", "🗯️", ""),))
    mapping = render.emoji_label(cfg)
    assert mapping["🗯️"] == mapping["🗯"] == "comic_strip"
