"""Admin subcommands of ``/tagger``: status, channels and modes, thresholds, labels, models.

Every command here is for members with the Manage Server permission (checked on our side on
each call by :func:`bot.tagger.admin_only`), answers ephemerally, and writes one audit-log row.
Changes apply at once: the tagging cog re-reads channels and thresholds after each change.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.logs import RecentProblems
from bot.render import label_emoji
from bot.tagger import TAGGER, admin_only, audit
from memetag.services.errors import UnknownModel
from memetag.services.models import use_model
from store.queries.admin import (
    delete_guild_threshold,
    get_activity,
    get_channel_setting,
    list_channel_settings,
    list_guild_thresholds,
    list_label_counts,
    set_channel,
    set_guild_threshold,
)
from store.queries.bot import get_guild_accuracy
from store.queries.models import get_current_model, get_model, list_models

if TYPE_CHECKING:
    from bot.deps import Deps

log = logging.getLogger(__name__)

Mode = Literal["react", "reply", "silent"]
_PROBLEMS = "admin.problems"  # deps.extra key of the RecentProblems handler


# -- helpers ----------------------------------------------------------------------------------


def _deps(interaction: discord.Interaction) -> Deps:
    return interaction.client.deps  # type: ignore[attr-defined]


def _tagging(interaction: discord.Interaction):
    return interaction.client.get_cog("Tagging")  # type: ignore[attr-defined]


def _actor(interaction: discord.Interaction) -> str:
    return f"discord:{interaction.user.id}"


async def _begin(interaction: discord.Interaction) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)


async def _answer(interaction: discord.Interaction, text: str) -> None:
    await interaction.edit_original_response(
        content=text[:2000], allowed_mentions=discord.AllowedMentions.none()
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` (0..1) percentile by the nearest-rank method; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _pct(right: int, of: int) -> str:
    return f"{right}/{of} ({round(100 * right / of)}%)" if of else "–"


def _f(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "–"


def _metrics_text(metrics: dict) -> str:
    parts = [f"categories macro-F1 {_f(metrics.get('category_macro_f1'))}"]
    if metrics.get("sender_top1") is not None:
        parts.append(
            f"sender top-1 {_f(metrics.get('sender_top1'))} "
            f"(majority baseline {_f(metrics.get('majority_top1'))})"
        )
    return ", ".join(parts)


def _channel_ref(channel_id: str) -> str:
    return f"<#{channel_id}>"


async def _reload_tagging(interaction: discord.Interaction) -> None:
    cog = _tagging(interaction)
    if cog is None:
        return
    await cog.reload_channels()
    reload_thresholds = getattr(cog, "reload_thresholds", None)
    if reload_thresholds is not None:
        await reload_thresholds()


def _config_default(deps: Deps) -> str | None:
    default = deps.cfg.bot.default_mode
    return None if default == "off" else default


async def _guild_channels(interaction: discord.Interaction) -> list[tuple[str, str, bool, str]]:
    """(channel id, mode, enabled, where from) of this guild's listed channels."""
    guild = interaction.guild
    out = []
    for setting in await list_channel_settings(_deps(interaction).db):
        mine = setting.guild_id == str(interaction.guild_id)
        if not mine and setting.guild_id is None and guild is not None:
            mine = guild.get_channel_or_thread(int(setting.channel_id)) is not None
        if mine:
            origin = "config" if setting.origin == "config" else "set by an admin"
            out.append((setting.channel_id, setting.mode, setting.enabled, origin))
    return out


# -- /tagger status ---------------------------------------------------------------------------


