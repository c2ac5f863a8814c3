"""The stand-in Discord drives a real discord.py client: login, events, REST, interactions.

Every bot here is a throwaway ``commands.Bot`` with an in-test Cog, not the product bot. The Cog
records what it saw and calls ``standin.notify()`` so ``wait_for`` re-checks without polling.
"""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.helpers.discord_standin import StandinDiscord, StandinError, make_test_bot, running_bot
from tests.helpers.imagegen import make_image

pytest_plugins = ["tests.helpers.standin_fixtures"]


class Recorder(commands.Cog):
    """Records events into ``seen`` and wakes the stand-in's waiters."""

    def __init__(self, standin: StandinDiscord) -> None:
        self.standin = standin
        self.seen: dict[str, list] = {}

    def note(self, key: str, value) -> None:
        self.seen.setdefault(key, []).append(value)
        self.standin.notify()

    def got(self, key: str) -> list:
        return self.seen.get(key, [])


def _intents(**extra: bool) -> discord.Intents:
    intents = discord.Intents.default()
    for name, value in extra.items():
        setattr(intents, name, value)
    return intents


async def test_login_ready_and_guild_state(standin, start_bot):
    bot = await start_bot(make_test_bot(intents=_intents(members=True, message_content=True)))
    assert bot.user.id == standin.bot_user.id
    assert bot.application_id == standin.application_id
    guild = bot.get_guild(standin.guild.id)
    assert guild is not None and guild.name == "Stand-in Guild"
    assert guild.member_count == len(guild.members) == 2  # owner + bot
    assert guild.me is not None and guild.chunked and standin.gateway.chunk_requests == []
    assert guild.default_role.id == guild.id
    assert guild.me.guild_permissions.manage_messages
    assert [c.name for c in guild.text_channels] == ["general"]
    assert standin.gateway.identify_count == 1
    assert standin.gateway.queries[0]["compress"] == "zlib-stream"
    assert all(c.compressed for c in standin.gateway.connections)  # real zlib frames were parsed
    assert standin.gateway.heartbeat_count >= 1
    assert bot.intents.message_content and standin.gateway.intents == bot.intents.value


async def test_discord_like_member_list_is_chunked_on_request():
    async with StandinDiscord.start(member_list="bot") as standin:
        await standin.add_member("member_a")
        with standin.patch_client():
            bot = make_test_bot(intents=_intents(members=True))
            async with running_bot(standin, bot):
                guild = bot.get_guild(standin.guild.id)
                await standin.wait_for(lambda: guild.chunked)
                assert sorted(m.name for m in guild.members) == ["member_a", "memetag", "owner"]
                assert len(standin.gateway.chunk_requests) == 1
        standin.check()


async def test_image_attachment_reaches_on_message_and_downloads(standin, start_bot):
    class Cog(Recorder):
        @commands.Cog.listener()
        async def on_message(self, message: discord.Message) -> None:
            for attachment in message.attachments:
                data = await attachment.read()
                self.note(
                    "read", (message.author.name, attachment.filename, attachment.width, data)
                )

    cog = Cog(standin)
    await start_bot(cogs=[cog])
    member_a = await standin.add_member("member_a")
    image = make_image("PNG", (64, 48), seed=3)
    posted = await standin.post_message(
        standin.channel, member_a, "look", attachments=[("cat.png", image)]
    )
    [(author, filename, width, data)] = await standin.wait_for(lambda: cog.got("read"))
    assert (author, filename, width) == ("member_a", "cat.png", 64)
    assert data == image
    assert standin.cdn_hits[posted.attachments[0].id] == 1


async def test_bot_reacts_and_replies_without_pinging(standin, start_bot):
    class Cog(Recorder):
        @commands.Cog.listener()
        async def on_message(self, message: discord.Message) -> None:
            if message.author.bot:
                return
            await message.add_reaction("✅")
            if message.content == "quiet":
                await message.reply("tagged", allowed_mentions=discord.AllowedMentions.none())
            else:
                await message.reply("tagged loudly")

    await start_bot(cogs=[Cog(standin)])
    member_a = await standin.add_member("member_a")
    quiet = await standin.post_message(standin.channel, member_a, "quiet")
    [reply] = await standin.wait_for(lambda: standin.bot_messages(standin.channel))
    await standin.wait_for(lambda: standin.reactions_on(quiet))
    assert standin.reactions_on(quiet) == {"✅": [standin.bot_user]}
    assert reply.content == "tagged" and reply.reference is quiet and reply.type == 19
    assert reply.mention_user_ids == []
    assert reply.allowed_mentions == {"parse": []}

    loud = await standin.post_message(standin.channel, member_a, "loud")
    await standin.wait_for(lambda: len(standin.bot_messages(standin.channel)) == 2)
    assert standin.bot_messages(standin.channel)[-1].reference is loud
    assert standin.bot_messages(standin.channel)[-1].mention_user_ids == [member_a.id]


