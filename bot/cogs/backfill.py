"""``/tagger backfill #channel [limit] [after]``: store the images posted before the bot watched.

The channel's history is read through the API oldest first, 100 messages a page (discord.py's
``history`` honours Discord's rate limits, 429s included), up to the first message the live
tagger stored in that channel when the backfill began (``backfill_cursors.stop_before``; now,
when it stored none). Each image is found exactly as the tagging cog finds it and stored exactly
as a live or exported post (source ``discord``, source id ``<message id>:<n>``, author as the
sender label), so a live post, an ``ingest discord-export`` of the channel and the backfill never
store one image twice, and nothing already stored is downloaded again. Label-emoji reactions
become +1 votes of the members who reacted (at most ``[bot] backfill_reaction_users`` per
reaction; origin ``reaction``), never replacing a vote a member already has. The old messages are
never tagged: no reaction, no reply. Members who opted out are skipped before any download.

The channel's cursor moves after each fully stored page, so after a crash, a restart or a
``limit``, running the command again resumes where it stopped. Progress is shown in one message,
edited as pages go by. Downloads go through the shared downloader, at most half its concurrency
at once, so live tagging keeps its share.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.tagging import _USER_MESSAGES, ImageRef, find_images, live_post
from bot.deps import Deps
from bot.render import emoji_label
from bot.tagger import TAGGER, admin_only, audit
from ingest.errors import IngestError
from memetag.services.media import DISCORD_SOURCE, StoredPost, fetch_post_image
from store.errors import StoreError
from store.queries.backfill import (
    BackfillCursor,
    add_reaction_votes,
    advance_backfill_cursor,
    get_backfill_cursor,
    get_first_live_message_id,
    start_backfill_pass,
)
from store.queries.bot import TaggedImage, record_tagged_message
from store.queries.privacy import list_opted_out
from store.queries.votes import discord_voter

log = logging.getLogger(__name__)

PAGE = 100  # messages per history request: Discord's maximum
PROGRESS_EVERY_S = 2.0  # the progress message is edited at most this often
# An interaction's token edits its answer for 15 minutes; later edits go through the channel.
_TOKEN_LIFETIME_S = 14 * 60
_MESSAGE_LINK = re.compile(r"^https?://(?:\w+\.)?discord(?:app)?\.com/channels/[^/]+/\d+/(\d+)/?$")


def parse_message_id(text: str) -> int | None:
    """A message id from an id or a message link; None if ``text`` is neither."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = _MESSAGE_LINK.match(text)
    return int(match.group(1)) if match else None


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class BackfillReport:
    """One run over a channel. ``messages``/``images``/``votes`` count the whole pass (earlier,
    interrupted runs included); the rest this run only."""

    channel: str
    messages: int = 0
    images: int = 0  # image posts stored by the backfill
    votes: int = 0  # votes added from old reactions
    known: int = 0  # images already stored (live, an export, an earlier run): not downloaded
    failed: int = 0  # images that could not be downloaded or are not images
    after_id: int | None = None
    done: bool = False
    stopped: str | None = None  # why the run ended early, when it did

    def text(self, *, running: bool = False) -> str:
        line = (
            f"Backfill of {self.channel}: {_count(self.messages, 'message')} read, "
            f"{_count(self.images, 'image')} stored, {_count(self.votes, 'vote')} from reactions"
        )
        extras = []
        if self.known:
            was = "was" if self.known == 1 else "were"
            extras.append(f"{_count(self.known, 'image')} {was} stored already")
        if self.failed:
            extras.append(f"{self.failed} could not be stored")
        if extras:
            line += f" ({'; '.join(extras)})"
        if running:
            return line + " … reading."
        if self.done:
            return line + ". Done."
        return (
            f"{line}. Stopped: {self.stopped or 'interrupted'}. Run `/tagger backfill` on the "
            "channel again to go on from where it stopped."
        )


class _Progress:
    """The one message that shows a run's progress (the command's public answer)."""

    def __init__(
        self, interaction: discord.Interaction | None, message: discord.PartialMessage | None
    ) -> None:
        self.interaction = interaction
        self.message = message
        self.started = time.monotonic()
        self.last = 0.0

    async def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        try:
            if self.interaction is not None and now - self.started < _TOKEN_LIFETIME_S:
                await self.interaction.edit_original_response(content=text)
            elif self.message is not None:
                await self.message.edit(content=text)
        except discord.HTTPException as exc:
            log.info("backfill progress not shown: %s %s", exc.status, exc.text)


