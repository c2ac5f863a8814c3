"""Review picks vs random picks: does labelling what ``/tagger review`` picks raise macro-F1 faster?

    .venv/bin/python bench/active_learning.py [--seeds 0 1 2] [--rounds 8] [--batch 12]
    .venv/bin/python bench/active_learning.py --quick      # tiny random-init model, seconds

Data: ``tests/helpers/realset.py`` (real photos and realistic screenshot layouts, 6
categories, one true category each, ``--per-category`` images each), embedded once with the
configured frozen backbone (efficientnet_lite0, its packaged ImageNet weights, letterbox)
through the embedding cache ``bench/label_efficiency.py`` uses.

A fixed held-out test set (``--test-per-category`` per category, chosen by the set seed, the
same for every seed and strategy) is never labelled. Per seed, ``--seed-per-category``
images per category start labelled; the rest are the unlabelled pool. Each round fits the
real category head (``classifier.labelhead.fit_labels``: regularised logistic regression on
the frozen features, cross-fitted calibration and thresholds, exclusive mode as the training
detects it; labels with fewer than 5 positives are not emitted, as in ``memetag train``),
scores category macro-F1 on the test set, then labels ``--batch`` more pool images chosen by:

* ``review``: ``classifier.active.pick_for_review`` on the current head's probabilities and
  thresholds with the bot's default random share (0.1) - what ``/tagger review`` posts;
* ``uncertain_only``: the same with no random share (pure uncertainty sampling);
* ``random``: uniformly at random (the same number).

A labelled image gets its true category (a member's tap is assumed right). The category head
only: the sender head has no labels to gain from review taps, and realset has no senders, so
the sender-flatness part of the score is not exercised here. Writes
``bench/results/active_learning.json`` and ``.png`` (mean ± SD over seeds per round).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

from classifier.active import Scored, pick_for_review, uncertainty  # noqa: E402
from classifier.config import ModelConfig  # noqa: E402
from tests.helpers.realset import CATEGORIES, make_real_set, read_truth  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "active_learning.json"
DEFAULT_WORK = Path("/tmp/memetag-active-learning")
CACHE = HERE / ".cache" / "label-efficiency"
MIN_LABEL_POSITIVES = 5  # TrainConfig.min_label_positives
STRATEGIES = ("review", "uncertain_only", "random")
REVIEW_RANDOM_SHARE = 0.1  # [bot] review_random_share's default


# --- data ---------------------------------------------------------------------------------------


def embed_all(folder: Path, truth: list, cfg: ModelConfig, cache_dir: Path) -> np.ndarray:
    """Frozen features of every image, through the embedding cache."""
    from classifier.backbone import build_backbone
    from classifier.dataset import Example
    from classifier.embeddings import EmbeddingCache
    from classifier.train import embed_examples, embedding_cache_key
    from ingest.images import inspect_image

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
    return np.asarray(emb.features, dtype=np.float64)


def split(
    cats: list[str], *, test_per_category: int, seed_per_category: int, set_seed: int, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """(test, seed_labelled, pool): the test set depends on the set seed only."""
    test: list[int] = []
    start: list[int] = []
    for c in CATEGORIES:
        idx = [i for i, t in enumerate(cats) if t == c]
        random.Random(f"test:{set_seed}:{c}").shuffle(idx)
        test += idx[:test_per_category]
        rest = sorted(idx[test_per_category:])
        random.Random(f"seed:{seed}:{c}").shuffle(rest)
        start += rest[:seed_per_category]
    taken = set(test) | set(start)
    pool = [i for i in range(len(cats)) if i not in taken]
    return sorted(test), sorted(start), pool


# --- the head and its scores --------------------------------------------------------------------


def targets(cats: list[str], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    y = np.zeros((len(rows), len(CATEGORIES)), dtype=np.float32)
    for n, i in enumerate(rows):
        y[n, CATEGORIES.index(cats[i])] = 1.0
    return y, np.ones_like(y, dtype=bool)


class Head:
    """The category head ``memetag train`` would fit on the labelled rows."""

    def __init__(self, feats: np.ndarray, cats: list[str], labelled: list[int]) -> None:
        from classifier.labelhead import detect_label_mode, fit_labels

        y, m = targets(cats, labelled)
        self.emitted = y.sum(axis=0) >= MIN_LABEL_POSITIVES
        self.mode = detect_label_mode(y)
        empty = (
            np.zeros((0, feats.shape[1])),
            np.zeros((0, y.shape[1])),
            np.zeros((0, y.shape[1]), bool),
        )
        fit = fit_labels(
            (feats[labelled], y, m), empty, list(CATEGORIES), mode=self.mode, emitted=self.emitted
        )
        self.head = fit.shipped_head
        self.thresholds = {k: float(v.threshold) for k, v in fit.thresholds.items()}
        self.names = [c for c, e in zip(CATEGORIES, self.emitted, strict=True) if e]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        from classifier.labelhead import head_logits, label_probabilities

        return label_probabilities(head_logits(self.head, x), self.mode, self.emitted)

    def predict(self, x: np.ndarray) -> np.ndarray:
        from classifier.labelhead import predict_label_sets

        th = np.array([self.thresholds.get(c, 0.5) for c in CATEGORIES])
        return predict_label_sets(self.probabilities(x), self.mode, th, self.emitted)

    def scores(self, x: np.ndarray) -> list[float]:
        """The review score of each row, as the bot computes it from a Result's labels."""
        probs = self.probabilities(x)
        out = []
        for row in probs:
            shown = {c: float(row[CATEGORIES.index(c)]) for c in self.names}
            out.append(uncertainty(shown, self.thresholds, mode=self.mode).score)
        return out


