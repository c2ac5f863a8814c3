"""``/tagger review [n]``: post the images where a member's tap helps the model most.

An admin asks for ``n`` images (default 5). The bot scores the guild's stored images that no
vote has labelled yet (``store.queries.review``) with the current model - the prediction logged
for that model when there is one, else it predicts them now, in the Predictor's own threads -
by how near each is to a label decision and how flat its sender distribution is
(``classifier.active``), and posts the most uncertain ones plus a random share
(``[bot] review_random_share``, default 0.1) to ``[bot] review_channel``, or to a new thread in
the channel the command was used in. An image awaiting answers in an open review post is never
posted again. The random share is drawn with the command's interaction id as the seed.

Each review post shows the image, its current tags, one button per label and "All correct".
Tapping a label toggles the tapper's vote on it (origin ``button``): +1 if the image does not
carry the label for them, -1 if it does (their own earlier vote decides, else the current
tags). "All correct" is +1 for each current tag. The first answer marks the post answered;
other members may still vote on it. The post is rewritten with the image's current tags after
every tap. Buttons are ``DynamicItem``s whose custom_id carries the review item id, so they
keep working after a restart.

    memetag:rv:<item id>:<label>    memetag:rv-ok:<item id>
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.cogs.corrections import ImageTags, loaded_checkpoint, predicted_labels
from bot.tagger import TAGGER, admin_only, audit
from classifier.active import (
    RANDOM,
    Pick,
    Scored,
    flatness_from_top,
    pick_for_review,
    sender_flatness,
    uncertainty,
)
from store.errors import StoreError
from store.queries import review as queries
from store.queries import votes
from store.queries.predictions import insert_prediction
from store.rows import Prediction

if TYPE_CHECKING:
    from bot.deps import Deps
    from classifier.checkpoint import Checkpoint

log = logging.getLogger(__name__)

DEFAULT_N = 5
MAX_N = 25
# Images predicted afresh per review (those with no prediction by the current model); the
# rest are scored from their latest logged prediction, whichever model made it.
MAX_PREDICT = 256
MAX_LABEL_BUTTONS = 24  # five rows of five, one kept for "All correct"

_LABEL = "memetag:rv:(?P<item>[0-9]{1,18}):(?P<label>[a-z0-9_]{1,64})"
_OK = "memetag:rv-ok:(?P<item>[0-9]{1,18})"


# --- scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scoring:
    """How the current model decides: thresholds (with the guild's overrides), mode, senders."""

    version: str | None
    checkpoint: Checkpoint | None
    thresholds: Mapping[str, float]
    overrides: Mapping[str, float]

    def of(self, prediction: Prediction, senders: Sequence[float] | None) -> float:
        ckpt = self.checkpoint
        current = ckpt is not None and ckpt.version == prediction.model_version
        probs = prediction.probabilities
        if current:
            probs = {n: p for n, p in probs.items() if n in ckpt.emitted_labels}
        thresholds = {**(self.thresholds if current else {}), **self.overrides}
        flat = sender_flatness(senders) if senders is not None else None
        if flat is None and ckpt is not None and prediction.sender_probability is not None:
            flat = flatness_from_top(prediction.sender_probability, len(ckpt.senders))
        mode = ckpt.label_mode if current else "multi"
        return uncertainty(probs, thresholds, mode=mode, sender_flatness=flat).score


async def _predict_missing(
    deps: Deps,
    candidates: Sequence[queries.ReviewCandidate],
    latest: dict[int, Prediction],
) -> dict[int, list[float]]:
    """Predict (and log) candidates the current model has not predicted; returns the full
    sender distribution of each image predicted now."""
    predictor = deps.models.predictor
    version = deps.models.version
    if predictor is None or version is None:
        return {}
    todo = [
        c for c in candidates if (p := latest.get(c.image_id)) is None or p.model_version != version
    ]
    todo = todo[:MAX_PREDICT]
    if not todo:
        return {}
    paths = [deps.files.path_for(c.sha256, c.ext) for c in todo]
    results = await asyncio.to_thread(predictor.predict_files, paths)
    senders: dict[int, list[float]] = {}
    for candidate, result in zip(todo, results, strict=True):
        if not hasattr(result, "labels"):
            log.debug("review: image %s not predicted: %s", candidate.image_id, result.error)
            continue
        await insert_prediction(
            deps.db,
            candidate.image_id,
            result.model_version,
            result.labels,
            result.sender,
            result.sender_probability,
        )
        latest[candidate.image_id] = Prediction(
            candidate.image_id,
            result.model_version,
            dict(result.labels),
            result.sender,
            result.sender_probability,
            datetime.now(UTC),
        )
        senders[candidate.image_id] = list(result.sender_probabilities.values())
    return senders


def _guild_channel_ids(guild: discord.Guild | None) -> list[str]:
    if guild is None:
        return []
    return [str(c.id) for c in guild.channels] + [str(t.id) for t in guild.threads]


# --- the post -----------------------------------------------------------------------------------


def _label_text(name: str, emojis: Mapping[str, str]) -> str:
    emoji = emojis.get(name)
    text = name.replace("_", " ")
    return f"{emoji} {text}" if emoji else text


def post_text(tags: ImageTags, emojis: Mapping[str, str], *, index: int, count: int) -> str:
    """The review post: what it is, the current tags, what to do."""
    shown = tags.shown(emojis, with_sender=False)
    parts = []
    for name, p in shown.labels:
        text = _label_text(name, emojis)
        parts.append(f"{text} {round(p * 100)} %" if p is not None else text)
    current = ", ".join(parts) or "none yet"
    voted = " (from members' votes)" if tags.resolved else ""
    head = f"**Review {index}/{count}**" if count > 1 else "**Review**"
    text = (
        f"{head} — help the model with this image.\n"
        f"Current tags{voted}: {current}\n"
        "Tap each label that fits (tap again to take it back), or ✅ if the tags are right."
    )
    return f"||{text}||" if tags.spoiler else text


def build_review_view(
    item_id: int, labels: Sequence[tuple[str, str | None]], current: Sequence[str]
) -> discord.ui.View:
    """One button per label (green while the image carries it) and "All correct"."""
    view = discord.ui.View(timeout=None)
    names = [n for n, _ in labels]
    keep = set(current)
    offered = [n for n in names if n in keep]
    offered += [n for n in names if n not in keep][: max(0, MAX_LABEL_BUTTONS - len(offered))]
    emojis = dict(labels)
    for name in [n for n in names if n in offered]:
        view.add_item(ReviewLabelButton(item_id, name, emojis.get(name), on=name in keep))
    view.add_item(ReviewAllCorrectButton(item_id))
    return view


class ReviewLabelButton(discord.ui.DynamicItem[discord.ui.Button], template=_LABEL):
    """Toggle the tapper's vote on one label of a review item's image."""

    def __init__(self, item_id: int, label: str, emoji: str | None = None, *, on: bool = False):
        super().__init__(
            discord.ui.Button(
                label=label.replace("_", " "),
                emoji=emoji or None,
                style=discord.ButtonStyle.success if on else discord.ButtonStyle.secondary,
                custom_id=f"memetag:rv:{item_id}:{label}",
            )
        )
        self.item_id = item_id
        self.label_name = label

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> ReviewLabelButton:
        return cls(int(match["item"]), match["label"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog(Review.__cog_name__)
        if cog is not None:
            await cog.toggle(interaction, self.item_id, self.label_name)


class ReviewAllCorrectButton(discord.ui.DynamicItem[discord.ui.Button], template=_OK):
    """+1 for each of the image's current tags."""

    def __init__(self, item_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="All correct",
                emoji="✅",
                style=discord.ButtonStyle.primary,
                custom_id=f"memetag:rv-ok:{item_id}",
            )
        )
        self.item_id = item_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> ReviewAllCorrectButton:
        return cls(int(match["item"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog(Review.__cog_name__)
        if cog is not None:
            await cog.all_correct(interaction, self.item_id)


DYNAMIC_ITEMS = (ReviewLabelButton, ReviewAllCorrectButton)


# --- the cog ------------------------------------------------------------------------------------


class Review(commands.Cog, name="Review"):
    """The review queue's posts and their buttons."""

    def __init__(self, bot: commands.Bot, deps: Deps) -> None:
        self.bot = bot
        self.deps = deps
        self._emojis = render.label_emoji(deps.cfg)
        self._labels = [(s.name, s.emoji or None) for s in deps.cfg.labels]
        self._known = {s.name for s in deps.cfg.labels}
        self._checkpoint_for = loaded_checkpoint(deps.models)
        self._lock = asyncio.Lock()  # one review at a time picks and opens items

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*DYNAMIC_ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*DYNAMIC_ITEMS)

    # -- picking and posting ----------------------------------------------------------------------

    async def pick(
        self, guild: discord.Guild, n: int, *, seed: int
    ) -> tuple[list[Pick], dict[int, queries.ReviewCandidate]]:
        """Score the guild's unlabelled images and choose ``n`` (see ``classifier.active``);
        also returns the candidates by image id."""
        db = self.deps.db
        candidates = await queries.list_review_candidates(
            db, guild_id=str(guild.id), channel_ids=_guild_channel_ids(guild)
        )
        if not candidates:
            return [], {}
        ids = [c.image_id for c in candidates]
        latest = await votes.get_latest_predictions(db, ids)
        senders = await _predict_missing(self.deps, candidates, latest)
        predictor = self.deps.models.predictor
        checkpoint = predictor.checkpoint if predictor is not None and predictor.is_loaded else None
        scoring = _Scoring(
            version=self.deps.models.version,
            checkpoint=checkpoint,
            thresholds=dict(checkpoint.thresholds) if checkpoint else {},
            overrides=await queries.get_guild_thresholds(db, str(guild.id)),
        )
        scored = [
            Scored(i, scoring.of(latest[i], senders.get(i)) if i in latest else 0.0) for i in ids
        ]
        exclude = await queries.list_open_review_image_ids(db)
        picks = pick_for_review(
            scored,
            n,
            random_share=self.deps.cfg.bot.review_random_share,
            seed=seed,
            exclude=exclude,
        )
        return picks, {c.image_id: c for c in candidates}

    async def destination(self, interaction: discord.Interaction) -> discord.abc.Messageable | None:
        """``[bot] review_channel`` when it is a channel of this guild, else a new thread in
        the channel the command was used in (or that thread itself)."""
        configured = self.deps.cfg.bot.review_channel
        if configured:
            channel = self.bot.get_channel(int(configured))
            if channel is None:
                try:
                    channel = await self.bot.fetch_channel(int(configured))
                except discord.HTTPException:
                    channel = None
            if channel is not None and getattr(channel, "guild", None) == interaction.guild:
                return channel  # type: ignore[return-value]
            log.warning("[bot] review_channel %s is not a channel of this server", configured)
        here = interaction.channel
        if isinstance(here, discord.Thread):
            return here
        if isinstance(here, discord.TextChannel):
            name = f"memetag review {datetime.now(UTC):%Y-%m-%d %H:%M}"
            return await here.create_thread(
                name=name, type=discord.ChannelType.public_thread, auto_archive_duration=10080
            )
        return None

    async def post(
        self,
        channel: discord.abc.Messageable,
        item_id: int,
        tags: ImageTags,
        data: bytes,
        ext: str,
        *,
        index: int,
        count: int,
    ) -> discord.Message:
        filename = f"review-{item_id}.{ext}"
        file = discord.File(io.BytesIO(data), filename=filename, spoiler=tags.spoiler)
        return await channel.send(
            post_text(tags, self._emojis, index=index, count=count),
            file=file,
            view=build_review_view(item_id, self._labels, tags.current),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    async def run_review(self, interaction: discord.Interaction, n: int) -> str:
        """Pick, open and post; returns what to tell the admin."""
        guild = interaction.guild
        assert guild is not None
        db = self.deps.db
        async with self._lock:
            picks, candidates = await self.pick(guild, n, seed=interaction.id)
            if not picks:
                return (
                    "Nothing to review: every stored image of this server is labelled or "
                    "already awaiting answers."
                )
            if self.deps.models.predictor is None and not any(p.score > 0 for p in picks):
                return "No model yet: train one (`memetag train`) before asking for a review."
            channel = await self.destination(interaction)
            if channel is None:
                return "I can only post a review in a text channel or thread."
            opened = await queries.open_review_items(
                db,
                [queries.NewReviewItem(p.image_id, p.reason, p.score) for p in picks],
                guild_id=str(guild.id),
                channel_id=str(channel.id),
            )
        posted, failed = 0, []
        count = len(opened)
        for index, pick in enumerate([p for p in picks if p.image_id in opened], start=1):
            item_id = opened[pick.image_id]
            candidate = candidates.get(pick.image_id)
            try:
                if candidate is None:
                    raise FileNotFoundError(f"image {pick.image_id} is no longer stored")
                path = self.deps.files.path_for(candidate.sha256, candidate.ext)
                data = await asyncio.to_thread(path.read_bytes)
                tags = await self.image_tags(
                    pick.image_id, spoiler=candidate.spoiler, guild_id=str(guild.id)
                )
                message = await self.post(
                    channel, item_id, tags, data, candidate.ext, index=index, count=count
                )
            except (OSError, discord.HTTPException) as exc:
                log.warning("review item %s not posted: %s", item_id, exc)
                failed.append(item_id)
                continue
            await queries.set_review_message(
                db, item_id, channel_id=str(channel.id), message_id=str(message.id)
            )
            posted += 1
        await queries.close_review_items(db, failed)
        randoms = sum(1 for p in picks if p.image_id in opened and p.reason == RANDOM)
        where = getattr(channel, "mention", "the review channel")
        text = (
            f"Posted {posted} image{'s' if posted != 1 else ''} for review in {where}: "
            f"{posted - randoms if posted else 0} where the model is least sure"
            f"{f', {randoms} at random' if randoms else ''}."
        )
        if failed:
            text += f" {len(failed)} could not be posted (see the bot's log)."
        return text

    # -- answers ----------------------------------------------------------------------------------

    async def image_tags(
        self, image_id: int, *, spoiler: bool = False, guild_id: str | None = None
    ) -> ImageTags:
        """The image's model tags (under the guild's threshold overrides) and members' net
        votes, as the corrections cog reads them."""
        predictions = await votes.get_latest_predictions(self.deps.db, [image_id])
        overrides = await queries.get_guild_thresholds(self.deps.db, guild_id) if guild_id else {}
        nets = await votes.list_net_votes(self.deps.db, [image_id])
        prediction = predictions.get(image_id)
        predicted: tuple[str, ...] = ()
        if prediction is not None:
            checkpoint = self._checkpoint_for(prediction.model_version)
            predicted = tuple(predicted_labels(prediction, checkpoint, overrides))
        return ImageTags(
            image_id=image_id,
            position=0,
            spoiler=spoiler,
            predicted=predicted,
            probabilities=prediction.probabilities if prediction else {},
            net=nets.get(image_id, {}),
        )

    async def _answered(
        self, interaction: discord.Interaction, item: queries.ReviewItem, said: str
    ) -> None:
        """Mark the item answered, rewrite the post with the current tags, thank the member."""
        await queries.mark_review_answered(self.deps.db, item.id)
        spoiler = bool(
            interaction.message and any(a.is_spoiler() for a in interaction.message.attachments)
        )
        tags = await self.image_tags(item.image_id, spoiler=spoiler, guild_id=item.guild_id)
        text = post_text(tags, self._emojis, **_index_of(interaction.message))
        await interaction.response.edit_message(
            content=text, view=build_review_view(item.id, self._labels, tags.current)
        )
        await interaction.followup.send(said, ephemeral=True)

    async def _item(
        self, interaction: discord.Interaction, item_id: int
    ) -> queries.ReviewItem | None:
        item = await queries.get_review_item(self.deps.db, item_id)
        if item is None:
            await interaction.response.send_message(
                "This review post is no longer known (its image was deleted).", ephemeral=True
            )
        return item

    async def toggle(self, interaction: discord.Interaction, item_id: int, label: str) -> None:
        """A label button: flip the tapper's vote on it."""
        if label not in self._known:
            await interaction.response.send_message(
                f"The label {label!r} is not configured any more.", ephemeral=True
            )
            return
        try:
            item = await self._item(interaction, item_id)
            if item is None:
                return
            voter = votes.discord_voter(interaction.user.id)
            mine = (await votes.list_member_votes(self.deps.db, [item.image_id], voter))[
                item.image_id
            ].get(label)
            if mine is not None:
                vote = -mine
            else:
                tags = await self.image_tags(item.image_id, guild_id=item.guild_id)
                vote = -1 if label in tags.current else 1
            await self._cast(interaction, item, [votes.CastVote(item.image_id, label, vote)], voter)
        except StoreError as exc:
            await self._not_saved(interaction, exc)
            return
        text = _label_text(label, self._emojis)
        said = f"✓ Noted: {text}." if vote > 0 else f"✓ Noted: not {text}."
        await self._answered(interaction, item, said)

    async def _cast(
        self,
        interaction: discord.Interaction,
        item: queries.ReviewItem,
        cast: list[votes.CastVote],
        voter: str,
    ) -> None:
        """Store a review post's button votes (raises StoreError)."""
        await votes.cast_votes(
            self.deps.db,
            cast,
            voter=voter,
            origin="button",
            message_id=interaction.message.id if interaction.message else item.message_id,
        )

    @staticmethod
    async def _not_saved(interaction: discord.Interaction, exc: StoreError) -> None:
        log.warning("review vote not stored: %s", exc)
        await interaction.response.send_message(
            "Sorry, I couldn't save that just now; please try again in a minute.", ephemeral=True
        )

    async def all_correct(self, interaction: discord.Interaction, item_id: int) -> None:
        """ "All correct": +1 for each current tag."""
        try:
            item = await self._item(interaction, item_id)
            if item is None:
                return
            tags = await self.image_tags(item.image_id, guild_id=item.guild_id)
            current = [n for n in tags.current if n in self._known]
            if not current:
                await interaction.response.send_message(
                    "This image has no tags yet: tap the labels that fit.", ephemeral=True
                )
                return
            await self._cast(
                interaction,
                item,
                [votes.CastVote(item.image_id, n, 1) for n in current],
                votes.discord_voter(interaction.user.id),
            )
        except StoreError as exc:
            await self._not_saved(interaction, exc)
            return
        names = ", ".join(_label_text(n, self._emojis) for n in current)
        await self._answered(interaction, item, f"✓ Thanks — noted: {names}.")


def _index_of(message: discord.Message | None) -> dict[str, int]:
    """The "Review i/n" numbering of a post, read back from its text."""
    found = re.search(r"Review (\d+)/(\d+)", message.content if message else "")
    if found is None:
        return {"index": 1, "count": 1}
    return {"index": int(found[1]), "count": int(found[2])}


# --- the command --------------------------------------------------------------------------------


@app_commands.command(
    name="review", description="Post the images where a member's tap helps the model most"
)
@app_commands.describe(n=f"how many images to post (1-{MAX_N}, default {DEFAULT_N})")
@admin_only()
async def review_command(
    interaction: discord.Interaction, n: app_commands.Range[int, 1, MAX_N] = DEFAULT_N
) -> None:
    """Post the n images the model is least sure about (plus a few at random) for members to
    label with one tap each: to [bot] review_channel, or a new thread here."""
    cog = interaction.client.get_cog(Review.__cog_name__)
    if cog is None:
        await interaction.response.send_message("Review is not available now.", ephemeral=True)
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        text = await cog.run_review(interaction, n)
    except Exception as exc:
        await audit(interaction, "review", {"n": n}, outcome=f"failed: {type(exc).__name__}")
        raise
    await audit(interaction, "review", {"n": n}, outcome="ok")
    await interaction.followup.send(text, ephemeral=True)


# Registered at import; a second import (another bot in the process) replaces it.
TAGGER.add_command(review_command, override=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Review(bot, bot.deps))  # type: ignore[attr-defined]
