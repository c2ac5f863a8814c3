"""Sender head against the baselines, on synthetic chats with and without tastes.

    .venv/bin/python bench/sender_head.py                 # real efficientnet_lite0 weights
    .venv/bin/python bench/sender_head.py --images 240 --seeds 3

For each seed, two chats are drawn (``tests/helpers/tastes.py``): one where five members have
tastes (Person A posts 40 %, mostly memes; the others each favour one category 6 to 1) and one
where who posts is independent of what is posted. Each chat is split by time exactly as
``memetag train`` splits it (train / tune / validation, newest last), embedded once with the
frozen backbone through the embedding cache, and every candidate sender head is trained on the
training part, calibrated (temperature and confidence line) on the tune part and scored on
validation only. Reported per candidate: sender top-1 and macro-F1 against the majority and the
recent-activity baselines, the share of validation images answered "unsure", the precision of the
named guesses, and whether the run claims to beat the baselines. Writes
bench/results/sender_head.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from classifier.config import ModelConfig, TrainConfig  # noqa: E402
from classifier.dataset import Example, resolve_label_votes  # noqa: E402
from memetag.demo import CATEGORIES  # noqa: E402
from tests.helpers.tastes import bayes_top1, make_chat  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_CACHE = HERE / ".cache"


# --- data --------------------------------------------------------------------------------------


def chat_examples(folder: Path, *, images: int, seed: int, tastes: bool) -> list[Example]:
    """The chat's images as training examples (drawn once into ``folder``, then reused)."""
    import csv
    from datetime import datetime

    import imagehash
    from PIL import Image

    if not (folder / "labels.csv").is_file():
        make_chat(folder, images=images, seed=seed, tastes=tastes)
    examples = []
    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        for cells in csv.DictReader(fh):
            path = folder / cells["filename"]
            data = path.read_bytes()
            targets, mask = resolve_label_votes(
                dict.fromkeys(cells["labels"].split(), 1), CATEGORIES
            )
            examples.append(
                Example(
                    sha256=hashlib.sha256(data).hexdigest(),
                    path=path,
                    phash=str(imagehash.phash(Image.open(io.BytesIO(data)))),
                    posted_at=datetime.fromisoformat(cells["timestamp"]),
                    sender=cells["sender"],
                    label_targets=targets,
                    label_mask=mask,
                )
            )
    return examples


def embed_all(
    examples: list[Example], model_cfg: ModelConfig, cache_dir: Path, seed: int
) -> np.ndarray:
    from classifier.backbone import build_backbone
    from classifier.embeddings import EmbeddingCache
    from classifier.train import embed_examples, embedding_cache_key

    backbone, data_config = build_backbone(model_cfg)
    cache = EmbeddingCache(cache_dir, embedding_cache_key(model_cfg, seed))
    emb = embed_examples(backbone, data_config, examples, model_cfg=model_cfg, cache=cache)
    if not emb.ok.all():
        raise SystemExit(f"{int((~emb.ok).sum())} images could not be decoded")
    return emb.features


# --- candidates --------------------------------------------------------------------------------


@dataclasses.dataclass
class Chat:
    """One chat's time split, features and sender targets in the split's vocabulary."""

    kind: str
    seed: int
    examples: list[Example]
    features: np.ndarray
    prepared: object  # classifier.train.PreparedData
    baselines: dict = dataclasses.field(default_factory=dict)

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from classifier.dataset import encode_senders, stack_label_targets

        index = {e.sha256: i for i, e in enumerate(self.examples)}
        rows = getattr(self.prepared, name)
        x = self.features[[index[e.sha256] for e in rows]].astype(np.float64)
        y = encode_senders([e.sender for e in rows], self.prepared.senders)
        labels, mask = stack_label_targets(rows, len(CATEGORIES))
        return x, y, labels, mask


