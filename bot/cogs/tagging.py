"""Live tagging: every image posted in a watched channel is stored, predicted and shown.

The gateway handler only finds the message's images (no I/O) and offers the message to the
bounded work queue (``bot.queue``); a worker downloads each image through the shared
downloader, predicts it, stores it (the same checks and rows as ingest, committed) and only
then shows the tags: a tag shown is a post committed. The workers' checked images are
committed together (``bot.batching``): one image at rest alone and at once, a burst's images
several per transaction. The prediction log, the live sender guess and the message -> images
links are written after the tag, in one transaction for the messages tagged meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import discord
from discord.ext import commands, tasks

from bot.baselines import BaselineTally
from bot.batching import Batcher
from bot.deps import Deps
from bot.labels import decide
from bot.queue import WorkQueue
from bot.render import ShownImage, label_emoji, reaction_emojis, reply_text
from bot.views import HANDLER_COG, build_reply_view
from ingest.errors import IngestError
from memetag.services.media import (
    DISCORD_SOURCE,
    ImageInfo,
    SharedCheck,
    StoredPost,
    discord_post,
    store_checked_posts,
)
from store.queries.admin import list_channel_settings, list_guild_thresholds
from store.queries.bot import (
    LiveGuess,
    NewTaggedMessage,
    TaggedImage,
    get_message_state,
    get_post_authors,
    get_reply_id,
    list_bot_channels,
    list_tagged_image_ids,
    record_tagged_messages,
    sync_config_channels,
)
from store.queries.privacy import forget_message
from store.queries.votes import get_tagged_message
from store.rows import NewPost, NewPrediction

log = logging.getLogger(__name__)

# Plain links that may be images: sniffing decides, the extension only spares fetching pages.
_LINK = re.compile(
    r"(?<![<\w])(https?://[^\s<>|]+?\.(?:png|jpe?g|gif|webp|bmp|avif)(?:\?[^\s<>|]*)?)(?=[\s>|)]|$)",
    re.I,
)
_REMEMBERED = 20_000  # (message, position) pairs remembered as taken, and deleted message ids
_TIMINGS = 10_000
_COMMIT_AT_MOST = 64  # checked images committed in one go
_USER_MESSAGES = (discord.MessageType.default, discord.MessageType.reply)
_REPLIES_REMEMBERED = 1000  # messages whose reply id is kept in memory


@dataclass(frozen=True)
class ImageRef:
    """One image of a message, numbered as ``ingest discord-export`` numbers them."""

    position: int
    url: str
    fallback_urls: tuple[str, ...] = ()
    media_hint: str = "attachment"
    spoiler: bool = False
    size: int | None = None


@dataclass
class TagOutcome:
    """What happened to one image (for logs, tests and the benchmark)."""

    ref: ImageRef
    stored: StoredPost | None = None
    result: object | None = None  # classifier.predictor.Result
    error: str | None = None


@dataclass(frozen=True)
class _Record:
    """What is written of one tagged message after its tag (``Tagging._write_records``)."""

    message: NewTaggedMessage
    predicted: Sequence[TagOutcome]  # its stored images that the model predicted
    posted_at: datetime


@dataclass
class TaggingStats:
    messages: int = 0
    images_stored: int = 0
    images_rejected: int = 0
    images_predicted: int = 0
    tags_shown: int = 0
    deleted_before_tag: int = 0
    # Seconds from the worker picking a message up to its tag, and for the parts of it
    # (the most recent ones, for status and the benchmark).
    tag_s: deque[float] = field(default_factory=lambda: deque(maxlen=_TIMINGS))
    store_s: deque[float] = field(default_factory=lambda: deque(maxlen=_TIMINGS))
    predict_s: deque[float] = field(default_factory=lambda: deque(maxlen=_TIMINGS))


def find_images(message: discord.Message, limit: int) -> list[ImageRef]:
    """The message's possible images, best source first, at most ``limit``.

    Every attachment is a candidate whatever its name or type (the bytes decide), then each
    embed's image (its thumbnail when it has none: Tenor/Giphy GIF embeds carry a still there),
    then plain image links no embed covers yet. Positions follow the export parser: every
    attachment counts, then each embed image.
    """
    refs: list[ImageRef] = []
    for n, attachment in enumerate(message.attachments):
        refs.append(
            ImageRef(
                n,
                attachment.url,
                (attachment.proxy_url,) if attachment.proxy_url != attachment.url else (),
                "attachment",
                attachment.is_spoiler(),
                attachment.size,
            )
        )
    n = len(message.attachments)
    covered: set[str] = set()
    for embed in message.embeds:
        for url in (embed.url, embed.image.url, embed.thumbnail.url, embed.video.url):
            if url:
                covered.add(url)
        picked = embed.image if embed.image.url else embed.thumbnail
        if picked.url:
            proxy = picked.proxy_url
            fallback = (proxy,) if proxy and proxy != picked.url else ()
            refs.append(ImageRef(n, picked.url, fallback, "embed"))
            n += 1
    spoilered = _spoiler_spans(message.content)
    for match in _LINK.finditer(message.content or ""):
        url = match.group(1)
        if url in covered:
            continue
        covered.add(url)
        spoiler = any(a <= match.start() < b for a, b in spoilered)
        refs.append(ImageRef(n, url, (), "embed", spoiler))
        n += 1
    return refs[:limit]


def _spoiler_spans(text: str | None) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\|\|.+?\|\|", text or "", re.S)]


class _Remembered:
    """A bounded set (oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[object, None] = OrderedDict()
        self._size = size

    def add(self, item: object) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def discard(self, item: object) -> None:
        self._items.pop(item, None)

    def __contains__(self, item: object) -> bool:
        return item in self._items


class Tagging(commands.Cog):
    """Tags images in watched channels (react, reply or silent) and logs every prediction."""

    def __init__(self, bot: commands.Bot, deps: Deps) -> None:
        self.bot = bot
        self.deps = deps
        cfg = deps.cfg.bot
        self.settings = cfg
        self.queue = WorkQueue(
            maxsize=cfg.queue_size,
            workers=cfg.workers,
            per_key=cfg.channel_workers,
            name="memetag-tag",
        )
        self.commits: Batcher[tuple[NewPost, ImageInfo, bytes], StoredPost] = Batcher(
            self._commit,
            max_items=_COMMIT_AT_MOST,
            key=lambda item: (item[0].source, item[0].source_id),
            name="memetag-commit",
        )
        # What is written after the tag, of the messages tagged meanwhile: one transaction.
        self.records: Batcher[_Record, None] = Batcher(
            self._write_records,
            max_items=_COMMIT_AT_MOST,
            key=lambda record: record.message.message_id,
            name="memetag-record",
        )
        self.emojis = label_emoji(deps.cfg)
        self.modes: dict[str, str] = dict(cfg.channels)
        self.disabled: set[str] = set()  # channels an admin switched off (/tagger channel)
        # guild id -> label -> threshold (/tagger threshold), applied after each prediction
        self.thresholds: dict[str, dict[str, float]] = {}
        self.stats = TaggingStats()
        self.baselines = BaselineTally(deps.db)
        self._taken = _Remembered(_REMEMBERED)
        self._deleted = _Remembered(_REMEMBERED)
        # message -> the reply made to it by this process (its row may not be written yet)
        self._replies: OrderedDict[int, str] = OrderedDict()
        self._forbidden_logged: set[int] = set()
        self.model_poll.change_interval(seconds=cfg.model_poll_s)

    # -- lifecycle ---------------------------------------------------------------------------

    async def cog_load(self) -> None:
        await sync_config_channels(self.deps.db, self.settings.channels)
        await self.reload_channels()
        await self.reload_thresholds()
        self.queue.start()
        self.model_poll.start()

    async def cog_unload(self) -> None:
        self.model_poll.cancel()
        await self.queue.close(0)
        await self.commits.close()
        await self.records.close()

    async def drain(self, timeout: float) -> bool:
        """Stop taking messages and finish the queued ones within ``timeout`` seconds."""
        self.model_poll.cancel()
        drained = await self.queue.close(timeout)
        await self.commits.close()
        await self.records.close()
        return drained

    async def reload_channels(self) -> None:
        """Re-read the watched channels from the store (config rows and admin commands)."""
        rows = await list_bot_channels(self.deps.db)
        self.modes = {row.channel_id: row.mode for row in rows}
        settings = await list_channel_settings(self.deps.db)
        self.disabled = {row.channel_id for row in settings if not row.enabled}

    async def reload_thresholds(self) -> None:
        """Re-read the per-guild threshold overrides (``/tagger threshold``)."""
        self.thresholds = await list_guild_thresholds(self.deps.db)

    @tasks.loop(seconds=30)
    async def model_poll(self) -> None:
        try:
            await self.deps.models.refresh()
        except Exception:  # noqa: BLE001 - a store hiccup must not end the loop
            log.warning("could not check for a new model", exc_info=True)

    @model_poll.before_loop
    async def _first_poll_later(self) -> None:
        # open_deps already loaded the current model; the first check is one interval later.
        await asyncio.sleep(self.settings.model_poll_s)

    # -- which messages -------------------------------------------------------------------------

    def mode_for(self, channel: discord.abc.MessageableChannel) -> str | None:
        """The channel's mode (a thread inherits its parent's), or None when not watched."""
        for key in (channel.id, getattr(channel, "parent_id", None)):
            if key is not None and str(key) in self.disabled:
                return None
            if key is not None and str(key) in self.modes:
                return self.modes[str(key)]
        default = self.settings.default_mode
        return None if default == "off" else default

    def _wanted(self, message: discord.Message) -> str | None:
        if message.guild is None or message.type not in _USER_MESSAGES:
            return None
        me = self.bot.user
        if me is not None and message.author.id == me.id:
            if self.settings.ignore_self:
                return None
        elif (message.author.bot or message.webhook_id) and self.settings.ignore_bots:
            return None
        return self.mode_for(message.channel)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        self.consider(message)

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        # An edit (or Discord unfurling a link) may add an image; known ones are skipped.
        self.consider(payload.message)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self._deleted.add(payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:
            self._deleted.add(message_id)

    def consider(self, message: discord.Message) -> bool:
        """Queue the message's new images for tagging; never waits. True if queued."""
        mode = self._wanted(message)
        if mode is None:
            return False
        refs = [
            r
            for r in find_images(message, self.settings.max_images_per_message)
            if (message.id, r.position) not in self._taken
        ]
        if not refs:
            return False
        for ref in refs:
            self._taken.add((message.id, ref.position))
        queued = self.queue.offer(
            f"message {message.id}",
            lambda: self._process(message, refs, mode),
            key=message.channel.id,  # fair between channels (bot.queue)
        )
        if not queued:
            for ref in refs:  # a later edit or replay may try again
                self._taken.discard((message.id, ref.position))
        return queued

    # -- the work -------------------------------------------------------------------------------

    async def _process(self, message: discord.Message, refs: Sequence[ImageRef], mode: str) -> None:
        started = time.perf_counter()
        self.stats.messages += 1
        db = self.deps.db
        state = await get_message_state(db, str(message.id), DISCORD_SOURCE, message.author.id)
        done = {image.position for image in state.tagged}
        refs = [r for r in refs if r.position not in done]
        if not refs or message.id in self._deleted:
            return
        # A member who opted out (/tagger optout): nothing of theirs is downloaded or stored.
        if state.author_opted_out:
            return
        outcomes = await asyncio.gather(*(self._one(message, ref) for ref in refs))
        for outcome in outcomes:
            if outcome.error:
                self.stats.images_rejected += outcome.stored is None
                log.info(
                    "message %s in #%s, image %d: %s",
                    message.id,
                    getattr(message.channel, "name", message.channel.id),
                    outcome.ref.position,
                    outcome.error,
                )
        stored = [o for o in outcomes if o.stored is not None]
        if not stored:
            return
        # Reposts inside one message (an image link and the embed Discord made of it later)
        # are one image: shown once.
        seen_images = await list_tagged_image_ids(db, str(message.id)) if done else set()
        shown: list[TagOutcome] = []
        for outcome in stored:
            if outcome.stored.image_id not in seen_images:
                seen_images.add(outcome.stored.image_id)
                shown.append(outcome)
        reply_id: str | None = None
        recorded = False
        predicted = [o for o in shown if o.result is not None]
        if message.id in self._deleted:
            self.stats.deleted_before_tag += 1
            log.info("message %s was deleted before it was tagged", message.id)
        elif (
            predicted and mode == "reply" and (earlier := await self._earlier_reply(message, done))
        ):
            # An edit added images to a message the bot replied to (in this process or before a
            # restart): its one reply is rewritten from the store, with every image and the
            # members' corrections, so the new images are recorded first.
            await self._record(message, stored, earlier)
            recorded = True
            if await self._rewrite_reply(message):
                self.stats.tags_shown += 1
                self.stats.tag_s.append(time.perf_counter() - started)
        elif predicted and mode != "silent":
            reply_id = await self._show(message, predicted, mode)
            self.stats.tag_s.append(time.perf_counter() - started)
        if message.id not in self._deleted and not recorded:
            await self._record(message, stored, reply_id)
        if message.id in self._deleted:
            # Deleted while its images were being stored: they go with it (bot.cogs.privacy
            # forgets what was stored when the delete arrived).
            await forget_message(db, self.deps.files, source=DISCORD_SOURCE, message_id=message.id)

    async def _one(self, message: discord.Message, ref: ImageRef) -> TagOutcome:
        deps = self.deps
        limits = deps.cfg.ingest
        outcome = TagOutcome(ref)
        if ref.size is not None and ref.size > limits.max_bytes:
            outcome.error = f"too_large: {ref.size} bytes > the {limits.max_bytes}-byte limit"
            return outcome
        try:
            data = await deps.downloader.fetch(
                ref.url, must_be_image=True, fallback_urls=ref.fallback_urls
            )
        except IngestError as exc:
            outcome.error = _reason(exc)
            return outcome
        post = live_post(message, ref)
        # Predict, then store and commit, then (in the caller) tag: a tag shown is a post
        # committed. Measured on 2 cores with the default model and 1 MP JPEGs, the store
        # (checks, fsync'd file, commit) added ~15 ms after the prediction; running the two at
        # once was slower (p95 106 ms against 86 ms), as the store's decode competed with the
        # model for the same cores. The store's check now reuses the model's decode.
        check = SharedCheck(data, limits=deps.cfg.ingest)
        predictor = deps.models.predictor if deps.models.ready else None
        if predictor is not None:
            try:
                outcome.result = await self._predict(predictor, data, check)
                self.stats.images_predicted += 1
                overrides = self.thresholds.get(str(message.guild.id)) if message.guild else None
                if overrides:
                    outcome.result = decide_labels(outcome.result, overrides, predictor)
            except Exception as exc:  # noqa: BLE001 - the store's checks give the reason
                log.debug("message %s image %d not predicted: %s", message.id, ref.position, exc)
        try:
            outcome.stored = await self._store(post, data, check)
        except IngestError as exc:
            outcome.error = _reason(exc)
            outcome.result = None
            return outcome
        if predictor is not None and outcome.result is None:
            outcome.error = "stored, but the model could not read it"
        return outcome

    async def _store(self, post: NewPost, data: bytes, check: SharedCheck) -> StoredPost:
        """``memetag.services.media.store_fetched_image``, the commit shared with other workers."""
        t0 = time.perf_counter()
        info = await check.result(post)
        stored = await self.commits.submit((post, info, data))
        self.stats.store_s.append(time.perf_counter() - t0)
        self.stats.images_stored += 1
        return stored

    async def _commit(self, items: list[tuple[NewPost, ImageInfo, bytes]]) -> list[StoredPost]:
        deps = self.deps
        return await store_checked_posts(deps.db, deps.files, items, people=deps.cfg.people)

    async def _predict(self, predictor, data: bytes, check: SharedCheck):
        t0 = time.perf_counter()
        result = await predictor.predict(data, on_decoded=check)
        self.stats.predict_s.append(time.perf_counter() - t0)
        return result

    def _shown_image(self, outcome: TagOutcome) -> ShownImage:
        result = outcome.result
        labels = [(name, result.labels.get(name, 0.0)) for name in result.predicted]
        sender = result.sender if self.settings.sender_in_reply else None
        return ShownImage(
            labels=labels,
            sender=sender,
            sender_probability=result.sender_probability if sender else None,
            candidates=tuple((c.name, c.probability) for c in result.sender_candidates),
            spoiler=outcome.ref.spoiler,
            emojis=self.emojis,
        )

    async def _show(
        self, message: discord.Message, outcomes: Sequence[TagOutcome], mode: str
    ) -> str | None:
        """React or reply; returns the reply's id. Discord errors are logged, never raised."""
        try:
            if mode == "react":
                labels = [
                    (name, o.result.labels.get(name, 0.0))
                    for o in outcomes
                    for name in o.result.predicted
                ]
                for emoji in reaction_emojis(labels, self.emojis, self.settings.max_reactions):
                    await message.add_reaction(emoji)
                self.stats.tags_shown += 1
                return None
            items = [self._shown_image(o) for o in outcomes]
            reply = await message.reply(
                reply_text(items),
                mention_author=False,
                allowed_mentions=discord.AllowedMentions.none(),
                view=build_reply_view(message.id),  # "Tags are right" and "Fix tags"
            )
            reply_id = str(reply.id)
            self._replies[message.id] = reply_id
            while len(self._replies) > _REPLIES_REMEMBERED:
                self._replies.popitem(last=False)
            self.stats.tags_shown += 1
            return reply_id
        except discord.NotFound:
            self.stats.deleted_before_tag += 1
            log.info("message %s was deleted before it was tagged", message.id)
        except discord.Forbidden as exc:
            channel = message.channel.id
            if channel not in self._forbidden_logged:
                self._forbidden_logged.add(channel)
                log.warning(
                    "cannot %s in channel %s (%s): give the bot the permission or set the "
                    "channel to silent",
                    "react" if mode == "react" else "reply",
                    channel,
                    exc.text,
                )
        except discord.HTTPException as exc:
            log.warning("could not tag message %s: %s %s", message.id, exc.status, exc.text)
        return None

    async def _earlier_reply(self, message: discord.Message, done: set[int]) -> str | None:
        """The reply the bot already made to this message, if it made one."""
        if message.id in self._replies:
            return self._replies[message.id]
        return await get_reply_id(self.deps.db, str(message.id)) if done else None

    async def _rewrite_reply(self, message: discord.Message) -> bool:
        """Rewrite the message's reply from the store (``bot.cogs.corrections``, which also
        shows the members' corrections); False when there is nothing to rewrite it with."""
        corrections = self.bot.get_cog(HANDLER_COG)
        tagged = await get_tagged_message(self.deps.db, message.id)
        if corrections is None or tagged is None:
            log.warning("message %s: its reply was not rewritten (no corrections cog)", message.id)
            return False
        await corrections.refresh_reply(tagged, corrected=None)
        return True

    async def _record(
        self, message: discord.Message, stored: Sequence[TagOutcome], reply_id: str | None
    ) -> None:
        """The slow part, after the tag: links, prediction log and live sender guesses, written
        with those of the other messages tagged meanwhile."""
        tagged = NewTaggedMessage(
            message_id=str(message.id),
            channel_id=str(message.channel.id),
            guild_id=str(message.guild.id) if message.guild else None,
            author_ref=str(message.author.id),
            images=[TaggedImage(o.ref.position, o.stored.post_id, o.ref.spoiler) for o in stored],
            reply_id=reply_id,
        )
        predicted = [o for o in stored if o.result is not None]
        await self.records.submit(_Record(tagged, predicted, message.created_at))

    async def _write_records(self, records: list[_Record]) -> list[None]:
        db = self.deps.db
        post_ids = [o.stored.post_id for record in records for o in record.predicted]
        authors = await get_post_authors(db, post_ids) if post_ids else {}
        now = datetime.now(UTC)
        predictions: list[NewPrediction] = []
        guesses: list[LiveGuess] = []
        for record in records:
            for outcome in record.predicted:
                result, post_id = outcome.result, outcome.stored.post_id
                author = authors.get(post_id)
                predictions.append(
                    NewPrediction(
                        outcome.stored.image_id,
                        result.model_version,
                        result.labels,
                        result.sender,
                        result.sender_probability,
                    )
                )
                guesses.append(
                    LiveGuess(
                        post_id=post_id,
                        guild_id=record.message.guild_id,
                        model_version=result.model_version,
                        guess=result.sender,
                        guess_probability=result.sender_probability,
                        author=author,
                        baselines=await self.baselines.guess(
                            post_id, author, record.posted_at, now
                        ),
                    )
                )
        await record_tagged_messages(
            db, [r.message for r in records], predictions=predictions, guesses=guesses, now=now
        )
        return [None] * len(records)


def decide_labels(result, overrides: dict[str, float], predictor):
    """``result`` with its labels decided again under a guild's threshold overrides.

    As the model decides (classifier.labelhead.predict_label_sets): multi-label shows every
    label at or over its threshold and at least the most probable one, exclusive only the
    most probable one; an overridden label is shown only at or over its override, even as
    the "at least one".
    """
    ckpt = predictor.checkpoint if predictor.is_loaded else None
    same = ckpt is not None and ckpt.version == result.model_version
    picked = decide(
        result.labels,
        ckpt.thresholds if same else {},
        exclusive=same and ckpt.label_mode == "exclusive",
        overrides=overrides,
    )
    return dataclasses.replace(result, predicted=picked)


def _reason(exc: IngestError) -> str:
    reason = getattr(exc, "reason", None) or type(exc).__name__
    detail = getattr(exc, "detail", None) or str(exc)
    return f"{reason}: {detail}"


def live_post(message: discord.Message, ref: ImageRef) -> NewPost:
    """The post for the image ``ref`` of a Discord message, as ``ingest discord-export`` would
    record it (same source id): used for live images and the backfill alike."""
    return discord_post(
        message_id=message.id,
        position=ref.position,
        channel_id=message.channel.id,
        author_id=message.author.id,
        author_name=message.author.display_name,
        posted_at=message.created_at,
        url=ref.url,
        conversation_name=_conversation_name(message),
        media_hint=ref.media_hint,
        must_sniff=ref.media_hint != "attachment",
        fallback_urls=ref.fallback_urls,
    )


def _conversation_name(message: discord.Message) -> str | None:
    guild = message.guild.name if message.guild else None
    channel = getattr(message.channel, "name", None)
    return " / ".join(n for n in (guild, channel) if n) or None


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Tagging(bot, bot.deps))
