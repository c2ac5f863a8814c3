"""Validation metrics as pure functions over arrays: categories, senders, baselines, coverage.

Conventions: category metrics only use entries whose target is known (``mask``); macro-F1 and mAP
average over labels with at least one validation positive (others have no defined recall).
Sender targets of ``-1`` (unknown author) are left out.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score

from classifier.calibration import nll, reliability_bins
from classifier.thresholds import THRESHOLD_GRID, f1_curve

log = logging.getLogger(__name__)

RECENT_WINDOW = timedelta(days=30)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def label_metrics(
    y_true: np.ndarray,
    mask: np.ndarray,
    probs: np.ndarray,
    thresholds: Sequence[float],
    labels: Sequence[str],
    *,
    pred: np.ndarray | None = None,
) -> dict:
    """Per-label precision/recall/F1/support/AP at the given thresholds (or for the given
    ``pred`` label sets), micro/macro F1 with a bootstrap interval for macro-F1, mAP, coverage
    (share of all images given at least one label) and labels per image."""
    y_true = np.asarray(y_true) > 0.5
    mask = np.asarray(mask, dtype=bool)
    probs = np.asarray(probs, dtype=np.float64)
    th = np.asarray(thresholds, dtype=np.float64)
    if pred is None:
        pred = probs >= th[None, :] if len(labels) else np.zeros_like(mask)
    pred = np.asarray(pred, dtype=bool)
    per_label: dict[str, dict] = {}
    tot_tp = tot_fp = tot_fn = 0
    f1s, aps = [], []
    for j, name in enumerate(labels):
        known = mask[:, j]
        y, p, s = y_true[known, j], pred[known, j], probs[known, j]
        tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
        tot_tp, tot_fp, tot_fn = tot_tp + tp, tot_fp + fp, tot_fn + fn
        precision, recall, f1 = _prf(tp, fp, fn)
        support = int(y.sum())
        ap = float(average_precision_score(y, s)) if support and support < len(y) else None
        if support:
            f1s.append(f1)
            if ap is not None:
                aps.append(ap)
        per_label[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "negatives": int((~y).sum()),
            "ap": ap,
            "threshold": float(th[j]),
        }
    labelled_rows = mask.any(axis=1) if mask.size else np.zeros(len(probs), bool)
    return {
        "per_label": per_label,
        "micro_f1": _prf(tot_tp, tot_fp, tot_fn)[2] if tot_tp + tot_fp + tot_fn else None,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "map": float(np.mean(aps)) if aps else None,
        "n_images": int(len(probs)),
        "n_category_labelled": int(labelled_rows.sum()),
        "coverage": float(pred.any(axis=1).mean()) if len(probs) and len(labels) else None,
        "labels_per_image": float(pred.sum(axis=1).mean()) if len(probs) else None,
        "macro_f1_interval": macro_f1_interval(y_true, mask, pred),
    }


def _macro_f1(y: np.ndarray, m: np.ndarray, p: np.ndarray) -> float | None:
    tp = (y & p & m).sum(axis=0)
    fp = (~y & p & m).sum(axis=0)
    fn = (y & ~p & m).sum(axis=0)
    has = (y & m).sum(axis=0) > 0
    if not has.any():
        return None
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1[has].mean())


def macro_f1_interval(
    y_true: np.ndarray,
    mask: np.ndarray,
    pred: np.ndarray,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[float] | None:
    """Percentile bootstrap interval of macro-F1 over category-labelled images (resampled with
    replacement; macro over the labels with a positive in each resample), never narrower than
    the Wilson interval of the share of images whose label set is exactly right: a bootstrap of
    six images that are all right says [1, 1], and six images cannot say that. With a
    validation set of a few dozen images a single macro-F1 means little; this says how little.
    None without category-labelled images."""
    y = np.asarray(y_true) > 0.5
    m = np.asarray(mask, dtype=bool)
    p = np.asarray(pred, dtype=bool)
    rows = np.flatnonzero(m.any(axis=1)) if m.size else np.zeros(0, np.int64)
    if not len(rows) or _macro_f1(y[rows], m[rows], p[rows]) is None:
        return None
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(n_boot):
        pick = rows[rng.integers(0, len(rows), len(rows))]
        f1 = _macro_f1(y[pick], m[pick], p[pick])
        if f1 is not None:
            scores.append(f1)
    lo, hi = np.quantile(scores, [(1 - level) / 2, (1 + level) / 2])
    point = _macro_f1(y[rows], m[rows], p[rows])
    exact = float(((y[rows] == p[rows]) | ~m[rows]).all(axis=1).mean())
    w_lo, w_hi = _wilson(exact, len(rows), level)
    lo = max(0.0, min(float(lo), point - (exact - w_lo)))
    hi = min(1.0, max(float(hi), point + (w_hi - exact)))
    return [lo, hi]


def _wilson(share: float, n: int, level: float) -> tuple[float, float]:
    """Wilson score interval of a proportion observed as ``share`` of ``n``."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    denom = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denom
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denom
    return float(centre - half), float(centre + half)


