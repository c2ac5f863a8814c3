"""`memetag demo` end to end: sample chat -> real ingest, train, eval -> real bot in a stand-in
Discord -> transcript, with where everything went and what to try next.

Every step is the product's own code path: the CLI's `ingest hangouts`, `ingest folder`,
`train` and `eval` run through :func:`memetag.cli.main` with the demo's config file, and the bot
is :func:`bot.app.run_bot`. The only loosening is explicit and the same one a user would type:
``--allow-private`` for downloads from the loopback image host, and the bot's
``allow_private`` because the stand-in's CDN is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from memetag.config import AppConfig, load_config
from memetag.demo import samplechat
from memetag.demo.imagehost import ImageHost
from memetag.demo.samplechat import MEMBERS, SMALL_PLAN, LivePlan, SampleChat
from memetag.demo.transcript import excerpt, render_png, write_text
from memetag.errors import MemetagError

MARKER = ".memetag-demo"


class DemoError(MemetagError):
    """The demo could not run (shown as one line)."""


@dataclass(frozen=True)
class DemoOptions:
    root: Path
    history: int = 300
    plan: LivePlan = LivePlan()
    seed: int = 0
    live: bool = True

    @classmethod
    def small(cls, root: Path, seed: int = 0) -> DemoOptions:
        return cls(root, history=60, plan=SMALL_PLAN, seed=seed)


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def chat(self) -> Path:
        return self.root / "chat"

    @property
    def takeout(self) -> Path:
        return self.root / "takeout" / "Takeout" / "Hangouts" / "Hangouts.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def transcript_txt(self) -> Path:
        return self.root / "transcript.txt"

    @property
    def transcript_png(self) -> Path:
        return self.root / "transcript.png"

    @property
    def excerpt_png(self) -> Path:
        """A shorter picture of the same conversation (the README's)."""
        return self.root / "transcript-excerpt.png"


# --- the demo's config file -------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _section(name: str, values: Mapping[str, object]) -> list[str]:
    lines = [f"[{name}]"]
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in values.items()]
    return [*lines, ""]


def write_config(
    path: Path,
    cfg: AppConfig,
    *,
    discord_people: Mapping[str, str] | None = None,
    channel_id: int | None = None,
) -> Path:
    """The demo's config.toml: the caller's [model] and [train], the members under their
    Hangouts ids (and Discord ids once the stand-in gave them), the bot's channel."""
    lines = [
        "# Written by `memetag demo` for its sample chat. Try:",
        f"#   memetag --config {path} stats",
        "",
        '[storage]\ndata_dir = "data"\n',
    ]
    lines += _section("model", dataclasses.asdict(cfg.model))
    lines += _section("train", dataclasses.asdict(cfg.train))
    bot: dict[str, object] = {"model_poll_s": 2.0}
    lines += _section("bot", bot)
    if channel_id is not None:
        lines.insert(len(lines) - 1, f'channels = {{ "{channel_id}" = "reply" }}')
    people = {m.gaia_id: m.name for m in MEMBERS}
    people.update(discord_people or {})
    lines += _section("people", people)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# --- steps ---------------------------------------------------------------------------------------


