"""What the bot can tell about its data and its model: ``/tagger stats``, ``/tagger export``,
``/tagger explain`` and the "Why this tag?" message menu.

Who may use what:

- ``stats`` and ``export`` are admin commands (Manage Server, checked on every call, audited):
  they show every member's posting counts and, in the CSV, every stored post. Both answer
  ephemerally. Label counts and top posters cover the whole store (one data dir is one
  community's data, what its model learns from); the sender-guess accuracy is this server's
  live guesses, per week, next to the two baselines scored on the same posts.
- ``explain`` and "Why this tag?" are for every member: they change nothing and show only an
  image the member can already see (a message of this server, in a channel they can read), and
  they answer ephemerally, so the overlay is never re-posted for others.

Nothing heavy runs on the event loop: the chart and the Grad-CAM render in worker threads, at
most :data:`HEAVY_AT_ONCE` at a time per process, with at most :data:`HEAVY_WAITING` waiting
(beyond that a request is refused with "busy"). The Grad-CAM uses a model of its own
(:class:`classifier.explain.Explainer`); one is kept, for the model serving now, and replaced
when another model (or a rewritten file) is swapped in.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.tagger import TAGGER, admin_only, audit
from classifier.errors import ClassifierError
from memetag.services.export import ExportTooLarge, write_export_csv
from store.errors import StoreError
from store.queries.bot import GuildAccuracy, get_guild_accuracy
from store.queries.insights import (
    LabelCount,
    PosterCount,
    WeekAccuracy,
    list_label_counts,
    list_message_images,
    list_top_posters,
    list_weekly_accuracy,
)

if TYPE_CHECKING:
    from bot.deps import Deps
    from classifier.checkpoint import Checkpoint
    from classifier.explain import Explainer, Explanation
    from classifier.predictor import Result
    from memetag.config import ModelConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

WHY_THIS_TAG = "Why this tag?"
SENDER_TARGET = "sender"  # the explain option value that asks about the likely sender
HEAVY_AT_ONCE = 1  # chart or Grad-CAM renders running at once (each takes most of a core)
HEAVY_WAITING = 8  # renders allowed to wait for a turn; more are refused
TOP_POSTERS = 10
STATS_WEEKS = 26  # weeks on the chart; the text lists the last TEXT_WEEKS
TEXT_WEEKS = 8
_NAME_CHARS = 40
_EXTRA_KEY = "insights"

# https://discord.com/channels/<guild>/<channel>/<message> (also ptb., canary., discordapp.com)
_LINK = re.compile(
    r"^<?https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(\d+|@me)/(\d+)/(\d+)/?>?$"
)


class Busy(Exception):
    """Too many renders are already waiting."""


class Heavy:
    """Runs blocking renders in worker threads, a few at a time, with a bounded wait."""

    def __init__(self, at_once: int = HEAVY_AT_ONCE, waiting: int = HEAVY_WAITING) -> None:
        self._slots = asyncio.Semaphore(at_once)
        self._max_waiting = waiting
        self._waiting = 0

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread once a slot is free.

        Raises:
            Busy: ``waiting`` renders are already queued.
        """
        if self._slots.locked() and self._waiting >= self._max_waiting:
            raise Busy
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        finally:
            self._slots.release()


class ExplainerCache:
    """One :class:`Explainer`, for the checkpoint serving now (a cache of size 1)."""

    def __init__(self, model_cfg: ModelConfig) -> None:
        self._cfg = model_cfg
        self._explainer: Explainer | None = None

    def get(self, checkpoint: Checkpoint) -> Explainer:
        """The Explainer of ``checkpoint``; a new one (built lazily, in the worker thread, on
        its first explanation) when another model or a rewritten file was swapped in."""
        from classifier.explain import Explainer

        if self._explainer is None or self._explainer.checkpoint is not checkpoint:
            self._explainer = Explainer(checkpoint, self._cfg)
        return self._explainer


