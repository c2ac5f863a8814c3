"""The category head: a regularised logistic regression on frozen features, its calibration and
thresholds from cross-fitted outputs, and the exclusive (one category per image) mode.

Rules (documented for the README):

* **Mode.** When every category-labelled image has exactly one positive label, the chat labels
  exclusively: the head is a softmax over the emitted labels and predicts the most probable
  one. Otherwise each label is its own sigmoid with its own threshold (multi-label).
* **Fit.** Full-batch L-BFGS on centred features scaled by one overall RMS (not per
  dimension, see ``_standardise``), L2 penalty ``1 / (2 C)`` on the weights
  (as scikit-learn's ``LogisticRegression(C)``), classes weighted so each label's positives
  and negatives (or, exclusive, each label) weigh the same in total. Deterministic.
* **Calibration and thresholds** come from out-of-fold outputs: the images the head may learn
  from are dealt into up to ``folds`` folds, stratified by label, and each fold is predicted by
  a head fitted on the others. A temperature (exclusive) or a per-label Platt scaling
  (multi-label) is fitted on those outputs and folded into the weights, so the stored head
  gives calibrated probabilities; multi-label thresholds are the max-F1 cut-offs of the
  calibrated out-of-fold probabilities (0.5 for a label with fewer than 3 positives). No image
  the reported metrics are computed on is ever used.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from classifier.thresholds import LabelThreshold, tune_label_thresholds

log = logging.getLogger(__name__)

EXCLUSIVE = "exclusive"
MULTI = "multi"
LABEL_MODES = (EXCLUSIVE, MULTI)
# Inverse L2 strength, as scikit-learn's LogisticRegression(C=...), on features scaled to unit
# RMS. Results on the real set were flat from 0.15 to 3 (within ±0.01 macro-F1).
DEFAULT_C = 0.3
DEFAULT_FOLDS = 5
# Platt scaling needs a few of each class among the out-of-fold outputs; below, none is fitted.
_MIN_PLATT = 3
# Logit given to labels an exclusive head never predicts (not emitted).
_ABSENT_LOGIT = -30.0


def detect_label_mode(targets: np.ndarray) -> str:
    """``"exclusive"`` when every category-labelled row has exactly one positive (and at least
    two labels occur), else ``"multi"``."""
    y = np.asarray(targets) > 0.5
    labelled = y.any(axis=1)
    if not labelled.any():
        return MULTI
    rows = y[labelled]
    if (rows.sum(axis=1) == 1).all() and int(rows.any(axis=0).sum()) >= 2:
        return EXCLUSIVE
    return MULTI


@dataclass(frozen=True, eq=False)
class LabelHead:
    """Weights for ``Heads.label`` (raw features in, logits out) plus how to read them."""

    weight: np.ndarray  # (L, D) float64
    bias: np.ndarray  # (L,) float64
    mode: str
    active: np.ndarray  # (L,) bool: labels the head was fitted for


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre each dimension and divide every one by the same scale (the overall RMS).

    One scale, not one per dimension: it makes the penalty mean the same whatever the backbone's
    feature scale, while keeping how strongly each dimension fires, which is what the pretrained
    backbone knows. Per-dimension scaling blows up dimensions that barely vary and cost 0.06 to
    0.09 macro-F1 at 5 to 20 labels per category (bench/label_efficiency.py).
    """
    if not len(x):
        return x, np.zeros(x.shape[1]), np.ones(x.shape[1])
    mean = x.mean(axis=0)
    scale = max(float(np.sqrt(((x - mean) ** 2).mean())), 1e-12)
    return (x - mean) / scale, mean, np.full(x.shape[1], scale)


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """One torch thread: these fits are tiny, and one thread keeps every sum in one order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lbfgs(params: list, closure, max_iter: int) -> None:
    import torch

    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    opt.step(closure)


def fit_label_head(
    features: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    *,
    mode: str,
    active: np.ndarray | None = None,
    c: float = DEFAULT_C,
    max_iter: int = 300,
    init: LabelHead | None = None,
) -> LabelHead:
    """Fit the head on the rows that are category-labelled (any positive), see module doc.

    Args:
        active: labels to fit (default: those with a positive); the rest get zero weights and,
            in exclusive mode, a logit that never wins.
        init: a head fitted on similar rows to start from (the same optimum is reached, in
            far fewer steps: cross-fitting starts every fold from the full fit).
    """
    import torch

    x_all = np.asarray(features, dtype=np.float64)
    y_all = np.asarray(targets) > 0.5
    m_all = np.asarray(mask, dtype=bool)
    n_labels = y_all.shape[1]
    dim = x_all.shape[1]
    rows = y_all.any(axis=1)
    x, y, m = x_all[rows], y_all[rows], m_all[rows]
    if active is None:
        active = y.any(axis=0)
    active = np.asarray(active, dtype=bool) & y.any(axis=0)
    weight = np.zeros((n_labels, dim))
    bias = np.zeros(n_labels)
    if mode == EXCLUSIVE:
        bias[~active] = _ABSENT_LOGIT
    cols = np.flatnonzero(active)
    if len(x) == 0 or len(cols) == 0 or (mode == EXCLUSIVE and len(cols) < 2):
        if mode == EXCLUSIVE and len(cols) == 1:
            bias[cols] = 0.0
        return LabelHead(weight, bias, mode, active)
    xs, mean, std = _standardise(x)
    penalty = 1.0 / (2.0 * c)
    with _intra_op_threads(1):
        xt = torch.from_numpy(xs)
        w0, b0 = np.zeros((len(cols), dim)), np.zeros(len(cols))
        if init is not None:
            # Raw-feature weights into this fit's standardised space.
            w0 = init.weight[cols] * std[None, :]
            b0 = init.bias[cols] + init.weight[cols] @ mean
        w = torch.from_numpy(w0).requires_grad_(True)
        b = torch.from_numpy(b0).requires_grad_(True)
        if mode == EXCLUSIVE:
            keep = y[:, cols].any(axis=1)  # rows whose one positive is an active label
            xt = xt[torch.from_numpy(keep)]
            target = torch.from_numpy(y[keep][:, cols].argmax(axis=1))
            counts = np.bincount(target.numpy(), minlength=len(cols)).astype(np.float64)
            class_w = torch.from_numpy(len(target) / (len(cols) * np.maximum(counts, 1)))
            row_w = class_w[target]

            def loss_fn() -> torch.Tensor:
                z = xt @ w.T + b
                nll = torch.nn.functional.cross_entropy(z, target, reduction="none")
                return (row_w * nll).sum() + penalty * (w * w).sum()

        else:
            yt = torch.from_numpy(y[:, cols].astype(np.float64))
            mt = torch.from_numpy(m[:, cols].astype(np.float64))
            pos = (yt * mt).sum(0)
            neg = ((1 - yt) * mt).sum(0)
            known = mt.sum(0)
            w_pos = known / (2 * pos.clamp(min=1))
            w_neg = known / (2 * neg.clamp(min=1))
            row_w = mt * (yt * w_pos + (1 - yt) * w_neg)

            def loss_fn() -> torch.Tensor:
                z = xt @ w.T + b
                bce = torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none")
                return (row_w * bce).sum() + penalty * (w * w).sum()

        def closure() -> torch.Tensor:
            if w.grad is not None:
                w.grad.zero_()
                b.grad.zero_()
            loss = loss_fn()
            loss.backward()
            return loss

        _lbfgs([w, b], closure, max_iter)
        w_fit, b_fit = w.detach().numpy(), b.detach().numpy()
    # Fold the standardisation in: the stored head takes raw features.
    w_raw = w_fit / std[None, :]
    weight[cols] = w_raw
    bias[cols] = b_fit - w_raw @ mean
    return LabelHead(weight, bias, mode, active)


def head_logits(head: LabelHead, features: np.ndarray) -> np.ndarray:
    return np.asarray(features, dtype=np.float64) @ head.weight.T + head.bias


def label_probabilities(logits: np.ndarray, mode: str, emitted: np.ndarray) -> np.ndarray:
    """Probabilities from label logits: sigmoids (multi-label), or a softmax over the emitted
    labels (exclusive; labels not emitted get 0)."""
    z = np.asarray(logits, dtype=np.float64)
    if mode != EXCLUSIVE:
        return 1.0 / (1.0 + np.exp(-z))
    emitted = np.asarray(emitted, dtype=bool)
    out = np.zeros_like(z)
    if emitted.any() and len(z):
        e = z[:, emitted]
        e = np.exp(e - e.max(axis=1, keepdims=True))
        out[:, emitted] = e / e.sum(axis=1, keepdims=True)
    return out


def predict_label_sets(
    probs: np.ndarray,
    mode: str,
    thresholds: np.ndarray,
    emitted: np.ndarray,
    *,
    at_least_one: bool = True,
) -> np.ndarray:
    """(N, L) bool: the labels predicted for each row. Exclusive: the most probable emitted
    label; multi-label: every emitted label at or over its threshold, and with
    ``at_least_one`` the most probable one even when none is (a category-labelled image always
    has a category, so the heads never learn "none")."""
    p = np.asarray(probs, dtype=np.float64)
    emitted = np.asarray(emitted, dtype=bool)
    th = np.asarray(thresholds, dtype=np.float64)
    over = (p >= th[None, :]) & emitted[None, :]
    if not len(p) or not emitted.any():
        return over
    top = np.where(emitted[None, :], p, -np.inf).argmax(axis=1)
    rows = np.arange(len(p))
    if mode == EXCLUSIVE:
        out = np.zeros_like(over)
        out[rows, top] = True
        return out
    if at_least_one:
        over[rows, top] = True
    return over


# --- cross-fitting, calibration, thresholds ----------------------------------------------------


def stratified_folds(targets: np.ndarray, order: Sequence[int], n_folds: int) -> np.ndarray:
    """Fold index per row (-1 for rows without a positive): rows sorted by their rarest
    positive label, then by ``order`` (e.g. time rank), dealt round-robin. Deterministic."""
    y = np.asarray(targets) > 0.5
    folds = np.full(len(y), -1, dtype=np.int64)
    labelled = np.flatnonzero(y.any(axis=1))
    if not len(labelled) or n_folds < 2:
        return folds
    freq = y[labelled].sum(axis=0)
    rank = np.asarray(order)

    def stratum(i: int) -> int:
        pos = np.flatnonzero(y[i])
        return int(pos[np.argmin(freq[pos])])

    ordered = sorted(labelled, key=lambda i: (stratum(i), rank[i], i))
    for n, i in enumerate(ordered):
        folds[i] = n % n_folds
    return folds


def cross_fit_logits(
    features: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    *,
    mode: str,
    active: np.ndarray,
    order: Sequence[int],
    n_folds: int = DEFAULT_FOLDS,
    c: float = DEFAULT_C,
    init: LabelHead | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(out-of-fold logits (N, L), rows that have them). Each fold is predicted by a head fitted
    on the other folds; rows without a positive label have none."""
    y = np.asarray(targets) > 0.5
    n_rows = int(y.any(axis=1).sum())
    k = int(min(n_folds, n_rows))
    folds = stratified_folds(y, order, k)
    logits = np.zeros(y.shape, dtype=np.float64)
    done = np.zeros(len(y), dtype=bool)
    if k < 2:
        return logits, done
    for f in range(k):
        held = folds == f
        fit_rows = (folds >= 0) & ~held
        head = fit_label_head(
            features[fit_rows],
            targets[fit_rows],
            mask[fit_rows],
            mode=mode,
            active=active,
            c=c,
            init=init,
        )
        logits[held] = head_logits(head, features[held])
        done |= held
    return logits, done


