"""Learning curve: category F1 on a fixed held-out part against labelled examples per category.

    .venv/bin/python bench/learning_curve.py --make-demo-csv /tmp/memetag-demo   # offline data
    .venv/bin/python bench/learning_curve.py /tmp/memetag-demo/labels.csv

The CSV is what `memetag ingest folder` takes (filename,sender,labels,timestamp; filenames relative
to the CSV's folder; labels space-separated). Images are read directly (no store), embedded once
with the frozen backbone through the embedding cache, then for each size k (5, 10, 20, 50, all)
and each of 3 seeds the heads are trained on k positives per category sampled from the training
part and scored on the held-out part: macro-F1 and per-label F1 at threshold 0.5 (the heads are
trained with balanced positive weights) and mAP. Writes bench/results/learning_curve.json and .png.

The held-out part is a fixed 30 % of the images, chosen with its own seed so every size and
training seed is scored on the same images.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from classifier.backbone import build_backbone  # noqa: E402
from classifier.config import ModelConfig, TrainConfig  # noqa: E402
from classifier.embeddings import EmbeddingCache  # noqa: E402
from classifier.evaluate import label_metrics  # noqa: E402
from classifier.train import (  # noqa: E402
    HeadData,
    embed_examples,
    embedding_cache_key,
    predict_heads,
    train_heads,
)
from memetag.demo import make_demo_chat  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_CACHE = HERE / ".cache"
SIZES = ("5", "10", "20", "50", "all")
HELDOUT_FRACTION = 0.3
HELDOUT_SEED = 12345


# --- the demo data set -------------------------------------------------------------------------


def make_demo_csv(directory: Path, n: int = 600, seed: int = 0) -> Path:
    """Write ``n`` images of the synthetic demo chat and its ``labels.csv`` into ``directory``."""
    make_demo_chat(directory, images=n, seed=seed)
    return directory / "labels.csv"


# --- the curve ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    path: Path
    sha256: str
    labels: tuple[str, ...]


def read_csv(path: Path) -> list[Row]:
    import hashlib

    rows = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for cells in csv.DictReader(fh):
            image = path.parent / cells["filename"]
            if not image.is_file():
                logging.warning("skipping %s: no such file", image)
                continue
            sha = hashlib.sha256(image.read_bytes()).hexdigest()
            labels = tuple(dict.fromkeys((cells.get("labels") or "").split()))
            rows.append(Row(image, sha, labels))
    return rows


def _sample(pool: list[int], targets: np.ndarray, k: int | None, rng: random.Random) -> list[int]:
    """k positives per label (all of them if fewer), as the union over labels."""
    if k is None:
        return list(pool)
    chosen: set[int] = set()
    for j in range(targets.shape[1]):
        positives = [i for i in pool if targets[i, j] > 0]
        chosen.update(rng.sample(positives, min(k, len(positives))))
    return sorted(chosen)


def run_curve(
    rows: list[Row],
    labels: list[str],
    features: np.ndarray,
    *,
    seeds: int,
    train_cfg: TrainConfig,
) -> dict:
    targets = np.array(
        [[1.0 if name in r.labels else 0.0 for name in labels] for r in rows], dtype=np.float32
    )
    order = list(range(len(rows)))
    random.Random(HELDOUT_SEED).shuffle(order)
    n_held = int(round(len(rows) * HELDOUT_FRACTION))
    held, pool = sorted(order[:n_held]), sorted(order[n_held:])
    mask_held = np.ones((len(held), len(labels)), bool)
    points = []
    for size in SIZES:
        k = None if size == "all" else int(size)
        runs = []
        for seed in range(seeds):
            chosen = _sample(pool, targets, k, random.Random(seed))
            data = HeadData(
                features=features[chosen],
                sender_targets=np.full(len(chosen), -1, np.int64),
                label_targets=targets[chosen],
                label_mask=np.ones((len(chosen), len(labels)), bool),
            )
            heads = train_heads(
                data,
                n_senders=0,
                epochs=train_cfg.epochs,
                lr=train_cfg.lr,
                weight_decay=train_cfg.weight_decay,
                batch_size=train_cfg.batch_size,
                seed=seed,
            )
            _, probs = predict_heads(heads, features[held])
            m = label_metrics(targets[held], mask_held, probs, [0.5] * len(labels), labels)
            runs.append(
                {
                    "n_train_images": len(chosen),
                    "train_positives": {
                        n: int(targets[chosen, j].sum()) for j, n in enumerate(labels)
                    },
                    "macro_f1": m["macro_f1"],
                    "map": m["map"],
                    "per_label_f1": {n: m["per_label"][n]["f1"] for n in labels},
                }
            )
        macro = [r["macro_f1"] for r in runs]
        points.append(
            {
                "per_category": size,
                "n_train_images_mean": float(np.mean([r["n_train_images"] for r in runs])),
                "macro_f1_mean": float(np.mean(macro)),
                "macro_f1_std": float(np.std(macro)),
                "map_mean": float(np.mean([r["map"] for r in runs])),
                "per_label_f1_mean": {
                    n: float(np.mean([r["per_label_f1"][n] for r in runs])) for n in labels
                },
                "runs": runs,
            }
        )
    return {
        "n_images": len(rows),
        "n_heldout": len(held),
        "n_pool": len(pool),
        "heldout_positives": {n: int(targets[held, j].sum()) for j, n in enumerate(labels)},
        "labels": labels,
        "seeds": seeds,
        "threshold": 0.5,
        "points": points,
    }


def plot_curve(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    xs = [p["n_train_images_mean"] for p in result["points"]]
    ticks = [p["per_category"] for p in result["points"]]
    for name in result["labels"]:
        ax.plot(
            xs,
            [p["per_label_f1_mean"][name] for p in result["points"]],
            linewidth=0.8,
            alpha=0.5,
            label=name,
        )
    ax.errorbar(
        xs,
        [p["macro_f1_mean"] for p in result["points"]],
        yerr=[p["macro_f1_std"] for p in result["points"]],
        color="black",
        linewidth=2.2,
        marker="o",
        capsize=3,
        label="macro-F1",
    )
    ax.set_xscale("log")
    ax.minorticks_off()  # the log axis's own minor labels would collide with the sizes
    ax.set_xticks(xs, [f"{t}\n({x:.0f})" for t, x in zip(ticks, xs, strict=True)])
    ax.set_xlabel("labelled examples per category (training images)")
    ax.set_ylabel("held-out F1 @ 0.5")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Learning curve, {result['seeds']} seeds, {result['n_heldout']} held-out images")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "csv", nargs="?", type=Path, help="labelled CSV (filename,sender,labels,timestamp)"
    )
    parser.add_argument(
        "--make-demo-csv",
        type=Path,
        metavar="DIR",
        help="write a synthetic labelled image set (and labels.csv) into DIR",
    )
    parser.add_argument("--demo-images", type=int, default=600, help="images in the demo set")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per size")
    parser.add_argument("--backbone", help="default: [model] backbone (efficientnet_lite0)")
    parser.add_argument("--pretrained", help='default: "package" (offline ImageNet weights)')
    parser.add_argument("--image-size", type=int, help="default: [model] image_size")
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="embedding cache folder (default: bench/.cache)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "learning_curve.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.make_demo_csv:
        path = make_demo_csv(args.make_demo_csv, args.demo_images)
        print(f"wrote {args.demo_images} images and {path}")
        if not args.csv:
            return 0
    if not args.csv:
        parser.error("give a CSV (or --make-demo-csv DIR)")

    overrides = {
        k: v
        for k, v in (
            ("backbone", args.backbone),
            ("pretrained", args.pretrained),
            ("image_size", args.image_size),
        )
        if v is not None
    }
    model_cfg = dataclasses.replace(ModelConfig(device="cpu", decode_workers=2), **overrides)
    train_cfg = TrainConfig()
    rows = read_csv(args.csv)
    labels = sorted({name for r in rows for name in r.labels})
    if not rows or not labels:
        print("no labelled images in the CSV", file=sys.stderr)
        return 1

    from tqdm import tqdm

    started = time.perf_counter()
    backbone, data_config = build_backbone(model_cfg)
    cache = EmbeddingCache(args.cache, embedding_cache_key(model_cfg, train_cfg.seed))
    bar = tqdm(desc="embedding", unit="img", file=sys.stderr, disable=not sys.stderr.isatty())

    def on_progress(stage: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    from classifier.dataset import Example

    examples = [
        Example(r.sha256, r.path, None, None, None, np.zeros(0), np.zeros(0, bool)) for r in rows
    ]
    emb = embed_examples(
        backbone, data_config, examples, model_cfg=model_cfg, cache=cache, on_progress=on_progress
    )
    bar.close()
    embed_seconds = time.perf_counter() - started
    rows = [r for r, ok in zip(rows, emb.ok, strict=True) if ok]
    started = time.perf_counter()
    result = run_curve(rows, labels, emb.features[emb.ok], seeds=args.seeds, train_cfg=train_cfg)
    result.update(
        {
            "bench": "learning_curve",
            "csv": str(args.csv),
            "backbone": model_cfg.backbone,
            "pretrained": model_cfg.pretrained,
            "image_size": model_cfg.image_size,
            "embedded_new": emb.n_new,
            "embedded_cached": emb.n_cached,
            "embed_seconds": round(embed_seconds, 1),
            "curve_seconds": round(time.perf_counter() - started, 1),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    png = args.out.with_suffix(".png")
    plot_curve(result, png)
    print(f"{'per category':>12} {'train imgs':>10} {'macro-F1':>9} {'± std':>6} {'mAP':>6}")
    for p in result["points"]:
        print(
            f"{p['per_category']:>12} {p['n_train_images_mean']:>10.1f} "
            f"{p['macro_f1_mean']:>9.3f} {p['macro_f1_std']:>6.3f} {p['map_mean']:>6.3f}"
        )
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
