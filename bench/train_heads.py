"""Head retraining speed: 10 000 cached embeddings of the backbone's width, trained with the defaults.

The features are synthetic but shaped like the real thing: non-negative (post-activation, pooled),
the backbone's width, with senders and labels that are linear-ish functions of a low-dimensional
latent, so the heads have something to learn and the bench also reports held-out quality.

    .venv/bin/python bench/train_heads.py [--n 10000] [--epochs N]

Writes bench/results/train_heads.json. Target: < 10 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from classifier.calibration import softmax  # noqa: E402
from classifier.config import ModelConfig, TrainConfig  # noqa: E402
from classifier.evaluate import label_metrics, sender_metrics  # noqa: E402
from classifier.train import HeadData, predict_heads, train_heads  # noqa: E402

TARGET_SECONDS = 10.0
RESULTS = Path(__file__).resolve().parent / "results" / "train_heads.json"


def backbone_width(cfg: ModelConfig) -> int:
    """The configured backbone's feature width, from its architecture alone (no weights read)."""
    import timm

    return int(timm.create_model(cfg.backbone, pretrained=False, num_classes=0).num_features)


def synthetic_features(
    n: int, dim: int, *, n_senders: int = 8, n_labels: int = 16, latent: int = 32, seed: int = 0
) -> HeadData:
    """Features = relu(W z + noise) with z from sender prototypes + label directions."""
    rng = np.random.default_rng(seed)
    # Zipf-ish activity: the most active member posts ~8x as much as the quietest.
    activity = 1.0 / np.arange(1, n_senders + 1) ** 0.9
    senders = rng.choice(n_senders, size=n, p=activity / activity.sum())
    label_rate = rng.uniform(0.03, 0.3, n_labels)
    labels = (rng.random((n, n_labels)) < label_rate).astype(np.float32)
    sender_proto = rng.normal(0, 1.0, (n_senders, latent))
    label_dirs = rng.normal(0, 1.0, (n_labels, latent))
    z = sender_proto[senders] * 0.8 + labels @ label_dirs + rng.normal(0, 1.0, (n, latent))
    proj = rng.normal(0, 1 / np.sqrt(latent), (latent, dim))
    feats = np.maximum(z @ proj + rng.normal(0, 0.5, (n, dim)), 0).astype(np.float32)
    # As in a chat: only some images carry category votes; the rest train the sender head only.
    mask = np.zeros_like(labels, dtype=bool)
    mask[rng.random(n) < 0.4] = True
    sender_t = senders.astype(np.int64)
    sender_t[rng.random(n) < 0.02] = -1  # the odd image with an unknown author
    return HeadData(feats, sender_t, labels * mask, mask)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="training embeddings")
    parser.add_argument("--epochs", type=int, help="default: [train] epochs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)

    import torch

    cfg = TrainConfig()
    epochs = args.epochs or cfg.epochs
    dim = backbone_width(ModelConfig())
    data = synthetic_features(args.n + 2000, dim)
    train = HeadData(
        *(
            a[: args.n]
            for a in (data.features, data.sender_targets, data.label_targets, data.label_mask)
        )
    )
    held = HeadData(
        *(
            a[args.n :]
            for a in (data.features, data.sender_targets, data.label_targets, data.label_mask)
        )
    )
    n_senders = int(data.sender_targets.max()) + 1

    started, cpu_started = time.perf_counter(), time.process_time()
    heads = train_heads(
        train,
        n_senders=n_senders,
        epochs=epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started

    sender_logits, label_probs = predict_heads(heads, held.features)
    probs = softmax(sender_logits)
    snd = sender_metrics(
        held.sender_targets, probs, [str(i) for i in range(n_senders)], min_confidence=0.0
    )
    n_labels = held.label_targets.shape[1]
    cats = label_metrics(
        held.label_targets,
        held.label_mask,
        label_probs,
        [0.5] * n_labels,
        [f"l{i}" for i in range(n_labels)],
    )
    counts = np.bincount(train.sender_targets[train.sender_targets >= 0])
    result = {
        "bench": "train_heads",
        "n_train": args.n,
        "n_heldout": 2000,
        "feature_width": dim,
        "senders": n_senders,
        "labels": n_labels,
        "epochs": epochs,
        "batch_size": cfg.batch_size,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "target_seconds": TARGET_SECONDS,
        "within_target": seconds < TARGET_SECONDS,
        "heldout_sender_top1": round(snd["top1"], 3),
        "heldout_majority_top1": round(float(counts.max() / counts.sum()), 3),
        "heldout_label_macro_f1_at_0.5": round(cats["macro_f1"], 3),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # Other work on the machine slows a wall-clock bench; this says how busy it was.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