def fit_platt(logits: np.ndarray, y: np.ndarray, *, max_iter: int = 100) -> tuple[float, float]:
    """(a, b) with sigmoid(a * z + b) calibrated on these logits; (1, 0) when there are too few
    of either class. ``a`` is kept positive (the head's ranking is never flipped)."""
    import torch

    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y, dtype=bool)
    if t.sum() < _MIN_PLATT or (~t).sum() < _MIN_PLATT:
        return 1.0, 0.0
    zt = torch.from_numpy(z)
    tt = torch.from_numpy(t.astype(np.float64))
    log_a = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def closure() -> torch.Tensor:
        if log_a.grad is not None:
            log_a.grad.zero_()
            b.grad.zero_()
        # A weak prior keeps a and b finite on separable outputs.
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(
                log_a.exp() * zt + b, tt, reduction="sum"
            )
            + 0.5 * (log_a**2 + b**2).sum()
        )
        loss.backward()
        return loss

    _lbfgs([log_a, b], closure, max_iter)
    a, bb = float(log_a.exp().item()), float(b.item())
    if not (np.isfinite(a) and np.isfinite(bb)):
        return 1.0, 0.0
    return a, bb


def fit_softmax_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature for an exclusive head's softmax (see ``classifier.calibration``)."""
    from classifier.calibration import fit_temperature

    return fit_temperature(logits, targets)


