"""report.md and its plots read by a chat admin: undefined metrics, the "unsure" line in words,
counts on every bar, and files as readable as any other the user writes."""

from __future__ import annotations

import os
import stat

import pytest

from classifier.atomic import atomic_write, new_file_mode
from classifier.report import (
    _spread,
    plot_confusion,
    plot_reliability,
    plot_threshold_curves,
    render_markdown,
    write_report,
)


def _evaluation(**sender_confidence) -> dict:
    grid = [0.1, 0.5, 0.9]
    return {
        "version": "v1",
        "evaluated_at": "2024-01-01T00:00:00+00:00",
        "n_val": 12,
        "data": {"n_val": 12, "n_tune": 10, "n_train": 40, "tuned_on": "tune"},
        "senders": ["Person A", "Person B"],
        "categories": {
            "macro_f1": 0.8,
            "micro_f1": 0.8,
            "per_label": {
                "meme": {
                    "precision": 0.75,
                    "recall": 0.6,
                    "f1": 0.667,
                    "ap": 0.7,
                    "support": 5,
                    "threshold": 0.5,
                },
                # Nothing in validation carries this label: its metrics are undefined, not 0.
                "news": {
                    "precision": 0.0,
                    "recall": 0.0,
                    "f1": 0.0,
                    "ap": None,
                    "support": 0,
                    "threshold": 0.4,
                },
            },
            "curves": {"grid": grid, "f1": {"meme": [0.4, 0.667, 0.2]}},
        },
        "sender": {
            "top1": 0.5,
            "top3": 1.0,
            "macro_f1": 0.4,
            "min_confidence": sender_confidence.get("min_confidence", 0.0),
            "coverage": 1.0,
            "confident_precision": 0.5,
            "confusion": [[5, 1], [2, 4]],
            "reliability": {
                "edges": [0.0, 0.5, 1.0],
                "mean_confidence": [0.4, 0.8],
                "accuracy": [0.25, 0.75],
                "count": [4, 8],
                "ece": 0.1,
            },
        },
        "calibration": {"temperature": 1.5, "sender_confidence": sender_confidence},
        "tuning": {"tuned_on": "tune"},
    }


def _row(md: str, label: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_labels_without_support_show_a_dash_not_zero():
    md = render_markdown(_evaluation())
    assert _row(md, "news") == ["news", "0.40", "–", "–", "–", "–", "0"]
    assert _row(md, "meme")[2:5] == ["0.750", "0.600", "0.667"]
    assert "no validation image has news" in md and "left out of macro-F1" in md


def test_a_zero_confidence_line_is_explained():
    md = render_markdown(
        _evaluation(min_confidence=0.0, target_precision=0.6, target_reached=True, precision=0.83)
    )
    assert "Confident guesses at ≥" not in md
    assert "names a sender only when the calibrated probability of its top guess is at " in md
    assert "least **0.00**" in md and 'answers "unsure"' in md
    assert "right at least 60% of the time (`[train] sender_target_precision`)" in md
    assert "there they were right 83% of the time" in md
    assert "the model always names someone" in md
    assert "named a sender for 100% of the images, and 50% of those names were right" in md


def test_a_missed_target_and_a_re_evaluation_say_so():
    missed = render_markdown(
        _evaluation(min_confidence=0.55, target_precision=0.6, target_reached=False, precision=0.5)
    )
    assert "No line reached the 60% target" in missed and "right 50% of the time there" in missed
    assert "always names someone" not in missed
    default = render_markdown(
        _evaluation(min_confidence=0.5, target_precision=0.6, target_reached=False, precision=None)
    )
    assert "Too few tune images with a known sender" in default
    # `memetag eval` re-scores a saved model: only the line itself is known then.
    again = render_markdown(_evaluation(min_confidence=0.4))
    assert "It was chosen when the model was trained" in again and "**0.40**" in again


def _texts(fig) -> list[str]:
    found = [t.get_text() for ax in fig.axes for t in ax.texts]
    found += [ax.get_title() for ax in fig.axes] + [ax.get_xlabel() for ax in fig.axes]
    found += [ax.get_ylabel() for ax in fig.axes]
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            found += [t.get_text() for t in legend.get_texts()]
    return found


def test_reliability_plot_counts_every_bin(tmp_path):
    ev = _evaluation(min_confidence=0.3)
    fig = plot_reliability(ev["sender"]["reliability"], tmp_path / "r.png", min_confidence=0.3)
    texts = _texts(fig)
    assert "1/4" in texts and "6/8" in texts  # right guesses out of images, per bin
    assert "4" in texts and "8" in texts  # images per bin, beneath
    assert any("12 validation images" in t for t in texts)
    assert 'below 0.30: answered "unsure"' in texts
    assert any("share of guesses that were right" in t for t in texts)
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    empty = _texts(plot_reliability(None, tmp_path / "e.png"))
    assert "no validation images with a known sender" in empty


def test_spread_keeps_labels_apart_and_inside():
    assert _spread([0.1, 0.5], 0.05, 0.0, 1.0) == [0.1, 0.5]
    places = _spread([0.9, 0.91, 0.92, 0.99], 0.05, 0.0, 1.0)
    assert places[-1] == 1.0 and all(
        b - a >= 0.05 - 1e-9 for a, b in zip(places, places[1:], strict=False)
    )


def test_threshold_plot_labels_each_curve_with_its_positives(tmp_path):
    ev = _evaluation()
    fig = plot_threshold_curves(
        ev["categories"]["curves"],
        {"meme": 0.5, "news": 0.4},
        tmp_path / "t.png",
        support={"meme": 5, "news": 0},
    )
    texts = _texts(fig)
    assert "meme (5 positives): in use 0.50 → F1 0.67" in texts  # beside the curve's end
    empty = _texts(plot_threshold_curves({}, {}, tmp_path / "e.png"))
    assert "no label has validation positives" in empty


def test_confusion_plot_has_a_colour_bar_and_row_totals(tmp_path):
    fig = plot_confusion([[5, 1], [2, 4]], ["Person A", "Person B"], tmp_path / "c.png")
    assert len(fig.axes) == 2  # the matrix and its colour bar
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "Person A (6)",
        "Person B (6)",
    ]


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_report_files_all_get_the_umask_mode(tmp_path, umask, mask):
    umask(mask)
    assert new_file_mode() == 0o666 & ~mask
    paths = write_report(_evaluation(), tmp_path / "v1")
    modes = {name: _mode(p) for name, p in paths.items()}
    assert set(modes.values()) == {0o666 & ~mask}, modes


def test_atomic_write_replaces_with_the_new_file_mode(tmp_path, umask):
    umask(0o002)
    target = tmp_path / "model.json"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o664
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temp file left


def test_checkpoints_get_the_umask_mode_too(tmp_path, umask):
    from ml_helpers import make_checkpoint

    from classifier.checkpoint import save_checkpoint

    umask(0o022)
    path = tmp_path / "models" / "v.pt"
    save_checkpoint(make_checkpoint(), path)
    assert _mode(path) == 0o644