@dataclass
class _PageCounts:
    images: int = 0
    known: int = 0
    failed: int = 0
    votes: int = 0


class Backfill(commands.Cog):
    """Runs backfills as tasks it owns: one per channel at a time, cancelled on unload."""

    def __init__(self, bot: commands.Bot, deps: Deps) -> None:
        self.bot = bot
        self.deps = deps
        self.emoji_labels = emoji_label(deps.cfg)
        self.running: dict[int, asyncio.Task[BackfillReport]] = {}
        self._claimed: set[int] = set()  # channels a command is starting a backfill of
        self._downloads = asyncio.Semaphore(max(1, deps.cfg.ingest.concurrency // 2))

    # -- lifecycle --------------------------------------------------------------------------

    async def cog_unload(self) -> None:
        await self.stop_all()

    async def drain(self, timeout: float) -> None:
        """Stop running backfills at once: their cursors hold what they stored."""
        await self.stop_all()

    async def stop_all(self) -> None:
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def is_running(self, channel_id: int) -> bool:
        return channel_id in self.running or channel_id in self._claimed

    def claim(self, channel_id: int) -> bool:
        """Reserve a channel for a backfill about to start; False if one runs or starts."""
        if self.is_running(channel_id):
            return False
        self._claimed.add(channel_id)
        return True

    def release(self, channel_id: int) -> None:
        self._claimed.discard(channel_id)

    # -- starting -----------------------------------------------------------------------------

    async def prepare(
        self,
        channel: discord.abc.GuildChannel,
        *,
        after_id: int | None,
        started_by: str,
        now_id: int | None = None,
    ) -> tuple[BackfillCursor, int | None]:
        """The pass to run: the channel's unfinished one (resumed), or a new one.

        A new pass ends before the first message the live tagger stored in the channel (now,
        if none); after a finished pass, a new one reads on from where that one ended up to
        now. Returns the cursor and the message id to read after.

        Args:
            now_id: a snowflake for "now" (the command's interaction id: the command's own
                answer comes after it); the current time by default.
        """
        db = self.deps.db
        cursor = await get_backfill_cursor(db, channel.id)
        if cursor is not None and not cursor.done:
            start = cursor.after_id
            if after_id is not None and (start is None or after_id > start):
                start = after_id
            return cursor, start
        if now_id is None:
            now_id = discord.utils.time_snowflake(datetime.now(UTC))
        if cursor is None:
            first_live = await get_first_live_message_id(db, channel.id)
            stop_before = min(first_live, now_id) if first_live is not None else now_id
        else:
            stop_before = now_id
            if after_id is None and cursor.stop_before is not None:
                after_id = cursor.stop_before - 1
        cursor = await start_backfill_pass(
            db,
            channel_id=channel.id,
            guild_id=channel.guild.id,
            after_id=after_id,
            stop_before=stop_before,
            started_by=started_by,
        )
        return cursor, after_id

    def start(
        self,
        channel: discord.abc.Messageable,
        cursor: BackfillCursor,
        *,
        after_id: int | None,
        limit: int | None,
        progress: _Progress,
    ) -> asyncio.Task[BackfillReport]:
        channel_id = channel.id  # type: ignore[attr-defined]
        task = asyncio.create_task(
            self.run(channel, cursor, after_id=after_id, limit=limit, progress=progress),
            name=f"memetag-backfill-{channel_id}",
        )
        self.running[channel_id] = task
        self._claimed.discard(channel_id)

        def _finished(t: asyncio.Task[BackfillReport]) -> None:
            if self.running.get(channel_id) is t:
                del self.running[channel_id]

        task.add_done_callback(_finished)
        return task

    # -- the run ------------------------------------------------------------------------------

    async def run(
        self,
        channel: discord.abc.Messageable,
        cursor: BackfillCursor,
        *,
        after_id: int | None,
        limit: int | None = None,
        progress: _Progress | None = None,
    ) -> BackfillReport:
        """Read and store pages until the pass ends, ``limit`` messages were read or an error.

        Cancelling it (shutdown) writes nothing more: the cursor already holds every page that
        was fully stored.
        """
        progress = progress or _Progress(None, None)
        channel_id = channel.id  # type: ignore[attr-defined]
        report = BackfillReport(
            channel=f"#{getattr(channel, 'name', channel_id)}",
            messages=cursor.messages,
            images=cursor.images,
            votes=cursor.votes,
            after_id=after_id,
        )
        stop_before = discord.Object(cursor.stop_before) if cursor.stop_before else None
        remaining = limit
        try:
            while True:
                want = PAGE if remaining is None else min(PAGE, remaining)
                if want <= 0:
                    report.stopped = f"it read the {limit} messages asked for"
                    break
                after = discord.Object(report.after_id) if report.after_id else None
                page = [
                    m
                    async for m in channel.history(
                        limit=want, after=after, before=stop_before, oldest_first=True
                    )
                ]
                counts = await self._store_page(page)
                if page:
                    report.after_id = page[-1].id
                report.done = len(page) < want
                await advance_backfill_cursor(
                    self.deps.db,
                    channel_id,
                    after_id=report.after_id,
                    messages=len(page),
                    images=counts.images,
                    votes=counts.votes,
                    done=report.done,
                )
                report.messages += len(page)
                report.images += counts.images
                report.votes += counts.votes
                report.known += counts.known
                report.failed += counts.failed
                if remaining is not None:
                    remaining -= len(page)
                if report.done:
                    break
                await progress.show(report.text(running=True))
        except discord.HTTPException as exc:
            report.stopped = f"Discord answered {exc.status} ({exc.text or 'no reason given'})"
            log.warning("backfill of channel %s stopped: %s", channel_id, report.stopped)
        except StoreError as exc:
            report.stopped = f"the store could not be written ({exc})"
            log.warning("backfill of channel %s stopped: %s", channel_id, exc)
        except Exception:
            report.stopped = "an error (see the bot's log)"
            log.exception("backfill of channel %s failed", channel_id)
        log.info(
            "backfill of channel %s: %d messages, %d images, %d votes%s",
            channel_id,
            report.messages,
            report.images,
            report.votes,
            "; done" if report.done else f"; stopped: {report.stopped}",
        )
        await progress.show(report.text(), force=True)
        return report

    def _wanted(self, message: discord.Message) -> bool:
        """Whose messages count: those the live tagger would take (members', not bots')."""
        if message.type not in _USER_MESSAGES:
            return False
        settings = self.deps.cfg.bot
        me = self.bot.user
        if me is not None and message.author.id == me.id:
            return not settings.ignore_self
        if message.author.bot or message.webhook_id:
            return not settings.ignore_bots
        return True

    async def _store_page(self, page: list[discord.Message]) -> _PageCounts:
        counts = _PageCounts()
        wanted = [m for m in page if self._wanted(m)]
        if not wanted:
            return counts
        opted_out = await list_opted_out(
            self.deps.db, DISCORD_SOURCE, {m.author.id for m in wanted}
        )
        # One failure ends the page (and the run) with every task of it cancelled; the cursor
        # has not moved, so the next run reads the page again.
        try:
            async with asyncio.TaskGroup() as group:
                for message in wanted:
                    if str(message.author.id) not in opted_out:
                        group.create_task(self._store_message(message, counts))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from failed
        return counts

    async def _store_message(self, message: discord.Message, counts: _PageCounts) -> None:
        refs = find_images(message, self.deps.cfg.bot.max_images_per_message)
        if not refs:
            return
        outcomes = await asyncio.gather(*(self._store_image(message, ref, counts) for ref in refs))
        stored = [(ref, s) for ref, s in zip(refs, outcomes, strict=True) if s is not None]
        if not stored:
            return
        images = [TaggedImage(ref.position, s.post_id, ref.spoiler) for ref, s in stored]
        # Like a live-tagged message: later reactions on it count, and deleting it is noticed.
        await record_tagged_message(
            self.deps.db,
            message_id=str(message.id),
            channel_id=str(message.channel.id),
            guild_id=str(message.guild.id) if message.guild else None,
            author_ref=str(message.author.id),
            images=images,
        )
        image_ids = list(dict.fromkeys(s.image_id for _, s in stored))
        added = await self._reaction_votes(message, image_ids)
        counts.votes += added  # not `+= await`: that reads the count before the await

    async def _store_image(
        self, message: discord.Message, ref: ImageRef, counts: _PageCounts
    ) -> StoredPost | None:
        """Download (unless stored already) and store one image; None if it cannot be."""
        deps = self.deps
        limits = deps.cfg.ingest
        if ref.size is not None and ref.size > limits.max_bytes:
            counts.failed += 1
            return None
        post = live_post(message, ref)
        try:
            async with self._downloads:
                stored = await fetch_post_image(
                    deps.downloader,
                    deps.db,
                    deps.files,
                    post,
                    limits=limits,
                    people=deps.cfg.people,
                )
        except IngestError as exc:
            counts.failed += 1
            log.info(
                "backfill: message %s image %d not stored: %s",
                message.id,
                ref.position,
                getattr(exc, "reason", None) or type(exc).__name__,
            )
            return None
        if stored.created:
            counts.images += 1
        else:
            counts.known += 1
        return stored

    async def _reaction_votes(self, message: discord.Message, image_ids: list[int]) -> int:
        """The message's label-emoji reactions as votes of the members who reacted."""
        cap = self.deps.cfg.bot.backfill_reaction_users
        if cap <= 0 or not message.reactions:
            return 0
        reactors: list[tuple[str, int]] = []
        for reaction in message.reactions:
            label = self.emoji_labels.get(str(reaction.emoji))
            if label is None or reaction.count <= 0:
                continue
            async for user in reaction.users(limit=cap):
                if not user.bot:
                    reactors.append((label, user.id))
        if not reactors:
            return 0
        opted_out = await list_opted_out(self.deps.db, DISCORD_SOURCE, {u for _, u in reactors})
        votes = [
            (image_id, label, discord_voter(user_id))
            for label, user_id in reactors
            if str(user_id) not in opted_out
            for image_id in image_ids
        ]
        return await add_reaction_votes(self.deps.db, votes, message_id=message.id)


@app_commands.command(name="backfill", description="Store the images already posted in a channel")
@app_commands.describe(
    channel="The channel whose history to read",
    limit="Read at most this many messages this time (default: all)",
    after="Start after this message (its link or id); default: the start, or where it stopped",
)
@admin_only()
async def backfill_command(
    interaction: discord.Interaction,
    channel: discord.TextChannel | discord.Thread,
    limit: app_commands.Range[int, 1, 10_000_000] | None = None,
    after: str | None = None,
) -> None:
    """Read a channel's history (oldest first) and store its images and label reactions;
    nothing is tagged. Run it again to resume after a restart or a limit."""
    arguments = {"channel": str(channel.id), "limit": limit, "after": after}

    async def refuse(why: str) -> None:
        await audit(interaction, "backfill", arguments, outcome=f"refused: {why}")
        await interaction.response.send_message(f"Not started: {why}.", ephemeral=True)

    cog = interaction.client.get_cog("Backfill")  # type: ignore[attr-defined]
    if not isinstance(cog, Backfill):
        return await refuse("the backfill is not loaded in this bot")
    if channel.guild.id != interaction.guild_id:
        return await refuse("that channel is in another server")
    after_id = None
    if after is not None:
        after_id = parse_message_id(after)
        if after_id is None:
            return await refuse(f"{after!r} is neither a message link nor a message id")
    perms = channel.permissions_for(channel.guild.me)
    if not (perms.view_channel and perms.read_message_history):
        return await refuse(f"the bot may not read the history of {channel.mention}")
    if not cog.claim(channel.id):
        return await refuse(f"a backfill of {channel.mention} is already running")
    try:
        await interaction.response.send_message(f"Backfill of #{channel.name}: starting …")
        cursor, start_after = await cog.prepare(
            channel,
            after_id=after_id,
            started_by=f"discord:{interaction.user.id}",
            now_id=interaction.id,
        )
        resumed = cursor.messages > 0
        await audit(
            interaction,
            "backfill",
            arguments,
            outcome=f"resumed after message {start_after}" if resumed else "started",
        )
        answer = await interaction.original_response()
        progress = _Progress(interaction, channel_message(interaction, answer.id))
        cog.start(channel, cursor, after_id=start_after, limit=limit, progress=progress)
    finally:
        cog.release(channel.id)


def channel_message(
    interaction: discord.Interaction, message_id: int
) -> discord.PartialMessage | None:
    channel = interaction.channel
    if channel is None or not hasattr(channel, "get_partial_message"):
        return None
    return channel.get_partial_message(message_id)  # type: ignore[union-attr]


TAGGER.add_command(backfill_command, override=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Backfill(bot, bot.deps))  # type: ignore[attr-defined]
