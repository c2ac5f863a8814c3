"""Learning from few labels: the real pipeline against a logistic regression on the same features.

    .venv/bin/python bench/label_efficiency.py [--ks 5 10 20] [--seeds 0 1 2] [--modes crop]

Data: ``tests/helpers/realset.py`` draws a chat-like set offline from real photos that ship
with installed packages (scikit-image, matplotlib, scikit-learn) and realistic layouts -
memes over photos, tweet cards and tall thread captures, news articles, comics, TV-cartoon
frames, plain photos: 6 categories, one true category each, ``--per-category`` images each.

For each resize mode, k and seed: k images per category (capped so every category keeps at
least 3 test images; nested, so the k = 5 images are among the k = 10 ones) are labelled,
given timestamps in a random order, written to a CSV and ingested into a fresh data dir with
the real ``memetag ingest folder``, trained with the real ``memetag train --seed S`` (default
settings; the config file only names the resize mode) and every other image is predicted with
``memetag predict --json``. The baseline is scikit-learn's ``LogisticRegression`` with its
defaults (C = 1) fitted on all k-per-category labelled images' frozen embeddings - the same
backbone, weights and preprocessing - and scored on the same test images; the same after a
``StandardScaler`` is reported too (``logreg_scaled``: weaker with few labels).

Reported per run and as mean ± SD over seeds: category macro-F1 over the 6 categories of the
emitted label sets, 6-way top-1 (the most probable category), meme-vs-not accuracy, labels per
image (the truth is 1), and what ``memetag train`` said about its own validation images.
Embeddings are computed once per mode into a shared cache that every run's data dir links to,
so the trainings only train. Writes bench/results/label_efficiency.json and .png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

from classifier.config import ModelConfig  # noqa: E402
from tests.helpers.realset import CATEGORIES, make_real_set, read_truth  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "label_efficiency.json"
DEFAULT_WORK = Path("/tmp/memetag-label-efficiency")
MIN_TEST_PER_CATEGORY = 3
MEMETAG = [sys.executable, "-m", "memetag.cli"]
METRICS = ("macro_f1", "top1", "meme_vs_not", "labels_per_image")


# --- data ---------------------------------------------------------------------------------------


def choose_labelled(truth: list, k: int, seed: int) -> tuple[list[int], list[int]]:
    """(labelled, test) indices: k per category (at most all but MIN_TEST_PER_CATEGORY), from a
    per-seed order of each category, so a smaller k's images are among a larger k's."""
    labelled: list[int] = []
    for category in CATEGORIES:
        idx = [i for i, r in enumerate(truth) if r.category == category]
        random.Random(f"{seed}:{category}").shuffle(idx)
        labelled += idx[: max(0, min(k, len(idx) - MIN_TEST_PER_CATEGORY))]
    chosen = set(labelled)
    return sorted(labelled), [i for i in range(len(truth)) if i not in chosen]


def write_labelled_folder(
    chat: Path, folder: Path, truth: list, labelled: list[int], seed: int
) -> Path:
    """The labelled images (hard links) and their ingest CSV, with timestamps six hours apart
    in a random order; returns the CSV's path."""
    chat.mkdir(parents=True)
    for i in labelled:
        try:
            os.link(folder / truth[i].filename, chat / truth[i].filename)
        except OSError:
            shutil.copyfile(folder / truth[i].filename, chat / truth[i].filename)
    path = chat / "labels.csv"
    order = list(labelled)
    random.Random(f"time:{seed}").shuffle(order)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "sender", "labels", "timestamp"])
        for n, i in enumerate(order):
            when = start + timedelta(hours=6 * n)
            writer.writerow([truth[i].filename, "", truth[i].category, when.isoformat()])
    return path


# --- scoring ------------------------------------------------------------------------------------


