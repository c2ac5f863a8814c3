"""The "Fix tags" controls: the buttons on the bot's reply and the ephemeral label picker.

Every control is a ``DynamicItem`` whose custom_id carries the tagged message's id (and, for a
picker, the image's position in it), so a button on a reply posted before a restart still works:
nothing is kept in memory between a member's taps. The callbacks hand over to the cog registered
as ``HANDLER_COG`` (``bot.cogs.corrections``), which owns the votes.

    reply:   [✅ Tags are right] [✏️ Fix tags]       memetag:ok:<message>  memetag:fix:<message>
    picker:  one select per image (up to 4)         memetag:pick:<message>:<position>
             [✅ These tags are right]              memetag:ok:<message>
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import discord

HANDLER_COG = "Corrections"
MAX_OPTIONS = 25  # Discord's limit for one select menu
MAX_PICKERS = 4  # selects per message: five rows, one kept for the button

_FIX = "memetag:fix:(?P<message_id>[0-9]{1,20})"
_OK = "memetag:ok:(?P<message_id>[0-9]{1,20})"
_PICK = "memetag:pick:(?P<message_id>[0-9]{1,20}):(?P<position>[0-9]{1,3})"
_PICK_RE = re.compile(_PICK)


class FixTagsHandler(Protocol):
    """What the controls call; implemented by the corrections cog."""

    async def open_fix_panel(self, interaction: discord.Interaction, message_id: int) -> None: ...

    async def submit_pick(
        self,
        interaction: discord.Interaction,
        message_id: int,
        position: int,
        selected: Sequence[str],
        shown: dict[int, list[str]],
    ) -> None: ...

    async def confirm_tags(
        self, interaction: discord.Interaction, message_id: int, shown: dict[int, list[str]]
    ) -> None: ...


@dataclass(frozen=True)
class LabelChoice:
    """A label as the picker offers it."""

    name: str
    emoji: str | None
    description: str = ""


@dataclass(frozen=True)
class PickerImage:
    """One image in the picker: its position in the message and the labels shown ticked."""

    position: int
    ticked: tuple[str, ...]
    spoiler: bool = False


async def _handler(interaction: discord.Interaction) -> FixTagsHandler | None:
    client = interaction.client
    cog = client.get_cog(HANDLER_COG) if hasattr(client, "get_cog") else None
    if cog is None:
        await interaction.response.send_message(
            "Corrections are not available right now; try again in a minute.", ephemeral=True
        )
    return cog


def shown_ticks(message: discord.Message | None) -> dict[int, list[str]]:
    """Per image position, the labels ticked in a picker message as the member saw it."""
    shown: dict[int, list[str]] = {}
    if message is None:
        return shown
    for row in message.components:
        for child in getattr(row, "children", ()):
            match = _PICK_RE.fullmatch(getattr(child, "custom_id", None) or "")
            if match is None:
                continue
            ticked = [o.value for o in getattr(child, "options", ()) if o.default]
            shown[int(match["position"])] = ticked
    return shown


class FixTagsButton(discord.ui.DynamicItem[discord.ui.Button], template=_FIX):
    """On the bot's reply: opens the label picker for the tagged message, only for the tapper."""

    def __init__(self, message_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Fix tags",
                emoji="✏️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"memetag:fix:{message_id}",
            )
        )
        self.message_id = message_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> FixTagsButton:
        return cls(int(match["message_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        handler = await _handler(interaction)
        if handler is not None:
            await handler.open_fix_panel(interaction, self.message_id)


class TagsRightButton(discord.ui.DynamicItem[discord.ui.Button], template=_OK):
    """One tap for the common case: a +1 from the tapper for each tag shown."""

    def __init__(self, message_id: int, *, label: str = "Tags are right", disabled: bool = False):
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji="✅",
                style=discord.ButtonStyle.success,
                custom_id=f"memetag:ok:{message_id}",
                disabled=disabled,
            )
        )
        self.message_id = message_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> TagsRightButton:
        return cls(int(match["message_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        handler = await _handler(interaction)
        if handler is not None:
            await handler.confirm_tags(
                interaction, self.message_id, shown_ticks(interaction.message)
            )


class LabelPicker(discord.ui.DynamicItem[discord.ui.Select], template=_PICK):
    """The labels of one image, ticked as currently tagged; closing the list submits it."""

    def __init__(self, message_id: int, position: int, select: discord.ui.Select | None = None):
        super().__init__(
            select
            or discord.ui.Select(custom_id=f"memetag:pick:{message_id}:{position}", min_values=0)
        )
        self.message_id = message_id
        self.position = position

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Select, match: re.Match[str]
    ) -> LabelPicker:
        return cls(int(match["message_id"]), int(match["position"]), item)

    async def callback(self, interaction: discord.Interaction) -> None:
        handler = await _handler(interaction)
        if handler is None:
            return
        data: dict[str, Any] = interaction.data or {}  # type: ignore[assignment]
        selected = [str(v) for v in data.get("values", [])]
        await handler.submit_pick(
            interaction,
            self.message_id,
            self.position,
            selected,
            shown_ticks(interaction.message),
        )


DYNAMIC_ITEMS = (FixTagsButton, TagsRightButton, LabelPicker)


def build_reply_view(message_id: int) -> discord.ui.View:
    """The buttons under the bot's reply to message ``message_id``: pass it as ``view=`` when
    sending the reply. Persistent (no timeout); the corrections cog answers the taps."""
    view = discord.ui.View(timeout=None)
    view.add_item(TagsRightButton(message_id))
    view.add_item(FixTagsButton(message_id))
    return view


def _offered(labels: Sequence[LabelChoice], keep: set[str]) -> list[LabelChoice]:
    """At most 25 labels: those in ``keep`` (ticked or predicted) first, then the rest in
    config order; shown in config order."""
    if len(labels) <= MAX_OPTIONS:
        return list(labels)
    chosen = {c.name for c in labels if c.name in keep}
    for choice in labels:
        if len(chosen) >= MAX_OPTIONS:
            break
        chosen.add(choice.name)
    return [c for c in labels if c.name in chosen][:MAX_OPTIONS]


def _placeholder(index: int, count: int, spoiler: bool) -> str:
    which = "this image" if count == 1 else f"image {index + 1}"
    if spoiler:
        which += " (spoiler)"
    return f"Labels for {which}: tick all that fit"[:150]


def build_picker_view(
    message_id: int,
    images: Sequence[PickerImage],
    labels: Sequence[LabelChoice],
    *,
    keep: dict[int, Sequence[str]] | None = None,
) -> discord.ui.View:
    """The ephemeral picker: one select per image (the first four) and the confirm button.

    Args:
        keep: per position, labels that must be offered even past the 25-option limit
            (the predicted ones), besides the ticked ones.
    """
    view = discord.ui.View(timeout=None)
    shown = list(images)[:MAX_PICKERS]
    for index, image in enumerate(shown):
        offered = _offered(labels, set(image.ticked) | set((keep or {}).get(image.position, ())))
        select = discord.ui.Select(
            custom_id=f"memetag:pick:{message_id}:{image.position}",
            placeholder=_placeholder(index, len(images), image.spoiler),
            min_values=0,
            max_values=len(offered),
            options=[
                discord.SelectOption(
                    label=choice.name.replace("_", " "),
                    value=choice.name,
                    emoji=choice.emoji or None,
                    description=choice.description[:100] or None,
                    default=choice.name in image.ticked,
                )
                for choice in offered
            ],
            row=index,
        )
        view.add_item(LabelPicker(message_id, image.position, select))
    anything_ticked = any(image.ticked for image in shown)
    right = TagsRightButton(message_id, label="These tags are right", disabled=not anything_ticked)
    right.item.row = len(shown)
    view.add_item(right)
    return view
