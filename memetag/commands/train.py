"""`memetag train`, `memetag eval` and `memetag models`: argument parsing and printing. The
work (training, the promotion rule, recording, evaluation, switching models) is in
memetag.services.training and memetag.services.models.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from memetag.commands._common import ProgressBars, UserError, print_json, run_async
from memetag.commands._text import shown
from memetag.config import AppConfig


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train a model from the stored images and labels",
        description="Train the category and sender heads from every stored image. Stage 1 "
        "(default) keeps the backbone frozen and caches its embeddings, so a retrain only embeds "
        "new images. The newest [train] val_fraction of images validate, the [train] "
        "tune_fraction before them fit the sender calibration, the rest train; category "
        "thresholds and calibration come from cross-validation on train and tune. The heads "
        "that ship are then refit on every image; the validation figures (with an interval) are "
        "of the heads fitted without the validation images. The new model becomes current if it "
        "is not worse than the current one on that same validation set.",
    )
    train.add_argument(
        "--finetune",
        action="store_true",
        help="stage 2: also fine-tune the backbone end to end (slow without a GPU)",
    )
    train.add_argument("--seed", type=int, metavar="N", help="random seed (default: [train] seed)")
    train.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help="epochs of the stage being run: the heads ([train] epochs), or with --finetune the "
        "end-to-end stage ([train] finetune_epochs)",
    )
    train.add_argument(
        "--promote", action="store_true", help="make the new model current whatever its scores"
    )
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(handler=handle_train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a model on the current validation set and write its report",
        description="Re-evaluate a model on the current time split's validation images and write "
        "reports/<version>/report.json, report.md and plots.",
    )
    ev.add_argument("--model", metavar="VERSION", help="model version (default: the current one)")
    ev.add_argument("--json", action="store_true", help="print report.json (or compare.json)")
    ev.add_argument(
        "--compare",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="evaluate two versions on the same validation images and show the differences",
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")
    ev.set_defaults(handler=handle_eval)

    models = sub.add_parser(
        "models",
        help="list trained models; `models use VERSION` rolls back",
        description="List trained model versions with their key validation metrics; the current "
        "one is marked with *. `memetag models use VERSION` makes another version current.",
    )
    models.add_argument("--json", action="store_true", help="print the list as JSON")
    actions = models.add_subparsers(dest="models_action", metavar="ACTION")
    use = actions.add_parser(
        "use", help="make VERSION the current model", description="Make VERSION the current model."
    )
    use.add_argument("version", metavar="VERSION", help="a version listed by `memetag models`")
    models.set_defaults(handler=handle_models)


# --- helpers -----------------------------------------------------------------------------------


def _progress(enabled: bool):
    """on_progress(stage, done, total) drawing one tqdm bar per stage, and a closer."""
    bars = ProgressBars(
        enabled,
        names={
            "embed": "embedding",
            "heads": "heads (epochs)",
            "finetune": "fine-tuning",
            "score": "scoring",
        },
        units={"embed": "img", "score": "img", "heads": "step", "finetune": "step"},
    )

    def on_progress(stage: str, done: int, total: int) -> None:
        if total > 0:
            bars.update(stage, done, total)

    return on_progress, bars.close


def _f(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def sender_verdict_line(snd: dict) -> str | None:
    """Whether the sender guess beats both baselines, in words (None: nothing to compare)."""
    beats = snd.get("beats_baselines")
    if beats is None:
        return None
    margins = (
        f"top-1 {_signed(snd.get('top1_margin'))}, macro-F1 {_signed(snd.get('macro_f1_margin'))}"
        f" over the better baseline, {snd.get('n_images', 0)} validation images"
    )
    if beats:
        return f"the sender guess beats both baselines ({margins})"
    return (
        f"the sender guess does NOT beat the baselines ({margins}): no sign here that members "
        "post different things"
    )


def confidence_line(snd: dict) -> str:
    """The sender "unsure" line and what it did on validation."""
    line = snd.get("min_confidence")
    if line is not None and line > 1.0:
        return (
            'sender never named (always "unsure", with candidates): on the tune images no '
            "confidence line reached [train] sender_target_precision, or the guesses lost to "
            "always naming the most active member"
        )
    return (
        f"sender named when confidence >= {_f(line)}: coverage {_f(snd.get('coverage'))}, "
        f"precision {_f(snd.get('confident_precision'))}"
    )


def category_figure(cats: dict) -> str:
    """Validation macro-F1 with its 95% bootstrap interval and how many images it rests on:
    on a few dozen images a bare number says little."""
    n = cats.get("n_category_labelled") or 0
    interval = cats.get("macro_f1_interval")
    if cats.get("macro_f1") is None:
        return f"– ({n} validation images with categories)"
    spread = f"95% interval {_f(interval[0])}–{_f(interval[1])}, " if interval else ""
    return f"{_f(cats['macro_f1'])} ({spread}{n} validation images with categories)"


# --- memetag train -----------------------------------------------------------------------------


def handle_train(args: argparse.Namespace, cfg: AppConfig) -> int:
    from memetag.services.training import TrainOptions, train_and_record_blocking

    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    options = TrainOptions(
        finetune=args.finetune, seed=args.seed, epochs=args.epochs, promote=args.promote
    )
    on_progress, close = _progress(not args.no_progress and not args.json)
    try:
        outcome = train_and_record_blocking(cfg, options, on_progress, on_trained=close)
    finally:
        close()
    summary = _train_summary(outcome)
    if args.json:
        print_json({**summary, "comparison": outcome.comparison})
    else:
        _print_train_summary(summary)
    return 0


def _train_summary(outcome) -> dict[str, Any]:
    """The run as the JSON summary `memetag train --json` prints (and the text is made from)."""
    ev = outcome.evaluation
    return {
        "version": outcome.version,
        "stage": outcome.stage,
        "seconds": round(outcome.seconds, 1),
        "data": ev["data"],
        "summary": ev["summary"],
        "categories": {
            k: ev["categories"].get(k)
            for k in (
                "macro_f1",
                "macro_f1_interval",
                "n_category_labelled",
                "micro_f1",
                "map",
                "coverage",
                "labels_per_image",
                "label_mode",
            )
        },
        "label_tuning": ev.get("label_tuning"),
        "sender": {
            k: ev["sender"].get(k)
            for k in (
                "top1",
                "top3",
                "macro_f1",
                "coverage",
                "confident_precision",
                "min_confidence",
                "beats_baselines",
                "top1_margin",
                "macro_f1_margin",
                "unsure_rate",
                "n_images",
            )
        },
        "baselines": ev["baselines"],
        "calibration": ev["calibration"],
        "tuning": ev.get("tuning"),
        "promoted": outcome.promotion.promoted,
        "promotion_reason": outcome.promotion.reason,
        "model_path": str(outcome.model_path),
        "report": str(outcome.report_path),
    }


def _print_train_summary(s: dict) -> None:
    d, cats, snd, base = s["data"], s["categories"], s["sender"], s["baselines"]
    stage = "fine-tuned end to end" if s["stage"] == "finetune" else "heads on frozen embeddings"
    print(f"trained {s['version']} ({stage}) in {s['seconds']:.1f}s")
    print(
        f"  images       {d['n_images']}: train {d['n_train']}, tune {d['n_tune']}"
        f" (from {d['tune_cutoff'] or '–'}), validation {d['n_val']}"
        f" (newest, from {d['cutoff'] or '–'})"
    )
    print(
        f"  repost leaks {d['dropped_leaks']} training images dropped (near-duplicates of tune "
        f"or validation images), {d['dropped_tune_leaks']} tune images (of validation images)"
    )
    lt = s.get("label_tuning")
    if lt:
        exclusive = d.get("label_mode") == "exclusive"
        print(
            f"  tuning       category calibration{'' if exclusive else ' and thresholds'} from "
            f"{lt['folds']}-fold cross-validation on the {lt['n_images']} train and tune images "
            "with categories"
            + (" (exclusive labelling: one category per image)" if exclusive else "")
        )
    if d["tuned_on"] == "tune":
        what = "sender temperature" if lt else "thresholds, temperature"
        print(
            f"  tuning       {what} and confidence line fitted on the "
            f"{d['n_tune']} tune images; validation only scored"
        )
    else:
        print(f"  warning      {d['tuning_warning']}")
    if d.get("refit"):
        print(
            f"  shipped      heads refit on all {d['refit']['n_images']} images once tuned; the "
            "validation figures are of the heads fitted without the validation images"
        )
    print(
        f"  embeddings   {d.get('embedded_new', 0)} new, {d.get('embedded_cached', 0)} cached"
        + (f", {d['failed_images']} undecodable" if d.get("failed_images") else "")
    )
    print(
        f"  labelled     {d['n_category_labelled_train']} train / "
        f"{d['n_category_labelled_tune']} tune / {d['n_category_labelled_val']} validation "
        "images with categories"
    )
    print(f"  senders      {len(d['senders'])}: {', '.join(shown(n, 80) for n in d['senders'])}")
    print(f"  labels       emitted: {', '.join(d['emitted_labels']) or 'none'}")
    not_emitted = {k: v for k, v in d["not_emitted"].items()}
    if not_emitted:
        print(
            f"               not emitted (< {d['min_label_positives']} labelled images): "
            + ", ".join(f"{k} ({v})" for k, v in not_emitted.items())
        )
    print(
        f"  categories   macro-F1 {category_figure(cats)} · micro-F1 {_f(cats['micro_f1'])} · "
        f"mAP {_f(cats['map'])} · labels per image {_f(cats.get('labels_per_image'))}"
    )
    print(
        f"  sender       top-1 {_f(snd['top1'])} · top-3 {_f(snd['top3'])} · macro-F1 "
        f"{_f(snd['macro_f1'])}"
    )
    print(
        f"  baselines    majority top-1 {_f(base['majority'].get('top1'))} · most active in "
        f"the last 30 days top-1 {_f(base['recent_30d'].get('top1'))}"
    )
    verdict = sender_verdict_line(snd)
    if verdict:
        print(f"  verdict      {verdict}")
    print(f"  confident    {confidence_line(snd)}")
    if not d["n_val"]:
        print(
            "  warning      no validation images (no post times?): thresholds, temperature and "
            "the sender confidence line are defaults, and there is nothing to compare"
        )
    print(f"  promoted     {'yes' if s['promoted'] else 'no'}: {s['promotion_reason']}")
    print(f"  model        {s['model_path']}")
    print(f"  report       {s['report']}")


# --- memetag eval ------------------------------------------------------------------------------


def handle_eval(args: argparse.Namespace, cfg: AppConfig) -> int:
    from memetag.services.evaluation import compare_models_blocking, evaluate_model_blocking

    on_progress, close = _progress(not args.no_progress and not args.json)
    try:
        if args.compare:
            old_v, new_v = args.compare
            compared = compare_models_blocking(cfg, old_v, new_v, on_progress, on_scored=close)
        else:
            outcome = evaluate_model_blocking(cfg, args.model, on_progress, on_scored=close)
    finally:
        close()
    if args.compare:
        from classifier.report import render_comparison_markdown

        if args.json:
            print_json(compared.comparison)
        else:
            print(render_comparison_markdown(compared.comparison), end="")
            print(f"written to {compared.report_path}")
        return 0

    evaluation, version = outcome.evaluation, outcome.version
    if args.json:
        print_json(evaluation)
        return 0
    s, d = evaluation["summary"], evaluation["data"]
    print(
        f"evaluated {version} on {evaluation['n_val']} validation images "
        f"(from {d['cutoff'] or '–'}; {d['dropped_leaks']} repost leaks dropped from training)"
    )
    if d.get("tuning_warning"):
        print(f"  warning      {d['tuning_warning']}")
    print(
        f"  categories   macro-F1 {category_figure(evaluation['categories'])} · micro-F1 "
        f"{_f(s['category_micro_f1'])} · mAP {_f(s['category_map'])}"
    )
    print(
        f"  sender       top-1 {_f(s['sender_top1'])} · top-3 {_f(s['sender_top3'])} · "
        f"macro-F1 {_f(s['sender_macro_f1'])}"
    )
    print(
        f"  baselines    majority top-1 {_f(s['majority_top1'])} · most active in the last 30 "
        f"days top-1 {_f(s['recent_30d_top1'])}"
    )
    verdict = sender_verdict_line(evaluation["sender"])
    if verdict:
        print(f"  verdict      {verdict}")
    print(f"  report       {outcome.report_path}")
    return 0


# --- memetag models ----------------------------------------------------------------------------


async def _list_models(cfg: AppConfig) -> list:
    from store.db import open_database
    from store.queries.models import list_models

    async with open_database(cfg.db_path) as db:
        return await list_models(db)


async def _use_model(cfg: AppConfig, version: str):
    from memetag.services.models import use_model
    from store.db import open_database

    async with open_database(cfg.db_path) as db:
        return await use_model(db, cfg, version)


def handle_models(args: argparse.Namespace, cfg: AppConfig) -> int:
    from memetag.services.models import require_store

    require_store(cfg)
    if args.models_action == "use":
        used = run_async(_use_model(cfg, args.version))
        if used.warning:
            print(f"memetag: warning: {used.warning}", file=sys.stderr)
        print(f"current model is now {used.record.version}")
        return 0
    records = run_async(_list_models(cfg))
    if args.json:
        print_json([dataclasses.asdict(r) for r in records])
        return 0
    if not records:
        print("no models yet; run `memetag train`")
        return 0
    print(
        f"  {'version':<24} {'created':<20} {'cat-F1':>6} {'snd-top1':>8} {'snd-F1':>6} "
        f"{'majority':>8} {'stage':<8}"
    )
    for r in records:
        m = r.metrics
        print(
            f"{'*' if r.is_current else ' '} {r.version:<24} "
            f"{r.created_at:%Y-%m-%d %H:%M:%S}  {_f(m.get('category_macro_f1')):>6} "
            f"{_f(m.get('sender_top1')):>8} {_f(m.get('sender_macro_f1')):>6} "
            f"{_f(m.get('majority_top1')):>8} {m.get('stage') or '–':<8}"
        )
    return 0