def macro_f1(cats: list[str], rows: list[int], predicted: np.ndarray) -> float:
    f1s = []
    for j, c in enumerate(CATEGORIES):
        y = np.array([cats[i] == c for i in rows])
        p = predicted[:, j]
        tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1s))


def choose(
    strategy: str, head: Head, feats: np.ndarray, pool: list[int], batch: int, seed: str
) -> list[int]:
    if strategy == "random":
        return random.Random(seed).sample(pool, min(batch, len(pool)))
    share = REVIEW_RANDOM_SHARE if strategy == "review" else 0.0
    scores = head.scores(feats[pool])
    picks = pick_for_review(
        [Scored(i, s) for i, s in zip(pool, scores, strict=True)],
        batch,
        random_share=share,
        seed=seed,
    )
    return [p.image_id for p in picks]


def run_curve(
    feats: np.ndarray,
    cats: list[str],
    *,
    strategy: str,
    seed: int,
    rounds: int,
    batch: int,
    test_per_category: int,
    seed_per_category: int,
    set_seed: int,
) -> list[dict]:
    """Macro-F1 on the test set after each round of labelling ``batch`` more images."""
    test, labelled, pool = split(
        cats,
        test_per_category=test_per_category,
        seed_per_category=seed_per_category,
        set_seed=set_seed,
        seed=seed,
    )
    points = []
    for r in range(rounds + 1):
        head = Head(feats, cats, labelled)
        points.append(
            {
                "round": r,
                "labelled": len(labelled),
                "macro_f1": macro_f1(cats, test, head.predict(feats[test])),
                "emitted": int(head.emitted.sum()),
                "mode": head.mode,
            }
        )
        if r == rounds or not pool:
            break
        chosen = choose(strategy, head, feats, pool, batch, f"{strategy}:{seed}:{r}")
        picked = set(chosen)
        labelled = sorted([*labelled, *chosen])
        pool = [i for i in pool if i not in picked]
    return points


# --- summary and figure -------------------------------------------------------------------------


