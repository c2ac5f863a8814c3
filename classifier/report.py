"""Evaluation reports on disk: report.json, report.md and PNG plots, plus old-vs-new comparisons."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classifier.atomic import atomic_write
from classifier.evaluate import summary_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def _prior_text(cal: dict) -> str:
    """How the sender head was calibrated (classifier.senderhead), when it says."""
    if cal.get("sender_scale") is None:
        return ""
    return (
        f"; calibration folded into the head: scale {_fmt(cal['sender_scale'], 2)}, training "
        f"prior put back with weight {_fmt(cal.get('sender_prior_weight'), 2)}"
    )


def _verdict_lines(snd: dict) -> list[str]:
    """Whether the sender guess beats both baselines (top-1 and macro-F1), in words."""
    beats = snd.get("beats_baselines")
    if beats is None:
        return []
    margins = (
        f"top-1 {snd['top1_margin']:+.2f} and macro-F1 {snd['macro_f1_margin']:+.2f} over the "
        f"better baseline on {snd.get('n_images', 0)} validation images"
    )
    if beats:
        return [f"**The sender guess beats both baselines** ({margins}).", ""]
    return [
        f"**The sender guess does not beat the baselines** ({margins}): nothing here shows that "
        "members post different things.",
        "",
    ]


def _interval(interval: list | None) -> str:
    """The text " (95% interval a–b)" for a bootstrap interval, or nothing."""
    if not interval:
        return ""
    return f" (95% interval {_fmt(interval[0], 2)}–{_fmt(interval[1], 2)})"


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
    label_tuning = data.get("label_tuning")
    if label_tuning:
        lines.append(
            "Category calibration and thresholds were fitted by "
            f"{label_tuning.get('folds')}-fold cross-validation on the "
            f"{label_tuning.get('n_images')} train and tune images with categories, never on "
            "validation."
        )
    if tuned_on == "tune":
        lines.append(
            ("The sender temperature" if label_tuning else "Thresholds, sender temperature")
            + " and confidence line were fitted on the tune images only; validation was only "
            "scored."
        )
    else:
        warning = tuning.get("warning") or data.get("tuning_warning") or "tuned on validation"
        lines.append(f"**Warning: {warning}.**")
    refit = data.get("refit")
    if refit:
        lines.append(
            f"The model that ships was refit on all {refit.get('n_images')} images once these "
            "were fixed; the figures below are of the heads fitted without the validation "
            "images."
        )
    return lines


# --- plots -------------------------------------------------------------------------------------
# Each plot is read by a chat admin, not a statistician: every bar and curve says how many images
# stand behind it, and the axis titles say what the numbers mean in words.


def _save(fig, path: Path) -> None:
    """Write a figure atomically, with the same permissions as the report's other files."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())


