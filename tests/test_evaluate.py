"""Validation metrics, baselines, and the report files written from them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
from sklearn.metrics import average_precision_score

from classifier.evaluate import (
    label_metrics,
    majority_baseline,
    promotion_score,
    recent_activity_baseline,
    sender_metrics,
    summary_metrics,
)
from classifier.report import compare_evaluations, render_comparison_markdown, write_report

T0 = datetime(2023, 1, 1, tzinfo=UTC)


def test_label_metrics_respect_masks_and_thresholds():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], np.float32)
    mask = np.ones_like(y, bool)
    mask[4] = False  # an image with no category targets
    mask[2, 1] = False  # a tie
    p = np.array(
        [[0.9, 0.2, 0.1], [0.4, 0.8, 0.1], [0.1, 0.9, 0.7], [0.6, 0.1, 0.1], [0.1, 0.9, 0.9]]
    )
    m = label_metrics(y, mask, p, [0.5, 0.5, 0.5], ["a", "b", "c"])
    a, b, c = (m["per_label"][k] for k in "abc")
    # a: known rows 0..3 -> y 1,1,0,0; pred 1,0,0,1 -> tp 1, fp 1, fn 1
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == (0.5, 0.5, 0.5, 2)
    assert np.isclose(a["ap"], average_precision_score([1, 1, 0, 0], [0.9, 0.4, 0.1, 0.6]))
    # b: row 2 masked -> y 0,1,0; pred 0,1,0 -> perfect
    assert b["f1"] == 1.0 and b["support"] == 1
    # c: no positives -> no recall; excluded from the macro average and mAP
    assert c["support"] == 0 and c["ap"] is None
    assert np.isclose(m["macro_f1"], 0.75)
    assert np.isclose(m["micro_f1"], 2 * 2 / (2 * 2 + 2 + 1))  # tp 2, fp 2 (a, c), fn 1
    assert m["n_category_labelled"] == 4
    assert m["coverage"] == 1.0  # every image, masked or not, got some label


def test_sender_metrics_top_k_and_confidence():
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25]]
    )
    y = np.array([0, 1, 1, 2, -1])  # last: unknown author, ignored
    m = sender_metrics(y, probs, ["Person A", "Person B", "Person C"], min_confidence=0.6)
    assert m["n_images"] == 4
    assert m["top1"] == 0.75 and m["top3"] == 1.0
    assert np.isclose(m["coverage"], 0.5) and m["confident_precision"] == 1.0
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert np.isclose(m["macro_f1"], np.mean([2 / 3, 2 / 3, 1.0]))


def test_majority_baseline():
    b = majority_baseline(np.array([0, 0, 1, 2, 0, -1]), np.array([0, 1, 1, -1]))
    assert b["guess"] == 0 and np.isclose(b["top1"], 1 / 3)


def test_recent_activity_baseline_uses_the_last_30_days_of_earlier_posts():
    # Person 0 is most active overall, but person 1 took over in the last month.
    hist_t = [T0 + timedelta(days=d) for d in (0, 1, 2, 3, 40, 45, 50, 55, 56)]
    hist_s = [0, 0, 0, 0, 1, 1, 0, 1, 2]
    query_t = [T0 + timedelta(days=60), T0 + timedelta(days=200), T0 - timedelta(days=5), None]
    query_y = [1, 2, 0, 0]
    b = recent_activity_baseline(
        [*hist_t, *query_t[:1]], [*hist_s, 1], query_t, query_y, fallback=0
    )
    # day 60: window days 30..60 -> person 1 (3 posts) beats 0 and 2: right.
    # day 200: nobody within 30 days -> most frequent earlier poster (0, 5 posts): wrong.
    # before anything: fallback 0: right. No time: fallback 0: right.
    assert np.isclose(b["top1"], 3 / 4)


def test_promotion_score_and_summary():
    ev = {
        "categories": {"macro_f1": 0.6},
        "sender": {"macro_f1": 0.3, "top1": 0.5},
        "baselines": {"majority": {"top1": 0.4}, "recent_30d": {"top1": 0.45}},
        "n_val": 10,
    }
    assert np.isclose(promotion_score(ev), 0.9)
    assert promotion_score({"categories": {"macro_f1": None}, "sender": {}}) == 0.0
    s = summary_metrics(ev)
    assert s["majority_top1"] == 0.4 and np.isclose(s["score"], 0.9)


def _evaluation(version: str, f1: float) -> dict:
    grid = [0.1, 0.5, 0.9]
    return {
        "version": version,
        "evaluated_at": "2024-01-01T00:00:00+00:00",
        "n_val": 3,
        "n_train": 9,
        "data": {
            "n_val": 3,
            "n_tune": 4,
            "n_train": 9,
            "tuned_on": "tune",
            "tuning_warning": None,
            "dropped_leaks": 2,
            "dropped_tune_leaks": 1,
            "cutoff": "2024-01-01",
            "tune_cutoff": "2023-12-01",
            "not_emitted": {"news": 1},
        },
        "senders": ["Person A", "Person B"],
        "categories": {
            "macro_f1": f1,
            "micro_f1": f1,
            "map": 0.7,
            "coverage": 1.0,
            "n_category_labelled": 3,
            "per_label": {
                "meme": {
                    "precision": 1.0,
                    "recall": 0.5,
                    "f1": f1,
                    "ap": 0.7,
                    "support": 2,
                    "threshold": 0.5,
                }
            },
            "curves": {"grid": grid, "f1": {"meme": [0.4, f1, 0.2]}},
        },
        "sender": {
            "top1": 0.5,
            "top3": 1.0,
            "macro_f1": 0.4,
            "min_confidence": 0.3,
            "coverage": 0.5,
            "confident_precision": 1.0,
            "confusion": [[1, 1], [0, 1]],
            "reliability": {
                "edges": [0, 0.5, 1],
                "mean_confidence": [0.4, 0.8],
                "accuracy": [0.5, None],
                "count": [2, 0],
                "ece": 0.1,
            },
        },
        "baselines": {
            "majority": {"top1": 0.3, "macro_f1": 0.2},
            "recent_30d": {"top1": 0.4, "macro_f1": 0.3},
        },
        "calibration": {
            "temperature": 1.5,
            "fitted_on": "tune",
            "nll_before": 1.0,
            "nll_after": 0.8,
        },
        "tuning": {"tuned_on": "tune", "n_images": 4, "warning": None},
    }


def test_write_report_and_compare(tmp_path):
    ev = _evaluation("v1", 0.5)
    paths = write_report(ev, tmp_path / "v1")
    assert json.loads(paths["json"].read_text())["version"] == "v1"
    md = paths["markdown"].read_text()
    assert "**9** train (oldest) · **4** tune (from 2023-12-01) · **3** validation" in md
    assert "**2** training images (near a tune or validation image), **1** tune images" in md
    assert "fitted on the tune images only" in md and "Warning" not in md
    assert "tune NLL 1.000 → 0.800" in md and "| meme |" in md
    assert "news (1)" in md
    for key in ("confusion", "thresholds", "reliability"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cmp = compare_evaluations(ev, _evaluation("v2", 0.75))
    assert np.isclose(cmp["metrics"]["category_macro_f1"]["delta"], 0.25)
    assert np.isclose(cmp["per_label_f1"]["meme"]["new_f1"], 0.75)
    assert "+0.250" in render_comparison_markdown(cmp)


def test_report_flags_thresholds_tuned_on_validation(tmp_path):
    from classifier.train import OPTIMISTIC_NOTE

    ev = _evaluation("v1", 0.5)
    ev["data"].update(n_tune=0, tuned_on="validation", tuning_warning=OPTIMISTIC_NOTE)
    ev["tuning"] = {"tuned_on": "validation", "n_images": 3, "warning": OPTIMISTIC_NOTE}
    md = write_report(ev, tmp_path / "v1")["markdown"].read_text()
    assert f"**Warning: {OPTIMISTIC_NOTE}.**" in md and "metrics are optimistic" in md