def f1_threshold_curves(
    y_true: np.ndarray,
    mask: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    grid: np.ndarray = THRESHOLD_GRID,
) -> dict:
    """F1 against threshold for every label with validation positives (for the report plot)."""
    curves = {}
    for j, name in enumerate(labels):
        known = np.asarray(mask[:, j], dtype=bool)
        y = np.asarray(y_true)[known, j] > 0.5
        if y.any():
            curves[name] = f1_curve(y, np.asarray(probs)[known, j], grid).tolist()
    return {"grid": [float(t) for t in grid], "f1": curves}


def _sender_scores(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    top1 = float((pred == y).mean())
    macro = float(
        f1_score(y, pred, labels=sorted(set(y.tolist())), average="macro", zero_division=0)
    )
    return top1, macro


def sender_metrics(
    targets: np.ndarray,
    probs: np.ndarray,
    senders: Sequence[str],
    *,
    min_confidence: float,
    logits: np.ndarray | None = None,
) -> dict:
    """Top-1/top-3 accuracy, macro-F1, confident coverage and precision, NLL, reliability,
    and the confusion matrix, over images whose sender is known."""
    targets = np.asarray(targets, dtype=np.int64)
    keep = targets >= 0
    y, p = targets[keep], np.asarray(probs, dtype=np.float64)[keep]
    n = int(keep.sum())
    if n == 0 or not len(senders):
        return {"n_images": n, "top1": None, "top3": None, "macro_f1": None}
    pred = p.argmax(axis=1)
    k = min(3, p.shape[1])
    top3 = np.argsort(-p, axis=1)[:, :k]
    top1, macro = _sender_scores(y, pred)
    conf = p.max(axis=1)
    confident = conf >= min_confidence
    correct = pred == y
    result = {
        "n_images": n,
        "top1": top1,
        "top3": float((top3 == y[:, None]).any(axis=1).mean()),
        "macro_f1": macro,
        "min_confidence": float(min_confidence),
        "coverage": float(confident.mean()),
        "confident_precision": float(correct[confident].mean()) if confident.any() else None,
        "reliability": reliability_bins(conf, correct),
        "confusion": confusion_matrix(y, pred, labels=list(range(len(senders)))).tolist(),
        "per_sender_support": {senders[i]: int((y == i).sum()) for i in range(len(senders))},
    }
    if logits is not None:
        result["nll"] = nll(np.asarray(logits)[keep], y)
    return result


def majority_baseline(train_targets: np.ndarray, val_targets: np.ndarray) -> dict:
    """Always guess the most common training sender."""
    train = np.asarray(train_targets)
    train = train[train >= 0]
    y = np.asarray(val_targets)
    y = y[y >= 0]
    if not len(train) or not len(y):
        return {"top1": None, "macro_f1": None, "guess": None}
    counts = Counter(train.tolist())
    # Ties go to the smaller class index, not to whichever sender came first in the data.
    guess = min(counts, key=lambda s: (-counts[s], s))
    top1, macro = _sender_scores(y, np.full_like(y, guess))
    return {"top1": top1, "macro_f1": macro, "guess": int(guess)}


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def recent_activity_baseline(
    history_times: Sequence[datetime | None],
    history_targets: Sequence[int],
    query_times: Sequence[datetime | None],
    query_targets: Sequence[int],
    *,
    window: timedelta = RECENT_WINDOW,
    fallback: int | None = None,
) -> dict:
    """Guess whoever posted most in the ``window`` before each image, over all earlier posts.

    ``history`` is every image with a time and a sender (training and validation alike: at
    prediction time the bot has seen all of them). With nobody in the window, the guess is the
    most frequent earlier poster, then ``fallback``. Ties go to the smaller class index (the
    more active person overall, as vocabularies are sorted by activity).
    """
    hist = sorted(
        (_utc(t), int(s))
        for t, s in zip(history_times, history_targets, strict=True)
        if t is not None and s >= 0
    )
    times = [t for t, _ in hist]
    ys, preds = [], []
    for t, y in zip(query_times, query_targets, strict=True):
        if y < 0:
            continue
        if t is None:
            guess = fallback
        else:
            t = _utc(t)
            hi = bisect.bisect_left(times, t)
            lo = bisect.bisect_left(times, t - window)
            recent = Counter(s for _, s in hist[lo:hi])
            if not recent:
                recent = Counter(s for _, s in hist[:hi])
            guess = min(recent, key=lambda s: (-recent[s], s)) if recent else fallback
        ys.append(int(y))
        preds.append(-1 if guess is None else int(guess))
    if not ys:
        return {"top1": None, "macro_f1": None}
    top1, macro = _sender_scores(np.array(ys), np.array(preds))
    return {"top1": top1, "macro_f1": macro}


def sender_verdict(sender: dict, baselines: dict) -> dict:
    """Whether the sender guess beats both baselines on validation, on top-1 **and** macro-F1.

    This is the claim the train summary and the report make: ``beats_baselines`` is true only
    when the model's top-1 and macro-F1 are both above the majority guess's and the
    recent-activity guess's (strictly; a tie is no win). ``None`` when there is nothing to
    compare (no validation image with a known sender). The margins are over the better
    baseline on each metric.
    """
    top1, macro = sender.get("top1"), sender.get("macro_f1")
    rivals = [b for b in baselines.values() if b and b.get("top1") is not None]
    if top1 is None or macro is None or not rivals:
        return {"beats_baselines": None, "top1_margin": None, "macro_f1_margin": None}
    best_top1 = max(b["top1"] for b in rivals)
    best_macro = max(b.get("macro_f1") or 0.0 for b in rivals)
    return {
        "beats_baselines": bool(top1 > best_top1 + 1e-12 and macro > best_macro + 1e-12),
        "top1_margin": float(top1 - best_top1),
        "macro_f1_margin": float(macro - best_macro),
    }


def promotion_score(metrics: dict) -> float:
    """What "better" means when choosing the current model: category macro-F1 + sender macro-F1
    on the same validation set (a missing part counts as 0)."""
    cats = (metrics.get("categories") or {}).get("macro_f1") or 0.0
    snd = (metrics.get("sender") or {}).get("macro_f1") or 0.0
    return float(cats + snd)


def summary_metrics(evaluation: dict) -> dict:
    """The few numbers kept in the models table and shown by ``memetag models``."""
    cats = evaluation.get("categories") or {}
    snd = evaluation.get("sender") or {}
    base = evaluation.get("baselines") or {}
    return {
        "category_macro_f1": cats.get("macro_f1"),
        "category_micro_f1": cats.get("micro_f1"),
        "category_map": cats.get("map"),
        "sender_top1": snd.get("top1"),
        "sender_top3": snd.get("top3"),
        "sender_macro_f1": snd.get("macro_f1"),
        "sender_beats_baselines": snd.get("beats_baselines"),
        "sender_unsure_rate": snd.get("unsure_rate"),
        "majority_top1": (base.get("majority") or {}).get("top1"),
        "recent_30d_top1": (base.get("recent_30d") or {}).get("top1"),
        "n_val": evaluation.get("n_val"),
        "n_train": evaluation.get("n_train"),
        "score": promotion_score(evaluation),
    }