@dataclass
class Shared:
    """What the commands share in one process (kept in ``deps.extra``)."""

    heavy: Heavy
    explainers: ExplainerCache
    export_lock: asyncio.Lock


def shared(deps: Deps) -> Shared:
    found = deps.extra.get(_EXTRA_KEY)
    if found is None:
        found = Shared(Heavy(), ExplainerCache(deps.cfg.model), asyncio.Lock())
        deps.extra[_EXTRA_KEY] = found
    return found  # type: ignore[return-value]


def _deps(interaction: discord.Interaction) -> Deps:
    return interaction.client.deps  # type: ignore[attr-defined]


# -- stats -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsReport:
    labels: list[LabelCount]
    posters: list[PosterCount]
    weeks: list[WeekAccuracy]
    overall: GuildAccuracy


async def build_stats(deps: Deps, guild_id: str | None) -> StatsReport:
    """The numbers ``/tagger stats`` shows (every configured label, even at zero)."""
    db = deps.db
    counted = {c.label: c for c in await list_label_counts(db)}
    configured = [spec.name for spec in deps.cfg.labels]
    labels = [counted.get(name, LabelCount(name, 0, 0)) for name in configured]
    labels.sort(key=lambda c: (-c.positive_images, configured.index(c.label)))
    return StatsReport(
        labels=labels,
        posters=await list_top_posters(db, TOP_POSTERS),
        weeks=await list_weekly_accuracy(db, guild_id, weeks=STATS_WEEKS),
        overall=await get_guild_accuracy(db, guild_id),
    )


def _name(text: str) -> str:
    """A member-chosen name, safe to show in a message: one line, cut, no markup or pings."""
    text = " ".join(text.split())
    if len(text) > _NAME_CHARS:
        text = text[: _NAME_CHARS - 1] + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def _pct(value: float | None) -> str:
    return "–" if value is None else render.percent(value)


def _label(name: str, emojis: Mapping[str, str]) -> str:
    emoji = emojis.get(name)
    text = name.replace("_", " ")
    return f"{emoji} {text}" if emoji else text


def stats_text(report: StatsReport, emojis: Mapping[str, str]) -> str:
    """The message ``/tagger stats`` sends beside its chart (under Discord's 2000 characters)."""
    lines = ["**Labels** (images members' votes give the label · member votes):"]
    for c in report.labels:
        lines.append(f"{_label(c.label, emojis)}: {c.positive_images} · {c.member_votes} votes")
    lines.append("**Top posters** (stored images):")
    if report.posters:
        lines += [f"{i}. {_name(p.name)}: {p.images}" for i, p in enumerate(report.posters, 1)]
    else:
        lines.append("none yet")
    o = report.overall
    lines.append(
        "**Sender guesses in this server** (model · most frequent poster · most active "
        "in the last 30 days, scored on the posts the model named someone for):"
    )
    if o.guessed:
        lines.append(
            f"all: {_pct(o.guess_accuracy)} · {_pct(o.majority_accuracy)} · "
            f"{_pct(o.recent_accuracy)} ({o.guessed} of {o.posts} posts guessed)"
        )
        for w in report.weeks[-TEXT_WEEKS:]:
            lines.append(
                f"week of {w.week}: {_pct(w.guess_accuracy)} · {_pct(w.majority_accuracy)} · "
                f"{_pct(w.recent_accuracy)} ({w.guessed} of {w.posts})"
            )
    else:
        lines.append(f"no guesses scored yet ({o.posts} live posts with a known author)")
    text = "\n".join(lines)
    return text if len(text) <= render.MAX_REPLY_CHARS else text[: render.MAX_REPLY_CHARS - 1] + "…"


