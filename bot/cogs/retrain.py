"""``/tagger retrain``: a new model from every label members gave, swapped in only if not worse.

The training is ``memetag train``'s (``memetag.services.training``), run in a separate process
(``memetag.services.retrain_worker``) at a lower CPU priority, so the gateway and the tagging of
new images never wait for it. One message shows its progress (edited at most once every
``EDIT_EVERY_S`` seconds) and ends with the new model next to the current one on the same
validation images: category macro-F1, sender top-1 against the two baselines, sender macro-F1,
and the decision. The promotion rule is the CLI's: the new model becomes current, and is
swapped into the running Predictor at once, only if its score (category + sender macro-F1) is
at least the current model's; otherwise it is kept, named, and ``/tagger rollback`` can still
pick it. ``force:true`` promotes it whatever its score.

One retrain at a time, across every process sharing the store: the ``retrain_runs`` row is
claimed first, and a second request is refused (never queued). A row left ``running`` by a
process that died is recovered when its bot and worker processes are both gone (or it is older
than ``STALE_AFTER``). With ``[bot] retrain_after_votes N`` the bot also retrains by itself once
N member votes arrived since the last retrain (or since the current model), with the same gate,
and posts the outcome to ``[bot] log_channel`` when set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.tagger import TAGGER, admin_only, audit
from memetag.services.retrain_worker import (
    NICE,
    RetrainProgress,
    RetrainResult,
    WorkerFailed,
    start_retrain_worker,
)
from store.queries.retrain import (
    RetrainRun,
    claim_retrain,
    count_votes_since_last_retrain,
    finish_retrain_run,
    update_retrain_detail,
)

log = logging.getLogger(__name__)

COG_NAME = "Retrain"
EDIT_EVERY_S = 2.0  # at most one edit of the progress message this often
# Discord lets an interaction's token edit its response for 15 minutes; past this the
# progress moves to a plain channel message.
INTERACTION_EDITS_S = 14 * 60
# A 'running' row older than this is taken as abandoned even if a process with its pid lives.
STALE_AFTER = timedelta(hours=24)
AUTO = "auto"

_STAGES = {
    "embed": "embedding images",
    "heads": "training the heads, epoch",
    "finetune": "fine-tuning the backbone, step",
    "score": "evaluating on the validation images",
}

Edit = Callable[[str], Awaitable[None]]


# -- text -----------------------------------------------------------------------------------------


def _who(requested_by: str) -> str:
    if requested_by.startswith("discord:"):
        return f"<@{requested_by.split(':', 1)[1]}>"
    return "the bot, after enough new votes" if requested_by == AUTO else requested_by


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _delta(new: float | None, old: float | None) -> str:
    if new is None or old is None:
        return ""
    return f" ({new - old:+.2f})".replace("-", "−")


def _vs(name: str, new: float | None, old: float | None, has_old: bool) -> str:
    if not has_old:
        return f"• {name}: {_f(new)}"
    return f"• {name}: {_f(new)} vs {_f(old)}{_delta(new, old)}"


def figures_lines(result: RetrainResult) -> list[str]:
    """The comparison block: the new model next to the current one on the same images."""
    new, old = result.new, result.old or {}
    has_old = result.old is not None
    if has_old:
        head = f"Same {result.n_val} validation images, new vs current {result.previous_version}:"
    else:
        head = f"On {result.n_val} validation images (the current model was not scored):"
    baselines = (
        f"; baselines: most frequent poster {_f(new.get('majority_top1'))}, "
        f"most active in 30 days {_f(new.get('recent_30d_top1'))}"
    )
    return [
        head,
        _vs(
            "categories, macro-F1",
            new.get("category_macro_f1"),
            old.get("category_macro_f1"),
            has_old,
        ),
        _vs("sender, top-1", new.get("sender_top1"), old.get("sender_top1"), has_old) + baselines,
        _vs("sender, macro-F1", new.get("sender_macro_f1"), old.get("sender_macro_f1"), has_old),
    ]


def outcome_text(run: RetrainRun, result: RetrainResult, serving: str | None) -> str:
    """The final message: the decision first, then the figures it rests on."""
    new, old = result.new, result.old or {}
    if result.promoted:
        why = {
            "forced": "forced",
            "no_current": "there was no model before",
            "incomparable": result.reason,
            "not_worse": (
                f"score {_f(new.get('score'))} ≥ {_f(old.get('score'))}: not worse"
                if result.old
                else result.reason
            ),
        }.get(result.kind, result.reason)
        if serving == result.version:
            now = f"now tagging with it (was {result.previous_version or 'none'})"
        else:
            now = f"but the bot could not load it; still tagging with {serving or 'nothing'}"
        first = f"✅ Retrain #{run.id}: promoted `{result.version}` ({why}), {now}."
        tail = [f"Trained in {result.seconds:.0f} s."]
    else:
        first = (
            f"⏸️ Retrain #{run.id}: kept `{result.version}`, not promoted — score "
            f"{_f(new.get('score'))} vs {_f(old.get('score'))} (category + sender macro-F1; "
            f"categories alone {_f(new.get('category_macro_f1'))} vs "
            f"{_f(old.get('category_macro_f1'))}); still tagging with "
            f"`{serving or result.previous_version}`."
        )
        tail = [
            f"To use it anyway: `/tagger rollback version:{result.version}`, or retrain with "
            "`/tagger retrain force:true`. Trained in "
            f"{result.seconds:.0f} s."
        ]
    return "\n".join([first, *figures_lines(result), *tail])


class _ProgressText:
    """The progress message: one line per stage reached, the current one with its count."""

    def __init__(self, run: RetrainRun) -> None:
        self._head = (
            f"🔁 Retrain #{run.id}{' (force)' if run.forced else ''}, asked by "
            f"{_who(run.requested_by)}: training in a separate process, tagging goes on."
        )
        self._stages: dict[str, tuple[int, int]] = {}
        self._started = time.monotonic()

    def step(self, event: RetrainProgress) -> None:
        if event.stage in self._stages and event.stage != next(reversed(self._stages)):
            self._stages.pop(event.stage)  # a stage run again (the current model's scoring)
        self._stages[event.stage] = (event.n, event.total)

    def render(self, status: str | None = None) -> str:
        lines = [self._head]
        last = next(reversed(self._stages), None)
        for stage, (n, total) in self._stages.items():
            mark = "▸" if stage == last and status is None else "✓"
            count = f"{n}/{total}" if total else "(cached)"
            lines.append(f"{mark} {_STAGES.get(stage, stage)} {count}")
        if not self._stages:
            lines.append("▸ starting")
        elapsed = time.monotonic() - self._started
        lines.append(status or f"{elapsed:.0f} s so far")
        return "\n".join(lines)


# -- showing progress -------------------------------------------------------------------------


class _Throttled:
    """Edits one message with the newest text, at most once every ``every_s`` seconds."""

    def __init__(self, edit: Edit, every_s: float) -> None:
        self._edit = edit
        self._every_s = every_s
        self._text: str | None = None
        self._shown: str | None = None
        self._last = float("-inf")
        self._closing = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="retrain-progress")

    def show(self, text: str) -> None:
        self._text = text
        self._changed.set()

    def cancel(self) -> None:
        self._task.cancel()

    async def close(self, final: str) -> None:
        """Show ``final`` (after the same pause) and stop."""
        self._text = final
        self._closing = True
        self._changed.set()
        await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._changed.wait()
            pause = self._last + self._every_s - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            self._changed.clear()
            text = self._text
            if text is not None and text != self._shown:
                self._last = loop.time()
                try:
                    await self._edit(text)
                except (discord.HTTPException, OSError) as exc:
                    log.warning("could not edit the retrain progress message: %s", exc)
                self._shown = text
            if self._closing and self._shown == self._text:
                return


class _InteractionMessage:
    """The response to ``/tagger retrain``; past the token's lifetime, a channel message."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self._interaction = interaction
        self._since = time.monotonic()
        self._message: discord.Message | None = None

    async def edit(self, text: str) -> None:
        if time.monotonic() - self._since < INTERACTION_EDITS_S:
            await self._interaction.edit_original_response(content=text)
        elif self._message is not None:
            await self._message.edit(content=text)
        elif self._interaction.channel is not None:
            self._message = await self._interaction.channel.send(text)  # type: ignore[union-attr]


