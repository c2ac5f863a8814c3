"""Synthetic chats for the sender head: one whose members have tastes, one where they have none.

With tastes, five members post at uneven rates and each favours one category: Person A posts 40 %
of the images, mostly memes; Persons B-E post 15 % each and favour social-media screenshots,
comics, news and photos respectively, ``FAVOURITE_WEIGHT`` to 1 over every other category. Without
tastes the same members post at the same rates, but what they post does not depend on who they
are (every member draws categories from the chat-wide mix). Knowing an image's category perfectly,
the best possible sender top-1 is ``bayes_top1(...)``: about 0.58 with tastes, the majority share
(0.40) without.

Used by the tests (``sample_chat`` for feature-level tests, ``make_chat`` for end-to-end runs with
images drawn by ``memetag.demo.render``) and by ``bench/sender_head.py``.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from memetag.demo import CATEGORIES, is_screenshot, render

MEMBERS = ("Person A", "Person B", "Person C", "Person D", "Person E")
ACTIVITY = (0.40, 0.15, 0.15, 0.15, 0.15)
FAVOURITES = ("meme", "social_media", "comic_strip", "news", "photo")
FAVOURITE_WEIGHT = 6.0
START = datetime(2023, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ChatImage:
    filename: str
    sender: str
    labels: tuple[str, ...]
    timestamp: datetime


def category_weights(member: str, *, tastes: bool) -> dict[str, float]:
    """What ``member`` posts: their favourite at ``FAVOURITE_WEIGHT`` to 1 for the rest, or with
    no tastes the chat-wide mix of the taste chat (the same for everyone)."""
    if tastes:
        fav = FAVOURITES[MEMBERS.index(member)]
        return {c: FAVOURITE_WEIGHT if c == fav else 1.0 for c in CATEGORIES}
    mix = dict.fromkeys(CATEGORIES, 0.0)
    for m, share in zip(MEMBERS, ACTIVITY, strict=True):
        w = category_weights(m, tastes=True)
        total = sum(w.values())
        for c in CATEGORIES:
            mix[c] += share * w[c] / total
    return mix


def bayes_top1(*, tastes: bool) -> float:
    """Sender top-1 of the best possible guess from an image's (true) category alone."""
    best = 0.0
    for c in CATEGORIES:
        joint = []
        for m, share in zip(MEMBERS, ACTIVITY, strict=True):
            w = category_weights(m, tastes=tastes)
            joint.append(share * w[c] / sum(w.values()))
        best += max(joint)
    return best


def sample_chat(n: int, *, seed: int = 0, tastes: bool = True) -> list[tuple[str, str, datetime]]:
    """(sender, category, time) for ``n`` posts, oldest first, one every ~36 hours."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sender = rng.choices(MEMBERS, weights=ACTIVITY)[0]
        weights = category_weights(sender, tastes=tastes)
        category = rng.choices(list(weights), weights=list(weights.values()))[0]
        when = START + timedelta(hours=i * 36 + rng.randint(0, 30))
        rows.append((sender, category, when))
    return rows


def make_chat(
    folder: Path, *, images: int = 240, seed: int = 0, size: int = 256, tastes: bool = True
) -> list[ChatImage]:
    """Draw the chat's images into ``folder`` with ``labels.csv`` (filename,sender,labels,
    timestamp), ready for ``memetag ingest folder``. ``size`` is ``render``'s base size."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"images-{seed}")
    out = []
    for i, (sender, category, when) in enumerate(sample_chat(images, seed=seed, tastes=tastes)):
        labels = (category,)
        img = render(labels, random.Random(rng.getrandbits(64)), size)
        if is_screenshot(labels):
            name = f"img_{i:04d}.png"
            img.save(folder / name, compress_level=1)
        else:
            name = f"img_{i:04d}.jpg"
            img.save(folder / name, quality=85)
        out.append(ChatImage(name, sender, labels, when))
    write_labels_csv(folder / "labels.csv", out)
    return out


def write_labels_csv(path: Path, rows: list[ChatImage]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "sender", "labels", "timestamp"])
        for r in rows:
            writer.writerow([r.filename, r.sender, " ".join(r.labels), r.timestamp.isoformat()])
    return path
