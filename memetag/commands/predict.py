"""`memetag predict` and `memetag explain`: run the current (or a chosen) model on image files.

Argument parsing and printing only: which model (memetag.services.models), the Predictor
(classifier.predictor) and the Grad-CAM overlay (classifier.explain) do the work.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from memetag.commands._common import print_json, run_async
from memetag.commands._text import shown, shown_line
from memetag.config import AppConfig


def register(sub: argparse._SubParsersAction) -> None:
    predict = sub.add_parser(
        "predict",
        help="predict categories and likely sender for image files",
        description="Run the current model (or --model VERSION) on each FILE and show its "
        "categories over threshold and the most likely sender. Unreadable files are reported "
        "and skipped; the exit code is 0 if at least one file was predicted.",
    )
    predict.add_argument("files", nargs="+", metavar="FILE", help="image files to tag")
    predict.add_argument(
        "--model", metavar="VERSION", help="model version to use (default: the current one)"
    )
    predict.add_argument("--json", action="store_true", help="print a JSON array, one per file")
    predict.set_defaults(handler=handle_predict)

    explain = sub.add_parser(
        "explain",
        help="show which parts of an image drove a category or the sender guess (Grad-CAM)",
        description="Write a Grad-CAM heatmap for one category (--label NAME) or for the most "
        "likely sender (--sender), and print the PNG's path, the probability of what was "
        "explained and what the model saw. The map is computed on the model's own view of FILE "
        'and drawn over the whole image; with [model] resize = "crop" the model sees only the '
        "centre square, and the parts outside it are dimmed.",
    )
    explain.add_argument("file", metavar="FILE", help="image file to explain")
    what = explain.add_mutually_exclusive_group(required=True)
    what.add_argument("--label", metavar="NAME", help="explain this category")
    what.add_argument("--sender", action="store_true", help="explain the most likely sender")
    explain.add_argument(
        "--out",
        metavar="PNG",
        help="where to write the overlay (default: ./<file stem>.<label|sender>.gradcam.png)",
    )
    explain.add_argument(
        "--model", metavar="VERSION", help="model version to use (default: the current one)"
    )
    explain.set_defaults(handler=handle_explain)


def handle_predict(args: argparse.Namespace, cfg: AppConfig) -> int:
    from classifier.predictor import ErrorResult
    from memetag.services.models import build_predictor

    ckpt = _load_model(cfg, args.model)
    predictor = build_predictor(cfg, ckpt)
    try:
        results = predictor.predict_files([Path(f) for f in args.files])
    finally:
        predictor.close()
    rows: list[dict[str, Any]] = []
    for name, result in zip(args.files, results, strict=True):
        if isinstance(result, ErrorResult):
            rows.append({"file": name, "error": result.error})
            continue
        rows.append(
            {
                "file": name,
                "labels": {k: round(v, 4) for k, v in result.labels.items()},
                "predicted": list(result.predicted),
                "sender": {
                    "name": result.sender,
                    "probability": round(result.sender_probability, 4),
                    "candidates": [
                        {"name": c.name, "probability": round(c.probability, 4)}
                        for c in result.sender_candidates
                    ],
                },
            }
        )
    if args.json:
        print_json(rows)
    else:
        _print_table(rows, ckpt.version)
    return 0 if any("error" not in row for row in rows) else 1


def _sender_cell(sender: dict[str, Any]) -> str:
    """``Person B 0.62 (or Person A 0.20, Person C 0.09)``, or ``unsure: Person B 0.45, …``."""
    candidates = [f"{shown(c['name'], 30)} {c['probability']:.2f}" for c in sender["candidates"]]
    if sender["name"] is None:
        return "unsure: " + ", ".join(candidates) if candidates else "unsure"
    named = f"{shown(sender['name'], 30)} {sender['probability']:.2f}"
    others = [
        c
        for c, raw in zip(candidates, sender["candidates"], strict=True)
        if raw["name"] != sender["name"]
    ]
    return f"{named} (or {', '.join(others)})" if others else named


def _print_table(rows: list[dict[str, Any]], version: str) -> None:
    # File and sender names may come from an export: escaped and cut before they are measured.
    files = [shown(r["file"]) for r in rows]
    width = min(40, max([len("FILE")] + [len(f) for f in files]))
    senders = []
    for row in rows:
        if "error" in row:
            senders.append("")
            continue
        senders.append(_sender_cell(row["sender"]))
    sender_width = max([len("SENDER")] + [len(s) for s in senders])
    print(f"model {version}")
    print(f"{'FILE':<{width}}  {'SENDER':<{sender_width}}  CATEGORIES")
    for row, file, sender in zip(rows, files, senders, strict=True):
        file = file if len(file) <= width else "…" + file[-(width - 1) :]
        if "error" in row:
            print(f"{file:<{width}}  error: {shown_line(row['error'])}")
            continue
        labels = ", ".join(f"{shown(n)} {row['labels'][n]:.2f}" for n in row["predicted"]) or "-"
        print(f"{file:<{width}}  {sender:<{sender_width}}  {labels}")


def handle_explain(args: argparse.Namespace, cfg: AppConfig) -> int:
    from classifier.atomic import atomic_write
    from classifier.explain import Explainer

    explainer = Explainer(_load_model(cfg, args.model), cfg.model)
    explainer.check_target(label=args.label, sender=args.sender)
    result = explainer.explain(Path(args.file), label=args.label, sender=args.sender)
    what = args.label if args.label is not None else "sender"
    out = Path(args.out) if args.out else Path.cwd() / f"{Path(args.file).stem}.{what}.gradcam.png"
    atomic_write(out, result.png)
    print(shown(out))
    if result.target == "label":
        note = "" if result.emitted else " (too few examples: never predicted)"
        print(f"{result.name}: {result.probability:.3f}{note}")
    elif result.named:
        print(f"sender {shown(result.name, 80)}: {result.probability:.3f}")
    else:
        print(f"sender unsure: {_unsure_sender(result)}")
    print(result.description)
    return 0


def _unsure_sender(result) -> str:
    """The sender the map is of, said the way `predict` says it: not named, only a candidate."""
    candidate = f"{shown(result.name, 80)} {result.probability:.3f}"
    line = result.min_confidence
    if line is None or line > 1.0:
        return f"{candidate} (this model never names a sender; the map is of this candidate)"
    return f"{candidate} (below the {line:.2f} confidence line; the map is of this candidate)"


def _load_model(cfg: AppConfig, version: str | None):
    """The checkpoint for --model VERSION or the store's current model, checked against config."""
    from memetag.services.models import find_model_file, load_compatible

    return load_compatible(cfg, run_async(find_model_file(cfg, version)))
