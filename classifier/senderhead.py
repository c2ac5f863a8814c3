"""The sender head: a regularised multinomial logistic regression on frozen features that reads
each image both through category guesses and through the features themselves, and its
calibration (a scale and a correction towards how often each member posts).

Rules (documented for the README; chosen with ``bench/sender_head.py``):

* **Category path.** One-vs-rest logistic regressions (L2 ``1 / (2 C)``, C = 1) guess each
  image's categories from the standardised features. A category-labelled training image gets
  the logits of a model fitted without it (5-fold cross-fitting), so the sender head learns how
  far category guesses on new images can be trusted; unlabelled images get the full model's.
  With fewer than two category-labelled images this path is off.
* **Fit.** Full-batch L-BFGS on ``softmax(V · category logits + U · features + b)``, L2 penalty
  ``1 / (2 c_categories)`` on V and ``1 / (2 c)`` on U (as scikit-learn's C; 0 switches a path
  off), each sender's images weighted by ``count ** -balance`` (``balance`` 1: every member
  weighs the same in total, so a quiet member with a clear taste is not drowned out by the
  most active one). Everything is linear in the features, so both paths and the
  standardisation fold into one ``Heads.sender`` layer. Deterministic. A sender with no
  training image gets a logit that never wins.
* **Calibration** (on the tune images, never on validation): ``softmax(a * z + b * log prior)``
  with ``a`` and ``b`` fitted by likelihood, where ``prior`` is each sender's (add-one
  smoothed) share of the training images. A balanced fit has forgotten how often each member
  posts; ``b`` puts back as much of that as the tune images support, and ``a`` says how far
  the head's own evidence holds up (near 0 on a chat where who posts does not depend on what:
  the guess then falls back to the prior, i.e. the most active member, and is never
  confident). Both are folded into the stored head, whose temperature is then 1.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Logit of a sender the head has no training image for: never the most probable.
ABSENT_LOGIT = -30.0
# Calibration bounds: sharpen the head at most 4x (a small tune set it gets right would push
# further, a certainty it has not earned), and put back at most twice the training prior.
MAX_SCALE = 4.0
MAX_PRIOR_WEIGHT = 2.0


@dataclass(frozen=True, eq=False)
class SenderHead:
    """Weights for ``Heads.sender``: raw features in, logits out."""

    weight: np.ndarray  # (S, D) float64
    bias: np.ndarray  # (S,) float64


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread: the fit is small, and one thread keeps every sum in one order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    # Near-constant dimensions would get huge folded weights; floor their scale.
    std = np.maximum(std, max(1e-2 * float(np.median(std)), 1e-12))
    return (x - mean) / std, mean, std


def class_prior(targets: np.ndarray, n_senders: int) -> np.ndarray:
    """Each sender's share of the images whose sender is known (add-one smoothed)."""
    t = np.asarray(targets)
    t = t[(t >= 0) & (t < n_senders)]
    counts = np.bincount(t, minlength=n_senders).astype(np.float64) + 1.0
    return counts / counts.sum()


def _lbfgs(params: list, closure: Callable[[], Any], max_iter: int) -> None:
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


