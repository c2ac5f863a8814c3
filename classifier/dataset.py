"""Training examples: label-vote resolution, sender vocabulary, datasets over (path, target) rows.

Label resolution rule (what a net vote count means for training):

* Per label, the net vote (sum of +1/-1 over every voter and origin) decides: net > 0 is a
  **positive**, net < 0 a **negative**, net == 0 (a tie, or no vote at all) **unknown**.
* An image with at least one positive label is **category-labelled**: its labels that nobody voted
  on count as negatives (whoever tagged it would have added them), explicit negatives stay
  negative, and ties stay unknown (masked out of the loss and the metrics for that label only).
* An image with no positive label has **no category targets**: every label is masked out of the
  category loss and metrics. It still trains the sender head.
* Votes on labels outside the configured label set are ignored.

Senders: the author of an image's first post. People with fewer than ``min_posts_per_person``
training images are folded into ``"other"``; an image with no known author has no sender target.

Datasets never query the store: callers hand in ``(image_path, target)`` rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from classifier.errors import ImageLoadError
from classifier.imaging import load_rgb
from store.rows import LabelledImage

log = logging.getLogger(__name__)

OTHER = "other"
# Sender target for an image whose author is unknown: ignored by the loss and the metrics.
NO_SENDER = -1


@dataclass(frozen=True, eq=False)
class Example:
    """One stored image, resolved into what training and evaluation need."""

    sha256: str
    path: Path
    phash: str | None
    posted_at: datetime | None
    sender: str | None
    label_targets: np.ndarray  # (n_labels,) float32, 1.0 positive / 0.0 negative
    label_mask: np.ndarray  # (n_labels,) bool, False where the target is unknown

    @property
    def is_category_labelled(self) -> bool:
        return bool((self.label_targets > 0).any())


def resolve_label_votes(
    net_votes: Mapping[str, int], labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and mask for one image under the module's label resolution rule."""
    targets = np.zeros(len(labels), dtype=np.float32)
    mask = np.zeros(len(labels), dtype=bool)
    nets = [int(net_votes.get(name, 0)) for name in labels]
    if not any(n > 0 for n in nets):
        return targets, mask
    for i, name in enumerate(labels):
        net = nets[i]
        if net > 0:
            targets[i], mask[i] = 1.0, True
        elif net < 0 or name not in net_votes:
            mask[i] = True  # explicit negative, or silence on a tagged image
        # else: a tie on a tagged image stays unknown
    return targets, mask


def build_examples(
    items: Iterable[LabelledImage], labels: Sequence[str], data_dir: Path
) -> list[Example]:
    """Resolve the store's labelled view into examples; image paths are ``data_dir / relpath``."""
    examples = []
    for item in items:
        targets, mask = resolve_label_votes(item.net_votes, labels)
        examples.append(
            Example(
                sha256=item.image.sha256,
                path=Path(data_dir) / item.image.relpath,
                phash=item.image.phash,
                posted_at=item.posted_at,
                sender=item.sender,
                label_targets=targets,
                label_mask=mask,
            )
        )
    return examples


def build_sender_vocab(
    train_senders: Iterable[str | None],
    *,
    min_posts: int,
    other_senders: Iterable[str | None] = (),
) -> list[str]:
    """Sender classes: people with at least ``min_posts`` training images, most active first.

    ``"other"`` is appended when someone is folded into it, in training or among
    ``other_senders`` (e.g. a newcomer who only appears in validation), so every known
    author maps to a class.
    """
    counts = Counter(s for s in train_senders if s is not None)
    kept = sorted(
        (s for s, n in counts.items() if n >= min_posts and s != OTHER),
        key=lambda s: (-counts[s], s),
    )
    kept_set = set(kept)
    needs_other = any(s not in kept_set for s in counts) or any(
        s is not None and s not in kept_set for s in other_senders
    )
    return [*kept, OTHER] if needs_other else kept


def encode_senders(senders: Iterable[str | None], vocab: Sequence[str]) -> np.ndarray:
    """Class indices; unknown people map to ``"other"`` when the vocabulary has it."""
    index = {name: i for i, name in enumerate(vocab)}
    other = index.get(OTHER, NO_SENDER)
    return np.array(
        [NO_SENDER if s is None else index.get(s, other) for s in senders], dtype=np.int64
    )


def count_label_positives(examples: Sequence[Example], labels: Sequence[str]) -> dict[str, int]:
    if not examples:
        return dict.fromkeys(labels, 0)
    pos = np.stack([e.label_targets for e in examples]).sum(axis=0)
    return {name: int(pos[i]) for i, name in enumerate(labels)}


def stack_label_targets(
    examples: Sequence[Example], n_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, L) targets and mask for a list of examples."""
    if not examples:
        return np.zeros((0, n_labels), np.float32), np.zeros((0, n_labels), bool)
    return (
        np.stack([e.label_targets for e in examples]).astype(np.float32),
        np.stack([e.label_mask for e in examples]).astype(bool),
    )


class ImageDataset:
    """A map-style torch dataset over ``(image_path, target)`` rows.

    An image that cannot be decoded yields ``(None, target)``; ``collate_skip_failed`` drops it
    from the batch and reports its target, so one broken file never stops a run.
    """

    def __init__(
        self,
        rows: Sequence[tuple[Path, Any]],
        transform: Callable[[Any], Any],
        *,
        max_pixels: int,
        min_side: int | None = None,
    ) -> None:
        """``min_side``: decode at reduced scale down to this side, as the Predictor does
        (``classifier.imaging.load_rgb``), so embeddings match what serving computes."""
        self.rows = list(rows)
        self.transform = transform
        self.max_pixels = max_pixels
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        path, target = self.rows[index]
        try:
            image = load_rgb(Path(path), max_pixels=self.max_pixels, min_side=self.min_side)
        except ImageLoadError as exc:
            log.warning("skipping %s: %s", path, exc)
            return None, target
        return self.transform(image), target


def collate_skip_failed(batch: Sequence[tuple[Any, Any]]) -> tuple[Any, list, list]:
    """(stacked images or None, targets of the good items, targets of the failed items)."""
    import torch

    good = [(x, t) for x, t in batch if x is not None]
    failed = [t for x, t in batch if x is None]
    if not good:
        return None, [], failed
    return torch.stack([x for x, _ in good]), [t for _, t in good], failed