@app_commands.command(name="status", description="Model, queue, latency, counts, accuracy, errors")
@admin_only()
async def status(interaction: discord.Interaction) -> None:
    """Show the model and its validation scores, the queue, tag latency, today's and total
    counts, the live sender-guess accuracy against its baselines, and the last error."""
    await _begin(interaction)
    deps = _deps(interaction)
    db = deps.db
    guild_id = str(interaction.guild_id)
    lines = ["**memetag status**"]

    models = deps.models
    if models.version is not None:
        record = await get_model(db, models.version)
        metrics = _metrics_text(record.metrics) if record else "not recorded"
        line = f"Model: `{models.version}` (validation: {metrics})"
        if models.problem:
            line += f"; {models.problem}"
        lines.append(line)
    else:
        lines.append(f"Model: none serving ({models.problem or 'no trained model yet'})")

    cog = _tagging(interaction)
    if cog is not None:
        queue = cog.queue
        lines.append(
            f"Queue: {queue.pending} waiting; since start {queue.stats.done} done, "
            f"{queue.stats.dropped} dropped (queue full)"
        )
        samples = list(cog.stats.tag_s)
        if samples:
            p50, p95 = percentile(samples, 0.5), percentile(samples, 0.95)
            lines.append(
                f"Tag latency since start: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
                f"({len(samples)} tagged)"
            )
        else:
            lines.append("Tag latency since start: nothing tagged yet")
    else:
        lines.append("Tagging is not loaded.")

    today = datetime.now(UTC).date()
    act = await get_activity(db, guild_id, today)
    lines.append(
        f"Today (UTC): {act.posts_today} posts, {act.images_today} new images, "
        f"{act.votes_today} votes stored; here {act.guild_posts_today} posts, "
        f"{act.guild_votes_today} votes"
    )
    lines.append(
        f"Total: {act.posts} posts, {act.images} images, {act.votes} votes stored; here "
        f"{act.guild_posts} posts, {act.guild_votes} votes"
    )

    acc = await get_guild_accuracy(db, guild_id)
    if acc.guessed:
        lines.append(
            f"Live sender guesses here: model {_pct(acc.guess_right, acc.guessed)}, "
            f"majority baseline {_pct(acc.majority_right, acc.guessed)}, "
            f"most active recently {_pct(acc.recent_right, acc.guessed)} "
            f"({acc.posts} live posts)"
        )
    else:
        lines.append(f"Live sender guesses here: none scored yet ({acc.posts} live posts)")
    if acc.category_votes:
        lines.append(
            f"Category tags agreeing with members' votes: "
            f"{_pct(acc.category_agree, acc.category_votes)}"
        )

    overrides = (await list_guild_thresholds(db)).get(guild_id, {})
    if overrides:
        shown = ", ".join(f"{label} {value:g}" for label, value in sorted(overrides.items()))
        lines.append(f"Threshold overrides here: {shown}")
    else:
        lines.append("Threshold overrides here: none (the model's own)")

    problems: RecentProblems | None = deps.extra.get(_PROBLEMS)  # type: ignore[assignment]
    last = problems.last if problems is not None else None
    if last is not None:
        lines.append(
            f"Last error: {last.time:%Y-%m-%d %H:%M:%S} UTC {last.level.lower()} "
            f"{last.logger}: {last.message}"
        )
    else:
        lines.append("Last error: none since start")
    await audit(interaction, "status", {})
    await _answer(interaction, "\n".join(lines))


# -- /tagger channel enable|disable|list, /tagger mode ----------------------------------------

channel_group = app_commands.Group(
    name="channel", description="Which channels the bot watches in this server"
)


async def _set_channel(
    interaction: discord.Interaction,
    action: str,
    channel: discord.abc.GuildChannel | discord.Thread | None,
    *,
    enabled: bool,
    mode: str | None = None,
) -> None:
    await _begin(interaction)
    deps = _deps(interaction)
    target = channel or interaction.channel
    channel_id = str(target.id)
    existing = await get_channel_setting(deps.db, channel_id)
    if mode is None:
        mode = existing.mode if existing else (_config_default(deps) or "react")
    await set_channel(
        deps.db,
        channel_id=channel_id,
        guild_id=str(interaction.guild_id),
        mode=mode,
        enabled=enabled,
        actor=_actor(interaction),
    )
    await _reload_tagging(interaction)
    if enabled:
        text = f"Watching {_channel_ref(channel_id)} in **{mode}** mode from now on."
    else:
        text = f"Not watching {_channel_ref(channel_id)} any more (`/tagger channel enable` undoes it)."
    await audit(interaction, action, {"channel": channel_id, "mode": mode})
    await _answer(interaction, text)


@channel_group.command(name="enable", description="Watch a channel (this one by default)")
@app_commands.describe(channel="The channel to watch (default: this one)")
@admin_only()
async def channel_enable(
    interaction: discord.Interaction,
    channel: discord.TextChannel | discord.Thread | None = None,
) -> None:
    """Tag the images posted in a channel (its mode stays, or the config's default)."""
    await _set_channel(interaction, "channel enable", channel, enabled=True)


@channel_group.command(name="disable", description="Stop watching a channel (this one by default)")
@app_commands.describe(channel="The channel to stop watching (default: this one)")
@admin_only()
async def channel_disable(
    interaction: discord.Interaction,
    channel: discord.TextChannel | discord.Thread | None = None,
) -> None:
    """Stop tagging and storing the images posted in a channel (a config channel too)."""
    await _set_channel(interaction, "channel disable", channel, enabled=False)