def render_stats_png(report: StatsReport) -> bytes:
    """The stats chart as PNG bytes. Blocking (matplotlib, Agg): run it in a worker thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 9), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    ax_labels, ax_posters, ax_weeks = fig.subplots(3, 1)

    names = [c.label.replace("_", " ") for c in report.labels]
    ax_labels.bar(range(len(names)), [c.positive_images for c in report.labels], color="#5865f2")
    ax_labels.set_xticks(range(len(names)), names, parse_math=False)
    ax_labels.set_title("Images per label (members' votes)")

    posters = list(reversed(report.posters))
    ax_posters.barh(range(len(posters)), [p.images for p in posters], color="#57a773")
    # Names are members' own: never read as mathtext; glyphs the font lacks show as boxes.
    ax_posters.set_yticks(
        range(len(posters)), [_chart_name(p.name) for p in posters], parse_math=False
    )
    ax_posters.set_title("Top posters (stored images)")
    if not posters:
        ax_posters.text(0.5, 0.5, "no posts yet", ha="center", va="center")

    weeks = report.weeks
    x = range(len(weeks))
    series = [
        ("model", [w.guess_accuracy for w in weeks], "#5865f2"),
        ("most frequent poster", [w.majority_accuracy for w in weeks], "#999999"),
        ("most active (30 days)", [w.recent_accuracy for w in weeks], "#e0a030"),
    ]
    for label, values, color in series:
        ax_weeks.plot(
            x,
            [float("nan") if v is None else v * 100 for v in values],
            marker="o",
            label=label,
            color=color,
        )
    ax_weeks.set_ylim(0, 100)
    ax_weeks.set_ylabel("% right")
    ax_weeks.set_title("Sender guesses in this server, per week")
    if weeks:
        step = max(1, len(weeks) // 8)
        ax_weeks.set_xticks(list(x)[::step], [w.week for w in weeks][::step])
        ax_weeks.legend(loc="lower left", fontsize="small")
    else:
        ax_weeks.text(0.5, 50, "no guesses yet", ha="center", va="center")
        ax_weeks.set_xticks([])
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _chart_name(name: str) -> str:
    name = " ".join(name.split())
    return name if len(name) <= 20 else name[:19] + "…"


@app_commands.command(
    name="stats", description="Label counts, top posters and sender-guess accuracy"
)
@admin_only()
async def stats_command(interaction: discord.Interaction) -> None:
    """Label counts, top posters and the sender guesses' accuracy per week, with a chart."""
    deps = _deps(interaction)
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        report = await build_stats(deps, str(interaction.guild_id))
        png = await shared(deps).heavy.run(render_stats_png, report)
    except Busy:
        await audit(interaction, "stats", {}, outcome="refused: busy")
        await interaction.followup.send(_BUSY, ephemeral=True)
        return
    except Exception as exc:
        await audit(interaction, "stats", {}, outcome=f"failed: {type(exc).__name__}")
        raise
    await interaction.followup.send(
        stats_text(report, render.label_emoji(deps.cfg)),
        file=discord.File(io.BytesIO(png), filename="memetag-stats.png"),
        ephemeral=True,
    )
    await audit(interaction, "stats", {}, outcome="ok")


# -- export ----------------------------------------------------------------------------------


def export_cap(deps: Deps, interaction: discord.Interaction) -> int:
    """The largest CSV to attach: ``[bot] export_max_bytes``, and no more than this server's
    upload limit."""
    cap = deps.cfg.bot.export_max_bytes
    limit = getattr(interaction, "filesize_limit", None)
    return min(cap, limit) if isinstance(limit, int) and limit > 0 else cap


def too_large_text(cap: int) -> str:
    return (
        f"The CSV is larger than {_size(cap)}, more than I can attach here. On the bot's "
        "host, run `memetag export --csv memetag.csv` for the whole file."
    )


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


