"""Per-label max-F1 thresholds, their few-positives fallback, and the sender "unsure" line."""

from __future__ import annotations

import numpy as np

from classifier.thresholds import (
    DEFAULT_SENDER_CONFIDENCE,
    DEFAULT_THRESHOLD,
    NEVER_NAME_SENDER,
    best_f1_threshold,
    choose_sender_min_confidence,
    f1_curve,
    tune_label_thresholds,
)


def test_max_f1_picks_the_threshold_between_the_classes():
    # Positives score 0.62..0.9, negatives 0.1..0.58 except one at 0.75.
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    p = np.array([0.62, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.4, 0.58, 0.75])
    threshold, f1 = best_f1_threshold(y, p)
    # Anything in (0.58, 0.62] keeps all positives and drops all but one negative: F1 = 8/9.
    assert 0.58 < threshold <= 0.62
    assert np.isclose(f1, 8 / 9)


def test_ties_go_to_the_middle_of_the_plateau():
    y = np.array([1, 1, 0, 0], bool)
    p = np.array([0.8, 0.9, 0.1, 0.2])
    threshold, f1 = best_f1_threshold(y, p)
    assert f1 == 1.0
    assert 0.45 <= threshold <= 0.55  # plateau 0.21..0.80; the median is about 0.5


def test_f1_curve_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    y = rng.random(50) < 0.3
    p = np.clip(y * 0.3 + rng.random(50) * 0.7, 0, 1)
    grid = np.array([0.2, 0.5, 0.8])
    curve = f1_curve(y, p, grid)
    for t, f in zip(grid, curve, strict=True):
        pred = p >= t
        tp, fp, fn = (pred & y).sum(), (pred & ~y).sum(), (~pred & y).sum()
        assert np.isclose(f, 2 * tp / (2 * tp + fp + fn))


def test_labels_with_few_tuning_positives_keep_the_default():
    y = np.array([[1, 1], [1, 0], [1, 1], [0, 0], [0, 0], [0, 0]], np.float32)
    mask = np.ones_like(y, bool)
    mask[2, 1] = False  # the second label's third positive is unknown (a tie)
    p = np.array([[0.9, 0.95], [0.8, 0.1], [0.7, 0.9], [0.2, 0.3], [0.1, 0.2], [0.3, 0.1]])
    tuned = tune_label_thresholds(y, mask, p, ["a", "b"], min_positives=3)
    assert tuned["a"].source == "tuned" and 0.3 < tuned["a"].threshold <= 0.7
    assert tuned["a"].f1 == 1.0
    assert tuned["b"].source == "default" and tuned["b"].threshold == DEFAULT_THRESHOLD
    assert tuned["b"].positives == 1


def test_sender_confidence_reaches_target_precision():
    # Confident guesses (>= 0.6) are right; the unsure ones are mostly wrong.
    conf = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.3])
    correct = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 1], bool)
    chosen = choose_sender_min_confidence(conf, correct, target_precision=0.9, min_accepted=3)
    assert chosen.target_reached
    assert 0.5 < chosen.min_confidence <= 0.6
    assert chosen.precision == 1.0 and np.isclose(chosen.coverage, 6 / 12)


def test_sender_is_never_named_when_no_line_is_good_enough():
    conf = np.linspace(0.2, 0.9, 20)
    correct = np.arange(20) % 2 == 0  # 50 % right at every confidence
    chosen = choose_sender_min_confidence(conf, correct, target_precision=0.95)
    assert not chosen.target_reached and chosen.precision is not None
    assert chosen.min_confidence == NEVER_NAME_SENDER > 1.0 and chosen.coverage == 0.0
    # A line that reaches the target, on a head that loses to the majority guess there, is
    # luck: it is not drawn either.
    conf = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.3])
    correct = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 1], bool)
    lucky = choose_sender_min_confidence(
        conf, correct, target_precision=0.9, min_accepted=3, beats_majority=False
    )
    assert lucky.min_confidence == NEVER_NAME_SENDER and not lucky.beats_majority


def test_sender_confidence_with_too_little_data():
    conf = np.linspace(0.2, 0.9, 20)
    correct = np.arange(20) % 2 == 0
    few = choose_sender_min_confidence(conf[:2], correct[:2], target_precision=0.5)
    assert few.min_confidence == DEFAULT_SENDER_CONFIDENCE and few.precision is None
