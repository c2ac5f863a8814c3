"""What the bot shares, created once per process: config, store, files, HTTP session, model.

``open_deps`` builds the :class:`Deps` at the edge (``memetag bot`` or a test) and closes them in
reverse order; cogs receive them through ``bot.deps`` and never open a session, a connection or
a thread pool of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from ingest.download import Downloader, create_session
from memetag.config import AppConfig
from memetag.services.media import warm_up
from memetag.services.models import ModelChoice, build_predictor, current_model, load_model
from store.db import Database, open_database
from store.files import ImageFiles

if TYPE_CHECKING:
    from classifier.predictor import Predictor

log = logging.getLogger(__name__)


class ModelHolder:
    """The process's one Predictor, and picking up a model trained later by another process.

    With no model, or one that does not load, ``predictor`` is None: the bot keeps storing
    posts and tags nothing; :meth:`refresh` logs why once per distinct reason. ``refresh``
    notices a new current model (another ``memetag train`` or ``memetag use``) or a rewritten
    model file, loads it in a worker thread, and swaps it in without pausing predictions.
    """

    def __init__(self, cfg: AppConfig, db: Database) -> None:
        self._cfg = cfg
        self._db = db
        self.predictor: Predictor | None = None
        self.version: str | None = None
        self.problem: str | None = None  # why nothing is tagged, None when a model serves
        self._stamp: tuple[str, str, int | None] | None = None
        self._failed_stamp: tuple[str, str, int | None] | None = None
        self._logged: str | None = None
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self.predictor is not None and self.problem is None

    def _say(self, problem: str | None) -> None:
        self.problem = problem
        if problem is not None and problem != self._logged:
            log.warning("not tagging: %s (posts are still stored)", problem)
        self._logged = problem

    async def refresh(self) -> bool:
        """Load the store's current model if it changed since the last call. True if swapped."""
        async with self._lock:
            choice = await current_model(self._db, self._cfg)
            if choice is None:
                if self.predictor is None:
                    self._say("no trained model yet: run `memetag train`")
                return False
            if choice.stamp == self._stamp or choice.stamp == self._failed_stamp:
                return False
            return await self._load(choice)

    async def _load(self, choice: ModelChoice) -> bool:
        if choice.mtime_ns is None:
            self._failed_stamp = choice.stamp
            self._say_or_keep(f"model {choice.version}: file {choice.path} is missing")
            return False
        try:
            ckpt = await load_model(self._cfg, choice.path)
            if self.predictor is None:
                predictor = build_predictor(self._cfg, ckpt)
                await asyncio.to_thread(predictor.load)
                self.predictor = predictor
            else:
                await asyncio.to_thread(self.predictor.swap, ckpt)
        except Exception as exc:  # noqa: BLE001 - any load failure leaves the bot running
            self._failed_stamp = choice.stamp
            self._say_or_keep(f"model {choice.version} failed to load: {exc}")
            return False
        self._stamp = choice.stamp
        self._failed_stamp = None
        self.version = choice.version
        log.info("tagging with model %s", choice.version)
        self._say(None)
        return True

    def _say_or_keep(self, problem: str) -> None:
        if self.predictor is not None:
            # The old model keeps serving; say why the new one was not taken, once.
            if problem != self._logged:
                log.warning("%s; still tagging with %s", problem, self.version)
                self._logged = problem
            return
        self._say(problem)

    async def aclose(self) -> None:
        if self.predictor is not None:
            await self.predictor.aclose()
            self.predictor = None


@dataclass
class Deps:
    """Everything the cogs share. Build with :func:`open_deps`."""

    cfg: AppConfig
    db: Database
    files: ImageFiles
    session: aiohttp.ClientSession
    downloader: Downloader
    models: ModelHolder
    extra: dict[str, object] = field(default_factory=dict)  # for later parts' shared objects


@contextlib.asynccontextmanager
async def open_deps(
    cfg: AppConfig,
    *,
    allow_private: bool = False,
    allowed_networks: Sequence[str] = (),
) -> AsyncIterator[Deps]:
    """Open the store, the image files, one HTTP session + downloader, and the model holder.

    Args:
        allow_private, allowed_networks: the downloader's private-address policy; Discord's
            CDN is public, so only tests serving images on 127.0.0.1 loosen it.
    """
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        db = await stack.enter_async_context(open_database(cfg.db_path))
        files = ImageFiles(cfg.images_dir)
        session = await stack.enter_async_context(
            create_session(
                concurrency=cfg.ingest.concurrency,
                timeout_s=cfg.ingest.timeout_s,
                allow_private=allow_private,
                allowed_networks=allowed_networks,
            )
        )
        downloader = Downloader(
            session,
            concurrency=cfg.ingest.concurrency,
            # A live tag is worth little after a minute of retrying: fewer, shorter attempts.
            retries=min(cfg.ingest.retries, 2),
            deadline_s=min(cfg.ingest.deadline_s, 30.0),
            max_bytes=cfg.ingest.max_bytes,
            allow_private=allow_private,
            allowed_networks=allowed_networks,
        )
        models = ModelHolder(cfg, db)
        stack.push_async_callback(models.aclose)
        await models.refresh()
        # The image checks' lazy imports now, not under the first live image.
        await warm_up()
        yield Deps(cfg, db, files, session, downloader, models)