def plot_confusion(confusion: list[list[int]], senders: list[str], path: Path) -> Figure:
    from matplotlib.figure import Figure

    n = max(len(senders), 1)
    fig = Figure(figsize=(3 + 0.7 * n, 2 + 0.6 * n), dpi=100)
    ax = fig.add_subplot()
    matrix = confusion or [[0]]
    peak = max((v for row in matrix for v in row), default=0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(peak, 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="validation images")
    totals = [sum(row) for row in confusion]
    ax.set_xticks(range(len(senders)), senders, rotation=45, ha="right")
    ax.set_yticks(
        range(len(senders)),
        [f"{name} ({totals[i] if i < len(totals) else 0})" for i, name in enumerate(senders)],
    )
    ax.set_xlabel("model's guess")
    ax.set_ylabel("who really posted it (images)")
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            if v:
                colour = "white" if v > peak / 2 else "black"
                ax.text(j, i, str(v), ha="center", va="center", fontsize=9, color=colour)
    if not senders:
        ax.text(0, 0, "no sender head", ha="center", va="center")
    ax.set_title("Sender guesses on validation\n(diagonal: right guesses)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig


def _spread(values: list[float], gap: float, low: float, high: float) -> list[float]:
    """Label positions for sorted ``values``: each as near its value as possible, at least
    ``gap`` apart, inside [low, high] (when they fit)."""
    out: list[float] = []
    for v in values:
        out.append(max(v, out[-1] + gap) if out else max(v, low))
    if out and out[-1] > high:
        out[-1] = high
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - gap)
    return out


def plot_threshold_curves(
    curves: dict,
    thresholds: dict[str, float],
    path: Path,
    *,
    tuned_on: str = "tune",
    support: dict[str, int] | None = None,
) -> Figure:
    """F1 against threshold per label, each curve labelled at its end with its name, its
    validation positives, the threshold in use (a dot on the curve) and the F1 there."""
    from matplotlib.figure import Figure

    support = support or {}
    fig = Figure(figsize=(10, 5), dpi=100)
    ax = fig.add_subplot()
    grid = curves.get("grid", [])
    ends: list[tuple[float, str, str]] = []
    for name, f1 in sorted(curves.get("f1", {}).items()):
        (line,) = ax.plot(grid, f1, linewidth=1.4)
        text = f"{name} ({support[name]} positives)" if name in support else name
        if name in thresholds and grid:
            t = thresholds[name]
            at = min(range(len(grid)), key=lambda i: abs(grid[i] - t))
            ax.plot([t], [f1[at]], "o", color=line.get_color(), markersize=6)
            text += f": in use {t:.2f} → F1 {f1[at]:.2f}"
        if f1:
            ends.append((float(f1[-1]), text, line.get_color()))
    # Direct labels beside the curves' right ends, pushed apart so none overlaps another.
    ends.sort()
    places = _spread([y for y, _, _ in ends], 0.055, 0.0, 1.0)
    for (y, text, colour), place in zip(ends, places, strict=True):
        ax.annotate(
            text,
            xy=(grid[-1], y),
            xytext=(1.03, place),
            textcoords=ax.get_yaxis_transform(),
            va="center",
            fontsize=8,
            color=colour,
            annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.6, "relpos": (0, 0.5)},
        )
    ax.set_xlabel("threshold: the label is given when its probability is at least this")
    ax.set_ylabel("F1 on validation (1: all found, none wrong)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(
        f"Per-label F1 against threshold (dot: threshold in use, chosen on {tuned_on})\n"
        "further right: fewer labels given, each more likely right",
        fontsize=10,
    )
    if not ends:
        ax.text(0.5, 0.5, "no label has validation positives", ha="center", va="center")
    fig.subplots_adjust(left=0.07, right=0.6, top=0.88, bottom=0.11)
    _save(fig, path)
    return fig