def score(truth_cats: list[str], predicted: list[list[str]], probs: list[dict]) -> dict:
    """Macro-F1 of the label sets over the categories, top-1 of the most probable category,
    meme-vs-not accuracy, labels per image and the share of images with 0 or 2+ labels."""
    f1s = []
    for c in CATEGORIES:
        y = np.array([t == c for t in truth_cats])
        p = np.array([c in ps for ps in predicted])
        tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    top = [max(pr, key=pr.get) if pr else None for pr in probs]
    n = len(truth_cats)
    counts = [len(ps) for ps in predicted]
    return {
        "macro_f1": float(np.mean(f1s)),
        "per_category_f1": dict(zip(CATEGORIES, f1s, strict=True)),
        "top1": sum(t == g for t, g in zip(truth_cats, top, strict=True)) / n,
        "meme_vs_not": sum(
            (t == "meme") == ("meme" in ps) for t, ps in zip(truth_cats, predicted, strict=True)
        )
        / n,
        "labels_per_image": float(np.mean(counts)),
        "share_none": sum(c == 0 for c in counts) / n,
        "share_two_or_more": sum(c >= 2 for c in counts) / n,
        "n_test": n,
    }


# --- embeddings and the baseline ----------------------------------------------------------------


def embed_all(folder: Path, truth: list, mode: str, cache_dir: Path) -> tuple[np.ndarray, list]:
    """Frozen features of every image under ``mode``, through the cache the runs share."""
    from classifier.backbone import build_backbone
    from classifier.dataset import Example
    from classifier.embeddings import EmbeddingCache
    from classifier.train import embed_examples, embedding_cache_key
    from ingest.images import inspect_image

    cfg = ModelConfig(resize=mode, device="cpu")
    examples = []
    for r in truth:
        path = folder / r.filename
        info = inspect_image(path.read_bytes(), max_pixels=cfg.max_pixels)
        examples.append(
            Example(info.sha256, path, info.phash, None, None, np.zeros(0), np.zeros(0, bool))
        )
    backbone, data_config = build_backbone(cfg)
    cache = EmbeddingCache(cache_dir, embedding_cache_key(cfg, 0))
    emb = embed_examples(backbone, data_config, examples, model_cfg=cfg, cache=cache)
    if not emb.ok.all():
        raise SystemExit(f"{int((~emb.ok).sum())} images could not be decoded")
    return emb.features, examples


def logistic_regression(
    feats: np.ndarray, truth: list, labelled: list[int], test: list[int], *, scaled: bool = False
) -> dict:
    """scikit-learn's LogisticRegression with its defaults (C = 1) on the raw features, or with
    a StandardScaler before it (``scaled``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = [truth[i].category for i in labelled]
    lr = LogisticRegression(C=1.0, max_iter=5000)
    model = make_pipeline(StandardScaler(), lr) if scaled else lr
    model.fit(feats[labelled], y)
    proba = model.predict_proba(feats[test])
    classes = list(model.classes_)
    probs = [dict(zip(classes, map(float, row), strict=True)) for row in proba]
    predicted = [[classes[int(np.argmax(row))]] for row in proba]
    return score([truth[i].category for i in test], predicted, probs)


# --- the pipeline -------------------------------------------------------------------------------


def _memetag(args: list[str], *, data: Path, config: Path) -> str:
    env = {**os.environ, "MEMETAG_CONFIG": str(config)}
    proc = subprocess.run(
        [*MEMETAG, "--data", str(data), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"memetag {' '.join(args[:2])} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def run_pipeline(
    folder: Path,
    truth: list,
    labelled: list[int],
    test: list[int],
    *,
    mode: str,
    seed: int,
    work: Path,
    cache_dir: Path,
) -> dict:
    """ingest folder -> train --seed -> predict --json, in a fresh data dir."""
    run = work / "runs" / f"{mode}-k{len(labelled)}-s{seed}"
    if run.exists():
        shutil.rmtree(run)
    data = run / "data"
    data.mkdir(parents=True)
    (data / "cache").symlink_to(cache_dir.resolve(), target_is_directory=True)
    config = run / "config.toml"
    config.write_text(f'[model]\nresize = "{mode}"\ndevice = "cpu"\n', encoding="utf-8")
    labels_csv = write_labelled_folder(run / "chat", folder, truth, labelled, seed)
    t0 = time.perf_counter()
    _memetag(["ingest", "folder", str(labels_csv), "--no-progress"], data=data, config=config)
    t1 = time.perf_counter()
    trained = json.loads(
        _memetag(["train", "--seed", str(seed), "--json"], data=data, config=config)
    )
    t2 = time.perf_counter()
    files = [str(folder / truth[i].filename) for i in test]
    rows = json.loads(_memetag(["predict", *files, "--json"], data=data, config=config))
    t3 = time.perf_counter()
    errors = [r for r in rows if "error" in r]
    if errors:
        raise SystemExit(f"predict failed on {len(errors)} files: {errors[0]}")
    out = score(
        [truth[i].category for i in test],
        [r["predicted"] for r in rows],
        [r["labels"] for r in rows],
    )
    d, s = trained["data"], trained["summary"]
    out["train"] = {
        "n_train": d["n_train"],
        "n_tune": d["n_tune"],
        "n_val": d["n_val"],
        "tuned_on": d["tuned_on"],
        "emitted": [c for c in d["emitted_labels"] if c in CATEGORIES],
        "embedded_new": d.get("embedded_new"),
        "validation_macro_f1": s["category_macro_f1"],
        "validation_macro_f1_interval": (trained.get("categories") or {}).get("macro_f1_interval"),
    }
    out["seconds"] = {
        "ingest": round(t1 - t0, 1),
        "train": round(t2 - t1, 1),
        "predict": round(t3 - t2, 1),
    }
    return out


# --- summary, table, figure ---------------------------------------------------------------------


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def summarise(runs: list[dict]) -> dict:
    """Mean and SD over seeds per (contender, mode, k)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["contender"], r["mode"], r["k"]), []).append(r)
    out: dict = {}
    for (contender, mode, k), rows in sorted(groups.items()):
        entry = {m: _mean_sd([r[m] for r in rows]) for m in METRICS}
        entry["seeds"] = [r["seed"] for r in rows]
        out.setdefault(contender, {}).setdefault(mode, {})[str(k)] = entry
    return out


