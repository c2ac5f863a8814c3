"""What the bot shows in chat: label <-> emoji mapping and the text of its reply.

Shared by the cogs: tagging writes the first reply, corrections rewrites it with the members'
tags and a ✓. Pure functions over config and prediction values; nothing here talks to Discord.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import discord

from memetag.config import AppConfig

VS16 = "\ufe0f"  # emoji variation selector: Discord sends some emoji with it, some without
CHECK = "✓"
# Discord's message limit is 2000 characters; a reply stays well under it.
MAX_REPLY_CHARS = 1900
# What the sender head calls everyone it cannot tell apart: never shown as a name.
_OTHER_SENDER = "other"


@dataclass(frozen=True)
class ShownImage:
    """One image as the reply shows it.

    Args:
        labels: (label, probability) most probable first; probability None for a tag members
            set (a corrected reply shows no confidence for it).
        sender: the likely sender's display name, or None when the model is unsure (then
            nothing about the sender is shown).
        sender_probability: the calibrated probability of ``sender``.
        candidates: the most likely senders as (name, probability), for views that list them.
        spoiler: the image was posted as a spoiler: everything about it is shown spoilered.
        emojis: label -> emoji, usually :func:`label_emoji` of the config.
    """

    labels: Sequence[tuple[str, float | None]]
    sender: str | None = None
    sender_probability: float | None = None
    candidates: Sequence[tuple[str, float]] = ()
    spoiler: bool = False
    emojis: Mapping[str, str] = field(default_factory=dict)


def label_emoji(cfg: AppConfig) -> dict[str, str]:
    """label -> emoji, as configured in ``[labels.<name>] emoji``."""
    return {spec.name: spec.emoji for spec in cfg.labels}


def normalize_emoji(emoji: str) -> str:
    """The emoji without variation selectors, so "🗯️" and "🗯" compare equal."""
    return emoji.replace(VS16, "")


def emoji_label(cfg: AppConfig) -> dict[str, str]:
    """emoji -> label, holding each emoji both with and without the U+FE0F variation selector."""
    found: dict[str, str] = {}
    for spec in cfg.labels:
        found[spec.emoji] = spec.name
        found[normalize_emoji(spec.emoji)] = spec.name
        if VS16 not in spec.emoji and len(spec.emoji) == 1:
            found[spec.emoji + VS16] = spec.name
    return found


def reaction_emojis(
    labels: Iterable[tuple[str, float]], emojis: Mapping[str, str], limit: int
) -> list[str]:
    """The emojis to react with: labels by descending probability, each once, at most ``limit``."""
    best: dict[str, float] = {}
    for name, probability in labels:
        if name in emojis:
            best[name] = max(probability, best.get(name, float("-inf")))
    ranked = sorted(best, key=lambda n: -best[n])
    return [emojis[n] for n in ranked[: max(0, limit)]]


def percent(probability: float) -> str:
    return f"{round(probability * 100):d}%"


def _label_part(name: str, probability: float | None, emojis: Mapping[str, str]) -> str:
    emoji = emojis.get(name)
    text = name.replace("_", " ")
    shown = f"{emoji} {text}" if emoji else text
    return shown if probability is None else f"{shown} {percent(probability)}"


def sender_text(image: ShownImage) -> str | None:
    """'looks like something <name> would post (62%)', or None when unsure."""
    name = image.sender
    if not name or name == _OTHER_SENDER or image.sender_probability is None:
        return None
    safe = discord.utils.escape_mentions(discord.utils.escape_markdown(name))
    return f"looks like something {safe} would post ({percent(image.sender_probability)})"


def image_text(image: ShownImage) -> str:
    """One image's line: its labels with emoji and confidence, then the sender guess if sure."""
    labels = " · ".join(_label_part(n, p, image.emojis) for n, p in image.labels) or "no tags"
    sender = sender_text(image)
    text = f"{labels} — {sender}" if sender else labels
    if image.spoiler:
        # Discord spoiler markup; any "||" inside would end it early.
        text = "||" + text.replace("||", "| |") + "||"
    return text


def reply_text(
    items: Sequence[ShownImage], *, corrected: bool = False, emojis: Mapping[str, str] | None = None
) -> str:
    """The bot's reply for a message's images (one line each, numbered when several).

    Args:
        corrected: members corrected the tags: a ✓ marks the reply as heard.
        emojis: label -> emoji for items that carry none of their own.
    """
    if emojis is not None:
        items = [item if item.emojis else replace(item, emojis=emojis) for item in items]
    lines = [image_text(item) for item in items]
    if len(lines) > 1:
        lines = [f"{i}. {line}" for i, line in enumerate(lines, start=1)]
    text = "\n".join(lines) or "no tags"
    if corrected:
        text = f"{text} {CHECK}"
    if len(text) > MAX_REPLY_CHARS:
        text = text[: MAX_REPLY_CHARS - 1] + "…"
    return text
