"""Decision thresholds: per-label max-F1 cut-offs and the sender "unsure" line.

They are fitted on the tuning images (the tune part of the time split, or validation when that
part is too small: see ``classifier.split``); nothing here knows which set it is given.

Fallbacks (documented for the README):

* A label with fewer than ``min_positives`` (3) tuning positives keeps ``DEFAULT_THRESHOLD``
  (0.5). With so few positives the max-F1 threshold is noise; 0.5 is the neutral choice for a
  head trained with a positive-class weight, which already balances positives and negatives.
  The train-set optimum is not used: the heads have fitted those images, so it sits too high.
* Among equally good thresholds the median one is taken, keeping a margin on both sides.
* ``sender_min_confidence`` is the smallest calibrated top-1 probability at which the accepted
  tuning guesses reach ``target_precision``. If no cut-off reaches it, or the head's guesses on
  the tuning images are no better than always naming the most active member
  (``beats_majority=False``), the line is ``NEVER_NAME_SENDER`` (above any probability): the
  model always answers "unsure" and only lists its candidates. With fewer than
  ``min_accepted`` tuning images that have a sender it stays at ``DEFAULT_SENDER_CONFIDENCE``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
DEFAULT_SENDER_CONFIDENCE = 0.5
# A line no probability reaches: the sender is never named, only its candidates listed.
NEVER_NAME_SENDER = 1.01
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
CONFIDENCE_GRID = np.round(np.arange(0.0, 0.991, 0.01), 2)


def f1_curve(
    y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray = THRESHOLD_GRID
) -> np.ndarray:
    """F1 of ``probs >= t`` against binary ``y_true`` for every ``t`` in ``grid``."""
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    pred = p[None, :] >= np.asarray(grid)[:, None]
    tp = (pred & y[None, :]).sum(axis=1)
    fp = (pred & ~y[None, :]).sum(axis=1)
    fn = (~pred & y[None, :]).sum(axis=1)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def best_f1_threshold(
    y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray = THRESHOLD_GRID
) -> tuple[float, float]:
    """(threshold, F1) maximising F1; ties resolved to the median tied threshold."""
    f1 = f1_curve(y_true, probs, grid)
    best = float(f1.max())
    tied = np.flatnonzero(np.isclose(f1, best))
    return float(grid[tied[len(tied) // 2]]), best


@dataclass(frozen=True)
class LabelThreshold:
    threshold: float
    # "tuned" (max-F1 on the tuning images) or "default" (too few tuning positives)
    source: str
    # Positives and the F1 at ``threshold`` among the tuning images.
    positives: int
    f1: float | None


def tune_label_thresholds(
    y_true: np.ndarray,
    mask: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    *,
    min_positives: int = 3,
    grid: np.ndarray = THRESHOLD_GRID,
) -> dict[str, LabelThreshold]:
    """Per-label max-F1 thresholds over the tuning entries whose target is known."""
    out = {}
    for j, name in enumerate(labels):
        known = mask[:, j]
        y, p = y_true[known, j] > 0.5, probs[known, j]
        positives = int(y.sum())
        if positives < min_positives:
            out[name] = LabelThreshold(DEFAULT_THRESHOLD, "default", positives, None)
            continue
        threshold, f1 = best_f1_threshold(y, p, grid)
        out[name] = LabelThreshold(threshold, "tuned", positives, f1)
    return out


@dataclass(frozen=True)
class SenderConfidence:
    min_confidence: float
    target_precision: float
    target_reached: bool
    # Precision and coverage of accepted (confident) tuning guesses at min_confidence; when no
    # line is drawn, the most precise line's precision (for the report) and coverage 0.
    precision: float | None
    coverage: float | None
    # Whether the head beat always naming the most active member on the tuning images.
    beats_majority: bool = True


def choose_sender_min_confidence(
    confidences: np.ndarray,
    correct: np.ndarray,
    *,
    target_precision: float,
    beats_majority: bool = True,
    min_accepted: int = 5,
    grid: np.ndarray = CONFIDENCE_GRID,
) -> SenderConfidence:
    """Smallest confidence whose accepted guesses reach ``target_precision`` (see module doc).

    Args:
        beats_majority: whether the guesses (``correct``) beat always naming the most active
            member on these images; if not, no line is drawn.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    n = len(conf)
    if n < min_accepted:
        return SenderConfidence(DEFAULT_SENDER_CONFIDENCE, target_precision, False, None, None)
    accepted = conf[None, :] >= grid[:, None]
    n_acc = accepted.sum(axis=1)
    hits = (accepted & ok[None, :]).sum(axis=1)
    precision = np.where(n_acc > 0, hits / np.maximum(n_acc, 1), 0.0)
    enough = n_acc >= min_accepted
    reached = np.flatnonzero(enough & (precision >= target_precision - 1e-12))
    if reached.size and beats_majority:
        i = int(reached[0])
        return SenderConfidence(
            min_confidence=float(grid[i]),
            target_precision=target_precision,
            target_reached=True,
            precision=float(precision[i]),
            coverage=float(n_acc[i] / n),
        )
    # No line is good enough, or one only looks good by chance on a head that loses to the
    # majority guess: never name anyone (the best line's precision is still reported).
    candidates = np.flatnonzero(enough)
    i = int(candidates[np.argmax(precision[candidates])]) if candidates.size else 0
    return SenderConfidence(
        min_confidence=NEVER_NAME_SENDER,
        target_precision=target_precision,
        target_reached=False,
        precision=float(precision[i]),
        coverage=0.0,
        beats_majority=beats_majority,
    )