async def test_raw_reaction_events_for_a_message_the_bot_never_saw(standin, start_bot):
    class Cog(Recorder):
        @commands.Cog.listener()
        async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
            self.note("add", (payload.message_id, str(payload.emoji), payload.member.name))

        @commands.Cog.listener()
        async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
            self.note("remove", (payload.message_id, str(payload.emoji), payload.user_id))

        @commands.Cog.listener()
        async def on_reaction_add(self, reaction, user) -> None:  # needs a cached message
            self.note("cached", reaction)

    cog = Cog(standin)
    bot = await start_bot(cogs=[cog])
    member_a = await standin.add_member("member_a")
    old = await standin.post_message(
        standin.channel,
        member_a,
        "from last year",
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
        dispatch=False,
    )
    blob = await standin.add_emoji("blob")
    await standin.add_reaction(member_a, old, "👍")
    await standin.add_reaction(member_a, old, blob)
    await standin.wait_for(lambda: len(cog.got("add")) == 2)
    assert cog.got("add") == [(old.id, "👍", "member_a"), (old.id, str(blob), "member_a")]
    assert bot.get_partial_messageable(old.channel.id).get_partial_message(old.id).created_at == (
        datetime(2024, 5, 1, tzinfo=UTC)
    )
    await standin.remove_reaction(member_a, old, "👍")
    await standin.wait_for(lambda: cog.got("remove"))
    assert cog.got("remove") == [(old.id, "👍", member_a.id)]
    assert cog.got("cached") == [] and old.id not in {m.id for m in bot.cached_messages}
    assert standin.reactions_on(old) == {str(blob): [member_a]}


async def test_slash_command_synced_per_guild_and_answered(standin, start_bot):
    class Cog(Recorder):
        @app_commands.command(description="Say it back")
        @app_commands.describe(text="what to echo")
        @app_commands.guilds(standin.guild.id)  # guild-only: resolving it needs data.guild_id
        async def echo(self, interaction: discord.Interaction, text: str) -> None:
            await interaction.response.send_message(f"{interaction.user.name}: {text}")

    bot = await start_bot(cogs=[Cog(standin)])
    assert await bot.tree.sync() == []
    synced = await bot.tree.sync(guild=discord.Object(standin.guild.id))
    assert [c.name for c in synced] == ["echo"]
    assert [c["name"] for c in standin.registered_commands(standin.guild)] == ["echo"]
    assert standin.registered_commands() == []

    member_a = await standin.add_member("member_a")
    interaction = await standin.invoke_slash(member_a, "echo", {"text": "hi there"})
    response = await standin.wait_for(lambda: interaction.response)
    assert response.type == 4 and response.content == "member_a: hi there"
    [shown] = standin.messages_in(standin.channel)
    assert (
        shown.type == 20
        and shown.interaction is interaction
        and shown.content == "member_a: hi there"
    )
    with pytest.raises(StandinError, match="no option 'txt'"):
        await standin.invoke_slash(member_a, "echo", {"txt": "typo"})
    with pytest.raises(StandinError, match="no command 'nope'"):
        await standin.invoke_slash(member_a, "nope")


async def test_message_context_menu_defers_then_edits_original(standin, start_bot):
    async def shout(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content=message.content.upper())

    bot = make_test_bot()
    bot.tree.add_command(app_commands.ContextMenu(name="Shout", callback=shout))
    bot = await start_bot(bot)
    await bot.tree.sync()
    member_a = await standin.add_member("member_a")
    quiet = await standin.post_message(standin.channel, member_a, "make me loud")
    interaction = await standin.invoke_message_context_menu(member_a, "Shout", quiet)
    await standin.wait_for(
        lambda: (
            interaction.original is not None
            and not interaction.original.loading
            and interaction.original.content
        )
    )
    assert [c.type for c in interaction.callbacks] == [5]
    assert interaction.original.content == "MAKE ME LOUD"
    assert interaction.original.type == 23 and interaction.original.edited_at is not None
    assert standin.messages_in(standin.channel) == [quiet, interaction.original]


