"""The train/validation split: the newest images validate, and reposts of them leave training."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Indices into the caller's example list."""

    train: list[int]
    val: list[int]
    # Training images dropped because their perceptual hash is near a validation image's.
    dropped_leaks: list[int]
    # posted_at of the oldest validation image (None when there is no validation set).
    cutoff: datetime | None


def _timestamp(when: datetime) -> float:
    # Naive datetimes are taken as UTC, like the store writes them.
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def time_split(
    posted_at: Sequence[datetime | None], val_fraction: float, *, tiebreak: Sequence[str] = ()
) -> tuple[list[int], list[int]]:
    """Newest ``val_fraction`` of all images (by posted_at) validate; the rest train.

    Mirrors how the model is used: trained on the past, asked about what comes next. Images
    without a time can't be placed on the timeline and always train. ``tiebreak`` (e.g. sha256s)
    makes the order of same-time images, and so the split, deterministic.
    """
    n = len(posted_at)
    timed = [i for i in range(n) if posted_at[i] is not None]
    n_val = min(len(timed), math.floor(n * val_fraction + 0.5))
    if n >= 2 and timed and n_val == 0:
        n_val = 1  # tiny stores still get one validation image
    n_val = min(n_val, n - 1) if n >= 2 else 0
    timed.sort(key=lambda i: (_timestamp(posted_at[i]), tiebreak[i] if tiebreak else "", i))
    val = sorted(timed[len(timed) - n_val :]) if n_val else []
    val_set = set(val)
    train = [i for i in range(n) if i not in val_set]
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
    """Training indices whose phash is within ``max_distance`` bits of any validation phash.

    A repost of a validation image sitting in training would let the model memorise the answer
    and inflate validation scores, so these are dropped from training.
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


def split_by_time(
    posted_at: Sequence[datetime | None],
    phashes: Sequence[str | None],
    *,
    val_fraction: float,
    phash_distance: int,
    tiebreak: Sequence[str] = (),
) -> Split:
    """Time split plus repost-leak removal."""
    train, val = time_split(posted_at, val_fraction, tiebreak=tiebreak)
    leaks = find_repost_leaks(train, val, phashes, phash_distance)
    if leaks:
        log.info("dropping %d training images that repost a validation image", len(leaks))
    leak_set = set(leaks)
    cutoff = min((posted_at[i] for i in val), key=_timestamp, default=None)
    return Split(
        train=[i for i in train if i not in leak_set],
        val=val,
        dropped_leaks=sorted(leaks),
        cutoff=cutoff,
    )