def print_table(summary: dict) -> None:
    for contender, modes in summary.items():
        for mode, by_k in modes.items():
            print(f"\n{contender} ({mode}), mean ± SD over seeds")
            print(f"{'k':>3} " + " ".join(f"{m:>18}" for m in METRICS))
            for k, entry in by_k.items():
                cells = " ".join(
                    f"{entry[m]['mean']:>10.3f} ± {entry[m]['sd']:.3f}" for m in METRICS
                )
                print(f"{k:>3} {cells}")


def plot(summary: dict, path: Path, before: dict | None = None) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=110)
    axes = fig.subplots(1, 2)
    styles = {
        ("memetag", "crop"): ("tab:blue", "-", "o"),
        ("memetag", "letterbox"): ("tab:blue", "--", "s"),
        ("logreg", "crop"): ("tab:orange", "-", "o"),
        ("logreg", "letterbox"): ("tab:orange", "--", "s"),
        ("logreg_scaled", "crop"): ("tab:grey", "-", "o"),
        ("logreg_scaled", "letterbox"): ("tab:grey", "--", "s"),
    }
    for ax, metric, title in (
        (axes[0], "macro_f1", "category macro-F1 on unseen images"),
        (axes[1], "labels_per_image", "labels per image (truth: 1)"),
    ):
        series = [(summary, "")]
        if before:
            series.append((before, " before"))
        for data, suffix in series:
            for contender, modes in data.items():
                if suffix and contender != "memetag":
                    continue
                if metric == "labels_per_image" and contender.startswith("logreg"):
                    continue  # always exactly 1
                for mode, by_k in modes.items():
                    ks = sorted(int(k) for k in by_k)
                    mean = [by_k[str(k)][metric]["mean"] for k in ks]
                    sd = [by_k[str(k)][metric]["sd"] for k in ks]
                    colour, line, marker = styles.get((contender, mode), ("grey", ":", "x"))
                    if suffix:
                        colour, line = "tab:red", ":"
                    name = {
                        "logreg": "logistic regression",
                        "logreg_scaled": "logistic regression, standardised",
                    }.get(contender, contender)
                    ax.errorbar(
                        ks,
                        mean,
                        yerr=sd,
                        color=colour,
                        linestyle=line,
                        marker=marker,
                        capsize=3,
                        label=f"{name}, {mode}{suffix}",
                    )
        if metric == "labels_per_image":
            ax.axhline(1.0, color="grey", linewidth=0.8)
        else:
            ax.set_ylim(0, 1)
        ax.set_xlabel("labelled images per category (k)")
        ax.set_xticks(sorted({int(k) for m in summary.values() for b in m.values() for k in b}))
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--modes", nargs="+", default=["crop"], choices=["crop", "letterbox"])
    ap.add_argument(
        "--baseline-modes",
        nargs="+",
        default=["crop", "letterbox"],
        choices=["crop", "letterbox"],
        help="resize modes for the logistic regression (cheap: one embedding pass each)",
    )
    ap.add_argument("--per-category", type=int, default=30, help="images per category")
    ap.add_argument("--set-seed", type=int, default=0, help="seed of the generated image set")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="images and runs go here")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--before", type=Path, help="an earlier result JSON to draw beside this one")
    ap.add_argument("--label", default="", help="a note stored in the JSON (e.g. the commit)")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    folder = args.work / f"realset-{args.per_category}-seed{args.set_seed}"
    if not (folder / "truth.csv").exists():
        t0 = time.perf_counter()
        make_real_set(folder, per_category=args.per_category, seed=args.set_seed)
        print(f"generated {folder} in {time.perf_counter() - t0:.1f}s", flush=True)
    truth = read_truth(folder)
    tall = sum(r.height >= 1.5 * r.width for r in truth)
    cache_dir = HERE / ".cache" / "label-efficiency"
    cache_dir.mkdir(parents=True, exist_ok=True)

    runs: list[dict] = []
    for mode in dict.fromkeys([*args.modes, *args.baseline_modes]):
        t0 = time.perf_counter()
        feats, _ = embed_all(folder, truth, mode, cache_dir)
        print(f"{mode}: features of {len(truth)} images in {time.perf_counter() - t0:.1f}s")
        for k in args.ks:
            for seed in args.seeds:
                labelled, test = choose_labelled(truth, k, seed)
                base = {"mode": mode, "k": k, "seed": seed, "n_labelled": len(labelled)}
                if mode in args.baseline_modes:
                    lr = logistic_regression(feats, truth, labelled, test)
                    scaled = logistic_regression(feats, truth, labelled, test, scaled=True)
                    runs.append({"contender": "logreg_scaled", **base, **scaled})
                    runs.append({"contender": "logreg", **base, **lr})
                if mode in args.modes:
                    mt = run_pipeline(
                        folder,
                        truth,
                        labelled,
                        test,
                        mode=mode,
                        seed=seed,
                        work=args.work,
                        cache_dir=cache_dir,
                    )
                    runs.append({"contender": "memetag", **base, **mt})
                    lr_f1 = runs[-2]["macro_f1"] if mode in args.baseline_modes else float("nan")
                    tr = mt["train"]
                    print(
                        f"{mode} k={k} seed={seed}: memetag macro-F1 {mt['macro_f1']:.3f} "
                        f"top-1 {mt['top1']:.3f} meme {mt['meme_vs_not']:.3f} labels/img "
                        f"{mt['labels_per_image']:.2f} | logreg {lr_f1:.3f} | split "
                        f"{tr['n_train']}/{tr['n_tune']}/{tr['n_val']} ({tr['tuned_on']}), "
                        f"emitted {len(tr['emitted'])}, validation F1 "
                        f"{tr['validation_macro_f1']} | {mt['seconds']}",
                        flush=True,
                    )
    summary = summarise(runs)
    print_table(summary)
    before = None
    if args.before:
        before = json.loads(args.before.read_text(encoding="utf-8"))["summary"]
    result = {
        "what": "category metrics on unseen images against labelled images per category: "
        "memetag ingest folder + train --seed + predict --json vs LogisticRegression on the "
        "same frozen features",
        "command": "python bench/label_efficiency.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "label": args.label,
        "data": {
            "generator": "tests/helpers/realset.py",
            "per_category": args.per_category,
            "set_seed": args.set_seed,
            "images": len(truth),
            "tall": tall,
            "categories": list(CATEGORIES),
        },
        "baseline": {
            "logreg": "LogisticRegression(C=1.0, max_iter=5000) on the raw features, argmax",
            "logreg_scaled": "StandardScaler + LogisticRegression(C=1.0, max_iter=5000), argmax",
        },
        "ks": args.ks,
        "seeds": args.seeds,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot(summary, args.out.with_suffix(".png"), before)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
