"""Members correct the bot's tags, and every correction is a training label.

Gestures (each one logged in ``vote_events``; ``label_votes`` keeps each member's latest):

- a label's emoji added to a tagged image message, or to the bot's reply to it: +1 for that label
  on the message's images (origin ``reaction``); taking it off withdraws that vote (only a vote a
  reaction made, and not while the same reaction stays on the other of the two messages);
- "✅ Tags are right" (under the reply, or in the picker): +1 for each tag shown (``button``);
- "Fix tags" (the reply's button, or Apps → Fix tags on any message, in every channel mode):
  an ephemeral picker, one select per image ticked with its current tags; closing a select
  records +1 for each ticked label and -1 for each predicted or previously ticked label the
  member left unticked (``button``).

Votes resolve into labels as training resolves them (classifier.dataset.resolve_label_votes):
net > 0 positive, < 0 negative, a tie unknown. After a correction the bot's reply (reply mode)
is rewritten with the image's current tags and a ✓. Raw reaction events are used, so messages
out of the client's cache count too; reactions on messages the bot never stored are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import discord
import numpy as np
from discord import app_commands
from discord.ext import commands
from discord.utils import MISSING

from bot import render
from bot.labels import decide
from bot.views import (
    DYNAMIC_ITEMS,
    HANDLER_COG,
    MAX_PICKERS,
    LabelChoice,
    PickerImage,
    build_picker_view,
)
from classifier.labelhead import predict_label_sets
from memetag.config import AppConfig
from store.db import Database
from store.errors import StoreError
from store.queries import votes
from store.queries.review import get_guild_thresholds
from store.rows import Prediction

if TYPE_CHECKING:
    from bot.deps import ModelHolder
    from classifier.checkpoint import Checkpoint

log = logging.getLogger(__name__)

FIX_TAGS = "Fix tags"
# Discord drops an interaction not answered within 3 s: past this, defer and answer when ready.
ANSWER_WITHIN_S = 1.5
_REPLY_CACHE = 2048  # replies whose last rewritten text is remembered (skip identical edits)

CheckpointFor = Callable[[str], "Checkpoint | None"]


def predicted_labels(
    prediction: Prediction,
    checkpoint: Checkpoint | None = None,
    overrides: Mapping[str, float] | None = None,
) -> list[str]:
    """The labels the model gave an image, most probable first.

    With the checkpoint that made the prediction, exactly as the Predictor decides (its label
    mode and per-label thresholds); without it (a model since replaced), every label at or
    over 0.5, and at least the most probable one. With the guild's threshold ``overrides``, as
    the tag the bot posted there decided (``bot.labels.decide``).
    """
    probs = prediction.probabilities
    same = checkpoint is not None and checkpoint.version == prediction.model_version
    if overrides:
        emitted = checkpoint.emitted_labels if same and checkpoint else list(probs)
        return decide(
            {n: probs[n] for n in emitted if n in probs},
            checkpoint.thresholds if same and checkpoint else {},
            exclusive=bool(same and checkpoint and checkpoint.label_mode == "exclusive"),
            overrides=overrides,
        )
    if checkpoint is not None and checkpoint.version == prediction.model_version:
        names = [n for n in checkpoint.emitted_labels if n in probs]
        if names:
            chosen = predict_label_sets(
                np.array([[probs[n] for n in names]]),
                checkpoint.label_mode,
                np.array([float(checkpoint.thresholds.get(n, 0.5)) for n in names]),
                np.ones(len(names), bool),
            )[0]
            picked = [n for n, keep in zip(names, chosen, strict=True) if keep]
            return sorted(picked, key=lambda n: -probs[n])
    ranked = sorted(probs, key=lambda n: -probs[n])
    over = [n for n in ranked if probs[n] >= 0.5]
    return over or ranked[:1]


@dataclass(frozen=True)
class ImageTags:
    """One tagged image: what the model said and what the votes say now."""

    image_id: int
    position: int
    spoiler: bool
    predicted: tuple[str, ...] = ()
    probabilities: Mapping[str, float] = field(default_factory=dict)
    net: Mapping[str, int] = field(default_factory=dict)
    sender: str | None = None
    sender_probability: float | None = None

    @property
    def resolved(self) -> list[str]:
        """Labels with net votes > 0: what training takes as this image's positives."""
        order = {name: i for i, name in enumerate(self.predicted)}
        positives = [name for name, net in self.net.items() if net > 0]
        return sorted(positives, key=lambda n: (order.get(n, len(order)), n))

    @property
    def current(self) -> list[str]:
        """The image's tags now: the resolved labels if any; else the model's, less those the
        members voted down."""
        return self.resolved or [n for n in self.predicted if self.net.get(n, 0) >= 0]

    def shown(self, emojis: Mapping[str, str], with_sender: bool) -> render.ShownImage:
        resolved = self.resolved
        labels: list[tuple[str, float | None]] = (
            [(n, None) for n in resolved]
            if resolved
            else [(n, self.probabilities.get(n)) for n in self.current]
        )
        return render.ShownImage(
            labels=labels,
            sender=self.sender if with_sender else None,
            sender_probability=self.sender_probability if with_sender else None,
            spoiler=self.spoiler,
            emojis=emojis,
        )


