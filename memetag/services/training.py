"""Training a model from the store, deciding whether it becomes current, and recording it.

Promotion rule: a new model becomes current when forced (``TrainOptions.promote``), when there
is no current model, when the current one can't be loaded or no longer fits the config, or when
it is not worse than the current one on the SAME validation set (the new run's split): its
score, category macro-F1 + sender macro-F1, is at least the current model's. Both are scored
with heads that never saw that validation set: the new model's category thresholds were
cross-fitted on train and tune, its sender calibration fitted on the tune part (on validation
only when the store is too small for a tune part, which the summary flags), and a refit model is
scored with the heads it kept from before its refit.

:func:`train_and_record` runs the torch work in a worker thread, so a running event loop (the
bot's) keeps serving; :func:`train_and_record_blocking` does it in the calling thread for the
CLI, where Ctrl-C must stop it at once. Both share every step below.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from memetag.config import AppConfig
from memetag.services.errors import BadRequest, NotEnoughData
from memetag.services.models import model_path, require_store
from store.db import Database, open_database
from store.queries.images import list_labelled_images
from store.queries.models import get_current_model, insert_model
from store.rows import LabelledImage, ModelRecord

if TYPE_CHECKING:
    from classifier.train import TrainResult

# on_progress(stage, done, total): stage is "embed", "heads", "finetune" or "score". Called from
# the thread the training runs in (a worker thread under train_and_record).
TrainProgress = Callable[[str, int, int], None]

PromotionKind = Literal["forced", "no_current", "incomparable", "not_worse", "worse"]


@dataclass(frozen=True)
class TrainOptions:
    """What a caller may change about one run; hyperparameters otherwise come from ``[train]``.

    ``epochs`` is for the stage being run: the heads, or with ``finetune`` the end-to-end stage.
    """

    finetune: bool = False
    seed: int | None = None
    epochs: int | None = None
    promote: bool = False  # make the new model current whatever its scores


@dataclass(frozen=True)
class Promotion:
    """Whether the new model became current, and why (``reason`` is the sentence users see)."""

    promoted: bool
    kind: PromotionKind
    reason: str


@dataclass(frozen=True)
class ModelFigures:
    """The headline validation figures of a model (``None``: nothing to measure it on)."""

    category_macro_f1: float | None
    sender_top1: float | None
    sender_macro_f1: float | None
    sender_beats_baselines: bool | None
    majority_top1: float | None
    recent_30d_top1: float | None
    n_train: int | None
    n_val: int | None
    score: float

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> ModelFigures:
        """From ``classifier.evaluate.summary_metrics`` (an evaluation's ``"summary"``)."""
        return cls(
            category_macro_f1=summary.get("category_macro_f1"),
            sender_top1=summary.get("sender_top1"),
            sender_macro_f1=summary.get("sender_macro_f1"),
            sender_beats_baselines=summary.get("sender_beats_baselines"),
            majority_top1=summary.get("majority_top1"),
            recent_30d_top1=summary.get("recent_30d_top1"),
            n_train=summary.get("n_train"),
            n_val=summary.get("n_val"),
            score=float(summary.get("score") or 0.0),
        )


@dataclass(frozen=True)
class TrainOutcome:
    """What one training run produced.

    ``evaluation`` is the full validation report (what ``report.json`` holds) and
    ``comparison`` the differences from the model that was current, when it could be scored
    on the same validation set.
    """

    version: str
    stage: str | None
    seconds: float
    promotion: Promotion
    figures: ModelFigures
    record: ModelRecord
    model_path: Path
    report_path: Path
    previous_version: str | None
    evaluation: dict[str, Any]
    comparison: dict[str, Any] | None

    @property
    def promoted(self) -> bool:
        return self.promotion.promoted


@dataclass(frozen=True)
class _Fitted:
    """The blocking part's result, before the store records it."""

    result: TrainResult
    seconds: float
    rel_path: Path
    promotion: Promotion
    old_evaluation: dict | None
    report_path: Path
    comparison: dict | None


def _noop(stage: str, done: int, total: int) -> None:
    pass


def resolved_train_config(cfg: AppConfig, options: TrainOptions):
    """``[train]`` with the run's overrides applied.

    Raises:
        BadRequest: ``epochs`` below 1.
    """
    overrides: dict[str, Any] = {}
    if options.seed is not None:
        overrides["seed"] = options.seed
    if options.epochs is not None:
        if options.epochs < 1:
            raise BadRequest("epochs must be at least 1")
        overrides["finetune_epochs" if options.finetune else "epochs"] = options.epochs
    return dataclasses.replace(cfg.train, **overrides)


def check_enough_data(examples: Sequence) -> None:
    """Raise NotEnoughData unless there are 2+ images and either 2+ senders or some labels."""
    senders = {e.sender for e in examples if e.sender is not None}
    labelled = sum(e.is_category_labelled for e in examples)
    if len(examples) < 2:
        raise NotEnoughData(
            f"not enough data to train: {len(examples)} stored image(s), need 2 or more"
        )
    if len(senders) < 2 and not labelled:
        raise NotEnoughData(
            f"not enough data to train: {len(senders)} sender(s) and no labelled images; "
            "ingest more history or label some images"
        )


def decide_promotion(
    cfg: AppConfig,
    current: ModelRecord | None,
    result: TrainResult,
    *,
    force: bool = False,
    on_progress: TrainProgress = _noop,
) -> tuple[Promotion, dict | None]:
    """Apply the promotion rule (module docstring). Blocking: may score the current model.

    Returns the decision and the current model's evaluation on the new split, if it was scored.
    """
    from classifier.checkpoint import check_compatible, load_checkpoint
    from classifier.errors import ClassifierError
    from classifier.evaluate import promotion_score
    from classifier.train import evaluate_checkpoint

    if force:
        return Promotion(True, "forced", "--promote given"), None
    if current is None:
        return Promotion(True, "no_current", "no current model"), None
    try:
        ckpt = load_checkpoint(model_path(cfg, current))
        check_compatible(ckpt, cfg.model, cfg.labels)
        old_eval = evaluate_checkpoint(
            ckpt,
            result.prepared,
            model_cfg=cfg.model,
            cache_dir=cfg.cache_dir,
            on_progress=on_progress,
        )
    except ClassifierError as exc:
        why = f"current model {current.version} cannot be compared ({exc})"
        return Promotion(True, "incomparable", why), None
    new_score, old_score = promotion_score(result.evaluation), promotion_score(old_eval)
    n = result.evaluation["n_val"]
    if new_score >= old_score:
        why = f"score {new_score:.3f} >= current {current.version}'s {old_score:.3f}"
        return Promotion(True, "not_worse", f"{why} on the same {n} validation images"), old_eval
    why = f"score {new_score:.3f} < current {current.version}'s {old_score:.3f}"
    return (
        Promotion(
            False, "worse", f"{why} on the same {n} validation images (use --promote to force)"
        ),
        old_eval,
    )


def _fit(
    cfg: AppConfig,
    options: TrainOptions,
    items: list[LabelledImage],
    current: ModelRecord | None,
    on_progress: TrainProgress,
    on_trained: Callable[[], None] | None = None,
) -> _Fitted:
    """Train, save the checkpoint and its resolved config, decide promotion, write the report.

    Blocking (torch, files).
    """
    from classifier.atomic import atomic_write
    from classifier.checkpoint import save_checkpoint
    from classifier.dataset import build_examples
    from classifier.report import compare_evaluations, write_comparison, write_report
    from classifier.train import train_model

    train_cfg = resolved_train_config(cfg, options)
    if not items:
        raise NotEnoughData("no stored images yet; run `memetag ingest …` first")
    labels = [spec.name for spec in cfg.labels]
    examples = build_examples(items, labels, cfg.data_dir)
    check_enough_data(examples)

    started = time.monotonic()
    try:
        result = train_model(
            examples,
            labels=labels,
            model_cfg=cfg.model,
            train_cfg=train_cfg,
            cache_dir=cfg.cache_dir,
            finetune_backbone=options.finetune,
            on_progress=on_progress,
        )
        seconds = time.monotonic() - started
        version = result.checkpoint.version
        rel = Path("models") / f"{version}.pt"
        save_checkpoint(result.checkpoint, cfg.data_dir / rel)
        # The resolved config beside the checkpoint, so a run can be reproduced.
        resolved = {
            "version": version,
            "finetune": options.finetune,
            "model": dataclasses.asdict(cfg.model),
            "train": dataclasses.asdict(train_cfg),
            "labels": [dataclasses.asdict(s) for s in cfg.labels],
        }
        atomic_write(cfg.models_dir / f"{version}.json", json.dumps(resolved, indent=2).encode())
        promotion, old_eval = decide_promotion(
            cfg, current, result, force=options.promote, on_progress=on_progress
        )
    finally:
        if on_trained is not None:
            on_trained()

    report_dir = cfg.reports_dir / version
    paths = write_report(result.evaluation, report_dir)
    comparison = None
    if old_eval is not None:
        comparison = compare_evaluations(old_eval, result.evaluation)
        write_comparison(comparison, report_dir / f"vs-{old_eval['version']}")
    return _Fitted(result, seconds, rel, promotion, old_eval, paths["markdown"], comparison)


async def _record(db: Database, cfg: AppConfig, fitted: _Fitted, current) -> TrainOutcome:
    evaluation = fitted.result.evaluation
    version = fitted.result.checkpoint.version
    metrics = {
        **evaluation["summary"],
        "stage": evaluation.get("stage"),
        "promotion": fitted.promotion.reason,
    }
    record = await insert_model(
        db, version, str(fitted.rel_path), metrics, make_current=fitted.promotion.promoted
    )
    return _outcome(cfg, fitted, record, current)


def _outcome(cfg: AppConfig, fitted: _Fitted, record: ModelRecord, current) -> TrainOutcome:
    evaluation = fitted.result.evaluation
    return TrainOutcome(
        version=record.version,
        stage=evaluation.get("stage"),
        seconds=fitted.seconds,
        promotion=fitted.promotion,
        figures=ModelFigures.from_summary(evaluation["summary"]),
        record=record,
        model_path=cfg.data_dir / fitted.rel_path,
        report_path=fitted.report_path,
        previous_version=current.version if current is not None else None,
        evaluation=evaluation,
        comparison=fitted.comparison,
    )


async def train_and_record(
    db: Database,
    cfg: AppConfig,
    options: TrainOptions = TrainOptions(),
    on_progress: TrainProgress | None = None,
) -> TrainOutcome:
    """Train from every stored image, decide promotion, write the report, record the model.

    The torch work runs in a worker thread (``on_progress`` is called from it): the event
    loop stays free. The store is only read before and written after. Cancelling the caller
    does not stop the thread: the run finishes and writes its files, but is not recorded.

    Raises:
        NotEnoughData: too few images, senders or labels.
        BadRequest: an option out of range.
        ClassifierError: no image could be decoded.
    """
    resolved_train_config(cfg, options)  # refuse bad options before any work
    items = await list_labelled_images(db)
    current = await get_current_model(db)
    fitted = await asyncio.to_thread(_fit, cfg, options, items, current, on_progress or _noop)
    return await _record(db, cfg, fitted, current)


def train_and_record_blocking(
    cfg: AppConfig,
    options: TrainOptions = TrainOptions(),
    on_progress: TrainProgress | None = None,
    *,
    on_trained: Callable[[], None] | None = None,
) -> TrainOutcome:
    """:func:`train_and_record` for a caller without an event loop (the CLI): it opens the
    store itself, and trains in the calling thread so that Ctrl-C stops it at once.

    Args:
        on_trained: called once training (and scoring the current model) is over, before the
            report is written — where the CLI closes its progress bars.

    Raises:
        NoStore: nothing ingested yet; else as :func:`train_and_record`.
    """
    resolved_train_config(cfg, options)
    require_store(cfg)

    async def load():
        async with open_database(cfg.db_path) as db:
            return await list_labelled_images(db), await get_current_model(db)

    items, current = asyncio.run(load())
    fitted = _fit(cfg, options, items, current, on_progress or _noop, on_trained)

    async def record():
        async with open_database(cfg.db_path) as db:
            return await _record(db, cfg, fitted, current)

    return asyncio.run(record())