def plot_reliability(
    reliability: dict | None, path: Path, *, min_confidence: float | None = None
) -> Figure:
    """Sender reliability: per confidence bin, how often the guess was right (k of n above
    each bar), the number of images per bin beneath, and where "unsure" begins."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 6), dpi=100)
    top, bottom = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08}
    )
    top.plot(
        [0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated"
    )
    title = "Sender guesses: how sure vs. how often right"
    if reliability:
        edges = reliability["edges"]
        width = (edges[-1] - edges[0]) / max(len(edges) - 1, 1)
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        counts = reliability.get("count") or [0] * len(centres)
        for c, acc, n in zip(centres, reliability["accuracy"], counts, strict=True):
            if acc is None or not n:
                continue
            top.bar(c, acc, width=width, edgecolor="black", color="tab:blue", alpha=0.7)
            top.text(c, min(acc, 0.9) + 0.02, f"{round(acc * n)}/{n}", ha="center", fontsize=8)
        bottom.bar(centres, counts, width=width, edgecolor="black", color="tab:grey", alpha=0.7)
        for c, n in zip(centres, counts, strict=True):
            if n:
                bottom.text(c, n, str(n), ha="center", va="bottom", fontsize=8)
        bottom.set_ylim(0, max(counts or [0], default=0) * 1.35 + 1)
        total = sum(counts)
        title += (
            f"\n{total} validation images · ECE {_fmt(reliability.get('ece'))} "
            "(mean gap to the diagonal)"
        )
    else:
        top.text(0.5, 0.5, "no validation images with a known sender", ha="center")
    if min_confidence:
        for ax in (top, bottom):
            ax.axvspan(
                0,
                min_confidence,
                color="tab:orange",
                alpha=0.12,
                linewidth=0,
                label=f'below {min_confidence:.2f}: answered "unsure"',
            )
    top.set_title(title, fontsize=10)
    top.set_ylabel("share of guesses that were right")
    top.set_ylim(0, 1)
    top.legend(fontsize=8, loc="upper left")
    bottom.set_xlabel("how sure the model was (calibrated probability of its top guess)")
    bottom.set_ylabel("images")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    bottom.set_xlim(0, 1)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.88, bottom=0.1)
    _save(fig, path)
    return fig


# --- markdown ----------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value:.0%}"


def _confidence_lines(snd: dict, chosen: dict, evaluation: dict) -> list[str]:
    """The sender "unsure" line in words: what it is, how it was chosen, what it did."""
    line = snd.get("min_confidence")
    if line is None:
        return []
    fitted = (evaluation.get("tuning") or {}).get("tuned_on") or "tune"
    target = chosen.get("target_precision")
    if line > 1.0:
        why = (
            "its guesses were no better than always naming the most active member"
            if chosen.get("beats_majority") is False
            else f"no line reached the {_pct(target)} target (`[train] sender_target_precision`)"
        )
        if "target_reached" not in chosen:
            why = "no line was good enough when it was trained"
        return [
            '**Naming the sender.** The model never names a sender: it always answers "unsure" '
            f"and lists its three most likely candidates, because on the {fitted} images {why}."
        ]
    text = [
        f"**Naming the sender.** The model names a sender only when the calibrated probability "
        f'of its top guess is at least **{line:.2f}**; below that it answers "unsure".'
    ]
    if "target_reached" not in chosen:
        # Re-evaluating a saved model: the checkpoint keeps the line, not how it was found.
        text.append(
            "It was chosen when the model was trained: the lowest line at which its guesses on "
            "the tune images reached `[train] sender_target_precision`."
        )
    elif chosen.get("precision") is None:
        text.append(
            f"Too few {fitted} images with a known sender to choose this line, so the default "
            "is used."
        )
    elif chosen["target_reached"]:
        text.append(
            f"It is the lowest line at which the guesses on the {fitted} images were right at "
            f"least {_pct(target)} of the time (`[train] sender_target_precision`); there they "
            f"were right {_pct(chosen['precision'])} of the time."
        )
    else:
        text.append(
            f"No line reached the {_pct(target)} target (`[train] sender_target_precision`) on "
            f"the {fitted} images; this is the most precise one found (right "
            f"{_pct(chosen['precision'])} of the time there), so named senders are less "
            "reliable than asked for."
        )
    if line <= 0:
        text.append(
            "A line of 0.00 means no guess is held back: the model always names someone, "
            "however unsure."
        )
    text.append(
        f"On validation it named a sender for {_pct(snd.get('coverage'))} of the images, and "
        f"{_pct(snd.get('confident_precision'))} of those names were right."
    )
    return [" ".join(text)]


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
        f"Macro-F1 {_fmt(cats.get('macro_f1'))}{_interval(cats.get('macro_f1_interval'))} · "
        f"micro-F1 {_fmt(cats.get('micro_f1'))} · "
        f"mAP {_fmt(cats.get('map'))} · coverage (≥1 label) {_fmt(cats.get('coverage'))} · "
        f"labels per image {_fmt(cats.get('labels_per_image'), 2)} · "
        f"{cats.get('n_category_labelled', 0)} category-labelled validation images",
        "",
        "| label | threshold | precision | recall | F1 | AP | support |",
        "|---|---|---|---|---|---|---|",
    ]
    unsupported = []
    for name, m in (cats.get("per_label") or {}).items():
        precision, recall, f1 = m["precision"], m["recall"], m["f1"]
        if not m["support"]:
            # No validation image has the label: recall and F1 are undefined, and a precision
            # of 0 would only say "never right" about guesses that could not be right.
            precision = recall = f1 = None
            unsupported.append(name)
        lines.append(
            f"| {name} | {_fmt(m['threshold'], 2)} | {_fmt(precision)} | {_fmt(recall)}"
            f" | {_fmt(f1)} | {_fmt(m['ap'])} | {m['support']} |"
        )
    if unsupported:
        lines += [
            "",
            "– : no validation image has "
            + ", ".join(unsupported)
            + ", so precision, recall and F1 cannot be measured there (left out of macro-F1).",
        ]
    not_emitted = data.get("not_emitted") or {}
    if not_emitted:
        lines += [
            "",
            "Not emitted (too few labelled images): "
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
        *_verdict_lines(snd),
        f"Temperature {_fmt(cal.get('temperature'))}{_prior_text(cal)} ({_nll_text(cal, snd)}).",
        "",
        *_confidence_lines(snd, cal.get("sender_confidence") or {}, evaluation),
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
    per_label = cats.get("per_label") or {}
    thresholds = {k: v["threshold"] for k, v in per_label.items()}
    tuned_on = (evaluation.get("tuning") or {}).get("tuned_on") or "validation"
    plot_threshold_curves(
        cats.get("curves") or {},
        thresholds,
        paths["thresholds"],
        tuned_on=tuned_on,
        support={k: v["support"] for k, v in per_label.items()},
    )
    plot_reliability(
        snd.get("reliability"), paths["reliability"], min_confidence=snd.get("min_confidence")
    )
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