class _KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[object, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


class Corrections(commands.Cog, name=HANDLER_COG):
    """Reactions, "Tags are right" and "Fix tags" become label votes."""

    def __init__(
        self,
        bot: commands.Bot,
        *,
        db: Database,
        cfg: AppConfig,
        checkpoint_for: CheckpointFor | None = None,
    ) -> None:
        self.bot = bot
        self.db = db
        self.cfg = cfg
        self._checkpoint_for = checkpoint_for or (lambda version: None)
        self._emojis = render.label_emoji(cfg)
        self._emoji_labels = render.emoji_label(cfg)
        self._choices = [LabelChoice(s.name, s.emoji, s.description) for s in cfg.labels]
        self._known = {s.name for s in cfg.labels}
        self._with_sender = getattr(getattr(cfg, "bot", None), "sender_in_reply", True)
        self._member_locks = _KeyedLocks()
        self._reply_locks = _KeyedLocks()
        self._last_reply: dict[str, str] = {}
        self.answer_within_s = ANSWER_WITHIN_S
        self._menu = app_commands.ContextMenu(
            name=FIX_TAGS,
            callback=self.fix_tags_menu,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
        )

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*DYNAMIC_ITEMS)
        self.bot.tree.add_command(self._menu)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*DYNAMIC_ITEMS)
        self.bot.tree.remove_command(self._menu.name, type=self._menu.type)

    # -- reactions ------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=False)

    def _is_bot(self, payload: discord.RawReactionActionEvent) -> bool:
        me = self.bot.user
        if me is not None and payload.user_id == me.id:
            return True
        if payload.member is not None:
            return payload.member.bot
        user = self.bot.get_user(payload.user_id)
        return user is not None and user.bot

    async def _reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        if payload.guild_id is None or self._is_bot(payload):
            return
        label = self._emoji_labels.get(str(payload.emoji))
        if label is None:
            return
        voter = votes.discord_voter(payload.user_id)
        try:
            # One member's gestures are applied in the order they arrived: add, remove, add.
            async with self._member_locks.hold(payload.user_id):
                tagged = await votes.get_tagged_message(self.db, payload.message_id)
                if tagged is None or not tagged.image_ids:
                    log.debug(
                        "reaction on message %s, which the bot did not tag", payload.message_id
                    )
                    return
                if added:
                    await votes.cast_votes(
                        self.db,
                        [votes.CastVote(i, label, 1) for i in tagged.image_ids],
                        voter=voter,
                        origin="reaction",
                        message_id=payload.message_id,
                    )
                else:
                    await votes.withdraw_reaction_votes(
                        self.db,
                        tagged.image_ids,
                        label,
                        voter=voter,
                        message_id=payload.message_id,
                        still_reacting_on=tagged.message_ids,
                    )
        except StoreError as exc:
            log.warning("reaction vote on message %s not stored: %s", payload.message_id, exc)
            return
        await self.refresh_reply(tagged)

    # -- state of a tagged message ------------------------------------------------------------

    async def image_tags(self, tagged: votes.TaggedMessage) -> list[ImageTags]:
        """Each stored image of the message (first position of each), with its tags."""
        ids = tagged.image_ids
        predictions = await votes.get_latest_predictions(self.db, ids)
        # The guild's overrides decided the tags the bot posted; the picker starts from those.
        overrides = await get_guild_thresholds(self.db, tagged.guild_id) if tagged.guild_id else {}
        nets = await votes.list_net_votes(self.db, ids)
        out: list[ImageTags] = []
        seen: set[int] = set()
        for image in tagged.images:
            if image.image_id is None or image.image_id in seen:
                continue
            seen.add(image.image_id)
            prediction = predictions.get(image.image_id)
            predicted: tuple[str, ...] = ()
            if prediction is not None:
                checkpoint = self._checkpoint_for(prediction.model_version)
                predicted = tuple(predicted_labels(prediction, checkpoint, overrides))
            out.append(
                ImageTags(
                    image_id=image.image_id,
                    position=image.position,
                    spoiler=image.spoiler,
                    predicted=predicted,
                    probabilities=prediction.probabilities if prediction else {},
                    net=nets.get(image.image_id, {}),
                    sender=prediction.sender_name if prediction else None,
                    sender_probability=prediction.sender_probability if prediction else None,
                )
            )
        return out

    async def refresh_reply(
        self, tagged: votes.TaggedMessage, *, corrected: bool | None = True
    ) -> None:
        """Rewrite the bot's reply (if it made one) with the current tags and a ✓.

        ``corrected=None``: the ✓ only if members voted on one of its images (the tagging cog
        rewrites a reply this way when an edit adds an image).
        """
        if tagged.reply_id is None:
            return
        # Rendered and sent under one lock per reply, so the last edit shows the newest votes.
        async with self._reply_locks.hold(tagged.reply_id):
            try:
                tags = await self.image_tags(tagged)
            except StoreError as exc:
                log.warning("reply %s not updated: %s", tagged.reply_id, exc)
                return
            if not tags:
                return
            if corrected is None:
                corrected = any(net for t in tags for net in t.net.values())
            text = render.reply_text(
                [t.shown(self._emojis, self._with_sender) for t in tags], corrected=corrected
            )
            if self._last_reply.get(tagged.reply_id) == text:
                return
            reply = self.bot.get_partial_messageable(
                int(tagged.channel_id), guild_id=int(tagged.guild_id) if tagged.guild_id else None
            ).get_partial_message(int(tagged.reply_id))
            try:
                await reply.edit(content=text, allowed_mentions=discord.AllowedMentions.none())
            except discord.NotFound:
                log.debug("reply %s is gone; not updated", tagged.reply_id)
                return
            except discord.HTTPException as exc:
                log.warning("reply %s not updated: %s", tagged.reply_id, exc)
                return
            if len(self._last_reply) >= _REPLY_CACHE:
                self._last_reply.pop(next(iter(self._last_reply)))
            self._last_reply[tagged.reply_id] = text

    # -- Fix tags -------------------------------------------------------------------------------

    async def fix_tags_menu(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """Correct the bot's tags on this message's images (only you see the picker)."""
        await self.open_fix_panel(interaction, message.id)

    def _label_text(self, name: str) -> str:
        emoji = self._emojis.get(name)
        text = name.replace("_", " ")
        return f"{emoji} {text}" if emoji else text

    def _labels_text(self, names: Sequence[str]) -> str:
        return ", ".join(self._label_text(n) for n in names) or "no tags"

    async def _answer(
        self,
        interaction: discord.Interaction,
        work: Coroutine[Any, Any, _Answer],
        *,
        update: bool,
    ) -> None:
        """Run ``work`` (store reads and writes) and answer with what it returns.

        Discord drops an interaction not answered within 3 s, so when the store is slow (a
        burst of tagging holds the write lock) the interaction is deferred first and the answer
        sent when ready. A store error is answered, and logged, instead of raised.

        Args:
            update: the answer normally edits the message the control is on (the picker).
        """
        task = asyncio.ensure_future(_store_errors_answered(work))
        try:
            answer = await asyncio.wait_for(asyncio.shield(task), self.answer_within_s)
        except TimeoutError:
            if update:
                await interaction.response.defer()
            else:
                await interaction.response.defer(ephemeral=True, thinking=True)
            answer = await task
        view = answer.view if answer.view is not None else MISSING
        if not interaction.response.is_done():
            if answer.update:
                await interaction.response.edit_message(content=answer.content, view=answer.view)
            else:
                await interaction.response.send_message(answer.content, view=view, ephemeral=True)
        elif answer.update:
            await interaction.edit_original_response(content=answer.content, view=answer.view)
        else:
            await interaction.followup.send(answer.content, view=view, ephemeral=True)
        if answer.refresh is not None:
            await self.refresh_reply(answer.refresh)

    async def _tags_of(self, message_id: int) -> tuple[votes.TaggedMessage | None, list[ImageTags]]:
        tagged = await votes.get_tagged_message(self.db, message_id)
        tags = await self.image_tags(tagged) if tagged is not None else []
        return (tagged, tags) if tags else (None, [])

    async def open_fix_panel(self, interaction: discord.Interaction, message_id: int) -> None:
        """Answer with the ephemeral picker for the tagged message ``message_id`` (or its reply)."""

        async def work() -> _Answer:
            tagged, tags = await self._tags_of(message_id)
            if tagged is None:
                return _NOTHING_TO_FIX
            ticked = {t.position: t.current for t in tags}
            return _Answer(_panel_text(len(tags)), self._picker(tagged, tags, ticked))

        await self._answer(interaction, work(), update=False)

    def _picker(
        self,
        tagged: votes.TaggedMessage,
        tags: Sequence[ImageTags],
        ticked: Mapping[int, Sequence[str]],
    ) -> discord.ui.View:
        images = [
            PickerImage(t.position, tuple(ticked.get(t.position, ())), t.spoiler) for t in tags
        ]
        keep = {t.position: t.predicted for t in tags}
        return build_picker_view(int(tagged.message_id), images, self._choices, keep=keep)

    async def submit_pick(
        self,
        interaction: discord.Interaction,
        message_id: int,
        position: int,
        selected: Sequence[str],
        shown: dict[int, list[str]],
    ) -> None:
        """One image's select was closed: +1 for each ticked label, -1 for each predicted or
        previously ticked label left unticked."""
        voter = votes.discord_voter(interaction.user.id)

        async def work() -> _Answer:
            tagged, tags = await self._tags_of(message_id)
            image = next((t for t in tags if t.position == position), None)
            if tagged is None or image is None:
                return _NOTHING_TO_FIX
            ticked = [n for n in dict.fromkeys(selected) if n in self._known]
            was = set(image.predicted) | set(shown.get(position, image.current))
            unticked = [c.name for c in self._choices if c.name in was and c.name not in ticked]
            cast = [votes.CastVote(image.image_id, n, 1) for n in ticked] + [
                votes.CastVote(image.image_id, n, -1) for n in unticked
            ]
            await votes.cast_votes(
                self.db, cast, voter=voter, origin="button", message_id=tagged.message_id
            )
            now_ticked = {t.position: shown.get(t.position, t.current) for t in tags}
            now_ticked[position] = ticked
            which = "" if len(tags) == 1 else f" for image {_index(tags, position) + 1}"
            parts = [self._labels_text(ticked)] if ticked else []
            if unticked:
                parts.append(f"not {self._labels_text(unticked)}")
            said = f"✓ Saved{which}: {' — '.join(parts) or 'no labels'}."
            return _Answer(
                f"{said}\nChange a list again if you like; your latest answer counts.",
                self._picker(tagged, tags, now_ticked),
                update=True,
                refresh=tagged,
            )

        await self._answer(interaction, work(), update=True)

    async def confirm_tags(
        self, interaction: discord.Interaction, message_id: int, shown: dict[int, list[str]]
    ) -> None:
        """The "tags are right" button: +1 for each tag shown (ticked in the picker, else current)."""
        voter = votes.discord_voter(interaction.user.id)
        in_picker = interaction.message is not None and interaction.message.flags.ephemeral

        async def work() -> _Answer:
            tagged, tags = await self._tags_of(message_id)
            if tagged is None:
                return _NOTHING_TO_FIX
            confirmed = {t.position: list(shown.get(t.position, t.current)) for t in tags}
            if shown:  # from the picker: what it showed ticked (it shows the first images only)
                confirmed = {p: n for p, n in confirmed.items() if p in shown}
            by_position = {t.position: t for t in tags}
            cast = [
                votes.CastVote(by_position[p].image_id, n, 1)
                for p, names in confirmed.items()
                for n in names
                if n in self._known
            ]
            if not cast:
                return _Answer("There are no tags to confirm yet; use Fix tags to pick some.")
            await votes.cast_votes(
                self.db, cast, voter=voter, origin="button", message_id=tagged.message_id
            )
            names = list(dict.fromkeys(n for ns in confirmed.values() for n in ns))
            thanks = f"✓ Thanks — noted: {self._labels_text(names)}."
            return _Answer(thanks, None, update=in_picker, refresh=tagged)

        await self._answer(interaction, work(), update=in_picker)


@dataclass(frozen=True)
class _Answer:
    """How to answer an interaction: a new ephemeral message, or an edit of the control's."""

    content: str
    view: discord.ui.View | None = None
    update: bool = False
    refresh: votes.TaggedMessage | None = None  # rewrite this message's reply afterwards


_NOTHING_TO_FIX = _Answer("I haven't tagged an image in that message, so there is nothing to fix.")


async def _store_errors_answered(work: Coroutine[Any, Any, _Answer]) -> _Answer:
    try:
        return await work
    except StoreError as exc:
        log.warning("correction not stored: %s", exc)
        return _Answer("Sorry, I couldn't save that just now; please try again in a minute.")


def _index(tags: Sequence[ImageTags], position: int) -> int:
    return next(i for i, t in enumerate(tags) if t.position == position)


def _panel_text(count: int) -> str:
    text = (
        "**Fix tags** — open the list, tick every label that fits and untick the wrong ones; "
        "closing the list saves it. Already right? Tap ✅."
    )
    if count > MAX_PICKERS:
        text += f"\n(Showing the first {MAX_PICKERS} of {count} images.)"
    return text


def loaded_checkpoint(models: ModelHolder) -> CheckpointFor:
    """The checkpoint of the model serving now, for predictions that model made."""

    def checkpoint_for(version: str) -> Checkpoint | None:
        predictor = models.predictor
        if predictor is None or not predictor.is_loaded:
            return None
        checkpoint = predictor.checkpoint
        return checkpoint if checkpoint.version == version else None

    return checkpoint_for


async def setup(bot: commands.Bot) -> None:
    deps = bot.deps  # type: ignore[attr-defined]
    await bot.add_cog(
        Corrections(bot, db=deps.db, cfg=deps.cfg, checkpoint_for=loaded_checkpoint(deps.models))
    )
