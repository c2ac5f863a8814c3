"""Evaluation reports on disk: report.json, report.md and PNG plots, plus old-vs-new comparisons."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from classifier.atomic import atomic_write
from classifier.evaluate import summary_metrics

log = logging.getLogger(__name__)

CONFUSION_PNG = "sender_confusion.png"
THRESHOLDS_PNG = "label_f1_vs_threshold.png"
RELIABILITY_PNG = "sender_reliability.png"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _delta(new: Any, old: Any) -> str:
    if not isinstance(new, int | float) or not isinstance(old, int | float):
        return "–"
    return f"{new - old:+.3f}"


def _nll_text(cal: dict, snd: dict) -> str:
    val = f"validation NLL {_fmt(snd.get('nll'))}"
    if cal.get("nll_before") is not None:
        fitted = cal.get("fitted_on") or "validation"
        return f"{fitted} NLL {_fmt(cal['nll_before'])} → {_fmt(cal.get('nll_after'))}; {val}"
    return val


def _split_lines(data: dict, tuning: dict) -> list[str]:
    """Sizes of the three parts and which one fitted thresholds and calibration."""
    lines = [
        f"Split by time: **{data.get('n_train', 0)}** train (oldest) · "
        f"**{data.get('n_tune', 0)}** tune (from {data.get('tune_cutoff') or '–'}) · "
        f"**{data.get('n_val', 0)}** validation (newest, from {data.get('cutoff') or '–'}).",
        f"Repost leaks dropped: **{data.get('dropped_leaks', 0)}** training images (near a tune "
        f"or validation image), **{data.get('dropped_tune_leaks', 0)}** tune images (near a "
        "validation image).",
    ]
    tuned_on = tuning.get("tuned_on") or data.get("tuned_on") or "validation"
    if tuned_on == "tune":
        lines.append(
            "Thresholds, sender temperature and confidence line were fitted on the tune images "
            "only; validation was only scored."
        )
    else:
        warning = tuning.get("warning") or data.get("tuning_warning") or "tuned on validation"
        lines.append(f"**Warning: {warning}.**")
    return lines


# --- plots -------------------------------------------------------------------------------------


def plot_confusion(confusion: list[list[int]], senders: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    n = max(len(senders), 1)
    fig = Figure(figsize=(2 + 0.6 * n, 1.5 + 0.6 * n), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(confusion or [[0]], cmap="Blues")
    ax.set_xticks(range(len(senders)), senders, rotation=45, ha="right")
    ax.set_yticks(range(len(senders)), senders)
    ax.set_xlabel("predicted sender")
    ax.set_ylabel("actual sender")
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_title("Sender confusion (validation)")
    fig.tight_layout()
    fig.savefig(path)


def plot_threshold_curves(
    curves: dict, thresholds: dict[str, float], path: Path, *, tuned_on: str = "tune"
) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    grid = curves.get("grid", [])
    for name, f1 in sorted(curves.get("f1", {}).items()):
        (line,) = ax.plot(grid, f1, label=name, linewidth=1.2)
        if name in thresholds:
            ax.axvline(thresholds[name], color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("threshold")
    ax.set_ylabel("F1 (validation)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Per-label F1 against threshold (dotted: chosen on {tuned_on})")
    if curves.get("f1"):
        ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path)


def plot_reliability(reliability: dict | None, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    if reliability:
        edges = reliability["edges"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        xs = [c for c, a in zip(centres, reliability["accuracy"], strict=True) if a is not None]
        ys = [a for a in reliability["accuracy"] if a is not None]
        ax.bar(xs, ys, width=1 / len(centres), edgecolor="black", alpha=0.7)
        ax.set_title(f"Sender reliability (ECE {_fmt(reliability.get('ece'))})")
    ax.set_xlabel("calibrated confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path)


# --- markdown ----------------------------------------------------------------------------------


def render_markdown(evaluation: dict) -> str:
    """A human-readable report of one model's evaluation."""
    data = evaluation.get("data", {})
    cats = evaluation.get("categories") or {}
    snd = evaluation.get("sender") or {}
    base = evaluation.get("baselines") or {}
    cal = evaluation.get("calibration") or {}
    lines = [
        f"# memetag model {evaluation.get('version', '?')}",
        "",
        f"Evaluated {evaluation.get('evaluated_at', '')} on the newest "
        f"{data.get('n_val', 0)} images (validation from {data.get('cutoff') or '–'}).",
        *_split_lines(data, evaluation.get("tuning") or {}),
        "",
        "## Categories",
        "",
        f"Macro-F1 {_fmt(cats.get('macro_f1'))} · micro-F1 {_fmt(cats.get('micro_f1'))} · "
        f"mAP {_fmt(cats.get('map'))} · coverage (≥1 label) {_fmt(cats.get('coverage'))} · "
        f"{cats.get('n_category_labelled', 0)} category-labelled validation images",
        "",
        "| label | threshold | precision | recall | F1 | AP | support |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in (cats.get("per_label") or {}).items():
        lines.append(
            f"| {name} | {_fmt(m['threshold'], 2)} | {_fmt(m['precision'])} | {_fmt(m['recall'])}"
            f" | {_fmt(m['f1'])} | {_fmt(m['ap'])} | {m['support']} |"
        )
    not_emitted = data.get("not_emitted") or {}
    if not_emitted:
        lines += [
            "",
            "Not emitted (too few training positives): "
            + ", ".join(f"{k} ({v})" for k, v in sorted(not_emitted.items())),
        ]
    lines += [
        "",
        "## Sender",
        "",
        "| | top-1 | top-3 | macro-F1 |",
        "|---|---|---|---|",
        f"| model | {_fmt(snd.get('top1'))} | {_fmt(snd.get('top3'))} | "
        f"{_fmt(snd.get('macro_f1'))} |",
        f"| majority class | {_fmt((base.get('majority') or {}).get('top1'))} | – | "
        f"{_fmt((base.get('majority') or {}).get('macro_f1'))} |",
        f"| most active, last 30 days | {_fmt((base.get('recent_30d') or {}).get('top1'))} | – | "
        f"{_fmt((base.get('recent_30d') or {}).get('macro_f1'))} |",
        "",
        f"Temperature {_fmt(cal.get('temperature'))} ({_nll_text(cal, snd)}). "
        f"Confident guesses at ≥ {_fmt(snd.get('min_confidence'), 2)}:"
        f" coverage {_fmt(snd.get('coverage'))}, precision {_fmt(snd.get('confident_precision'))}.",
        "",
        f"![sender confusion]({CONFUSION_PNG})",
        f"![label F1 vs threshold]({THRESHOLDS_PNG})",
        f"![reliability]({RELIABILITY_PNG})",
        "",
    ]
    return "\n".join(lines)


def write_report(evaluation: dict, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and the plots into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "report.md",
        "confusion": out_dir / CONFUSION_PNG,
        "thresholds": out_dir / THRESHOLDS_PNG,
        "reliability": out_dir / RELIABILITY_PNG,
    }
    snd = evaluation.get("sender") or {}
    cats = evaluation.get("categories") or {}
    plot_confusion(
        snd.get("confusion") or [], list(evaluation.get("senders") or []), paths["confusion"]
    )
    thresholds = {k: v["threshold"] for k, v in (cats.get("per_label") or {}).items()}
    tuned_on = (evaluation.get("tuning") or {}).get("tuned_on") or "validation"
    plot_threshold_curves(
        cats.get("curves") or {}, thresholds, paths["thresholds"], tuned_on=tuned_on
    )
    plot_reliability(snd.get("reliability"), paths["reliability"])
    atomic_write(paths["markdown"], render_markdown(evaluation).encode())
    atomic_write(
        paths["json"],
        json.dumps(evaluation, indent=2, ensure_ascii=False, default=str).encode(),
    )
    log.info("wrote report to %s", out_dir)
    return paths


# --- comparison --------------------------------------------------------------------------------


def compare_evaluations(old: dict, new: dict) -> dict:
    """Deltas (new - old) of the key metrics and per-label F1, both on the same validation set."""
    so, sn = summary_metrics(old), summary_metrics(new)
    keys = [
        k for k in sn if isinstance(sn.get(k), int | float) or isinstance(so.get(k), int | float)
    ]
    per_old = (old.get("categories") or {}).get("per_label") or {}
    per_new = (new.get("categories") or {}).get("per_label") or {}
    per_label = {
        name: {
            "old_f1": (per_old.get(name) or {}).get("f1"),
            "new_f1": (per_new.get(name) or {}).get("f1"),
        }
        for name in sorted(set(per_old) | set(per_new))
    }
    return {
        "old": old.get("version"),
        "new": new.get("version"),
        "n_val": sn.get("n_val"),
        "metrics": {
            k: {
                "old": so.get(k),
                "new": sn.get(k),
                "delta": (sn[k] - so[k])
                if isinstance(sn.get(k), int | float) and isinstance(so.get(k), int | float)
                else None,
            }
            for k in keys
        },
        "per_label_f1": per_label,
    }


def render_comparison_markdown(cmp: dict) -> str:
    lines = [
        f"# {cmp['old']} → {cmp['new']}",
        "",
        f"Both evaluated on the same {cmp.get('n_val')} validation images.",
        "",
        "| metric | old | new | Δ |",
        "|---|---|---|---|",
    ]
    for k, v in cmp["metrics"].items():
        lines.append(
            f"| {k} | {_fmt(v['old'])} | {_fmt(v['new'])} | {_delta(v['new'], v['old'])} |"
        )
    lines += ["", "| label | old F1 | new F1 | Δ |", "|---|---|---|---|"]
    for name, v in cmp["per_label_f1"].items():
        lines.append(
            f"| {name} | {_fmt(v['old_f1'])} | {_fmt(v['new_f1'])} | "
            f"{_delta(v['new_f1'], v['old_f1'])} |"
        )
    return "\n".join(lines) + "\n"


def write_comparison(cmp: dict, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "compare.json", "markdown": out_dir / "compare.md"}
    atomic_write(paths["json"], json.dumps(cmp, indent=2, default=str).encode())
    atomic_write(paths["markdown"], render_comparison_markdown(cmp).encode())
    return paths
