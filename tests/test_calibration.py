"""Temperature scaling of the sender softmax, and reliability statistics."""

from __future__ import annotations

import numpy as np

from classifier.calibration import fit_temperature, nll, reliability_bins, softmax


def _overconfident(n: int = 400, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose argmax is right ~70 % of the time but claim ~99 % confidence."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    right = rng.random(n) < 0.7
    logits[np.arange(n), np.where(right, y, (y + 1) % k)] += 2.0
    return logits * 5.0, y


def test_temperature_scaling_lowers_nll_on_overconfident_logits():
    logits, y = _overconfident()
    t = fit_temperature(logits, y)
    assert t > 2.0
    assert nll(logits, y, t) < 0.8 * nll(logits, y, 1.0)
    before = reliability_bins(softmax(logits).max(1), softmax(logits).argmax(1) == y)
    after = reliability_bins(softmax(logits, t).max(1), softmax(logits, t).argmax(1) == y)
    assert after["ece"] < before["ece"]


def test_well_calibrated_logits_stay_near_one():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (2000, 3))
    probs = softmax(logits)
    y = np.array([rng.choice(3, p=p) for p in probs])
    assert 0.85 < fit_temperature(logits, y) < 1.15


def test_too_little_data_keeps_temperature_one():
    logits, y = _overconfident(n=6)
    assert fit_temperature(logits, y) == 1.0
    many, _ = _overconfident(n=50)
    assert fit_temperature(many, np.zeros(50, int)) == 1.0  # a single class


def test_reliability_bins_count_everything():
    conf = np.array([0.05, 0.15, 0.95, 0.99, 1.0])
    bins = reliability_bins(conf, np.array([0, 0, 1, 1, 1], bool), n_bins=10)
    assert sum(bins["count"]) == 5 and bins["count"][9] == 3
    assert bins["accuracy"][9] == 1.0 and bins["accuracy"][5] is None
    assert 0 <= bins["ece"] < 0.1
