"""The real memetag bot against the stand-in Discord, with a tiny random-init model.

``bot_world(standin, tmp_path, ...)`` builds a data dir (a store with a recorded tiny model),
opens the bot's shared dependencies, starts ``MemetagBot`` and yields a :class:`BotWorld`.
Members "Person A" / "Person B" are in the guild and in ``[people]`` under their Discord ids,
so the sender head's names (``tests.ml_helpers.SENDERS``) are theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from bot.app import MemetagBot
from bot.cogs.tagging import Tagging
from bot.deps import Deps, open_deps
from classifier.checkpoint import save_checkpoint
from memetag.config import AppConfig, BotConfig, LabelSpec
from memetag.standin import StandinDiscord, User, running_bot
from store.db import Database, open_database
from store.queries.models import insert_model
from tests.ml_helpers import LABELS, make_checkpoint, tiny_model_config

T = TypeVar("T")
EMOJIS = {"meme": "😂", "social_media": "🐦", "photo": "📷"}


def make_config(data_dir: Path, **bot: Any) -> AppConfig:
    """An AppConfig for the tiny model's labels; ``bot`` overrides [bot] keys."""
    return AppConfig(
        model=tiny_model_config(),
        labels=tuple(LabelSpec(name, EMOJIS[name], name) for name in LABELS),
        bot=BotConfig(**bot),
        data_dir=data_dir,
        discord_token="standin-token",
    )


async def record_model(
    cfg: AppConfig, db: Database, version: str = "v-test", **checkpoint: Any
) -> Path:
    """Save a tiny checkpoint in the models dir and make it the store's current model."""
    cfg.models_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.models_dir / f"{version}.pt"
    ckpt = make_checkpoint(cfg.model, version=version, finetuned=True, **checkpoint)
    await asyncio.to_thread(save_checkpoint, ckpt, path)
    await insert_model(db, version, str(path.relative_to(cfg.data_dir)), {}, make_current=True)
    return path


@dataclass
class BotWorld:
    standin: StandinDiscord
    bot: MemetagBot
    deps: Deps
    cfg: AppConfig
    members: list[User]

    @property
    def tagging(self) -> Tagging:
        # load_extension imports the cog module afresh: compare by name, not by class.
        cog = self.bot.get_cog("Tagging")
        assert cog is not None, "the tagging cog is not loaded"
        return cog  # type: ignore[return-value]

    @property
    def db(self) -> Database:
        return self.deps.db

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until the bot's listeners ran and its work queue is empty."""
        await self.standin.sync()
        for _ in range(3):
            await asyncio.sleep(0)
        await asyncio.wait_for(self.tagging.queue.join(), timeout)

    async def until(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Poll ``predicate`` (store rows, stats) until truthy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.standin.check()
            value = predicate()
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout}s")
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def bot_world(
    standin: StandinDiscord,
    data_dir: Path,
    *,
    mode: str | None = "react",
    model: bool | str = True,
    checkpoint: dict[str, Any] | None = None,
    ingest: dict[str, Any] | None = None,
    error_loggers: Sequence[str] = ("discord", "bot"),
    **bot: Any,
) -> AsyncIterator[BotWorld]:
    """The memetag bot running against ``standin``; ``mode`` watches the default channel.

    Args:
        model: record a tiny model as current (True), none (False), or one whose file is
            garbage ("broken").
        checkpoint: ``make_checkpoint`` options; ingest: ``[ingest]`` overrides;
        bot: ``[bot]`` keys.
    """
    members = [await standin.add_member("Person A"), await standin.add_member("Person B")]
    if mode is not None:
        bot.setdefault("channels", {str(standin.channel.id): mode})
    bot["channels"] = MappingProxyType(dict(bot.get("channels", {})))
    cfg = make_config(data_dir, **bot)
    cfg = dataclasses.replace(
        cfg,
        people=MappingProxyType({str(m.id): m.name for m in members}),
        ingest=dataclasses.replace(cfg.ingest, **(ingest or {})),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    async with open_database(cfg.db_path) as db:
        if model:
            path = await record_model(cfg, db, **(checkpoint or {}))
            if model == "broken":
                path.write_bytes(b"not a checkpoint")
    async with open_deps(cfg, allow_private=True) as deps:
        client = MemetagBot(deps=deps, guild_ready_timeout=0.05)
        async with running_bot(standin, client, error_loggers=error_loggers):
            # [bot] command_sync "guild" registers the commands once the guilds are known.
            await asyncio.wait_for(client.commands_synced.wait(), 10)
            yield BotWorld(standin, client, deps, cfg, members)
