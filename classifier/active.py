"""Uncertainty sampling: which images a member's tap would help the model most on.

Pure functions, no store and no torch: the review command (``bot/cogs/review.py``) and
``bench/active_learning.py`` feed them the model's probabilities.

Scores (each in [0, 1], higher = a tap is worth more):

* **Label closeness** - how near the image sits to a decision. Multi-label: for each emitted
  label, the distance of its probability from that label's threshold as a share of the room on
  that side (``(p - t) / (1 - t)`` above, ``(t - p) / t`` below); closeness is one minus the
  smallest such distance, so an image with any label right on its threshold scores 1.
  Exclusive (one category per image): one minus the gap between the two most probable labels
  (margin sampling); a tie scores 1.
* **Sender flatness** - the normalised entropy ``H(p) / log(K)`` of the sender distribution:
  1 when every member is equally likely, 0 when the model is sure. Where only the top sender's
  probability was logged, the flattest distribution consistent with it is assumed (the rest
  spread evenly), which is an upper bound.
* **Combined** - ``label_weight * closeness + (1 - label_weight) * flatness``, or closeness
  alone when the sender distribution is unknown. Labels weigh more by default: a review tap
  votes labels, and the sender is learnt from the author, not from taps.

:func:`pick_for_review` takes the ``n`` best-scored images, except a ``random_share`` of them
drawn uniformly from the rest (exploration: pure uncertainty sampling keeps asking about one
confusing corner and never checks images the model is confidently wrong about). Images already
awaiting answers are never picked. Seeded, so a pick can be reproduced.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

EXCLUSIVE = "exclusive"  # as classifier.labelhead.EXCLUSIVE (kept importable without torch)
DEFAULT_LABEL_WEIGHT = 0.75
DEFAULT_RANDOM_SHARE = 0.1
UNCERTAIN = "uncertain"
RANDOM = "random"


def label_closeness(
    probabilities: Mapping[str, float],
    thresholds: Mapping[str, float] | None = None,
    *,
    mode: str = "multi",
) -> float:
    """How near an image is to a label decision, in [0, 1] (1 = right on it); see module doc.

    Args:
        probabilities: the emitted labels' probabilities.
        thresholds: per label (multi-label mode); a missing label uses 0.5.
    """
    probs = {k: float(v) for k, v in probabilities.items() if v is not None}
    if not probs:
        return 0.0
    if mode == EXCLUSIVE:
        ranked = sorted(probs.values(), reverse=True)
        second = ranked[1] if len(ranked) > 1 else 0.0
        return _clip(1.0 - (ranked[0] - second))
    thresholds = thresholds or {}
    distance = 1.0
    for name, p in probs.items():
        t = min(max(float(thresholds.get(name, 0.5)), 1e-6), 1 - 1e-6)
        room = (1.0 - t) if p >= t else t
        distance = min(distance, abs(p - t) / room)
    return _clip(1.0 - distance)


def sender_flatness(probabilities: Sequence[float] | Mapping[str, float]) -> float | None:
    """Normalised entropy of a sender distribution, in [0, 1]; None with fewer than 2 senders."""
    values = (
        list(probabilities.values()) if isinstance(probabilities, Mapping) else list(probabilities)
    )
    p = [max(float(v), 0.0) for v in values]
    total = sum(p)
    if len(p) < 2 or total <= 0:
        return None
    entropy = -sum((v / total) * math.log(v / total) for v in p if v > 0)
    return _clip(entropy / math.log(len(p)))


def flatness_from_top(top_probability: float | None, n_senders: int) -> float | None:
    """Sender flatness when only the top sender's probability is known: the flattest
    distribution with that top (the other ``n_senders - 1`` share the rest evenly)."""
    if top_probability is None or n_senders < 2:
        return None
    top = min(max(float(top_probability), 1.0 / n_senders), 1.0)
    rest = (1.0 - top) / (n_senders - 1)
    return sender_flatness([top, *([rest] * (n_senders - 1))])


@dataclass(frozen=True)
class Uncertainty:
    """How much a member's answer about one image would help."""

    closeness: float
    flatness: float | None
    score: float


def uncertainty(
    probabilities: Mapping[str, float],
    thresholds: Mapping[str, float] | None = None,
    *,
    mode: str = "multi",
    sender_flatness: float | None = None,
    label_weight: float = DEFAULT_LABEL_WEIGHT,
) -> Uncertainty:
    """Label closeness, sender flatness and the combined score (see module doc)."""
    closeness = label_closeness(probabilities, thresholds, mode=mode)
    if sender_flatness is None:
        return Uncertainty(closeness, None, closeness)
    w = min(max(float(label_weight), 0.0), 1.0)
    return Uncertainty(closeness, sender_flatness, w * closeness + (1.0 - w) * sender_flatness)


@dataclass(frozen=True)
class Scored:
    """A candidate image and its combined uncertainty score."""

    image_id: int
    score: float


@dataclass(frozen=True)
class Pick:
    """One image chosen for review, and why."""

    image_id: int
    reason: str  # UNCERTAIN or RANDOM
    score: float


def random_count(n: int, random_share: float, rng: random.Random) -> int:
    """How many of ``n`` picks are random: ``n * share`` rounded up or down at random in
    proportion to its fraction, so the share holds on average even for small ``n``."""
    share = min(max(float(random_share), 0.0), 1.0)
    exact = n * share
    whole = int(math.floor(exact))
    return min(n, whole + (1 if rng.random() < exact - whole else 0))


def pick_for_review(
    candidates: Sequence[Scored],
    n: int,
    *,
    random_share: float = DEFAULT_RANDOM_SHARE,
    seed: int | str | None = 0,
    exclude: Collection[int] = (),
) -> list[Pick]:
    """Up to ``n`` images: the highest-scored ones, plus a random share drawn from the rest.

    Ties in score go to the lower image id. Uncertain picks come first, highest score first,
    then the random ones. With fewer eligible candidates than ``n``, all of them are returned.

    Args:
        exclude: image ids already awaiting answers (never picked).
        seed: seeds the random share (same inputs and seed -> same picks).
    """
    if n <= 0:
        return []
    skip = set(exclude)
    seen: set[int] = set()
    pool: list[Scored] = []
    for c in candidates:
        if c.image_id in skip or c.image_id in seen:
            continue
        seen.add(c.image_id)
        pool.append(c)
    rng = random.Random(seed)
    ranked = sorted(pool, key=lambda c: (-_finite(c.score), c.image_id))
    n = min(n, len(ranked))
    n_random = random_count(n, random_share, rng)
    top = ranked[: n - n_random]
    rest = sorted(ranked[n - n_random :], key=lambda c: c.image_id)
    drawn = rng.sample(rest, n_random) if n_random else []
    return [Pick(c.image_id, UNCERTAIN, c.score) for c in top] + [
        Pick(c.image_id, RANDOM, c.score) for c in drawn
    ]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -1.0


def _clip(value: float) -> float:
    return min(max(value, 0.0), 1.0)