# -- stale runs -----------------------------------------------------------------------------------


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    except OSError:
        return False
    return True


# -- the cog --------------------------------------------------------------------------------------


class Retrain(commands.Cog, name=COG_NAME):
    """Retrains on request and after enough new votes; one at a time, across processes."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.deps = bot.deps  # type: ignore[attr-defined]
        self.edit_every_s = EDIT_EVERY_S
        self.worker_nice = NICE
        self._task: asyncio.Task[str] | None = None
        self._closed = False
        self.last_text: str | None = None  # the last outcome (tests, logs)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task[str] | None:
        """The latest run's task (its result is the outcome text)."""
        return self._task

    async def cog_load(self) -> None:
        settings = self.deps.cfg.bot
        if settings.retrain_after_votes > 0:
            self.vote_watch.change_interval(seconds=settings.model_poll_s)
            self.vote_watch.start()

    async def cog_unload(self) -> None:
        self._closed = True
        self.vote_watch.cancel()
        if self.running:
            assert self._task is not None
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- claiming ------------------------------------------------------------------------------

    def _stale_reason(self, run: RetrainRun) -> str | None:
        """Why a 'running' row is abandoned, or None when something may still run it."""
        if datetime.now(UTC) - run.started_at > STALE_AFTER:
            return f"abandoned: still 'running' after {STALE_AFTER.total_seconds() / 3600:.0f} h"
        detail = run.detail
        if detail.get("host") != socket.gethostname():
            return None  # another machine's processes cannot be checked from here
        bot_pid, worker_pid = detail.get("bot_pid"), detail.get("worker_pid")
        if bot_pid == os.getpid():
            owner_alive = self.running
        else:
            owner_alive = _alive(bot_pid)
        if owner_alive or _alive(worker_pid):
            return None
        return "interrupted: the process running it is gone"

    async def claim(
        self, *, guild_id: str | None, requested_by: str, forced: bool
    ) -> tuple[RetrainRun, bool]:
        """Start a run, recovering a stale one first. (the run, True) or (the running one, False)."""
        detail = {"host": socket.gethostname(), "bot_pid": os.getpid()}
        db = self.deps.db
        for _ in range(2):
            run, created = await claim_retrain(
                db, guild_id=guild_id, requested_by=requested_by, forced=forced, detail=detail
            )
            if created or self.running:
                return run, created
            reason = self._stale_reason(run)
            if reason is None:
                return run, False
            log.warning("retrain #%s recovered: %s", run.id, reason)
            await finish_retrain_run(db, run.id, status="failed", outcome=reason)
        return run, False

    # -- running -------------------------------------------------------------------------------

    def launch(
        self, run: RetrainRun, edit: Edit | None = None, *, announce: str | None = None
    ) -> asyncio.Task[str] | None:
        """Run the claimed ``run`` in the background; the task's result is the outcome text.

        None when the cog is being unloaded (the bot stops): the run is left to be recovered.

        Args:
            edit: shows the progress and then the outcome (one message, edited).
            announce: also post the outcome, after this line, to ``[bot] log_channel``.
        """
        if self._closed:
            return None
        self._task = asyncio.create_task(self._run(run, edit, announce), name=f"retrain-{run.id}")
        return self._task

    async def _run(self, run: RetrainRun, edit: Edit | None, announce: str | None) -> str:
        deps = self.deps
        progress = _ProgressText(run)
        shown = _Throttled(edit, self.edit_every_s) if edit is not None else None
        worker = None
        try:
            worker = await start_retrain_worker(
                deps.cfg, run_id=run.id, force=run.forced, nice=self.worker_nice
            )
            await update_retrain_detail(deps.db, run.id, worker_pid=worker.pid)
            log.info("retrain #%s: worker process %s started", run.id, worker.pid)
            result: RetrainResult | None = None
            async for event in worker.events():
                if isinstance(event, RetrainProgress):
                    progress.step(event)
                    if shown is not None:
                        shown.show(progress.render())
                else:
                    result = event
            assert result is not None
            if result.promoted:
                await deps.models.refresh()
            text = outcome_text(run, result, deps.models.version)
            log.info(
                "retrain #%s: %s %s (%s)",
                run.id,
                "promoted" if result.promoted else "kept",
                result.version,
                result.reason,
            )
        except asyncio.CancelledError:
            if shown is not None:
                shown.cancel()
            if worker is not None:
                await worker.terminate()
            await finish_retrain_run(
                deps.db, run.id, status="failed", outcome="stopped: the bot shut down"
            )
            raise
        except WorkerFailed as exc:
            await finish_retrain_run(deps.db, run.id, status="failed", outcome=str(exc))
            text = self._failed(run, str(exc))
        except Exception as exc:  # noqa: BLE001 - the run must end with a message and a row
            log.exception("retrain #%s failed", run.id)
            if worker is not None:
                await worker.terminate()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            await finish_retrain_run(deps.db, run.id, status="failed", outcome=reason)
            text = self._failed(run, reason)
        self.last_text = text
        if shown is not None:
            await shown.close(text)
        channel_id = deps.cfg.bot.log_channel
        if announce is not None and channel_id:
            await self._post(int(channel_id), f"{announce}\n{text}")
        return text

    def _failed(self, run: RetrainRun, reason: str) -> str:
        serving = self.deps.models.version
        return f"❌ Retrain #{run.id} failed: {reason}. Still tagging with {serving or 'nothing'}."

    # -- after enough votes --------------------------------------------------------------------

    @tasks.loop(seconds=30)
    async def vote_watch(self) -> None:
        try:
            await self.check_votes()
        except Exception:  # noqa: BLE001 - the watch must outlive one bad round
            log.exception("could not check for a retrain after new votes")

    async def check_votes(self) -> RetrainRun | None:
        """Retrain (with the gate) when ``[bot] retrain_after_votes`` new votes arrived.

        Returns the run started, if any.
        """
        needed = self.deps.cfg.bot.retrain_after_votes
        if needed <= 0 or self.running:
            return None
        votes = await count_votes_since_last_retrain(self.deps.db)
        if votes < needed:
            return None
        run, created = await self.claim(guild_id=None, requested_by=AUTO, forced=False)
        if not created:
            return None
        log.info("retrain #%s: %s new votes (threshold %s)", run.id, votes, needed)
        self.launch(run, announce=f"Retrained by itself after {votes} new votes:")
        return run

    async def _post(self, channel_id: int, text: str) -> None:
        channel = self.bot.get_channel(channel_id) or self.bot.get_partial_messageable(channel_id)
        try:
            await channel.send(text)  # type: ignore[union-attr]
        except discord.HTTPException as exc:
            log.warning("could not post the retrain outcome to channel %s: %s", channel_id, exc)


