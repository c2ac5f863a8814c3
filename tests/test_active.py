"""Uncertainty sampling (classifier.active) and the active-learning bench's data split.

The bench itself (bench/active_learning.py --quick) takes over a minute on the 2-core machine
(drawing the image set dominates), so only its pure split is tested here.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from classifier.active import (
    RANDOM,
    UNCERTAIN,
    Scored,
    flatness_from_top,
    label_closeness,
    pick_for_review,
    random_count,
    sender_flatness,
    uncertainty,
)

ROOT = Path(__file__).resolve().parent.parent


def test_multi_label_closeness_is_the_nearest_label_to_its_threshold():
    on = label_closeness({"meme": 0.5, "photo": 0.99}, {"meme": 0.5, "photo": 0.5})
    near = label_closeness({"meme": 0.55, "photo": 0.99})
    far = label_closeness({"meme": 0.95, "photo": 0.02})
    assert on == pytest.approx(1.0)
    assert on > near > far
    assert near == pytest.approx(1 - 0.05 / 0.5)
    # Distances are shares of the room on the threshold's side: 0.2 is halfway below 0.4.
    assert label_closeness({"meme": 0.2}, {"meme": 0.4}) == pytest.approx(0.5)
    assert label_closeness({"meme": 0.7}, {"meme": 0.4}) == pytest.approx(0.5)
    assert label_closeness({"meme": 1.0}, {"meme": 0.4}) == pytest.approx(0.0)
    assert label_closeness({}) == 0.0


def test_exclusive_closeness_is_one_minus_the_top_two_margin():
    tie = label_closeness({"a": 0.45, "b": 0.45, "c": 0.1}, mode="exclusive")
    clear = label_closeness({"a": 0.9, "b": 0.05, "c": 0.05}, mode="exclusive")
    assert tie == pytest.approx(1.0)
    assert clear == pytest.approx(1 - 0.85)
    assert label_closeness({"a": 1.0}, mode="exclusive") == pytest.approx(0.0)


def test_sender_flatness_is_normalised_entropy():
    assert sender_flatness([0.25] * 4) == pytest.approx(1.0)
    assert sender_flatness([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert sender_flatness({"Person A": 0.5, "Person B": 0.5}) == pytest.approx(1.0)
    assert sender_flatness([0.7, 0.2, 0.1]) < sender_flatness([0.4, 0.35, 0.25])
    assert sender_flatness([1.0]) is None
    # Only the top probability known: the flattest completion, an upper bound.
    assert flatness_from_top(1 / 3, 3) == pytest.approx(1.0)
    assert flatness_from_top(0.8, 3) == pytest.approx(sender_flatness([0.8, 0.1, 0.1]))
    assert flatness_from_top(0.8, 3) >= sender_flatness([0.8, 0.15, 0.05])
    assert flatness_from_top(None, 3) is None


def test_combined_score_weights_labels_and_sender():
    alone = uncertainty({"meme": 0.5})
    assert alone.score == alone.closeness == pytest.approx(1.0)
    assert alone.flatness is None
    both = uncertainty({"meme": 0.9}, sender_flatness=1.0, label_weight=0.75)
    assert both.score == pytest.approx(0.75 * (1 - 0.4 / 0.5) + 0.25)
    # A flat sender lifts an image the labels are sure about above one with a sure sender.
    sure_sender = uncertainty({"meme": 0.9}, sender_flatness=0.0)
    assert both.score > sure_sender.score


def candidates(n: int) -> list[Scored]:
    return [Scored(i, score=i / n) for i in range(n)]  # image n-1 is the most uncertain


def test_pick_takes_the_highest_scores_first():
    picks = pick_for_review(candidates(10), 3, random_share=0.0)
    assert [(p.image_id, p.reason) for p in picks] == [
        (9, UNCERTAIN),
        (8, UNCERTAIN),
        (7, UNCERTAIN),
    ]
    # Ties go to the lower image id; NaN scores sort last.
    tied = [Scored(5, 0.5), Scored(2, 0.5), Scored(7, math.nan), Scored(1, 0.1)]
    assert [p.image_id for p in pick_for_review(tied, 4, random_share=0.0)] == [2, 5, 1, 7]


def test_pick_never_takes_an_excluded_image_or_one_twice():
    pool = [*candidates(6), Scored(5, 0.99)]
    picks = pick_for_review(pool, 10, random_share=0.0, exclude={5, 4})
    ids = [p.image_id for p in picks]
    assert ids == [3, 2, 1, 0]
    assert len(set(ids)) == len(ids)
    assert pick_for_review(pool, 0) == []
    assert pick_for_review([], 3) == []


def test_random_share_draws_from_the_rest():
    picks = pick_for_review(candidates(100), 10, random_share=0.3, seed=1)
    uncertain = [p.image_id for p in picks if p.reason == UNCERTAIN]
    drawn = [p.image_id for p in picks if p.reason == RANDOM]
    assert uncertain == [99, 98, 97, 96, 95, 94, 93]
    assert len(drawn) == 3 and not set(drawn) & set(uncertain)
    everything = pick_for_review(candidates(100), 10, random_share=1.0, seed=1)
    assert all(p.reason == RANDOM for p in everything)
    assert len({p.image_id for p in everything}) == 10


def test_random_count_holds_the_share_on_average():
    import random

    rng = random.Random(0)
    counts = [random_count(5, 0.1, rng) for _ in range(4000)]
    assert set(counts) == {0, 1}
    assert sum(counts) / len(counts) == pytest.approx(0.5, abs=0.05)
    assert random_count(10, 0.3, rng) == 3  # a whole share is exact
    assert random_count(4, 0.0, rng) == 0 and random_count(4, 1.0, rng) == 4


def test_picks_are_deterministic_for_a_seed():
    pool = candidates(50)
    a = pick_for_review(pool, 8, random_share=0.5, seed=42)
    b = pick_for_review(list(reversed(pool)), 8, random_share=0.5, seed=42)
    assert a == b
    others = {tuple(pick_for_review(pool, 8, random_share=0.5, seed=s)) for s in range(10)}
    assert len(others) > 1


def _bench():
    spec = importlib.util.spec_from_file_location("active_bench", ROOT / "bench/active_learning.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["active_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_bench_split_keeps_one_test_set_and_never_labels_it():
    bench = _bench()
    cats = [c for c in bench.CATEGORIES for _ in range(12)]
    splits = [
        bench.split(cats, test_per_category=3, seed_per_category=5, set_seed=0, seed=s)
        for s in range(3)
    ]
    assert len({tuple(test) for test, _, _ in splits}) == 1  # the same test set for every seed
    assert len({tuple(start) for _, start, _ in splits}) == 3
    for test, start, pool in splits:
        assert not set(test) & set(start) and not set(test) & set(pool)
        assert sorted(test + start + pool) == list(range(len(cats)))
        assert len(test) == 18 and len(start) == 30