def summarise(runs: list[dict]) -> dict:
    """Per strategy and round: mean ± SD macro-F1 over seeds; and review - random, paired."""
    out: dict = {}
    for strategy in STRATEGIES:
        curves = [r["points"] for r in runs if r["strategy"] == strategy]
        if not curves:
            continue
        n_rounds = min(len(c) for c in curves)
        rows = []
        for k in range(n_rounds):
            values = [c[k]["macro_f1"] for c in curves]
            rows.append(
                {
                    "labelled": curves[0][k]["labelled"],
                    "mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                }
            )
        area = [statistics.fmean(p["macro_f1"] for p in c[1:n_rounds]) for c in curves]
        out[strategy] = {
            "rounds": rows,
            "mean_f1_after_round_1_on": _mean_sd(area) if n_rounds > 1 else None,
        }
    for other in ("review", "uncertain_only"):
        if other in out and "random" in out:
            diffs = []
            for seed in sorted({r["seed"] for r in runs}):
                a = next(r for r in runs if r["strategy"] == other and r["seed"] == seed)
                b = next(r for r in runs if r["strategy"] == "random" and r["seed"] == seed)
                diffs.append(
                    [
                        pa["macro_f1"] - pb["macro_f1"]
                        for pa, pb in zip(a["points"], b["points"], strict=False)
                    ]
                )
            per_round = [statistics.fmean(d[k] for d in diffs) for k in range(len(diffs[0]))]
            wins = sum(x > 0 for d in diffs for x in d[1:])
            total = sum(len(d) - 1 for d in diffs)
            out[f"{other}_minus_random"] = {
                "per_round_mean": per_round,
                "rounds_won": f"{wins}/{total}",
            }
    return out


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def print_table(summary: dict) -> None:
    strategies = [s for s in STRATEGIES if s in summary]
    print(f"\n{'labelled':>8} " + " ".join(f"{s:>18}" for s in strategies))
    for k, row in enumerate(summary[strategies[0]]["rounds"]):
        cells = []
        for s in strategies:
            rows = summary[s]["rounds"]
            cells.append(f"{rows[k]['mean']:>10.3f} ± {rows[k]['sd']:.3f}" if k < len(rows) else "")
        print(f"{row['labelled']:>8} " + " ".join(cells))
    for key in ("review_minus_random", "uncertain_only_minus_random"):
        if key in summary:
            diff = summary[key]
            print(
                f"{key}: "
                + " ".join(f"{d:+.3f}" for d in diff["per_round_mean"])
                + f" (rounds won {diff['rounds_won']})"
            )


def plot(summary: dict, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4), dpi=110)
    ax = fig.subplots()
    styles = {
        "review": ("tab:blue", "-", "o", "review picks (10 % random)"),
        "uncertain_only": ("tab:green", "--", "s", "uncertainty only"),
        "random": ("tab:orange", "-", "^", "random picks"),
    }
    for strategy in STRATEGIES:
        if strategy not in summary:
            continue
        rows = summary[strategy]["rounds"]
        colour, line, marker, name = styles[strategy]
        ax.errorbar(
            [r["labelled"] for r in rows],
            [r["mean"] for r in rows],
            yerr=[r["sd"] for r in rows],
            color=colour,
            linestyle=line,
            marker=marker,
            capsize=3,
            label=name,
        )
    ax.set_xlabel("labelled images")
    ax.set_ylabel("category macro-F1 on held-out images")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=12, help="images labelled per round")
    ap.add_argument("--per-category", type=int, default=60, help="images per category")
    ap.add_argument("--test-per-category", type=int, default=15)
    ap.add_argument("--seed-per-category", type=int, default=5)
    ap.add_argument("--set-seed", type=int, default=0, help="seed of the generated image set")
    ap.add_argument("--resize", default="letterbox", choices=["crop", "letterbox"])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="images go here")
    ap.add_argument("--cache", type=Path, default=CACHE, help="embedding cache")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny random-init backbone, 8 images per category, 2 rounds, one seed",
    )
    ap.add_argument("--label", default="", help="a note stored in the JSON (e.g. the commit)")
    args = ap.parse_args(argv)

    if args.quick:
        from tests.ml_helpers import tiny_model_config

        cfg = tiny_model_config()
        args.seeds = args.seeds[:1]
        args.rounds, args.batch = min(args.rounds, 2), min(args.batch, 4)
        args.per_category, args.test_per_category = 9, 2
        args.seed_per_category = max(args.seed_per_category, MIN_LABEL_POSITIVES)
    else:
        cfg = ModelConfig(resize=args.resize, device="cpu")

    started = time.perf_counter()
    folder = args.work / f"realset-{args.per_category}-seed{args.set_seed}"
    if not (folder / "truth.csv").exists():
        t0 = time.perf_counter()
        make_real_set(folder, per_category=args.per_category, seed=args.set_seed)
        print(f"generated {folder} in {time.perf_counter() - t0:.1f}s", flush=True)
    truth = read_truth(folder)
    cats = [r.category for r in truth]
    args.cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    feats = embed_all(folder, truth, cfg, args.cache)
    embed_s = time.perf_counter() - t0
    print(f"features of {len(truth)} images ({cfg.backbone}) in {embed_s:.1f}s", flush=True)

    runs = []
    for seed in args.seeds:
        for strategy in STRATEGIES:
            t0 = time.perf_counter()
            points = run_curve(
                feats,
                cats,
                strategy=strategy,
                seed=seed,
                rounds=args.rounds,
                batch=args.batch,
                test_per_category=args.test_per_category,
                seed_per_category=args.seed_per_category,
                set_seed=args.set_seed,
            )
            runs.append({"strategy": strategy, "seed": seed, "points": points})
            curve = " ".join(f"{p['labelled']}:{p['macro_f1']:.3f}" for p in points)
            print(
                f"seed {seed} {strategy:>14}: {curve} ({time.perf_counter() - t0:.1f}s)", flush=True
            )
    summary = summarise(runs)
    print_table(summary)
    result = {
        "what": "category macro-F1 on a fixed held-out test set after each round of labelling "
        "images picked by classifier.active.pick_for_review (the /tagger review picker) vs the "
        "same number picked at random; real category head (classifier.labelhead.fit_labels) on "
        "frozen features",
        "command": "python bench/active_learning.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "label": args.label,
        "data": {
            "generator": "tests/helpers/realset.py",
            "per_category": args.per_category,
            "set_seed": args.set_seed,
            "images": len(truth),
            "test_images": args.test_per_category * len(CATEGORIES),
            "seed_labelled": args.seed_per_category * len(CATEGORIES),
            "categories": list(CATEGORIES),
        },
        "model": {"backbone": cfg.backbone, "pretrained": cfg.pretrained, "resize": cfg.resize},
        "rounds": args.rounds,
        "batch": args.batch,
        "review_random_share": REVIEW_RANDOM_SHARE,
        "seeds": args.seeds,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "seconds": {
            "embedding": round(embed_s, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    title = (
        f"realset, {len(truth)} images, {args.test_per_category * len(CATEGORIES)} held out; "
        f"{args.batch} labels a round; mean ± SD over {len(args.seeds)} seeds"
    )
    plot(summary, args.out.with_suffix(".png"), title)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
