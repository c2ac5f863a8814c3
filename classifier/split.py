"""The time split into train, tune and validation (newest last), and repost-leak removal.

Rule (documented for the README): the newest ``val_fraction`` of images validate, the
``tune_fraction`` just before them tune (decision thresholds, the sender temperature and its
confidence line are fitted there), and everything older trains the model. Reposts cross no
boundary: a training image within ``phash_distance`` of a tune or validation image is dropped,
and so is a tune image near a validation image. With fewer than ``min_tune`` tune images left the
tune part is given back to training and tuning falls back to validation, which the report flags
as optimistic.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

log = logging.getLogger(__name__)

# Below this many tune images the fitted thresholds are noise; tune on validation instead.
MIN_TUNE_IMAGES = 10
TUNED_ON_TUNE = "tune"
TUNED_ON_VALIDATION = "validation"


@dataclass(frozen=True)
class Split:
    """Indices into the caller's example list."""

    train: list[int]
    # Images that fit thresholds and calibration; empty when tuned_on is "validation".
    tune: list[int]
    val: list[int]
    # "tune", or "validation" when the tune part was too small (then metrics are optimistic).
    tuned_on: str
    # Training images dropped because their perceptual hash is near a tune or validation image's.
    dropped_leaks: list[int]
    # Tune images dropped because their perceptual hash is near a validation image's.
    dropped_tune_leaks: list[int]
    # posted_at of the oldest validation / tune image (None when that part is empty).
    cutoff: datetime | None
    tune_cutoff: datetime | None

    @property
    def tuning(self) -> list[int]:
        """The indices thresholds and calibration are fitted on."""
        return list(self.tune) if self.tuned_on == TUNED_ON_TUNE else list(self.val)


def _timestamp(when: datetime) -> float:
    # Naive datetimes are taken as UTC, like the store writes them.
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def time_split_parts(
    posted_at: Sequence[datetime | None],
    val_fraction: float,
    tune_fraction: float = 0.0,
    *,
    tiebreak: Sequence[str] = (),
) -> tuple[list[int], list[int], list[int]]:
    """(train, tune, val): the newest ``val_fraction`` of all images validate, the
    ``tune_fraction`` just before them tune, the rest train.

    Mirrors how the model is used: trained on the past, asked about what comes next. Images
    without a time can't be placed on the timeline and always train. ``tiebreak`` (e.g. sha256s)
    makes the order of same-time images, and so the split, deterministic. Training always keeps
    at least one image when there are two or more.
    """
    n = len(posted_at)
    timed = [i for i in range(n) if posted_at[i] is not None]
    n_val = min(len(timed), math.floor(n * val_fraction + 0.5))
    if n >= 2 and timed and n_val == 0:
        n_val = 1  # tiny stores still get one validation image
    n_val = min(n_val, n - 1) if n >= 2 else 0
    n_tune = min(len(timed) - n_val, math.floor(n * max(tune_fraction, 0.0) + 0.5))
    n_tune = max(0, min(n_tune, n - n_val - 1))
    timed.sort(key=lambda i: (_timestamp(posted_at[i]), tiebreak[i] if tiebreak else "", i))
    val = sorted(timed[len(timed) - n_val :]) if n_val else []
    tune = sorted(timed[len(timed) - n_val - n_tune : len(timed) - n_val]) if n_tune else []
    held = set(val) | set(tune)
    train = [i for i in range(n) if i not in held]
    return train, tune, val


def time_split(
    posted_at: Sequence[datetime | None], val_fraction: float, *, tiebreak: Sequence[str] = ()
) -> tuple[list[int], list[int]]:
    """(train, val) with no tune part: see ``time_split_parts``."""
    train, _, val = time_split_parts(posted_at, val_fraction, 0.0, tiebreak=tiebreak)
    return train, val


def parse_phash(text: str | None) -> int | None:
    """A 16-hex-digit imagehash phash as a 64-bit integer (None if missing or malformed)."""
    if not text:
        return None
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return value if value < (1 << 64) else None


def find_repost_leaks(
    train: Sequence[int],
    val: Sequence[int],
    phashes: Sequence[str | None],
    max_distance: int,
    *,
    chunk: int = 2048,
) -> list[int]:
    """Indices in ``train`` whose phash is within ``max_distance`` bits of any phash in ``val``.

    A repost of a held-out image sitting in an earlier part would let the model (or the tuned
    thresholds) memorise the answer and inflate the held-out scores, so these are dropped.
    """
    if max_distance < 0 or not train or not val:
        return []
    val_hashes = np.array(
        [h for h in (parse_phash(phashes[i]) for i in val) if h is not None], dtype=np.uint64
    )
    if val_hashes.size == 0:
        return []
    cand = [(i, parse_phash(phashes[i])) for i in train]
    cand = [(i, h) for i, h in cand if h is not None]
    leaks: list[int] = []
    for start in range(0, len(cand), chunk):
        part = cand[start : start + chunk]
        hashes = np.array([h for _, h in part], dtype=np.uint64)
        dist = np.bitwise_count(hashes[:, None] ^ val_hashes[None, :])
        near = (dist <= max_distance).any(axis=1)
        leaks.extend(i for (i, _), hit in zip(part, near, strict=True) if hit)
    return leaks


def _oldest(posted_at: Sequence[datetime | None], idx: Sequence[int]) -> datetime | None:
    return min(
        (posted_at[i] for i in idx if posted_at[i] is not None), key=_timestamp, default=None
    )


def split_by_time(
    posted_at: Sequence[datetime | None],
    phashes: Sequence[str | None],
    *,
    val_fraction: float,
    phash_distance: int,
    tune_fraction: float = 0.0,
    min_tune: int = MIN_TUNE_IMAGES,
    tiebreak: Sequence[str] = (),
) -> Split:
    """Three-way time split plus repost-leak removal across every boundary (see module doc)."""
    train, tune, val = time_split_parts(posted_at, val_fraction, tune_fraction, tiebreak=tiebreak)
    tune_leaks = find_repost_leaks(tune, val, phashes, phash_distance)
    tune_leak_set = set(tune_leaks)
    kept_tune = [i for i in tune if i not in tune_leak_set]
    if len(kept_tune) < min_tune:
        # Too few to fit thresholds on: the old two-way split, tuning on validation.
        if tune:
            log.info(
                "only %d tune images (< %d): thresholds are tuned on validation",
                len(tune),
                min_tune,
            )
        train, tune, kept_tune, tune_leaks = sorted(train + tune), [], [], []
        tuned_on = TUNED_ON_VALIDATION
    else:
        tuned_on = TUNED_ON_TUNE
    leaks = find_repost_leaks(train, sorted(val + kept_tune), phashes, phash_distance)
    if leaks or tune_leaks:
        log.info(
            "dropping %d training images that repost a tune or validation image and %d tune "
            "images that repost a validation image",
            len(leaks),
            len(tune_leaks),
        )
    leak_set = set(leaks)
    return Split(
        train=[i for i in train if i not in leak_set],
        val=val,
        dropped_leaks=sorted(leaks),
        cutoff=_oldest(posted_at, val),
        tune=kept_tune,
        dropped_tune_leaks=sorted(tune_leaks),
        tuned_on=tuned_on,
        tune_cutoff=_oldest(posted_at, kept_tune),
    )
