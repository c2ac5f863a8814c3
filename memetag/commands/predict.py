"""`memetag predict` and `memetag explain`: run the current (or a chosen) model on image files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from memetag.commands._common import UserError, print_json, run_async
from memetag.commands._text import shown, shown_line
from memetag.config import AppConfig

NO_MODEL = "no trained model yet: run `memetag train`"


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
    from classifier.predictor import ErrorResult, Predictor

    ckpt = _load_model(cfg, args.model)
    predictor = Predictor(
        ckpt,
        cfg.model,
        max_batch=cfg.model.batch_size,
        decode_workers=cfg.model.decode_workers,
        device=cfg.model.device,
    )
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
    import torch

    from classifier.backbone import build_transform
    from classifier.checkpoint import build_model
    from classifier.gradcam import gradcam, model_view, render_explanation
    from classifier.imaging import load_rgb

    ckpt = _load_model(cfg, args.model)
    if args.label is not None and args.label not in ckpt.labels:
        raise UserError(
            f"unknown label {args.label!r}; model {ckpt.version} knows: {', '.join(ckpt.labels)}"
        )
    if args.sender and not ckpt.senders:
        raise UserError(f"model {ckpt.version} has no sender head (too few posts per person)")
    model, data_config = build_model(ckpt, cfg.model)
    resize = str(ckpt.model_config.get("resize", cfg.model.resize))
    image = load_rgb(Path(args.file), max_pixels=cfg.model.max_pixels)
    x = build_transform(data_config, resize=resize)(image)
    with torch.inference_mode():
        sender_logits, label_logits = model(x.unsqueeze(0))
    if args.label is not None:
        index = ckpt.labels.index(args.label)
        probability = float(torch.sigmoid(label_logits[0, index]))
        target, what = ("label", index), args.label
    else:
        probs = torch.softmax(sender_logits[0] / ckpt.temperature, dim=0)
        index = int(torch.argmax(probs))
        probability = float(probs[index])
        target, what = ("sender", index), "sender"
    heat = gradcam(model, x, target=target)
    out = Path(args.out) if args.out else Path.cwd() / f"{Path(args.file).stem}.{what}.gradcam.png"
    # Computed on exactly what the model saw, drawn over the whole original image.
    view = model_view(image.size, data_config, resize)
    render_explanation(image, heat, view, out)
    print(shown(out))
    if args.label is not None:
        note = "" if args.label in ckpt.emitted_labels else " (too few examples: never predicted)"
        print(f"{args.label}: {probability:.3f}{note}")
    else:
        print(f"sender {shown(ckpt.senders[index], 80)}: {probability:.3f}")
    print(view.describe(resize))
    return 0


def _load_model(cfg: AppConfig, version: str | None):
    """The checkpoint for --model VERSION or the store's current model, checked against config."""
    from classifier.checkpoint import check_compatible, load_checkpoint

    path = _model_file(cfg, version)
    ckpt = load_checkpoint(path)
    check_compatible(ckpt, cfg.model, [spec.name for spec in cfg.labels])
    return ckpt


def _model_file(cfg: AppConfig, version: str | None) -> Path:
    if version is not None:
        path = cfg.models_dir / f"{version}.pt"
        if path.is_file():
            return path
        record = run_async(_get_record(cfg, version)) if cfg.db_path.exists() else None
        if record is None:
            raise UserError(
                f"no model version {version!r} in {cfg.models_dir} (see `memetag models`)"
            )
        return _record_path(cfg, record)
    if not cfg.db_path.exists():
        raise UserError(NO_MODEL)
    record = run_async(_get_record(cfg, None))
    if record is None:
        raise UserError(NO_MODEL)
    return _record_path(cfg, record)


async def _get_record(cfg: AppConfig, version: str | None):
    from store.db import open_database
    from store.queries.models import get_current_model, get_model

    async with open_database(cfg.db_path) as db:
        return await (get_model(db, version) if version else get_current_model(db))


def _record_path(cfg: AppConfig, record) -> Path:
    path = Path(record.path)
    return path if path.is_absolute() else cfg.data_dir / path