@channel_group.command(name="list", description="The channels the bot watches in this server")
@admin_only()
async def channel_list(interaction: discord.Interaction) -> None:
    """List this server's listed channels, their modes and whether they are watched."""
    await _begin(interaction)
    deps = _deps(interaction)
    rows = await _guild_channels(interaction)
    lines = []
    for channel_id, mode, enabled, origin in rows:
        state = mode if enabled else f"disabled (was {mode})"
        lines.append(f"{_channel_ref(channel_id)}: {state} — {origin}")
    default = _config_default(deps)
    other = f"other channels: {default} (config default)" if default else "other channels: off"
    text = "\n".join(lines) if lines else "No channel is listed in this server."
    await audit(interaction, "channel list", {})
    await _answer(interaction, f"{text}\n{other}")


@app_commands.command(name="mode", description="How tags are shown in a channel")
@app_commands.describe(
    mode="react: label emojis on the message; reply: one quiet reply; silent: store only",
    channel="The channel (default: this one)",
)
@admin_only()
async def mode(
    interaction: discord.Interaction,
    mode: Mode,
    channel: discord.TextChannel | discord.Thread | None = None,
) -> None:
    """Set a channel's mode (react, reply or silent); the channel is watched from now on."""
    await _set_channel(interaction, "mode", channel, enabled=True, mode=mode)


# -- /tagger threshold, /tagger labels --------------------------------------------------------


@app_commands.command(name="threshold", description="Override a label's decision threshold here")
@app_commands.describe(
    label="The label (e.g. meme)",
    value="A probability between 0 and 1 (exclusive) at or above which the label is shown, "
    "or 'reset' for the model's own",
)
@admin_only()
async def threshold(interaction: discord.Interaction, label: str, value: str) -> None:
    """Override (or reset) one label's threshold in this server; applied to the next image."""
    await _begin(interaction)
    deps = _deps(interaction)
    guild_id = str(interaction.guild_id)
    arguments = {"label": label, "value": value}
    names = [spec.name for spec in deps.cfg.labels]
    if label not in names:
        await audit(interaction, "threshold", arguments, outcome="failed: unknown label")
        await _answer(interaction, f"No label `{label}`; the labels are: {', '.join(names)}.")
        return
    if value.strip().lower() == "reset":
        had = await delete_guild_threshold(deps.db, guild_id, label)
        await _reload_tagging(interaction)
        text = (
            f"`{label}` uses the model's own threshold again."
            if had
            else f"`{label}` had no override here; it uses the model's own threshold."
        )
        await audit(interaction, "threshold reset", arguments)
        await _answer(interaction, text)
        return
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 < number < 1:
        await audit(interaction, "threshold", arguments, outcome="failed: not a probability")
        await _answer(interaction, "The threshold must be a number between 0 and 1, or `reset`.")
        return
    await set_guild_threshold(deps.db, guild_id, label, number, actor=_actor(interaction))
    await _reload_tagging(interaction)
    await audit(interaction, "threshold", arguments)
    await _answer(
        interaction,
        f"`{label}` is shown here when its probability is at least {number:g} "
        "(from the next image; `reset` restores the model's own).",
    )


@threshold.autocomplete("label")
async def _label_choices(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    names = [spec.name for spec in _deps(interaction).cfg.labels]
    return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]


@app_commands.command(name="labels", description="The labels, their emojis, votes and the model")
@admin_only()
async def labels(interaction: discord.Interaction) -> None:
    """The label set with emojis, votes and positive images per label, and which labels the
    current model emits (too few positives and a label is left out of training)."""
    await _begin(interaction)
    deps = _deps(interaction)
    emojis = label_emoji(deps.cfg)
    counts = {c.label: c for c in await list_label_counts(deps.db)}
    emitted: set[str] | None = None
    predictor = deps.models.predictor
    if predictor is not None and predictor.is_loaded:
        emitted = set(predictor.checkpoint.emitted_labels)
    overrides = (await list_guild_thresholds(deps.db)).get(str(interaction.guild_id), {})
    lines = ["**Labels** (votes, positive images; ✓ = the current model emits it)"]
    for spec in deps.cfg.labels:
        c = counts.get(spec.name)
        votes, positives = (c.votes, c.positives) if c else (0, 0)
        mark = "" if emitted is None else (" ✓" if spec.name in emitted else " —")
        extra = f", threshold here {overrides[spec.name]:g}" if spec.name in overrides else ""
        lines.append(
            f"{emojis.get(spec.name, '')} {spec.name}: {votes} votes, {positives} positive"
            f"{extra}{mark}"
        )
    if emitted is None:
        lines.append("No model serving yet.")
    await audit(interaction, "labels", {})
    await _answer(interaction, "\n".join(lines))