@app_commands.command(
    name="export", description="The labelled image list as CSV (memetag export --csv)"
)
@admin_only()
async def export_command(interaction: discord.Interaction) -> None:
    """The labelled image list as a CSV file, as `memetag export --csv` writes it."""
    deps = _deps(interaction)
    await interaction.response.defer(ephemeral=True, thinking=True)
    lock = shared(deps).export_lock
    if lock.locked():
        await audit(interaction, "export", {}, outcome="refused: an export is running")
        await interaction.followup.send(
            "An export is being made right now; try again in a minute.", ephemeral=True
        )
        return
    cap = export_cap(deps, interaction)
    async with lock:
        buffer = io.StringIO(newline="")
        try:
            rows = await write_export_csv(deps.db, buffer, max_bytes=cap)
        except ExportTooLarge as exc:
            await audit(interaction, "export", {}, outcome=f"refused: larger than {cap} bytes")
            log.info("export refused: %s", exc)
            await interaction.followup.send(too_large_text(cap), ephemeral=True)
            return
        except Exception as exc:
            await audit(interaction, "export", {}, outcome=f"failed: {type(exc).__name__}")
            raise
        data = await asyncio.to_thread(lambda: buffer.getvalue().encode("utf-8"))
    await interaction.followup.send(
        f"{rows} rows: one per stored image post; labels are those members' votes give it.",
        file=discord.File(io.BytesIO(data), filename="memetag-export.csv"),
        ephemeral=True,
    )
    await audit(interaction, "export", {}, outcome=f"ok: {rows} rows, {len(data)} bytes")


# -- explain ---------------------------------------------------------------------------------


class Refusal(Exception):
    """An explain request answered with one line (no image, no model, not allowed...)."""


_BUSY = "I'm busy drawing other explanations; try again in a minute."
_NO_IMAGE = (
    "I have no stored image for that message: it has no image, or I never saw it "
    "(posted before I watched the channel, or in a channel I don't watch)."
)


def parse_message_link(text: str) -> tuple[int | None, int, int]:
    """(guild id, channel id, message id) of a Discord message link ("Copy Message Link").

    Raises:
        Refusal: not a message link.
    """
    found = _LINK.match(text.strip())
    if found is None:
        raise Refusal(
            "That is not a message link: use the message's ⋯ menu → Copy Message Link "
            "(https://discord.com/channels/…)."
        )
    guild, channel, message = found.groups()
    return (None if guild == "@me" else int(guild)), int(channel), int(message)


def _check_can_read(
    interaction: discord.Interaction, guild_id: int | None, channel_id: int
) -> None:
    """Only a message of this server, in a channel the asking member can read."""
    guild = interaction.guild
    if guild is None or guild_id != guild.id:
        raise Refusal("That message is not in this server; I explain this server's images only.")
    channel = guild.get_channel_or_thread(channel_id)
    member = interaction.user
    if channel is None or not isinstance(member, discord.Member):
        raise Refusal("I can't see that channel.")
    perms = channel.permissions_for(member)
    if not (perms.view_channel and perms.read_message_history):
        raise Refusal("You can't read that channel, so I won't show its images.")


@dataclass(frozen=True)
class Explained:
    text: str
    png: bytes
    spoiler: bool


