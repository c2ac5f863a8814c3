"""The stand-in Discord for tests: re-exports ``memetag.standin`` plus a test bot factory.

The implementation lives in the installed package (``memetag/standin/``) because ``memetag demo``
drives the real bot against it and the ``tests`` tree is not importable from an installed
command. Tests import from here; fixtures are in ``tests/helpers/standin_fixtures.py``.

Quick reference (``standin`` is a started, patched-in StandinDiscord; ``start_bot`` runs a bot)::

    bot = await start_bot(make_test_bot(), cogs=[MyCog(...)])   # returns after on_ready
    member_a = await standin.add_member("member_a")                   # also add_role, add_emoji,
    msg = await standin.post_message(standin.channel, member_a, "hi",   # add_text_channel,
        attachments=[("cat.png", png)], embeds=[standin.image_embed(png)])  # set_overwrite...
    await standin.add_reaction(member_a, msg, "👍")                 # remove_reaction, edit_message
    i = await standin.invoke_slash(member_a, "tag", {"label": "meme"})  # after bot.tree.sync()
    await standin.wait_for(lambda: i.response)                  # i.callbacks, i.original
    standin.messages_in(standin.channel); standin.bot_messages(); standin.reactions_on(msg)

Every driver call returns once the client has parsed the event it caused (caches are up to
date); the bot's listeners may still be running, so await their effects with ``wait_for``.
To assert that the bot did *not* react, act again in a way it does react to, wait for that,
then check nothing else happened (handlers start in the order events arrive).
"""

from __future__ import annotations

from typing import Any

import discord
from discord.ext import commands

from memetag.standin import (
    Attachment,
    Channel,
    CustomEmoji,
    FailureRule,
    Guild,
    Interaction,
    InteractionCallback,
    Message,
    RecordedRequest,
    Role,
    StandinDiscord,
    StandinError,
    StandinFailure,
    User,
    running_bot,
)

__all__ = [
    "Attachment",
    "Channel",
    "CustomEmoji",
    "FailureRule",
    "Guild",
    "Interaction",
    "InteractionCallback",
    "Message",
    "RecordedRequest",
    "Role",
    "StandinDiscord",
    "StandinError",
    "StandinFailure",
    "User",
    "make_test_bot",
    "running_bot",
]


def make_test_bot(*, intents: discord.Intents | None = None, **options: Any) -> commands.Bot:
    """A plain ``commands.Bot`` for stand-in tests: prefix ``!``, message content on, and
    ``guild_ready_timeout=0.05`` so on_ready fires without the default 2 s wait."""
    if intents is None:
        intents = discord.Intents.default()
        intents.message_content = True
    options.setdefault("command_prefix", "!")
    options.setdefault("guild_ready_timeout", 0.05)
    return commands.Bot(intents=intents, **options)
