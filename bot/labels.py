"""Which labels an image shows under a guild's threshold overrides (``/tagger threshold``).

One rule for every place the bot shows or pre-fills tags: the tag it posts, the Fix tags
picker's pre-filled choices (and so the −1 votes for predicted labels a member deselects), and
the review queue.
"""

from __future__ import annotations

from collections.abc import Mapping


def decide(
    probabilities: Mapping[str, float],
    thresholds: Mapping[str, float],
    *,
    exclusive: bool,
    overrides: Mapping[str, float],
) -> list[str]:
    """The labels shown, most probable first.

    As the model decides (``classifier.labelhead.predict_label_sets``): multi-label shows every
    label at or over its threshold (0.5 when the model has none for it) and at least the most
    probable one, exclusive only the most probable one; an overridden label is shown only at
    or over its override, even as the "at least one".
    """
    order = sorted(probabilities, key=lambda n: -probabilities[n])  # stable, as the model

    def limit(name: str) -> float:
        return overrides.get(name, float(thresholds.get(name, 0.5)))

    if exclusive:
        picked = order[:1]
    else:
        picked = [n for n in order if probabilities[n] >= limit(n)]
        if order and order[0] not in picked:
            picked.insert(0, order[0])
    return [n for n in picked if n not in overrides or probabilities[n] >= overrides[n]]