async def explain_message(
    deps: Deps, channel_id: int, message_id: int, target: str | None
) -> Explained:
    """The Grad-CAM overlay of the message's first stored image, for ``target`` (a label,
    ``"sender"``, or None for the image's top tag), with one line of probabilities.

    Raises:
        Refusal: no stored image, no model, an unknown label, or busy.
    """
    images = [
        i
        for i in await list_message_images(deps.db, message_id)
        if i.channel_id in (None, str(channel_id))
    ]
    if not images:
        raise Refusal(_NO_IMAGE)
    image = images[0]
    models = deps.models
    predictor = models.predictor if models.ready else None
    if predictor is None or not predictor.is_loaded:
        raise Refusal("No model is serving yet, so there is nothing to explain.")
    checkpoint = predictor.checkpoint
    with_sender = deps.cfg.bot.sender_in_reply
    if target == SENDER_TARGET:
        if not with_sender:
            raise Refusal("Sender guesses are switched off here (`[bot] sender_in_reply`).")
        if not checkpoint.senders:
            raise Refusal(f"Model {checkpoint.version} has no sender head to explain.")
    elif target is not None and target not in checkpoint.labels:
        typed = target.replace(" ", "_")  # as the autocomplete shows it: "social media"
        if typed in checkpoint.labels:
            target = typed
    if target not in (None, SENDER_TARGET) and target not in checkpoint.labels:
        known = ", ".join(checkpoint.labels)
        raise Refusal(
            f"Model {checkpoint.version} has no label {_name(target)!r}; it knows {known}."
        )
    path = deps.files.path_for(image.sha256, image.ext)
    if not await asyncio.to_thread(path.is_file):
        raise Refusal("That image's file is gone from the store.")
    result = await predictor.predict(path)
    label = None
    if target != SENDER_TARGET:
        label = target or _top_label(result, checkpoint)
    explainer = shared(deps).explainers.get(checkpoint)
    try:
        explanation = await shared(deps).heavy.run(
            explainer.explain, path, label=label, sender=target == SENDER_TARGET
        )
    except Busy:
        raise Refusal(_BUSY) from None
    emojis = render.label_emoji(deps.cfg)
    text = explanation_text(explanation, result, emojis, with_sender=with_sender)
    if len(images) > 1:
        text += f"\n-# The first of the message's {len(images)} images."
    return Explained(text, explanation.png, image.spoiler)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _top_label(result: Result, checkpoint: Checkpoint) -> str:
    if result.predicted:
        return result.predicted[0]
    if result.labels:
        return max(result.labels, key=lambda n: result.labels[n])
    return checkpoint.labels[0]


def probabilities_line(
    result: Result, emojis: Mapping[str, str], *, with_sender: bool = True
) -> str:
    """Every label's probability, most probable first, then the sender as the tag reply says
    it ("looks like something X would post (62%)"), or "sender unsure" below the model's
    confidence line."""
    ranked = sorted(result.labels, key=lambda n: -result.labels[n])
    line = " · ".join(f"{_label(n, emojis)} {render.percent(result.labels[n])}" for n in ranked)
    if with_sender and (result.sender_candidates or result.sender):
        shown = render.ShownImage(
            labels=(), sender=result.sender, sender_probability=result.sender_probability
        )
        line += " — " + (render.sender_text(shown) or "sender unsure")
    return line or "no labels"


def explanation_text(
    explanation: Explanation,
    result: Result,
    emojis: Mapping[str, str],
    *,
    with_sender: bool = True,
) -> str:
    if explanation.target == "label":
        head = (
            f"**Why {_label(explanation.name, emojis)}** "
            f"({render.percent(explanation.probability)}): the warm areas pushed the model "
            "towards it."
        )
        if not explanation.emitted:
            head += " (This model never gives that label: too few examples.)"
    elif explanation.named:
        head = (
            f"**Why {_name(explanation.name)}** ({render.percent(explanation.probability)}): "
            "the warm areas are what the sender guess rests on."
        )
    else:
        head = (
            "**Sender: unsure** — the model names no one below its confidence line; the warm "
            "areas are what its likeliest guess rests on."
        )
    return "\n".join(
        [
            head,
            probabilities_line(result, emojis, with_sender=with_sender),
            f"-# {explanation.description} (model {explanation.model_version})",
        ]
    )