def _prepare(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise DemoError(f"{root} exists and was not made by `memetag demo`: pick another --dir")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by memetag demo; deleted by the next run\n")


def _heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _step(paths: DemoPaths, *argv: str) -> None:
    """Run a real memetag command with the demo's config and data dir."""
    from memetag.cli import main

    args = ["--config", str(paths.config), "--data", str(paths.data), *argv]
    print(f"$ memetag {' '.join(args)}", flush=True)
    code = main(args)
    if code != 0:
        raise DemoError(f"`memetag {' '.join(argv)}` failed (exit {code})")


def run_demo(cfg: AppConfig, options: DemoOptions) -> int:
    started = time.monotonic()
    paths = DemoPaths(options.root)
    _prepare(paths.root)
    write_config(paths.config, cfg)

    _heading(
        f"1. A sample chat: {len(MEMBERS)} members, {options.history} images of history, "
        "and a later batch for the live part"
    )
    chat = samplechat.make_sample_chat(
        paths.chat, history=options.history, plan=options.plan, seed=options.seed
    )
    for m in MEMBERS:
        mine = [i for i in chat.history if i.sender == m.name]
        print(f"  {m.name}: {len(mine):>3} images - {m.about}")
    labelled = sum(i.labelled for i in chat.history)
    print(
        f"  labels sheet: {labelled} of {len(chat.history)} images labelled "
        f"({paths.chat / 'labels.csv'}); live batch: {len(chat.live)} images"
    )

    with ImageHost(paths.chat / "history") as host:
        samplechat.write_hangouts_export(chat, paths.takeout, host.base_url, seed=options.seed)
        print(f"  Hangouts Takeout export: {paths.takeout} (images served on {host.base_url})")

        _heading("2. Bring the history in: the real ingest, from the Takeout export")
        # The export's URLs point at 127.0.0.1, which ingest refuses unless told otherwise.
        _step(paths, "ingest", "hangouts", str(paths.takeout), "--allow-private", "--no-progress")
    _heading("   ... and the members' labels for it (the same images, matched by content)")
    _step(paths, "ingest", "folder", str(paths.chat / "labels.csv"), "--no-progress")

    _heading("3. Train, then evaluate on the newest images (never trained on)")
    _step(paths, "train", "--no-progress")
    _step(paths, "eval", "--no-progress")

    result = None
    if options.live:
        _heading("4. The bot, live: the real `memetag bot` against a local stand-in Discord")
        try:
            result = asyncio.run(_live(paths, cfg, chat, options.plan))
        except AssertionError as exc:  # the stand-in's "timed out waiting for ..." and kin
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DemoError(f"the live part stopped: {first}") from exc

    _finish(paths, result, time.monotonic() - started)
    return 0


async def _live(paths: DemoPaths, cfg: AppConfig, chat: SampleChat, plan: LivePlan):
    from memetag.demo.live import run_live

    def configure(discord, users) -> AppConfig:
        people = {str(u.id): name for name, u in users.items()}
        write_config(paths.config, cfg, discord_people=people, channel_id=discord.channel.id)
        return load_config(paths.config, data_dir=str(paths.data), environ={})

    result = await run_live(chat, plan, configure=configure)
    write_text(result.transcript, paths.transcript_txt)
    render_png(result.transcript, paths.transcript_png)
    render_png(excerpt(result.transcript), paths.excerpt_png, palette=True)
    return result


def _finish(paths: DemoPaths, result, seconds: float) -> None:
    _heading(f"Demo done in {seconds:.0f}s. Where everything went:")
    reports = sorted(paths.data.glob("reports/*/report.md"), key=lambda p: p.stat().st_mtime)
    rows: list[tuple[str, str]] = [
        ("sample chat (images, labels sheet)", str(paths.chat)),
        ("Hangouts Takeout export", str(paths.takeout)),
        ("config", str(paths.config)),
        ("database", str(paths.data / "memetag.db")),
        ("stored images", str(paths.data / "images")),
        ("models", str(paths.data / "models")),
    ]
    if reports:
        latest = reports[-1].parent
        rows.append(("report of the newest model", str(reports[-1])))
        plots = ", ".join(p.name for p in sorted(latest.glob("*.png")))
        if plots:
            rows.append(("  its plots", plots))
    if result is not None:
        rows += [
            ("live transcript (text)", str(paths.transcript_txt)),
            ("live transcript (picture)", str(paths.transcript_png)),
        ]
    width = max(len(name) for name, _ in rows)
    for name, where in rows:
        print(f"  {name:<{width}}  {where}")
    if result is not None:
        kind = samplechat.NEW_KIND.replace("_", " ")
        print(
            f"\nLive: {result.first[0]} of {result.first[1]} images of the known kinds tagged "
            f"right; the new kind ({kind}): {result.new[0]} of {result.new[1]} before the "
            f"corrections, {result.after[0]} of {result.after[1]} after"
            + (" the retrain." if result.retrained else " (no retrain in this build).")
        )
    base = f"memetag --config {paths.config}"
    live = sorted((paths.chat / "live").glob("live_*"))
    versions = [p.stem for p in sorted(paths.data.glob("models/*.pt"))]
    print("\nNext, try:")
    print(f"  {base} stats")
    print(f"  {base} models")
    if live:
        # The last new-kind image: what the members taught the bot.
        some = live[-2] if len(live) > 1 else live[-1]
        print(f"  {base} predict {some}")
        print(
            f"  {base} explain {some} --label {samplechat.NEW_KIND} --out {paths.root}/explain.png"
        )
    if len(versions) >= 2:
        print(f"  {base} eval --compare {versions[0]} {versions[-1]}")
    print(f"  {base} export --csv - | head")
    print('  memetag bot --check        # with your DISCORD_TOKEN: README, "Running the bot"')
    sys.stdout.flush()