def fit_category_model(
    xs: np.ndarray, targets: np.ndarray, mask: np.ndarray, *, c: float, max_iter: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest logistic regressions on standardised features: (weight (L, D), bias (L,)).

    Each label's positives and negatives weigh the same in total (known entries only); a label
    without both stays at zero weight and a bias towards what was seen.
    """
    import torch

    y = np.asarray(targets) > 0.5
    m = np.asarray(mask, dtype=bool)
    n_labels, dim = y.shape[1], xs.shape[1]
    weight, bias = np.zeros((n_labels, dim)), np.zeros(n_labels)
    pos = (y & m).sum(axis=0)
    neg = (~y & m).sum(axis=0)
    cols = np.flatnonzero((pos > 0) & (neg > 0))
    bias[(pos > 0) & (neg == 0)] = 5.0
    bias[(pos == 0)] = -5.0
    if not len(cols):
        return weight, bias
    yt = torch.from_numpy(y[:, cols].astype(np.float64))
    mt = torch.from_numpy(m[:, cols].astype(np.float64))
    known = mt.sum(0)
    row_w = mt * (
        yt * known / (2 * torch.from_numpy(pos[cols].astype(np.float64)))
        + (1 - yt) * known / (2 * torch.from_numpy(neg[cols].astype(np.float64)))
    )
    xt = torch.from_numpy(xs)
    w = torch.zeros((len(cols), dim), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(cols), dtype=torch.float64, requires_grad=True)
    penalty = 1.0 / (2.0 * c)

    def closure() -> Any:
        if w.grad is not None:
            w.grad.zero_()
            b.grad.zero_()
        z = xt @ w.T + b
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none")
        loss = (row_w * bce).sum() + penalty * (w * w).sum()
        loss.backward()
        return loss

    _lbfgs([w, b], closure, max_iter)
    weight[cols] = w.detach().numpy()
    bias[cols] = b.detach().numpy()
    return weight, bias


def _category_logits(
    xs: np.ndarray, targets: np.ndarray, mask: np.ndarray, *, c: float, folds: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits for every row, weight, bias) of the category model fitted on the labelled rows.

    A labelled row's logits come from a model fitted without it (``folds``-fold cross-fitting,
    rows dealt round-robin in the order given), so the sender head learns how far category
    guesses on new images can be trusted, not how well the category model remembers its own
    training images. Unlabelled rows are new to the full model already.
    """
    y = np.asarray(targets) > 0.5
    labelled = np.flatnonzero(y.any(axis=1))
    weight, bias = fit_category_model(xs[labelled], targets[labelled], mask[labelled], c=c)
    logits = xs @ weight.T + bias
    k = min(folds, len(labelled))
    if k >= 2:
        fold = np.arange(len(labelled)) % k
        for f in range(k):
            fit_rows, held = labelled[fold != f], labelled[fold == f]
            w, b = fit_category_model(xs[fit_rows], targets[fit_rows], mask[fit_rows], c=c)
            logits[held] = xs[held] @ w.T + b
    return logits, weight, bias


def fit_sender_head(
    features: np.ndarray,
    targets: np.ndarray,
    n_senders: int,
    *,
    label_targets: np.ndarray | None = None,
    label_mask: np.ndarray | None = None,
    c: float,
    c_categories: float = 0.1,
    c_category_model: float = 1.0,
    balance: float = 1.0,
    folds: int = 5,
    max_iter: int = 300,
) -> SenderHead:
    """Fit on the rows whose sender is known (``targets >= 0``), see the module doc."""
    import torch

    x_all = np.asarray(features, dtype=np.float64)
    t_all = np.asarray(targets, dtype=np.int64)
    dim = x_all.shape[1]
    weight = np.zeros((n_senders, dim))
    bias = np.zeros(n_senders)
    keep = (t_all >= 0) & (t_all < n_senders)
    counts = np.bincount(t_all[keep], minlength=n_senders)
    present = counts > 0
    bias[~present] = ABSENT_LOGIT
    cols = np.flatnonzero(present)
    if len(cols) < 2:
        if len(cols) == 1:
            bias[cols] = 0.0
        return SenderHead(weight, bias)
    with _one_thread():
        xs_all, mean, std = _standardise(x_all)
        use_cats = (
            label_targets is not None
            and c_categories > 0
            and (np.asarray(label_targets)[keep] > 0.5).any(axis=1).sum() >= 2
        )
        if use_cats:
            lt, lm = np.asarray(label_targets), np.asarray(label_mask, dtype=bool)
            cat_all, cat_w, cat_b = _category_logits(
                xs_all[keep], lt[keep], lm[keep], c=c_category_model, folds=folds
            )
        else:
            cat_all = np.zeros((int(keep.sum()), 0))
            cat_w, cat_b = np.zeros((0, dim)), np.zeros(0)
        remap = np.full(n_senders, -1, dtype=np.int64)
        remap[cols] = np.arange(len(cols))
        y = remap[t_all[keep]]
        row_w = counts[cols].astype(np.float64)[y] ** -float(balance)
        row_w *= len(y) / row_w.sum()
        xt, yt, wt = torch.from_numpy(xs_all[keep]), torch.from_numpy(y), torch.from_numpy(row_w)
        ct = torch.from_numpy(cat_all)
        u = torch.zeros((len(cols), dim), dtype=torch.float64, requires_grad=True)
        v = torch.zeros((len(cols), cat_all.shape[1]), dtype=torch.float64, requires_grad=True)
        b = torch.zeros(len(cols), dtype=torch.float64, requires_grad=True)
        pen_u = 1.0 / (2.0 * c) if c > 0 else 0.0
        pen_v = 1.0 / (2.0 * c_categories) if c_categories > 0 else 0.0

        def closure() -> Any:
            for p in (u, v, b):
                if p.grad is not None:
                    p.grad.zero_()
            z = b + (xt @ u.T if c > 0 else 0.0) + (ct @ v.T if ct.shape[1] else 0.0)
            nll = torch.nn.functional.cross_entropy(z, yt, reduction="none")
            loss = (wt * nll).sum() + pen_u * (u * u).sum() + pen_v * (v * v).sum()
            loss.backward()
            return loss

        _lbfgs([u, v, b], closure, max_iter)
        u_fit, v_fit, b_fit = u.detach().numpy(), v.detach().numpy(), b.detach().numpy()
    # Everything is linear in the standardised features: fold the category path and the
    # standardisation into one layer that takes raw features.
    w_std = (u_fit if c > 0 else 0.0) + v_fit @ cat_w
    b_std = b_fit + v_fit @ cat_b
    w_raw = w_std / std[None, :]
    weight[cols] = w_raw
    bias[cols] = b_std - w_raw @ mean
    return SenderHead(weight, bias)


def sender_logits(head: SenderHead, features: np.ndarray) -> np.ndarray:
    return np.asarray(features, dtype=np.float64) @ head.weight.T + head.bias


def fit_sender_calibration(
    logits: np.ndarray,
    targets: np.ndarray,
    log_prior: np.ndarray,
    *,
    min_examples: int = 10,
    max_iter: int = 100,
) -> tuple[float, float]:
    """(scale, prior_weight): ``softmax(scale * logits + prior_weight * log_prior)`` fitted by
    likelihood on these (tuning) outputs, see the module doc.

    With fewer than ``min_examples`` rows, or a single sender among them, it stays at (1, 1):
    the head as trained plus the full prior correction a balanced fit calls for.
    """
    import torch

    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64)
    if len(t) < min_examples or len(np.unique(t)) < 2:
        log.info("sender calibration skipped: %d tuning images with a sender", len(t))
        return 1.0, 1.0
    lp = np.broadcast_to(np.asarray(log_prior, dtype=np.float64), z.shape)
    with _one_thread():
        zt, lpt, yt = (
            torch.from_numpy(z),
            torch.from_numpy(np.ascontiguousarray(lp)),
            torch.from_numpy(t),
        )
        log_a = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        b = torch.ones(1, dtype=torch.float64, requires_grad=True)

        def closure() -> Any:
            for p in (log_a, b):
                if p.grad is not None:
                    p.grad.zero_()
            loss = torch.nn.functional.cross_entropy(log_a.exp() * zt + b * lpt, yt)
            loss.backward()
            return loss

        _lbfgs([log_a, b], closure, max_iter)
        scale, weight = float(log_a.exp().item()), float(b.item())
    if not (np.isfinite(scale) and np.isfinite(weight)):
        return 1.0, 1.0
    return float(np.clip(scale, 0.0, MAX_SCALE)), float(np.clip(weight, 0.0, MAX_PRIOR_WEIGHT))


def calibrated_logits(
    logits: np.ndarray, scale: float, prior_weight: float, log_prior: np.ndarray
) -> np.ndarray:
    """What the folded head (``fold_calibration``) outputs for the same features."""
    z = np.asarray(logits, dtype=np.float64)
    out = scale * z + prior_weight * np.asarray(log_prior, dtype=np.float64)
    absent = (z <= ABSENT_LOGIT).all(axis=0) if len(z) else np.zeros(z.shape[1], bool)
    out[:, absent] = ABSENT_LOGIT
    return out


def fold_calibration(
    head: SenderHead, scale: float, prior_weight: float, log_prior: np.ndarray
) -> SenderHead:
    """The head whose logits are ``scale * logits + prior_weight * log_prior``; a sender with
    no training image keeps a logit that never wins."""
    absent = ~head.weight.any(axis=1) & (head.bias <= ABSENT_LOGIT)
    weight = head.weight * scale
    bias = head.bias * scale + prior_weight * np.asarray(log_prior, dtype=np.float64)
    weight[absent] = 0.0
    bias[absent] = ABSENT_LOGIT
    return SenderHead(weight, bias)
