"""Members' privacy: ``/tagger optout``, ``/tagger optin``, ``/tagger forget-me``, deleted messages.

- ``optout``: the member's future images are never downloaded, stored, predicted or shown (the
  tagging cog and the backfill check the opt-out before downloading anything).
- ``forget-me``: after a confirm button, deletes every Discord post of theirs, every vote they
  cast, the image files no other post uses (with their predictions and votes), their Discord
  alias and their person row unless posts from other sources still name them; and opts them
  out. Answered ephemerally with the counts.
- ``optin``: undoes the opt-out (nothing deleted comes back).
- A deleted message (one or in bulk) takes its posts, the votes cast through it and the image
  files no other post uses with it.

These are members' own commands: no Manage Server check and no audit row (the audit log would
itself be a record of who asked to be forgotten).
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.deps import Deps
from bot.tagger import TAGGER
from memetag.services.media import DISCORD_SOURCE
from store.errors import StoreError
from store.queries.privacy import (
    Forgotten,
    MemberData,
    add_optout,
    count_member_data,
    forget_member,
    forget_message,
    remove_optout,
)
from store.queries.votes import discord_voter

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 120.0
_RETRAIN_NOTE = (
    "A model trained before now may still guess your name until the next retrain, which no "
    "longer sees your posts."
)


def _deps(interaction: discord.Interaction) -> Deps:
    return interaction.client.deps  # type: ignore[attr-defined]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def preview_text(data: MemberData) -> str:
    """The question ``forget-me`` asks before deleting anything."""
    kept = (
        f" ({_plural(data.images_kept, 'image')} someone else also posted stay)"
        if data.images_kept
        else ""
    )
    return (
        "This deletes everything memetag stored about you: "
        f"{_plural(data.posts, 'image post')}, {_plural(data.votes, 'vote')} and "
        f"{_plural(data.images, 'image file')}{kept}. Your future images will not be stored "
        "(you are opted out; `/tagger optin` undoes that). This cannot be undone."
    )


def done_text(done: Forgotten) -> str:
    """The answer once ``forget-me`` deleted the member's data."""
    kept = (
        f"; {_plural(done.images_kept, 'image')} someone else also posted stayed"
        if done.images_kept
        else ""
    )
    return (
        f"Deleted {_plural(done.posts, 'image post')}, {_plural(done.votes, 'vote')} and "
        f"{_plural(done.files_removed, 'image file')}{kept}. You are opted out: your images are "
        f"not stored any more (`/tagger optin` to be tagged again). {_RETRAIN_NOTE}"
    )


class ForgetMeView(discord.ui.View):
    """The confirm / cancel buttons under the ``forget-me`` question (only its asker sees it)."""

    def __init__(self, deps: Deps, user_id: int) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT_S)
        self.deps = deps
        self.user_id = user_id
        self.outcome: Forgotten | None = None

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.user_id

    @discord.ui.button(label="Delete my data", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        # Deleting many posts and files can take longer than Discord's 3 s: answer first.
        await interaction.response.defer()
        try:
            self.outcome = await forget_member(
                self.deps.db,
                self.deps.files,
                source=DISCORD_SOURCE,
                ref=self.user_id,
                voter=discord_voter(self.user_id),
            )
        except StoreError as exc:
            log.warning("forget-me for a member failed: %s", exc)
            await interaction.edit_original_response(
                content="Nothing was deleted: the store could not be written. Try again later.",
                view=None,
            )
            return
        log.info(
            "forget-me: %d posts, %d votes, %d files deleted",
            self.outcome.posts,
            self.outcome.votes,
            self.outcome.files_removed,
        )
        await interaction.edit_original_response(content=done_text(self.outcome), view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)


@app_commands.command(
    name="optout", description="Stop storing, tagging or guessing from your images"
)
async def optout_command(interaction: discord.Interaction) -> None:
    """Your future images are not downloaded, stored, predicted or shown (only you see the answer)."""
    added = await add_optout(_deps(interaction).db, DISCORD_SOURCE, interaction.user.id)
    text = (
        "You are opted out: the images you post from now on are not stored, tagged or used "
        "to guess who posts what."
        if added
        else "You were already opted out."
    )
    await interaction.response.send_message(
        f"{text} `/tagger forget-me` also deletes what is stored already; `/tagger optin` "
        "undoes this.",
        ephemeral=True,
    )


@app_commands.command(name="optin", description="Let the bot store and tag your images again")
async def optin_command(interaction: discord.Interaction) -> None:
    """Undo ``/tagger optout`` (or the opt-out ``forget-me`` set): your next images are tagged."""
    removed = await remove_optout(_deps(interaction).db, DISCORD_SOURCE, interaction.user.id)
    text = (
        "You are opted in: the images you post from now on are stored and tagged."
        if removed
        else "You were not opted out: your images are stored and tagged."
    )
    await interaction.response.send_message(text, ephemeral=True)


@app_commands.command(
    name="forget-me", description="Delete your stored images and votes, and opt out"
)
async def forget_me_command(interaction: discord.Interaction) -> None:
    """Delete every image post and vote of yours (after you confirm), and opt you out."""
    deps = _deps(interaction)
    user_id = interaction.user.id
    data = await count_member_data(deps.db, DISCORD_SOURCE, user_id, discord_voter(user_id))
    await interaction.response.send_message(
        preview_text(data), view=ForgetMeView(deps, user_id), ephemeral=True
    )


for _command in (optout_command, optin_command, forget_me_command):
    TAGGER.add_command(_command, override=True)


class Privacy(commands.Cog):
    """Forgets what a deleted message brought into the store."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def forget(self, message_id: int) -> Forgotten:
        try:
            done = await forget_message(
                self.deps.db, self.deps.files, source=DISCORD_SOURCE, message_id=message_id
            )
        except StoreError as exc:
            log.warning("deleted message %s: its posts could not be deleted: %s", message_id, exc)
            return Forgotten()
        if done.posts or done.vote_events:
            log.info(
                "message %s deleted: %d posts, %d votes, %d files deleted with it",
                message_id,
                done.posts,
                done.votes,
                done.files_removed,
            )
        return done

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.forget(payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in sorted(payload.message_ids):
            await self.forget(message_id)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Privacy(bot.deps))  # type: ignore[attr-defined]
