"""Scoring recorded models on the store's current validation split, and comparing two.

The split is the one training makes now (newest ``[train] val_fraction`` of the images), so a
model trained long ago is scored on today's validation images; ``compare_models`` scores both
versions on the same images. The torch work is blocking: the async entry points run it in a
worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memetag.config import AppConfig
from memetag.services.errors import NoModel, NotEnoughData, UnknownModel
from memetag.services.models import model_path, require_store
from memetag.services.training import TrainProgress
from store.db import Database, open_database
from store.queries.images import list_labelled_images
from store.queries.models import get_current_model, get_model
from store.rows import LabelledImage, ModelRecord

if TYPE_CHECKING:
    from classifier.train import PreparedData

NO_CURRENT = "no current model; run `memetag train` first"


@dataclass(frozen=True)
class StoreView:
    """What evaluation reads from the store: the labelled images, the current model and the
    recorded versions asked for (in order)."""

    items: list[LabelledImage]
    current: ModelRecord | None
    records: list[ModelRecord]


@dataclass(frozen=True)
class EvaluationOutcome:
    """One model scored: the full evaluation (what ``report.json`` holds) and the report."""

    version: str
    evaluation: dict[str, Any]
    report_path: Path  # report.md


@dataclass(frozen=True)
class ComparisonOutcome:
    """Two models scored on the same validation images, and their differences."""

    old: EvaluationOutcome
    new: EvaluationOutcome
    comparison: dict[str, Any]
    report_path: Path  # compare.md


async def read_store_view(db: Database, versions: Sequence[str] = ()) -> StoreView:
    """The labelled images, the current model and the records of ``versions``.

    Raises:
        UnknownModel: a requested version that is not recorded.
    """
    items = await list_labelled_images(db)
    current = await get_current_model(db)
    records = []
    for version in versions:
        record = await get_model(db, version)
        if record is None:
            raise UnknownModel(f"no model version {version!r} (see `memetag models`)")
        records.append(record)
    return StoreView(items, current, records)


def prepare_split(cfg: AppConfig, items: list[LabelledImage], train_cfg=None) -> PreparedData:
    """The time split (and leak filtering) of the stored images, as training makes it.

    Raises:
        NotEnoughData: no stored images.
    """
    from classifier.dataset import build_examples
    from classifier.train import prepare_data

    if not items:
        raise NotEnoughData("no stored images yet; run `memetag ingest …` first")
    labels = [spec.name for spec in cfg.labels]
    return prepare_data(build_examples(items, labels, cfg.data_dir), labels, train_cfg or cfg.train)


def evaluate_record(
    cfg: AppConfig,
    record: ModelRecord,
    prepared: PreparedData,
    on_progress: TrainProgress | None = None,
) -> dict[str, Any]:
    """Score a recorded model on ``prepared``'s validation images. Blocking (torch)."""
    from classifier.checkpoint import load_checkpoint
    from classifier.train import evaluate_checkpoint

    kwargs = {"on_progress": on_progress} if on_progress is not None else {}
    return evaluate_checkpoint(
        load_checkpoint(model_path(cfg, record)),
        prepared,
        model_cfg=cfg.model,
        cache_dir=cfg.cache_dir,
        **kwargs,
    )


def _score(
    cfg: AppConfig,
    view: StoreView,
    records: Sequence[ModelRecord],
    on_progress: TrainProgress | None,
    on_scored,
) -> list[EvaluationOutcome]:
    """Score ``records`` on one split and write each one's report. Blocking."""
    from classifier.report import write_report

    prepared = prepare_split(cfg, view.items)
    try:
        evaluations = [evaluate_record(cfg, r, prepared, on_progress) for r in records]
    finally:
        if on_scored is not None:
            on_scored()
    out = []
    for record, evaluation in zip(records, evaluations, strict=True):
        paths = write_report(evaluation, cfg.reports_dir / evaluation["version"])
        out.append(EvaluationOutcome(record.version, evaluation, paths["markdown"]))
    return out


def _evaluate_one(cfg, view, on_progress, on_scored) -> EvaluationOutcome:
    record = view.records[0] if view.records else view.current
    if record is None:
        raise NoModel(NO_CURRENT)
    return _score(cfg, view, [record], on_progress, on_scored)[0]


def _compare(cfg, view, on_progress, on_scored) -> ComparisonOutcome:
    from classifier.report import compare_evaluations, write_comparison

    old, new = _score(cfg, view, view.records, on_progress, on_scored)
    comparison = compare_evaluations(old.evaluation, new.evaluation)
    paths = write_comparison(
        comparison, cfg.reports_dir / f"compare-{old.version}-vs-{new.version}"
    )
    return ComparisonOutcome(old, new, comparison, paths["markdown"])


async def evaluate_model(
    db: Database,
    cfg: AppConfig,
    version: str | None = None,
    on_progress: TrainProgress | None = None,
) -> EvaluationOutcome:
    """Score ``version`` (default: the current model) and write its report (torch in a thread).

    Raises:
        UnknownModel / NoModel: no such version, or no current model.
        NotEnoughData: no stored images.
    """
    view = await read_store_view(db, (version,) if version else ())
    return await asyncio.to_thread(_evaluate_one, cfg, view, on_progress, None)


async def compare_models(
    db: Database,
    cfg: AppConfig,
    old: str,
    new: str,
    on_progress: TrainProgress | None = None,
) -> ComparisonOutcome:
    """Score two versions on the same validation images and write both reports and the
    comparison (torch in a thread)."""
    view = await read_store_view(db, (old, new))
    return await asyncio.to_thread(_compare, cfg, view, on_progress, None)


def _read_view_blocking(cfg: AppConfig, versions: Sequence[str]) -> StoreView:
    require_store(cfg)

    async def read() -> StoreView:
        async with open_database(cfg.db_path) as db:
            return await read_store_view(db, versions)

    return asyncio.run(read())


def evaluate_model_blocking(
    cfg: AppConfig,
    version: str | None = None,
    on_progress: TrainProgress | None = None,
    *,
    on_scored=None,
) -> EvaluationOutcome:
    """:func:`evaluate_model` for a caller without an event loop (the CLI); scores in the
    calling thread. ``on_scored`` is called once scoring is over (before reports are written).

    Raises:
        NoStore: nothing ingested yet; else as :func:`evaluate_model`.
    """
    view = _read_view_blocking(cfg, (version,) if version else ())
    return _evaluate_one(cfg, view, on_progress, on_scored)


def compare_models_blocking(
    cfg: AppConfig,
    old: str,
    new: str,
    on_progress: TrainProgress | None = None,
    *,
    on_scored=None,
) -> ComparisonOutcome:
    """:func:`compare_models` for a caller without an event loop (the CLI)."""
    return _compare(cfg, _read_view_blocking(cfg, (old, new)), on_progress, on_scored)