@dataclass(frozen=True, eq=False)
class CalibratedLabels:
    """A fitted head with calibration folded in, and its decision thresholds."""

    head: LabelHead
    thresholds: dict[str, LabelThreshold]
    # Exclusive: {"temperature": T}; multi-label: {label: [a, b]} per calibrated label.
    calibration: dict = field(default_factory=dict)
    n_out_of_fold: int = 0
    folds: int = 0


def _apply_calibration(head: LabelHead, calibration: dict, labels: Sequence[str]) -> LabelHead:
    w, b = head.weight.copy(), head.bias.copy()
    if head.mode == EXCLUSIVE:
        t = float(calibration.get("temperature", 1.0))
        active = head.active
        w[active] /= t
        b[active] /= t
    else:
        for j, name in enumerate(labels):
            a, c = calibration.get(name, (1.0, 0.0))
            w[j] *= a
            b[j] = a * b[j] + c
    return LabelHead(w, b, head.mode, head.active)


def calibrate_from_cross_fit(
    features: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    labels: Sequence[str],
    *,
    mode: str,
    active: np.ndarray,
    order: Sequence[int],
    n_folds: int = DEFAULT_FOLDS,
    c: float = DEFAULT_C,
    min_positives: int = 3,
    init: LabelHead | None = None,
) -> tuple[dict, dict[str, LabelThreshold], int, int]:
    """(calibration, thresholds, out-of-fold rows, folds) from cross-fitted outputs on these
    images alone (see module doc)."""
    y = np.asarray(targets) > 0.5
    m = np.asarray(mask, dtype=bool)
    oof, done = cross_fit_logits(
        features,
        targets,
        mask,
        mode=mode,
        active=active,
        order=order,
        n_folds=n_folds,
        c=c,
        init=init,
    )
    k = int(min(n_folds, int(y.any(axis=1).sum())))
    labels = list(labels)
    if mode == EXCLUSIVE:
        cols = np.flatnonzero(active)
        rows = done & y[:, cols].any(axis=1) if len(cols) else done & False
        calibration = {"temperature": 1.0}
        if rows.any() and len(cols) >= 2:
            calibration["temperature"] = fit_softmax_temperature(
                oof[rows][:, cols], y[rows][:, cols].argmax(axis=1)
            )
        thresholds = {
            name: LabelThreshold(0.0, "top-1", int(y[done, j].sum()), None)
            for j, name in enumerate(labels)
        }
        return calibration, thresholds, int(done.sum()), k
    calibration: dict = {}
    probs = np.zeros_like(oof)
    for j, name in enumerate(labels):
        known = done & m[:, j]
        if active[j] and known.any():
            a, b = fit_platt(oof[known, j], y[known, j])
            calibration[name] = [a, b]
            probs[:, j] = 1.0 / (1.0 + np.exp(-(a * oof[:, j] + b)))
    thresholds = tune_label_thresholds(
        y[done].astype(np.float32), m[done], probs[done], labels, min_positives=min_positives
    )
    return calibration, thresholds, int(done.sum()), k