def _old_line(conf: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The confidence line as chosen before this bench: the lowest line reaching the target,
    else the most precise line that still names 5 images (never "never")."""
    from classifier.thresholds import CONFIDENCE_GRID, DEFAULT_SENDER_CONFIDENCE

    if len(conf) < 5:
        return DEFAULT_SENDER_CONFIDENCE
    accepted = conf[None, :] >= CONFIDENCE_GRID[:, None]
    n_acc = accepted.sum(axis=1)
    precision = np.where(
        n_acc > 0, (accepted & correct[None, :]).sum(axis=1) / np.maximum(n_acc, 1), 0
    )
    enough = n_acc >= 5
    reached = np.flatnonzero(enough & (precision >= target - 1e-12))
    if reached.size:
        return float(CONFIDENCE_GRID[reached[0]])
    cand = np.flatnonzero(enough)
    return float(CONFIDENCE_GRID[cand[np.argmax(precision[cand])]]) if cand.size else 0.0


def _adam_logits(chat: Chat, *, epochs: int, weight_decay: float) -> tuple:
    """The sender head as trained before: minibatch AdamW on balanced cross-entropy."""
    from classifier.train import HeadData, predict_heads, train_heads

    cfg = TrainConfig(seed=chat.seed)
    x, y, _, _ = chat.part("train")
    heads = train_heads(
        HeadData(x, y, np.zeros((len(y), 0), np.float32), np.zeros((len(y), 0), bool)),
        n_senders=len(chat.prepared.senders),
        epochs=epochs,
        lr=cfg.lr,
        weight_decay=weight_decay,
        batch_size=cfg.batch_size,
        seed=chat.seed,
    )
    return tuple(predict_heads(heads, chat.part(p)[0])[0] for p in ("tune", "val"))


def _lr_logits(chat: Chat, **kw: object) -> tuple:
    from classifier.senderhead import fit_sender_head, sender_logits

    x, y, labels, mask = chat.part("train")
    if kw.pop("categories", False):
        kw.update(label_targets=labels, label_mask=mask)
    head = fit_sender_head(x, y, len(chat.prepared.senders), **kw)
    return tuple(sender_logits(head, chat.part(p)[0]) for p in ("tune", "val"))


def _score(chat: Chat, tune_logits: np.ndarray, val_logits: np.ndarray, calibration: str) -> dict:
    """Calibrate on tune ("temperature", "prior" = the full log prior added then a
    temperature, "fitted" = the shipped scale + prior weight), draw the confidence line on tune,
    score validation."""
    from classifier.calibration import fit_temperature, softmax
    from classifier.evaluate import sender_metrics, sender_verdict
    from classifier.senderhead import calibrated_logits, class_prior, fit_sender_calibration
    from classifier.thresholds import choose_sender_min_confidence

    _, y_train, _, _ = chat.part("train")
    _, y_tune, _, _ = chat.part("tune")
    _, y_val, _, _ = chat.part("val")
    n = len(chat.prepared.senders)
    log_prior = np.log(class_prior(y_train, n))
    if calibration == "fitted":
        a, b = fit_sender_calibration(tune_logits, y_tune, log_prior)
        z_tune = calibrated_logits(tune_logits, a, b, log_prior)
        z_val = calibrated_logits(val_logits, a, b, log_prior)
    else:
        shift = log_prior if calibration == "prior" else 0.0
        t = fit_temperature(tune_logits + shift, y_tune)
        z_tune, z_val = (tune_logits + shift) / t, (val_logits + shift) / t
    p_tune = softmax(z_tune)
    correct = p_tune.argmax(1) == y_tune
    majority = int(np.bincount(y_train, minlength=n).argmax())
    target = TrainConfig().sender_target_precision
    line = choose_sender_min_confidence(
        p_tune.max(1),
        correct,
        target_precision=target,
        beats_majority=bool(correct.mean() > (y_tune == majority).mean()),
    ).min_confidence
    m = sender_metrics(
        y_val, softmax(z_val), chat.prepared.senders, min_confidence=line, logits=z_val
    )
    old_line = _old_line(p_tune.max(1), correct, target)
    old = sender_metrics(y_val, softmax(z_val), chat.prepared.senders, min_confidence=old_line)
    out = {k: m[k] for k in ("top1", "top3", "macro_f1", "nll", "coverage", "confident_precision")}
    out["unsure_rate"] = 1.0 - m["coverage"]
    out["line"] = line
    out["old_line"] = {
        "line": old_line,
        "coverage": old["coverage"],
        "precision": old["confident_precision"],
    }
    out.update(sender_verdict(m, chat.baselines))
    return out


CANDIDATES: dict[str, Callable[[Chat], dict]] = {
    # Before: what `memetag train` shipped (balanced CE, AdamW, 60 epochs, temperature).
    "before: balanced CE, AdamW 60 epochs, temperature": lambda c: _score(
        c, *_adam_logits(c, epochs=60, weight_decay=TrainConfig().weight_decay), "temperature"
    ),
    "balanced CE, AdamW 10 epochs (fewer epochs)": lambda c: _score(
        c, *_adam_logits(c, epochs=10, weight_decay=TrainConfig().weight_decay), "temperature"
    ),
    "balanced CE, AdamW weight decay 0.5": lambda c: _score(
        c, *_adam_logits(c, epochs=60, weight_decay=0.5), "temperature"
    ),
    "logistic regression, balanced, weak L2 (C=1)": lambda c: _score(
        c, *_lr_logits(c, c=1.0, balance=1.0), "temperature"
    ),
    "logistic regression, unweighted, weak L2 (C=1)": lambda c: _score(
        c, *_lr_logits(c, c=1.0, balance=0.0), "temperature"
    ),
    "logistic regression, unweighted, strong L2 (C=3e-4)": lambda c: _score(
        c, *_lr_logits(c, c=3e-4, balance=0.0), "temperature"
    ),
    "logistic regression, balanced, strong L2 (C=3e-4)": lambda c: _score(
        c, *_lr_logits(c, c=3e-4, balance=1.0), "temperature"
    ),
    "  + logit adjustment (log prior added)": lambda c: _score(
        c, *_lr_logits(c, c=3e-4, balance=1.0), "prior"
    ),
    "  + prior correction fitted on tune": lambda c: _score(
        c, *_lr_logits(c, c=3e-4, balance=1.0), "fitted"
    ),
    "category outputs only, balanced, prior correction fitted on tune": lambda c: _score(
        c, *_lr_logits(c, c=0.0, c_categories=0.1, categories=True), "fitted"
    ),
    "category outputs + features (C=3e-4), balanced, temperature only": lambda c: _score(
        c, *_lr_logits(c, c=3e-4, c_categories=0.1, categories=True), "temperature"
    ),
    "category outputs + features (C=3e-4), balanced, prior correction fitted on tune": (
        lambda c: _score(c, *_lr_logits(c, c=3e-4, c_categories=0.1, categories=True), "fitted")
    ),
}


def shipped(chat: Chat, model_cfg: ModelConfig, cache_dir: Path) -> dict:
    """`memetag train`'s own pipeline (classifier.train.train_model, default [train])."""
    from classifier.train import train_model

    result = train_model(
        chat.examples,
        labels=list(CATEGORIES),
        model_cfg=model_cfg,
        train_cfg=TrainConfig(seed=chat.seed),
        cache_dir=cache_dir,
    )
    snd = result.evaluation["sender"]
    keys = ("top1", "top3", "macro_f1", "nll", "coverage", "confident_precision", "unsure_rate")
    out = {k: snd.get(k) for k in keys}
    out["line"] = snd["min_confidence"]
    for k in ("beats_baselines", "top1_margin", "macro_f1_margin"):
        out[k] = snd[k]
    out["category_macro_f1"] = result.evaluation["categories"]["macro_f1"]
    return out


def _mean(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240, help="images per chat")
    parser.add_argument("--seeds", type=int, default=3, help="chats (and training seeds) per kind")
    parser.add_argument("--size", type=int, default=256, help="demo render base size")
    parser.add_argument("--backbone", help="default: [model] backbone (efficientnet_lite0)")
    parser.add_argument("--pretrained", help='default: "package" (offline ImageNet weights)')
    parser.add_argument("--image-size", type=int, help="default: [model] image_size")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--embed-only", action="store_true", help="draw and embed, then stop")
    parser.add_argument("--out", type=Path, default=RESULTS / "sender_head.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides = {
        k: v
        for k, v in (
            ("backbone", args.backbone),
            ("pretrained", args.pretrained),
            ("image_size", args.image_size),
        )
        if v is not None
    }
    model_cfg = dataclasses.replace(ModelConfig(device="cpu", decode_workers=2), **overrides)
    from classifier.backbone import preprocessing_key
    from classifier.dataset import encode_senders
    from classifier.evaluate import majority_baseline, recent_activity_baseline
    from classifier.train import prepare_data

    started = time.perf_counter()
    chats = []
    for seed in range(args.seeds):
        for tastes in (True, False):
            kind = "tastes" if tastes else "no_tastes"
            folder = args.cache / "sender_head" / f"{kind}-n{args.images}-s{seed}-z{args.size}"
            examples = chat_examples(folder, images=args.images, seed=seed, tastes=tastes)
            feats = embed_all(examples, model_cfg, args.cache, seed)
            prepared = prepare_data(examples, list(CATEGORIES), TrainConfig(seed=seed))
            chat = Chat(kind, seed, examples, feats, prepared)
            vocab = prepared.senders
            y_train = encode_senders([e.sender for e in prepared.train], vocab)
            y_val = encode_senders([e.sender for e in prepared.val], vocab)
            majority = majority_baseline(y_train, y_val)
            recent = recent_activity_baseline(
                [e.posted_at for e in prepared.examples],
                encode_senders([e.sender for e in prepared.examples], vocab).tolist(),
                [e.posted_at for e in prepared.val],
                y_val.tolist(),
                fallback=majority["guess"],
            )
            chat.baselines = {"majority": majority, "recent_30d": recent}
            chats.append(chat)
            print(f"{kind} seed {seed}: {len(examples)} images ready", file=sys.stderr)
    embed_seconds = time.perf_counter() - started
    if args.embed_only:
        return 0

    started = time.perf_counter()
    result: dict = {
        "bench": "sender_head",
        "images_per_chat": args.images,
        "seeds": args.seeds,
        "backbone": model_cfg.backbone,
        "pretrained": model_cfg.pretrained,
        "preprocessing_key": preprocessing_key(model_cfg),
        "split": {
            "train": len(chats[0].prepared.train),
            "tune": len(chats[0].prepared.tune),
            "validation": len(chats[0].prepared.val),
        },
        "bayes_top1_from_true_category": {
            "tastes": bayes_top1(tastes=True),
            "no_tastes": bayes_top1(tastes=False),
        },
        "kinds": {},
    }
    names = [*CANDIDATES, "shipped: memetag train (defaults)"]
    for kind in ("tastes", "no_tastes"):
        group = [c for c in chats if c.kind == kind]
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for chat in group:
            for name, fn in CANDIDATES.items():
                runs[name].append({"seed": chat.seed, **fn(chat)})
            runs[names[-1]].append({"seed": chat.seed, **shipped(chat, model_cfg, args.cache)})
        baselines = {
            b: {
                "top1": _mean([c.baselines[b] for c in group], "top1"),
                "macro_f1": _mean([c.baselines[b] for c in group], "macro_f1"),
                "runs": [c.baselines[b] | {"seed": c.seed} for c in group],
            }
            for b in ("majority", "recent_30d")
        }
        summary = {}
        for name in names:
            r = runs[name]
            summary[name] = {
                **{
                    k: _mean(r, k)
                    for k in ("top1", "macro_f1", "nll", "unsure_rate", "confident_precision")
                },
                "beats_baselines_runs": sum(bool(x["beats_baselines"]) for x in r),
                "runs": r,
            }
        result["kinds"][kind] = {"baselines": baselines, "candidates": summary}
    result["seconds"] = {
        "embed": round(embed_seconds, 1),
        "heads": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for kind, body in result["kinds"].items():
        b = body["baselines"]
        print(
            f"\n{kind} ({args.seeds} chats, {result['split']['validation']} validation images each)"
        )
        print(f"  {'':76} {'top-1':>6} {'mF1':>6} {'NLL':>6} {'unsure':>6} {'claims':>6}")
        for name in ("majority", "recent_30d"):
            print(f"  {'baseline: ' + name:76} {b[name]['top1']:6.3f} {b[name]['macro_f1']:6.3f}")
        for name, c in body["candidates"].items():
            nll_text = f"{c['nll']:6.3f}" if c["nll"] is not None else f"{'–':>6}"
            print(
                f"  {name[:76]:76} {c['top1']:6.3f} {c['macro_f1']:6.3f} {nll_text} "
                f"{c['unsure_rate']:6.2f} {c['beats_baselines_runs']:>4}/{args.seeds}"
            )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