# -- the command ----------------------------------------------------------------------------------


@app_commands.command(
    name="retrain",
    description="Train a new model from every label; it replaces the current one only if not worse",
)
@app_commands.describe(force="Use the new model even if it scores worse than the current one")
@admin_only()
async def retrain_command(interaction: discord.Interaction, force: bool = False) -> None:
    """Train a new model from every label members gave, in a separate process, and swap it in
    if it is not worse than the current one on the same validation images (or if forced)."""
    arguments = {"force": force}
    cog = interaction.client.get_cog(COG_NAME)  # type: ignore[attr-defined]
    if not isinstance(cog, Retrain):
        await interaction.response.send_message("retraining is not available", ephemeral=True)
        await audit(interaction, "retrain", arguments, outcome="failed: not available")
        return
    run, created = await cog.claim(
        guild_id=str(interaction.guild_id) if interaction.guild_id else None,
        requested_by=f"discord:{interaction.user.id}",
        forced=force,
    )
    if not created:
        started = discord.utils.format_dt(run.started_at, "R")
        await interaction.response.send_message(
            f"Retrain #{run.id} is already running (asked by {_who(run.requested_by)}, "
            f"started {started}); this one was not queued.",
            ephemeral=True,
        )
        await audit(interaction, "retrain", arguments, outcome=f"refused: #{run.id} is running")
        return
    try:
        await interaction.response.send_message(_ProgressText(run).render())
    except discord.HTTPException as exc:
        await finish_retrain_run(
            cog.deps.db, run.id, status="failed", outcome=f"could not answer: {exc}"
        )
        raise
    cog.launch(run, _InteractionMessage(interaction).edit)
    await audit(interaction, "retrain", arguments, outcome=f"ok: run #{run.id}")


# Replaced, not added twice, when the module is imported again (each bot loads its cogs afresh).
TAGGER.add_command(retrain_command, override=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Retrain(bot))
