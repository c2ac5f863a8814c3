"""Temperature scaling for the sender softmax, and reliability statistics.

The temperature is fitted on the tuning images (see ``classifier.split``), not on the images the
reported metrics come from. Fallback: with fewer than ``min_examples`` (10) tuning images that
have a sender, or when they all belong to one class, the temperature stays 1.0: there is too
little to fit it on, and a wrong temperature is worse than none.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# A small tuning set the model gets all right pushes T towards 0 (certainty it has not
# earned on new images); sharpening is capped at 4x.
MIN_TEMPERATURE = 0.25
MAX_TEMPERATURE = 20.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits / temperature)``."""
    if len(targets) == 0:
        return float("nan")
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = z.max(axis=1, keepdims=True)
    log_norm = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(targets)), targets]))


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, *, min_examples: int = 10, max_iter: int = 100
) -> float:
    """The temperature minimising the NLL of ``logits`` (LBFGS on log T, so T stays positive)."""
    import torch

    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) < min_examples or len(np.unique(targets)) < 2:
        log.info("temperature scaling skipped: %d tuning images with a sender", len(targets))
        return 1.0
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(targets)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().item())
    if not np.isfinite(t):
        return 1.0
    t = float(np.clip(t, MIN_TEMPERATURE, MAX_TEMPERATURE))
    # LBFGS can wander on flat losses; never hand back something worse than no scaling.
    return t if nll(logits, targets, t) <= nll(logits, targets, 1.0) else 1.0


def reliability_bins(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = 10
) -> dict[str, list]:
    """Equal-width confidence bins: mean confidence, accuracy and count per bin, plus the ECE."""
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    mean_conf, acc, count = [], [], []
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        k = int(sel.sum())
        count.append(k)
        if k:
            mc, a = float(conf[sel].mean()), float(ok[sel].mean())
            ece += k / max(len(conf), 1) * abs(mc - a)
            mean_conf.append(mc)
            acc.append(a)
        else:
            mean_conf.append(None)
            acc.append(None)
    return {
        "edges": edges.tolist(),
        "mean_confidence": mean_conf,
        "accuracy": acc,
        "count": count,
        "ece": float(ece) if len(conf) else None,
    }