@dataclass(frozen=True, eq=False)
class LabelFit:
    """The category head of one training run: fitted without the validation images (scored
    for the report), refit on every labelled image (shipped), and how both decide."""

    mode: str
    validation_head: LabelHead
    shipped_head: LabelHead
    thresholds: dict[str, LabelThreshold]
    calibration: dict
    n_fit: int  # category-labelled images the validation head learnt from
    n_refit: int  # ... and the shipped head
    n_out_of_fold: int  # images whose cross-fitted outputs set calibration and thresholds
    folds: int


def _labelled(targets: np.ndarray) -> int:
    return int((np.asarray(targets) > 0.5).any(axis=1).sum())


def fit_labels(
    fit: tuple[np.ndarray, np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    labels: Sequence[str],
    *,
    mode: str,
    emitted: np.ndarray,
    c: float = DEFAULT_C,
    n_folds: int = DEFAULT_FOLDS,
) -> LabelFit:
    """The whole category-head procedure on (features, targets, mask) triples.

    Calibration and thresholds come from cross-fitting on ``fit`` alone; the validation head
    is fitted on ``fit``; the shipped head on ``fit`` + ``val`` with the same calibration and
    thresholds, so the reported validation figures are of a model that never saw validation.
    """
    labels = list(labels)
    fx, fy, fm = (np.asarray(a) for a in fit)
    vx, vy, vm = (np.asarray(a) for a in val)
    emitted = np.asarray(emitted, dtype=bool)
    val_head = fit_label_head(fx, fy, fm, mode=mode, active=emitted, c=c)
    calibration, thresholds, n_oof, k = calibrate_from_cross_fit(
        fx,
        fy,
        fm,
        labels,
        mode=mode,
        active=emitted,
        order=np.arange(len(fx)),
        n_folds=n_folds,
        c=c,
        init=val_head,
    )
    ax, ay, am = np.concatenate([fx, vx]), np.concatenate([fy, vy]), np.concatenate([fm, vm])
    ship_head = fit_label_head(ax, ay, am, mode=mode, active=emitted, c=c, init=val_head)
    return LabelFit(
        mode=mode,
        validation_head=_apply_calibration(val_head, calibration, labels),
        shipped_head=_apply_calibration(ship_head, calibration, labels),
        thresholds=thresholds,
        calibration=calibration,
        n_fit=_labelled(fy),
        n_refit=_labelled(ay),
        n_out_of_fold=n_oof,
        folds=k,
    )