async def answer_explain(
    interaction: discord.Interaction,
    channel_id: int,
    message_id: int,
    target: str | None,
    *,
    guild_id: int | None,
) -> str:
    """Defer, explain, and answer ephemerally (a refusal is one line). Returns the outcome."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        _check_can_read(interaction, guild_id, channel_id)
        done = await explain_message(_deps(interaction), channel_id, message_id, target)
    except Refusal as refusal:
        await interaction.followup.send(str(refusal), ephemeral=True)
        return f"refused: {refusal}"
    except StoreError as exc:
        log.warning("explain of message %s failed: %s", message_id, exc)
        await interaction.followup.send(
            "I couldn't read the store just now; try again in a minute.", ephemeral=True
        )
        return "failed: store"
    except ClassifierError as exc:
        # A stored file the model cannot read, or a model that will not build.
        log.warning("explain of message %s failed: %s", message_id, exc)
        await interaction.followup.send(
            f"I couldn't explain that image: {_one_line(exc)}", ephemeral=True
        )
        return f"failed: {type(exc).__name__}"
    name = ("SPOILER_" if done.spoiler else "") + "explain.png"
    await interaction.followup.send(
        done.text, file=discord.File(io.BytesIO(done.png), filename=name), ephemeral=True
    )
    return "ok"


async def _label_choices(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    cfg = _deps(interaction).cfg
    names = [spec.name for spec in cfg.labels]
    if cfg.bot.sender_in_reply:
        names.append(SENDER_TARGET)
    typed = current.strip().lower()
    return [
        app_commands.Choice(name=n.replace("_", " "), value=n)
        for n in names
        if typed in n.lower() or typed in n.replace("_", " ")
    ][:25]


@app_commands.command(
    name="explain", description="Show what the model looked at in a message's image"
)
@app_commands.describe(
    message="a link to the message (its ⋯ menu → Copy Message Link)",
    label="the label to explain, or 'sender' (default: the image's top tag)",
)
@app_commands.autocomplete(label=_label_choices)
async def explain_command(
    interaction: discord.Interaction, message: str, label: str | None = None
) -> None:
    """The Grad-CAM overlay of a message's (first) image: where the model looked for a label.

    Any member may ask, for a message of this server in a channel they can read; the answer is
    only for them.
    """
    try:
        guild_id, channel_id, message_id = parse_message_link(message)
    except Refusal as refusal:
        await interaction.response.send_message(str(refusal), ephemeral=True)
        return
    target = label.strip() if label else None
    outcome = await answer_explain(
        interaction, channel_id, message_id, target or None, guild_id=guild_id
    )
    log.info("explain of message %s by %s: %s", message_id, interaction.user.id, outcome)


# Registered at import; a second import (load_extension imports the module afresh for each bot
# in the process) replaces them.
for _command in (stats_command, export_command, explain_command):
    TAGGER.add_command(_command, override=True)


# -- the cog: the "Why this tag?" message menu -----------------------------------------------


class Insights(commands.Cog):
    """Adds the "Why this tag?" message menu; the /tagger subcommands are registered at import."""

    def __init__(self, bot: commands.Bot, deps: Deps) -> None:
        self.bot = bot
        self.deps = deps
        shared(deps)
        self._menu = app_commands.ContextMenu(
            name=WHY_THIS_TAG,
            callback=self.why_this_tag,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self._menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self._menu.name, type=self._menu.type)

    async def why_this_tag(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """Where the model looked for this image's top tag (only you see the answer)."""
        outcome = await answer_explain(
            interaction, message.channel.id, message.id, None, guild_id=interaction.guild_id
        )
        log.info("why-this-tag on message %s: %s", message.id, outcome)


def warm_up() -> None:
    """Import matplotlib (and load its font list) and the Grad-CAM code. Blocking: run it in a
    worker thread."""
    from matplotlib import font_manager
    from matplotlib.backends import backend_agg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401

    import classifier.explain  # noqa: F401

    font_manager.findfont("DejaVu Sans")


async def setup(bot: commands.Bot) -> None:
    # Measured: importing matplotlib under the first /tagger stats stalled the event loop by
    # 0.5-0.7 s (15 ms once imported); at setup the gateway is not connected yet.
    await asyncio.to_thread(warm_up)
    await bot.add_cog(Insights(bot, bot.deps))  # type: ignore[attr-defined]
