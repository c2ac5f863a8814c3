"""Which trained model is current, where its file is, loading it, and switching to another.

A long-running process (the bot) notices a model trained by another process by polling
:func:`current_model` and comparing :attr:`ModelChoice.stamp`: the version, file and its
modification time (one indexed query and one ``stat``). Loading runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from memetag.config import AppConfig
from memetag.services.errors import NoModel, NoStore, UnknownModel
from store.db import Database, open_database
from store.queries.models import get_current_model, get_model, set_current_model
from store.rows import ModelRecord

if TYPE_CHECKING:
    from classifier.checkpoint import Checkpoint
    from classifier.predictor import Predictor

NO_MODEL = "no trained model yet: run `memetag train`"


@dataclass(frozen=True)
class ModelChoice:
    """A recorded model and its file as it is now (``mtime_ns`` None: the file is missing)."""

    version: str
    path: Path
    mtime_ns: int | None

    @property
    def stamp(self) -> tuple[str, str, int | None]:
        """Changes when another model becomes current or its file is rewritten."""
        return (self.version, str(self.path), self.mtime_ns)


@dataclass(frozen=True)
class UsedModel:
    """What :func:`use_model` did: the record now current, and a warning to show, if any."""

    record: ModelRecord
    warning: str | None


def model_path(cfg: AppConfig, record: ModelRecord) -> Path:
    """The record's checkpoint file (stored relative to the data dir unless absolute)."""
    path = Path(record.path)
    return path if path.is_absolute() else cfg.data_dir / path


def _mtime_ns(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


async def _choice(cfg: AppConfig, record: ModelRecord | None) -> ModelChoice | None:
    if record is None:
        return None
    path = model_path(cfg, record)
    return ModelChoice(record.version, path, await asyncio.to_thread(_mtime_ns, path))


async def current_model(db: Database, cfg: AppConfig) -> ModelChoice | None:
    """The store's current model, or None when none is current yet. Cheap enough to poll."""
    return await _choice(cfg, await get_current_model(db))


async def get_model_choice(db: Database, cfg: AppConfig, version: str) -> ModelChoice | None:
    """A recorded model version, or None when there is no such version."""
    return await _choice(cfg, await get_model(db, version))


async def find_model_file(
    cfg: AppConfig, version: str | None = None, *, db: Database | None = None
) -> Path:
    """The checkpoint for ``version`` (a file in the models folder, or a recorded version) or
    the current model. Opens the store itself when ``db`` is not given (and there is one).

    Raises:
        UnknownModel: ``version`` is neither a file in the models folder nor recorded.
        NoModel: no version asked for and no current model (or no store at all).
    """
    if version is not None:
        path = cfg.models_dir / f"{version}.pt"
        if await asyncio.to_thread(path.is_file):
            return path
    if db is None:
        if not cfg.db_path.exists():
            if version is not None:
                raise UnknownModel(_unknown_file(cfg, version))
            raise NoModel(NO_MODEL)
        async with open_database(cfg.db_path) as opened:
            return await find_model_file(cfg, version, db=opened)
    if version is not None:
        record = await get_model(db, version)
        if record is None:
            raise UnknownModel(_unknown_file(cfg, version))
        return model_path(cfg, record)
    record = await get_current_model(db)
    if record is None:
        raise NoModel(NO_MODEL)
    return model_path(cfg, record)


def _unknown_file(cfg: AppConfig, version: str) -> str:
    return f"no model version {version!r} in {cfg.models_dir} (see `memetag models`)"


def load_compatible(cfg: AppConfig, path: Path) -> Checkpoint:
    """Read a checkpoint and refuse it if it does not fit the config. Blocking (torch.load).

    Raises:
        ModelError: missing, damaged, or trained on another backbone or label set.
    """
    from classifier.checkpoint import check_compatible, load_checkpoint

    ckpt = load_checkpoint(path)
    check_compatible(ckpt, cfg.model, [spec.name for spec in cfg.labels])
    return ckpt


async def load_model(cfg: AppConfig, path: Path) -> Checkpoint:
    """:func:`load_compatible` in a worker thread."""
    return await asyncio.to_thread(load_compatible, cfg, path)


def build_predictor(cfg: AppConfig, checkpoint: Checkpoint | Path) -> Predictor:
    """A Predictor for a checkpoint with the ``[model]`` settings (batch, decode threads,
    device). It builds its network lazily, on first use or ``load()``."""
    from classifier.predictor import Predictor

    return Predictor(
        checkpoint,
        cfg.model,
        max_batch=cfg.model.batch_size,
        decode_workers=cfg.model.decode_workers,
        device=cfg.model.device,
    )


def check_loadable(cfg: AppConfig, record: ModelRecord) -> str | None:
    """Refuse a missing or damaged file; say (not refuse) when it no longer fits the config.

    Blocking (torch.load). Returns the warning text, or None.

    Raises:
        ModelError: the file is missing or is not a readable memetag checkpoint.
    """
    from classifier.checkpoint import check_compatible, load_checkpoint
    from classifier.errors import ModelError

    ckpt = load_checkpoint(model_path(cfg, record))
    try:
        check_compatible(ckpt, cfg.model, cfg.labels)
    except ModelError as exc:
        return str(exc)
    return None


async def use_model(db: Database, cfg: AppConfig, version: str) -> UsedModel:
    """Make ``version`` the current model, once its file is known to load.

    Raises:
        UnknownModel: no such version recorded.
        ModelError: its file is missing or damaged (the current model stays).
    """
    record = await get_model(db, version)
    if record is None:
        raise UnknownModel(f"no model version {version!r} (see `memetag models`)")
    warning = await asyncio.to_thread(check_loadable, cfg, record)
    return UsedModel(await set_current_model(db, version), warning)


def require_store(cfg: AppConfig) -> None:
    """Raise NoStore when nothing was ingested yet (no database file)."""
    if not cfg.db_path.exists():
        raise NoStore(f"{cfg.db_path}: no store yet; run `memetag ingest …` first")