class VoteView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=30)

    @discord.ui.button(label="Yes", custom_id="vote:yes")
    async def yes(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(
            content=f"yes from {interaction.user.name}", view=None
        )

    @discord.ui.button(label="Why?", custom_id="vote:why")
    async def why(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_modal(ReasonModal())


class ReasonModal(discord.ui.Modal, title="Why?"):
    reason = discord.ui.TextInput(label="Reason", custom_id="reason", max_length=50)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"because {self.reason.value}", ephemeral=True)


async def _vote_bot(standin, start_bot) -> commands.Bot:
    class Cog(Recorder):
        @app_commands.command(description="Start a vote")
        async def vote(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message("vote?", view=VoteView())

    bot = await start_bot(cogs=[Cog(standin)])
    await bot.tree.sync()
    return bot


async def test_button_click_on_a_view_updates_the_message(standin, start_bot):
    await _vote_bot(standin, start_bot)
    member_a = await standin.add_member("member_a")
    member_b = await standin.add_member("member_b")
    started = await standin.invoke_slash(member_a, "vote")
    poll = await standin.wait_for(lambda: started.original)
    assert [c["custom_id"] for c in poll.components[0]["components"]] == ["vote:yes", "vote:why"]
    click = await standin.click_button(member_b, poll, "vote:yes")
    await standin.wait_for(lambda: click.response)
    assert click.response.type == 7
    assert poll.content == "yes from member_b" and poll.components == []
    with pytest.raises(StandinError, match="no component 'vote:yes'"):
        await standin.click_button(member_b, poll, "vote:yes")


async def test_button_opens_a_modal_and_the_submission_is_answered(standin, start_bot):
    await _vote_bot(standin, start_bot)
    member_a = await standin.add_member("member_a")
    started = await standin.invoke_slash(member_a, "vote")
    poll = await standin.wait_for(lambda: started.original)
    asked = await standin.click_button(member_a, poll, "vote:why")
    await standin.wait_for(lambda: asked.modal)
    assert asked.modal["title"] == "Why?"
    with pytest.raises(StandinError, match="required"):
        await standin.submit_modal(member_a, asked, {})
    submitted = await standin.submit_modal(member_a, asked, {"reason": "cats"})
    answer = await standin.wait_for(lambda: submitted.response)
    assert answer.type == 4 and answer.ephemeral and answer.content == "because cats"
    assert answer.message not in standin.messages_in(
        standin.channel
    )  # ephemeral: only member_a sees it


async def test_history_pages_oldest_first(standin, bot):
    member_a = await standin.add_member("member_a")
    start = datetime(2023, 1, 1, tzinfo=UTC)
    for i in range(260):
        await standin.post_message(
            standin.channel,
            member_a,
            f"m{i}",
            created_at=start + timedelta(minutes=i),
            dispatch=False,
        )
    channel = bot.get_channel(standin.channel.id)
    got = [m async for m in channel.history(limit=250, oldest_first=True)]
    assert [m.content for m in got] == [f"m{i}" for i in range(250)]
    assert got[0].created_at == start and got[-1].created_at == start + timedelta(minutes=249)
    pages = standin.requests_to("GET", "/channels/*/messages")
    assert [p.query["limit"] for p in pages] == ["100", "100", "50"]
    newest = [m async for m in channel.history(limit=3)]
    assert [m.content for m in newest] == ["m259", "m258", "m257"]


async def test_forced_429_is_retried_and_other_errors_surface(standin, bot):
    rule = standin.rate_limit("POST", "/channels/*/messages", retry_after=0.01)
    channel = bot.get_channel(standin.channel.id)
    sent = await channel.send("after the limit")
    assert rule.hits == 1
    assert [r.status for r in standin.requests_to("POST", "/channels/*/messages")] == [429, 200]
    assert [m.content for m in standin.bot_messages()] == [sent.content]

    standin.fail_next("PUT", "/channels/*/messages/*/reactions/*/@me", status=403, code=50013)
    with pytest.raises(discord.Forbidden) as raised:
        await sent.add_reaction("👍")
    assert raised.value.code == 50013


async def test_missed_events_are_replayed_after_resume(standin, start_bot):
    class Cog(Recorder):
        @commands.Cog.listener()
        async def on_message(self, message: discord.Message) -> None:
            self.note("message", message.content)

        @commands.Cog.listener()
        async def on_resumed(self) -> None:
            self.note("resumed", True)

    cog = Cog(standin)
    await start_bot(cogs=[cog])
    member_a = await standin.add_member("member_a")
    async with standin.gateway_paused():
        await standin.post_message(standin.channel, member_a, "while you were away")
        assert not standin.gateway.connected
    await standin.wait_for(lambda: cog.got("message") and cog.got("resumed"))
    assert cog.got("message") == ["while you were away"]
    assert (standin.gateway.identify_count, standin.gateway.resume_count) == (1, 1)


async def test_without_message_content_intent_only_mentions_carry_content(standin, start_bot):
    class Cog(Recorder):
        @commands.Cog.listener()
        async def on_message(self, message: discord.Message) -> None:
            self.note("message", (message.content, len(message.attachments)))

    cog = Cog(standin)
    await start_bot(make_test_bot(intents=discord.Intents.default()), cogs=[cog])
    member_a = await standin.add_member("member_a")
    image = [("a.png", make_image("PNG"))]
    await standin.post_message(standin.channel, member_a, "secret", attachments=image)
    await standin.post_message(
        standin.channel, member_a, f"{standin.bot_user.mention} hello", attachments=image
    )
    await standin.wait_for(lambda: len(cog.got("message")) == 2)
    assert cog.got("message") == [("", 0), (f"{standin.bot_user.mention} hello", 1)]


async def test_message_rest_round_trips_through_the_client(standin, bot):
    member_a = await standin.add_member("member_a")
    posted = await standin.post_message(standin.channel, member_a, "original")
    channel = bot.get_channel(standin.channel.id)
    fetched = await channel.fetch_message(posted.id)
    assert (fetched.author.id, fetched.content) == (member_a.id, "original")

    reactors = [await standin.add_member(f"member-{i}") for i in range(105)]
    for user in reactors:
        await standin.add_reaction(user, posted, "🔥")
    [reaction] = (await channel.fetch_message(posted.id)).reactions
    users = [u.id async for u in reaction.users()]
    assert sorted(users) == sorted(u.id for u in reactors)  # discord.py reverses each page
    assert len(standin.requests_to("GET", "/channels/*/messages/*/reactions/*")) == 2

    sent = await channel.send("draft", file=discord.File(io.BytesIO(b"abc"), "notes.txt"))
    record = standin.messages[sent.id]
    assert record.attachments[0].data == b"abc" and record.attachments[0].filename == "notes.txt"
    await sent.edit(content="final")
    assert record.content == "final" and record.edited_at and len(record.attachments) == 1

    thread = await sent.create_thread(name="talk")
    assert standin.channels[thread.id].parent_id == channel.id and record.thread.id == thread.id
    in_thread = await thread.send("in the thread")
    assert standin.messages_in(standin.channels[thread.id])[0].id == in_thread.id

    user = await bot.fetch_user(member_a.id)
    await user.send("hello in private")
    assert [m.content for m in standin.messages_in(standin.dm_channel(member_a))] == [
        "hello in private"
    ]

    member = await channel.guild.fetch_member(member_a.id)
    assert member.name == "member_a"
    await fetched.delete()
    assert posted.deleted and posted not in standin.messages_in(standin.channel)
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(posted.id)


async def test_followups_selects_autocomplete_and_user_menus(standin, start_bot):
    class Cog(Recorder):
        @app_commands.command(description="Paint something")
        @app_commands.describe(colour="a colour")
        async def paint(self, interaction: discord.Interaction, colour: str) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send(f"painted {colour}")  # replaces "thinking..."
            await interaction.followup.send("and a second note", ephemeral=True)

        @paint.autocomplete("colour")
        async def colours(self, interaction: discord.Interaction, current: str):
            return [
                app_commands.Choice(name=c, value=c)
                for c in ("red", "rose")
                if c.startswith(current)
            ]

        @app_commands.command(description="Choose one")
        async def choose(self, interaction: discord.Interaction) -> None:
            select = discord.ui.Select(
                custom_id="pick",
                options=[
                    discord.SelectOption(label="A", value="a"),
                    discord.SelectOption(label="B", value="b"),
                ],
            )

            async def picked(inner: discord.Interaction) -> None:
                await inner.response.send_message(f"picked {select.values}")
                await interaction.delete_original_response()

            select.callback = picked
            view = discord.ui.View()
            view.add_item(select)
            await interaction.response.send_message("choose", view=view)

    async def inspect(interaction: discord.Interaction, member: discord.Member) -> None:
        await interaction.response.send_message(f"{member.name} has {len(member.roles)} roles")

    bot = make_test_bot()
    bot.tree.add_command(app_commands.ContextMenu(name="Inspect", callback=inspect))
    bot = await start_bot(bot, cogs=[Cog(standin)])
    await bot.tree.sync()
    member_a = await standin.add_member("member_a")

    typing = await standin.autocomplete(member_a, "paint", {"colour": "r"}, focused="colour")
    choices = await standin.wait_for(lambda: typing.choices)
    assert [c["value"] for c in choices] == ["red", "rose"]

    paint = await standin.invoke_slash(member_a, "paint", {"colour": "red"})
    await standin.wait_for(lambda: len(paint.followups) == 1)
    assert [c.type for c in paint.callbacks] == [5]
    assert paint.original.content == "painted red" and paint.original.ephemeral
    assert not paint.original.loading and paint.followups[0].ephemeral
    assert standin.messages_in(standin.channel) == []  # everything was ephemeral

    choose = await standin.invoke_slash(member_a, "choose")
    menu = await standin.wait_for(lambda: choose.original)
    with pytest.raises(StandinError, match="not an option"):
        await standin.select(member_a, menu, "pick", ["c"])
    pick = await standin.select(member_a, menu, "pick", ["b"])
    await standin.wait_for(lambda: pick.response and menu.deleted)
    assert pick.response.content == "picked ['b']"

    role = await standin.add_role("painter", members=[member_a])
    menu_use = await standin.invoke_user_context_menu(standin.owner, "Inspect", member_a)
    answer = await standin.wait_for(lambda: menu_use.response)
    assert (
        answer.content == "member_a has 2 roles" and role.name == "painter"
    )  # @everyone + painter


async def test_world_changes_and_member_actions_reach_the_client(standin, start_bot):
    class Cog(Recorder):
        @commands.Cog.listener()
        async def on_message_edit(self, before: discord.Message, after: discord.Message) -> None:
            self.note("edit", (before.content, after.content, len(after.embeds)))

        @commands.Cog.listener()
        async def on_message_delete(self, message: discord.Message) -> None:
            self.note("delete", message.content)

        @commands.Cog.listener()
        async def on_thread_create(self, thread: discord.Thread) -> None:
            self.note("thread", thread.name)

        @commands.Cog.listener()
        async def on_guild_join(self, guild: discord.Guild) -> None:
            self.note("guild", guild.name)

    cog = Cog(standin)
    bot = await start_bot(
        make_test_bot(intents=_intents(members=True, message_content=True)), cogs=[cog]
    )
    member_a = await standin.add_member("member_a")
    link = await standin.post_message(standin.channel, member_a, "see https://example.test/cat.png")
    await standin.edit_message(link, embeds=[standin.image_embed(make_image("PNG"), "cat.png")])
    await standin.wait_for(lambda: cog.got("edit"))
    assert cog.got("edit") == [(link.content, link.content, 1)]
    await standin.delete_message(link)
    await standin.wait_for(lambda: cog.got("delete"))
    assert cog.got("delete") == [link.content]

    thread = await standin.create_thread(standin.channel, "side chat", by=member_a)
    await standin.post_message(thread, member_a, "inside")
    await standin.wait_for(lambda: cog.got("thread"))
    assert bot.get_channel(thread.id).parent_id == standin.channel.id

    hidden = await standin.add_text_channel("mods-only")
    await standin.set_overwrite(
        hidden, standin.guild.everyone, deny=discord.Permissions(view_channel=True)
    )
    await standin.set_overwrite(
        hidden, standin.bot_role, deny=discord.Permissions(view_channel=True)
    )
    client_view = bot.get_channel(hidden.id)
    assert not client_view.permissions_for(client_view.guild.me).view_channel
    with pytest.raises(discord.Forbidden):
        await client_view.send("should not get through")

    role = await standin.add_role(
        "mod", discord.Permissions(manage_messages=True), members=[member_a]
    )
    member = await standin.wait_for(lambda: bot.get_guild(standin.guild.id).get_member(member_a.id))
    await standin.wait_for(lambda: len(member.roles) == 2)
    assert member.guild_permissions.manage_messages and role.name == "mod"

    other = await standin.add_guild("Second Guild")
    await standin.wait_for(lambda: cog.got("guild"))
    assert cog.got("guild") == ["Second Guild"] and bot.get_guild(other.id) is not None

    seeded = [await standin.post_message(standin.channel, member_a, f"old {i}") for i in range(3)]
    deleted = await bot.get_channel(standin.channel.id).purge(limit=10)
    assert len(deleted) == 3 and all(m.deleted for m in seeded)

    await standin.send_reconnect()
    await standin.wait_for(lambda: standin.gateway.resume_count == 1 and standin.gateway.connected)
    # Driver calls return after the client parsed the event, so listen before acting.
    heard = asyncio.ensure_future(
        bot.wait_for("message", check=lambda m: m.content == "still listening", timeout=5)
    )
    await standin.post_message(standin.channel, member_a, "still listening")
    assert (await heard).author.id == member_a.id


async def test_api_answers_carry_rate_limit_headers_and_an_empty_bucket_answers_429(standin):
    # Discord's headers on every API answer; a bucket per route and channel; a request that
    # comes while its bucket is empty gets the 429 discord.py retries (Via + retry_after).
    standin.rate_limits.set("POST", "/channels/*/typing", limit=2, per_s=0.6)
    other = await standin.add_text_channel("other")
    auth = {"Authorization": f"Bot {standin.token}"}

    async def typing(http: aiohttp.ClientSession, channel_id: int):
        url = f"{standin.base_url}/api/v10/channels/{channel_id}/typing"
        async with http.post(url, headers=auth) as response:
            body = await response.json() if response.status == 429 else None
            return response.status, response.headers, body, time.time()

    async with aiohttp.ClientSession() as http:
        answers = [await typing(http, standin.channel.id) for _ in range(3)]
        elsewhere = await typing(http, other.id)
        async with http.get(f"{standin.base_url}/api/v10/users/@me", headers=auth) as me:
            assert me.status == 200 and me.headers["X-RateLimit-Limit"] == "50"
        await asyncio.sleep(float(answers[2][1]["X-RateLimit-Reset-After"]) + 0.05)
        after_reset = await typing(http, standin.channel.id)

    assert [status for status, *_ in answers] == [204, 204, 429]
    first, second, third = (headers for _, headers, *_ in answers)
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("2", "1")
    assert second["X-RateLimit-Remaining"] == third["X-RateLimit-Remaining"] == "0"
    assert first["X-RateLimit-Bucket"] == third["X-RateLimit-Bucket"]
    assert 0 < float(third["X-RateLimit-Reset-After"]) <= 0.6
    reset_in = float(third["X-RateLimit-Reset"]) - answers[2][3]  # epoch seconds
    assert abs(reset_in - float(third["X-RateLimit-Reset-After"])) < 0.1
    assert third["Via"] and answers[2][2]["retry_after"] > 0 and not answers[2][2]["global"]
    assert "Via" not in first
    assert elsewhere[0] == 204 and elsewhere[1]["X-RateLimit-Remaining"] == "1"
    assert after_reset[0] == 204 and after_reset[1]["X-RateLimit-Remaining"] == "1"
    assert standin.rate_limits.refused == 1


def test_a_bucket_rule_may_match_every_method():
    from memetag.standin.ratelimits import RateLimits

    limits = RateLimits()
    limits.set("*", "*", limit=3, per_s=1.0)
    limits.set("PUT", "/channels/*/messages/*/reactions/*/@me", limit=1, per_s=1.0)
    for method in ("GET", "POST", "DELETE"):
        verdict = limits.take(method, "/api/v10/users/@me", "", "/users/@me")
        assert verdict.headers["X-RateLimit-Limit"] == "3", method
    put = "/channels/1/messages/2/reactions/x/@me"
    assert limits.take("PUT", "/api/v10/r", "1", put).headers["X-RateLimit-Limit"] == "1"


async def test_the_client_waits_for_a_bucket_to_reset_instead_of_hitting_429(standin, bot):
    # discord.py reads the headers: with one reaction a quarter second (Discord's own pace for
    # reactions), five reactions go out a window apart and none is refused.
    standin.rate_limits.set("PUT", "/channels/*/messages/*/reactions/*/@me", limit=1, per_s=0.25)
    channel = bot.get_channel(standin.channel.id)
    sent = await channel.send("react to me")
    started = time.monotonic()
    for emoji in ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣"):
        await sent.add_reaction(emoji)
    took = time.monotonic() - started
    puts = standin.requests_to("PUT", "/channels/*/messages/*/reactions/*/@me")
    assert [r.status for r in puts] == [204] * 5
    assert standin.rate_limits.refused == 0
    gaps = [b.at - a.at for a, b in zip(puts, puts[1:], strict=False)]
    assert min(gaps) >= 0.2 and took >= 1.0, gaps