# -- /tagger models, rollback, reload ---------------------------------------------------------


@app_commands.command(name="models", description="The trained model versions")
@admin_only()
async def models(interaction: discord.Interaction) -> None:
    """List the recorded models with their validation scores; ▶ marks the one serving."""
    await _begin(interaction)
    deps = _deps(interaction)
    records = await list_models(deps.db)
    if not records:
        text = "No models yet: run `memetag train` (or `/tagger retrain`)."
    else:
        lines = ["**Models** (oldest first; ▶ current)"]
        for r in records[-20:]:
            mark = "▶" if r.is_current else "·"
            lines.append(
                f"{mark} `{r.version}` {r.created_at:%Y-%m-%d %H:%M} — {_metrics_text(r.metrics)}"
            )
        if deps.models.version and deps.models.version not in [r.version for r in records]:
            lines.append(f"serving `{deps.models.version}`")
        text = "\n".join(lines)
    await audit(interaction, "models", {})
    await _answer(interaction, text)


async def _swap(interaction: discord.Interaction, action: str, version: str | None) -> None:
    deps = _deps(interaction)
    db = deps.db
    arguments = {"version": version}
    if action == "rollback":
        if version is None:
            records = await list_models(db)  # oldest first
            current = await get_current_model(db)
            ids = [r.id for r in records]
            earlier = records[: ids.index(current.id)] if current and current.id in ids else []
            if not earlier:
                await audit(interaction, action, arguments, outcome="failed: no earlier model")
                await _answer(interaction, "There is no earlier model to roll back to.")
                return
            version = earlier[-1].version
        try:
            used = await use_model(db, deps.cfg, version)
        except UnknownModel as exc:
            await audit(interaction, action, arguments, outcome="failed: unknown version")
            await _answer(interaction, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a damaged file: say so, keep the current one
            await audit(interaction, action, arguments, outcome=f"failed: {type(exc).__name__}")
            await _answer(interaction, f"`{version}` cannot be used: {exc}")
            return
        warning = used.warning
    else:
        warning = None
    before = deps.models.version
    await deps.models.refresh()
    now = deps.models.version
    if action == "rollback" and now != version:
        text = (
            f"`{version}` is now the current model, but it did not load: "
            f"{deps.models.problem or 'see the log'}; still tagging with `{before}`."
        )
        outcome = "failed: did not load"
    elif now is None:
        text = f"No model serving: {deps.models.problem or 'no trained model yet'}."
        outcome = "ok: no model"
    elif now != before:
        text = f"Now tagging with `{now}` (was `{before}`)."
        outcome = "ok"
    else:
        text = f"Tagging with `{now}` (unchanged: the current model and its file are the same)."
        outcome = "ok: unchanged"
    if warning:
        text += f"\nNote: {warning}"
    await audit(interaction, action, {**arguments, "version": version or now}, outcome=outcome)
    await _answer(interaction, text)


@app_commands.command(name="rollback", description="Go back to an earlier model")
@app_commands.describe(version="The version (see /tagger models); default: the previous one")
@admin_only()
async def rollback(interaction: discord.Interaction, version: str | None = None) -> None:
    """Make an earlier model current and swap it into the running bot, no restart."""
    await _begin(interaction)
    await _swap(interaction, "rollback", version)


@app_commands.command(name="reload", description="Load the current model now")
@admin_only()
async def reload(interaction: discord.Interaction) -> None:
    """Pick up the store's current model now (a `memetag train` or `memetag models use` in
    another process, or a rewritten file) instead of at the next poll."""
    await _begin(interaction)
    await _swap(interaction, "reload", None)


# Added with override: ``load_extension`` imports this module afresh for each bot in the
# process, and TAGGER outlives them.
for _command in (status, channel_group, mode, threshold, labels, models, rollback, reload):
    TAGGER.add_command(_command, override=True)


class Admin(commands.Cog):
    """Keeps the last warning or error for ``/tagger status``."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.problems = RecentProblems(secrets=(deps.cfg.discord_token,))

    async def cog_load(self) -> None:
        self.problems.attach()
        self.deps.extra[_PROBLEMS] = self.problems

    async def cog_unload(self) -> None:
        self.problems.detach()
        self.deps.extra.pop(_PROBLEMS, None)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Admin(bot.deps))  # type: ignore[attr-defined]


__all__ = ["percentile", "setup"]
