"""Training as library functions: data preparation, heads on cached embeddings, fine-tuning,
threshold tuning, calibration, and evaluating any checkpoint on the current validation set.

Three time-ordered parts (``classifier.split``): the sender head and fine-tuning learn from train
only, the sender calibration and confidence line are fitted on tune only, and validation is only
ever scored. The category head (``classifier.labelhead``) learns from train and tune, with its
calibration and thresholds cross-fitted there. Small stores without a usable tune part tune the
sender on validation, flagged in reports. Once everything is fixed, the heads that ship are refit
on every image; the validation figures are of the heads fitted without validation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from classifier.calibration import nll, softmax
from classifier.config import ModelConfig, TrainConfig
from classifier.dataset import (
    NO_SENDER,
    OTHER,
    Example,
    build_sender_vocab,
    count_label_positives,
    encode_senders,
    stack_label_targets,
)
from classifier.embeddings import EmbeddingCache, EmbedResult, embed_with_cache
from classifier.evaluate import (
    f1_threshold_curves,
    label_metrics,
    majority_baseline,
    recent_activity_baseline,
    sender_metrics,
    sender_verdict,
    summary_metrics,
)
from classifier.labelhead import (
    MULTI,
    LabelFit,
    detect_label_mode,
    fit_labels,
    label_probabilities,
    predict_label_sets,
)
from classifier.senderhead import (
    SenderHead,
    calibrated_logits,
    class_prior,
    fit_sender_calibration,
    fit_sender_head,
    fold_calibration,
)
from classifier.split import TUNED_ON_TUNE, Split, split_by_time
from classifier.thresholds import choose_sender_min_confidence, tune_label_thresholds

log = logging.getLogger(__name__)

# on_progress(stage, done, total): stage is "embed", "heads", "finetune" or "score".
Progress = Callable[[str, int, int], None]

CHECKPOINT_VERSION = 1

# Shown in reports and the train summary whenever something was fitted on validation: with too
# few images for a tune split, the sender temperature and confidence line are (category
# thresholds never are: they come from cross-fitting on the training images) ...
OPTIMISTIC_NOTE = (
    "sender temperature and confidence line tuned on validation: too few images for a tune "
    "split — sender metrics are optimistic"
)
# ... and after fine-tuning (no cross-fitting there) the category thresholds too.
FINETUNE_OPTIMISTIC_NOTE = (
    "thresholds tuned on validation: too few images for a tune split — metrics are optimistic"
)


def _noop(stage: str, done: int, total: int) -> None:
    pass


def resolve_device(name: str) -> Any:
    """``"auto"`` picks CUDA when available, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PreparedData:
    """Examples split by time into train / tune / validation, with the sender vocabulary and
    label statistics.

    ``label_positives`` counts every category-labelled image (train, tune and validation): the
    model that ships is refit on all of them, so that is what a label has to learn from.
    """

    examples: list[Example]
    labels: list[str]
    split: Split
    senders: list[str]
    label_positives: dict[str, int]
    emitted_labels: list[str]
    min_label_positives: int
    label_positives_train: dict[str, int] = dataclasses.field(default_factory=dict)
    # "exclusive" (every category-labelled image has one positive) or "multi".
    label_mode: str = "multi"

    @property
    def train(self) -> list[Example]:
        return [self.examples[i] for i in self.split.train]

    @property
    def tune(self) -> list[Example]:
        return [self.examples[i] for i in self.split.tune]

    @property
    def val(self) -> list[Example]:
        return [self.examples[i] for i in self.split.val]

    @property
    def tuned_on(self) -> str:
        """ "tune", or "validation" when the store is too small for a tune part."""
        return self.split.tuned_on

    def summary(self) -> dict[str, Any]:
        train, tune, val = self.train, self.tune, self.val
        sender_counts = Counter(
            self.senders[i]
            for i in encode_senders([e.sender for e in train], self.senders)
            if i >= 0
        )
        return {
            "n_images": len(self.examples),
            "n_train": len(train),
            "n_tune": len(tune),
            "n_val": len(val),
            "tuned_on": self.tuned_on,
            "tuning_warning": None if self.tuned_on == TUNED_ON_TUNE else OPTIMISTIC_NOTE,
            "dropped_leaks": len(self.split.dropped_leaks),
            "dropped_tune_leaks": len(self.split.dropped_tune_leaks),
            "cutoff": self.split.cutoff.isoformat() if self.split.cutoff else None,
            "tune_cutoff": self.split.tune_cutoff.isoformat() if self.split.tune_cutoff else None,
            "n_category_labelled_train": sum(e.is_category_labelled for e in train),
            "n_category_labelled_tune": sum(e.is_category_labelled for e in tune),
            "n_category_labelled_val": sum(e.is_category_labelled for e in val),
            "n_sender_train": sum(e.sender is not None for e in train),
            "n_sender_tune": sum(e.sender is not None for e in tune),
            "n_sender_val": sum(e.sender is not None for e in val),
            "senders": list(self.senders),
            "sender_counts_train": dict(sender_counts),
            "label_positives": dict(self.label_positives),
            "label_positives_train": dict(self.label_positives_train),
            "label_mode": self.label_mode,
            "emitted_labels": list(self.emitted_labels),
            "not_emitted": {
                k: v for k, v in self.label_positives.items() if k not in self.emitted_labels
            },
            "min_label_positives": self.min_label_positives,
        }


def prepare_data(
    examples: Sequence[Example], labels: Sequence[str], train_cfg: TrainConfig
) -> PreparedData:
    """Split by time into train / tune / validation (dropping repost leaks across every
    boundary), build the sender vocabulary, count each label's labelled images and tell
    whether the labelling is exclusive (``classifier.labelhead``).

    Examples are put in content-hash order first: the store hands them over in whatever order
    ingest happened to assign ids, and the same images and seed must give the same model.
    """
    examples = sorted(examples, key=lambda e: e.sha256)
    split = split_by_time(
        [e.posted_at for e in examples],
        [e.phash for e in examples],
        val_fraction=train_cfg.val_fraction,
        tune_fraction=train_cfg.tune_fraction,
        phash_distance=train_cfg.phash_distance,
        tiebreak=[e.sha256 for e in examples],
    )
    train = [examples[i] for i in split.train]
    held_out = [examples[i] for i in split.tune + split.val]
    senders = build_sender_vocab(
        [e.sender for e in train],
        min_posts=train_cfg.min_posts_per_person,
        other_senders=[e.sender for e in held_out],
    )
    kept = [examples[i] for i in split.train + split.tune + split.val]
    positives = count_label_positives(kept, labels)
    emitted = [name for name in labels if positives[name] >= train_cfg.min_label_positives]
    skipped = [name for name in labels if name not in emitted and positives[name]]
    if skipped:
        log.info("labels with too few labelled images, not emitted: %s", skipped)
    targets, _ = stack_label_targets(kept, len(labels))
    return PreparedData(
        examples=examples,
        labels=list(labels),
        split=split,
        senders=senders,
        label_positives=positives,
        emitted_labels=emitted,
        min_label_positives=train_cfg.min_label_positives,
        label_positives_train=count_label_positives(train, labels),
        label_mode=detect_label_mode(targets),
    )


# --- heads -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HeadData:
    features: np.ndarray  # (N, D) float32
    sender_targets: np.ndarray  # (N,) int64, NO_SENDER where unknown
    label_targets: np.ndarray  # (N, L) float32
    label_mask: np.ndarray  # (N, L) bool


def class_weights(targets: np.ndarray, n_classes: int, *, cap: float = 10.0) -> np.ndarray:
    """Balanced class weights (n / (k * count)) so quiet members are not drowned out by the most
    active one; capped so a class with a single example can't dominate the loss."""
    t = np.asarray(targets)
    t = t[(t >= 0) & (t < n_classes)]
    counts = np.bincount(t, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.ones(n_classes)
    if present.any():
        w[present] = len(t) / (present.sum() * counts[present])
    return np.clip(w, 1.0 / cap, cap).astype(np.float32)


def label_pos_weight(
    targets: np.ndarray, mask: np.ndarray, *, lo: float = 0.1, hi: float = 50.0
) -> np.ndarray:
    """BCE pos_weight = negatives / positives per label (known entries only), clipped."""
    y = np.asarray(targets) > 0.5
    m = np.asarray(mask, dtype=bool)
    pos = (y & m).sum(axis=0).astype(np.float64)
    neg = (~y & m).sum(axis=0).astype(np.float64)
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return np.clip(w, lo, hi).astype(np.float32)


def _head_loss(
    outputs: tuple[Any, Any],
    sender_t: Any,
    label_t: Any,
    label_m: Any,
    sender_w: Any,
    pos_w: Any,
) -> Any:
    """Class-weighted sender cross-entropy (unknown authors ignored) + masked, pos-weighted
    label BCE. Written without data-dependent branches, so a step never waits on a sync."""
    import torch.nn.functional as F

    sender_logits, label_logits = outputs
    loss = label_logits.float().sum() * 0.0
    if sender_logits.shape[1] > 1:
        known = sender_t >= 0
        target = sender_t.clamp(min=0)
        nll = -F.log_softmax(sender_logits.float(), dim=1).gather(1, target[:, None])[:, 0]
        w = sender_w[target] * known
        loss = loss + (w * nll).sum() / w.sum().clamp(min=1e-12)
    if label_logits.shape[1] > 0:
        bce = F.binary_cross_entropy_with_logits(
            label_logits.float(), label_t, pos_weight=pos_w, reduction="none"
        )
        loss = loss + (bce * label_m).sum() / label_m.sum().clamp(min=1)
    return loss


# Pre-sampled dropout masks: drawing a fresh 1280-wide Bernoulli mask per sample costs more on a
# CPU than the linear heads themselves, so each batch takes a random run of rows from a bank.
_MASK_BANK = 4096
# Per-step overhead (autograd, optimizer, Python) dominates for linear heads, so a big training
# set uses bigger batches: an epoch is at most this many steps (batch_size is the minimum).
_MAX_STEPS_PER_EPOCH = 40


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads: tiny GEMMs only lose to thread hand-offs (badly so on a
    busy 2-core box), so head training runs single-threaded."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_heads(
    data: HeadData,
    *,
    n_senders: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    dropout: float = 0.2,
    on_progress: Progress = _noop,
) -> Any:
    """Train ``classifier.model.Heads`` on cached features; deterministic for a given ``seed``.

    Minibatch AdamW with a one-cycle schedule, on standardised features (backbone features can
    sit at any scale, and a random-init test backbone's are ~1e-3); the standardisation is folded
    into the linear layers afterwards, so the returned heads take raw features. Input dropout
    (``dropout``) is applied here from a bank of pre-sampled masks; the returned heads carry
    the usual ``Heads`` dropout for any later fine-tuning.
    """
    import torch

    from classifier.model import Heads

    torch.manual_seed(seed)
    n, dim = data.features.shape
    n_labels = data.label_targets.shape[1]
    heads = Heads(dim, n_senders, n_labels, dropout=dropout)
    feats = np.asarray(data.features, dtype=np.float64)
    mean = feats.mean(axis=0) if n else np.zeros(dim)
    std = feats.std(axis=0) if n else np.ones(dim)
    # Near-constant dimensions would get huge folded weights; floor their scale.
    std = np.maximum(std, max(1e-2 * float(np.median(std)) if n else 0.0, 1e-12))
    x = torch.from_numpy(((feats - mean) / std).astype(np.float32))
    s = torch.from_numpy(data.sender_targets.astype(np.int64))
    y = torch.from_numpy(data.label_targets.astype(np.float32))
    m = torch.from_numpy(data.label_mask.astype(np.float32))
    sender_w = torch.from_numpy(class_weights(data.sender_targets, n_senders))
    pos_w = torch.from_numpy(label_pos_weight(data.label_targets, data.label_mask))
    params = list(heads.parameters())
    gen = torch.Generator().manual_seed(seed)
    if n and params:
        batch_size = max(batch_size, -(-n // _MAX_STEPS_PER_EPOCH))
        bank = max(_MASK_BANK, 2 * batch_size)
        masks = (
            (torch.rand(bank, dim, generator=gen) < 1.0 - dropout).float() / (1.0 - dropout)
            if 0.0 < dropout < 1.0
            else None
        )
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        steps_per_epoch = max(1, -(-n // batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1
        )
        heads.eval()  # dropout comes from the mask bank
        on_progress("heads", 0, epochs)
        # Shuffle once; each epoch then starts its batches at a random offset (wrapping round)
        # and visits them in random order. Re-gathering every row each epoch costs more than the
        # training itself on a small CPU.
        perm = torch.randperm(n, generator=gen)
        x, s, y, m = x[perm], s[perm], y[perm], m[perm]
        with _intra_op_threads(1):
            for epoch in range(epochs):
                shift = int(torch.randint(0, n, (1,), generator=gen))
                batches = torch.randperm(steps_per_epoch, generator=gen).tolist()
                offsets = torch.randint(0, bank - batch_size + 1, (steps_per_epoch,), generator=gen)
                for step, b in enumerate(batches):
                    length = min(batch_size, n - b * batch_size)
                    rows = _wrapped_rows(shift + b * batch_size, length, n)
                    xb = x[rows]
                    if masks is not None:
                        off = int(offsets[step])
                        xb = xb * masks[off : off + length]
                    loss = _head_loss(heads(xb), s[rows], y[rows], m[rows], sender_w, pos_w)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                on_progress("heads", epoch + 1, epochs)
    heads.eval()
    _fold_standardisation(heads, mean, std)
    return heads


def _wrapped_rows(start: int, length: int, n: int) -> slice | Any:
    """Rows start..start+length of a length-n array read circularly: a view when it can be."""
    import torch

    start %= n
    if start + length <= n:
        return slice(start, start + length)
    return torch.cat([torch.arange(start, n), torch.arange(0, start + length - n)])


def _fold_standardisation(heads: Any, mean: np.ndarray, std: np.ndarray) -> None:
    """W (x - mean) / std + b  ==  (W / std) x + (b - W @ (mean / std))."""
    import torch

    inv = torch.from_numpy(1.0 / std)
    shift = torch.from_numpy(mean / std)
    with torch.no_grad():
        for layer in (heads.sender, heads.label):
            if layer is None:
                continue
            w = layer.weight.double()
            layer.bias.copy_((layer.bias.double() - w @ shift).to(layer.bias.dtype))
            layer.weight.copy_((w * inv[None, :]).to(layer.weight.dtype))


def predict_heads(
    heads: Any,
    features: np.ndarray,
    *,
    label_mode: str = MULTI,
    emitted: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(sender logits, label probabilities) for features, in eval mode. Label probabilities are
    sigmoids, or for an exclusive head a softmax over the ``emitted`` labels (a bool mask)."""
    import torch

    heads.eval()
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        sender_logits, label_logits = heads(x)
        logits = label_logits.float().numpy()
    if emitted is None:
        emitted = np.ones(logits.shape[1], dtype=bool)
    probs = label_probabilities(logits, label_mode, emitted).astype(np.float32)
    return sender_logits.float().numpy(), probs


# --- stage 2 -----------------------------------------------------------------------------------


def _finetune_param_groups(model: Any, lr: float, weight_decay: float, layer_decay: float) -> list:
    """Layer-wise learning rates: the stem learns slowest, the last block and heads fastest."""
    try:
        from timm.optim._param_groups import param_groups_layer_decay

        groups = param_groups_layer_decay(
            model.backbone, weight_decay=weight_decay, layer_decay=layer_decay
        )
    except (ImportError, AttributeError, NotImplementedError) as exc:
        log.info("no layer-wise groups for this backbone (%s); one learning rate", exc)
        groups = [{"params": list(model.backbone.parameters()), "lr_scale": 1.0}]
    groups.append(
        {"params": list(model.heads.parameters()), "lr_scale": 1.0, "weight_decay": weight_decay}
    )
    for g in groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    return groups


def finetune(
    model: Any,
    rows: Sequence[tuple[Path, tuple[int, np.ndarray, np.ndarray]]],
    *,
    data_config: dict,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    sender_weights: np.ndarray,
    pos_weight: np.ndarray,
    epochs: int,
    seed: int,
    on_progress: Progress = _noop,
) -> Any:
    """Stage 2: unfreeze the backbone and train end to end on augmented images.

    One-cycle schedule, layer-wise learning rates, frozen BatchNorm statistics, AMP on CUDA. Rows are
    ``(image_path, (sender_index, label_targets, label_mask))``.
    """
    import torch
    from torch.utils.data import DataLoader

    from classifier.backbone import build_transform
    from classifier.dataset import ImageDataset, collate_skip_failed

    torch.manual_seed(seed)
    device = resolve_device(model_cfg.device)
    model.to(device)
    transform = build_transform(data_config, resize=model_cfg.resize, train=True)
    loader = DataLoader(
        ImageDataset(rows, transform, max_pixels=model_cfg.max_pixels),
        batch_size=train_cfg.finetune_batch_size,
        shuffle=True,
        drop_last=len(rows) > train_cfg.finetune_batch_size,
        num_workers=model_cfg.decode_workers,
        collate_fn=collate_skip_failed,
        generator=torch.Generator().manual_seed(seed),
    )
    groups = _finetune_param_groups(
        model, train_cfg.finetune_lr, train_cfg.weight_decay, train_cfg.finetune_layer_decay
    )
    opt = torch.optim.AdamW(groups, lr=train_cfg.finetune_lr, weight_decay=train_cfg.weight_decay)
    total = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=total, pct_start=0.2
    )
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    sender_w = torch.from_numpy(sender_weights).to(device)
    pos_w = torch.from_numpy(pos_weight).to(device)
    step = 0
    on_progress("finetune", 0, total)
    model.train()
    # BatchNorm keeps its running statistics: batches of ~16 images give noisy ones, and a short
    # fine-tune would leave them half-updated (a mismatch at inference). Its scale/shift train.
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    for _ in range(epochs):
        for images, targets, _failed in loader:
            if images is None or len(targets) < 2:
                continue  # BatchNorm cannot train on a single image
            s = torch.tensor([t[0] for t in targets], dtype=torch.int64, device=device)
            y = torch.from_numpy(np.stack([t[1] for t in targets])).to(device)
            m = torch.from_numpy(np.stack([t[2] for t in targets]).astype(np.float32)).to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                outputs = model(images.to(device, non_blocking=True))
            loss = _head_loss(outputs, s, y, m, sender_w, pos_w)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if step < total:
                sched.step()
            step += 1
            on_progress("finetune", min(step, total), total)
    model.eval()
    return model


# --- embedding and scoring ---------------------------------------------------------------------


def embed_examples(
    backbone: Any,
    data_config: dict,
    examples: Sequence[Example],
    *,
    model_cfg: ModelConfig,
    cache: EmbeddingCache,
    on_progress: Progress = _noop,
    stage: str = "embed",
) -> EmbedResult:
    """Frozen-backbone features for examples, through ``cache``. Images are decoded the way the
    Predictor decodes them (reduced scale down to ``decode_min_side``), so the heads learn from
    the features they will be given."""
    from classifier.backbone import build_transform, decode_min_side

    device = resolve_device(model_cfg.device)
    backbone.to(device)
    transform = build_transform(data_config, resize=model_cfg.resize, train=False)
    return embed_with_cache(
        backbone,
        transform,
        [(e.path, e.sha256) for e in examples],
        cache,
        device=str(device),
        batch_size=model_cfg.batch_size,
        max_pixels=model_cfg.max_pixels,
        num_workers=model_cfg.decode_workers,
        on_progress=lambda done, total: on_progress(stage, done, total),
        min_side=decode_min_side(data_config, model_cfg.resize),
    )


# --- evaluation --------------------------------------------------------------------------------


def evaluate_outputs(
    prepared: PreparedData,
    *,
    version: str,
    model_labels: Sequence[str],
    emitted_labels: Sequence[str],
    model_senders: Sequence[str],
    sender_logits: np.ndarray,
    label_probs: np.ndarray,
    thresholds: dict[str, float],
    temperature: float,
    sender_min_confidence: float,
    ok: np.ndarray | None = None,
    extra: dict | None = None,
    label_mode: str = MULTI,
) -> dict:
    """The full evaluation of one model's validation outputs.

    ``ok`` marks the ``prepared.val`` images that could be decoded (default: all); the output
    rows are those images' only, in order. Thresholds, temperature and confidence line come from
    the caller (fitted on the tune part); validation is only scored here.

    Categories are scored on the current label set: a label the model does not emit counts as
    never predicted. The predicted label sets follow the Predictor's rule
    (``classifier.labelhead.predict_label_sets``). Senders are scored in the model's own vocabulary; a person it has no class
    for maps to its "other" class, or counts as a miss when it has none. Baselines use the
    current split's vocabulary, so they are the same for every model compared.
    """
    val = prepared.val
    ok = np.ones(len(val), bool) if ok is None else np.asarray(ok, bool)
    val_ok = [e for e, good in zip(val, ok, strict=True) if good]
    labels = prepared.labels
    # Categories, aligned to the current label set.
    y_true, mask = stack_label_targets(val_ok, len(labels))
    col = {name: i for i, name in enumerate(model_labels)}
    probs = np.zeros((len(val_ok), len(labels)), dtype=np.float64)
    emitted = np.zeros(len(labels), dtype=bool)
    th = np.full(len(labels), 0.5)
    for j, name in enumerate(labels):
        if name in col:
            probs[:, j] = np.asarray(label_probs)[:, col[name]]
            emitted[j] = name in emitted_labels
            th[j] = thresholds.get(name, 0.5)
    th_eff = np.where(emitted, th, np.inf)  # a label not emitted is never predicted
    pred = predict_label_sets(probs, label_mode, th, emitted)
    cats = label_metrics(y_true, mask, probs, th_eff, labels, pred=pred)
    cats["label_mode"] = label_mode
    for j, name in enumerate(labels):
        cats["per_label"][name]["threshold"] = float(th[j])
        cats["per_label"][name]["emitted"] = bool(emitted[j])
    cats["curves"] = f1_threshold_curves(y_true, mask, probs, labels)
    # Senders, in the model's vocabulary.
    model_senders = list(model_senders)
    targets = encode_senders([e.sender for e in val_ok], model_senders)
    unknown = np.array(
        [
            e.sender is not None and e.sender not in model_senders and OTHER not in model_senders
            for e in val_ok
        ],
        dtype=bool,
    )
    targets[unknown] = len(model_senders)  # no class for this person: always a miss
    logits = np.asarray(sender_logits, dtype=np.float64)
    sprobs = softmax(logits, temperature) if logits.size else logits
    fit = (targets >= 0) & (targets < len(model_senders))
    snd = sender_metrics(targets, sprobs, model_senders, min_confidence=sender_min_confidence)
    if fit.any():
        snd["nll"] = nll(logits[fit], targets[fit], temperature)
    # Baselines in the current split's vocabulary.
    train = prepared.train
    vocab = prepared.senders
    train_t = encode_senders([e.sender for e in train], vocab)
    val_t = encode_senders([e.sender for e in val_ok], vocab)
    all_ex = prepared.examples
    majority = majority_baseline(train_t, val_t)
    recent = recent_activity_baseline(
        [e.posted_at for e in all_ex],
        encode_senders([e.sender for e in all_ex], vocab).tolist(),
        [e.posted_at for e in val_ok],
        val_t.tolist(),
        fallback=majority.get("guess"),
    )
    if majority.get("guess") is not None:
        majority["guess"] = vocab[majority["guess"]]
    snd.update(sender_verdict(snd, {"majority": majority, "recent_30d": recent}))
    if snd.get("coverage") is not None:
        snd["unsure_rate"] = 1.0 - snd["coverage"]
    summary = prepared.summary()
    summary["n_val_evaluated"] = len(val_ok)
    evaluation = {
        "version": version,
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "n_train": summary["n_train"],
        "n_val": len(val_ok),
        "data": summary,
        "labels": list(labels),
        "senders": model_senders,
        "categories": cats,
        "sender": snd,
        "baselines": {"majority": majority, "recent_30d": recent},
        "calibration": {"temperature": float(temperature)},
        **(extra or {}),
    }
    evaluation["summary"] = summary_metrics(evaluation)
    return evaluation


# --- the whole run -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrainResult:
    checkpoint: Any  # classifier.checkpoint.Checkpoint
    evaluation: dict
    prepared: PreparedData
    train_config: TrainConfig
    n_embedded: int
    n_cached: int
    failed_images: list[str]


def make_version(created_at: datetime, heads_state: dict) -> str:
    """``YYYYMMDD-HHMMSS-<6 hex>``: sortable by time, unique by the trained weights."""
    h = hashlib.sha256()
    for name in sorted(heads_state):
        h.update(name.encode())
        h.update(heads_state[name].detach().cpu().numpy().tobytes())
    return f"{created_at.astimezone(UTC):%Y%m%d-%H%M%S}-{h.hexdigest()[:6]}"


def _head_data(prepared: PreparedData, examples: Sequence[Example], feats: np.ndarray) -> HeadData:
    y, m = stack_label_targets(examples, len(prepared.labels))
    return HeadData(
        features=feats,
        sender_targets=encode_senders([e.sender for e in examples], prepared.senders),
        label_targets=y,
        label_mask=m,
    )


def calibrate_and_tune(
    prepared: PreparedData,
    tuning_examples: Sequence[Example],
    sender_logits: np.ndarray,
    label_probs: np.ndarray,
    train_cfg: TrainConfig,
) -> dict[str, Any]:
    """Sender calibration, per-label thresholds and the sender confidence line, all from the
    model's outputs on ``tuning_examples`` alone (the tune part; validation only as a
    small-store fallback, see ``PreparedData.tuned_on``).

    The sender calibration (``classifier.senderhead``: a scale and how much of the training
    prior to put back) is returned for the caller to fold into the head, so the temperature is
    1. The confidence line is drawn on the calibrated probabilities, and only if the head's
    guesses beat always naming the most active training member on these images.
    """
    targets = encode_senders([e.sender for e in tuning_examples], prepared.senders)
    has = targets >= 0
    n_senders = len(prepared.senders)
    train_targets = encode_senders([e.sender for e in prepared.train], prepared.senders)
    log_prior = np.log(class_prior(train_targets, n_senders)) if n_senders else np.zeros(0)
    scale, prior_weight = fit_sender_calibration(sender_logits[has], targets[has], log_prior)
    calibrated = calibrated_logits(sender_logits[has], scale, prior_weight, log_prior)
    y, m = stack_label_targets(tuning_examples, len(prepared.labels))
    tuned = tune_label_thresholds(y, m, label_probs, prepared.labels)
    probs = softmax(calibrated) if has.any() and n_senders else np.zeros((0, 1))
    correct = probs.argmax(axis=1) == targets[has] if has.any() else np.zeros(0, bool)
    counts = np.bincount(train_targets[train_targets >= 0], minlength=max(n_senders, 1))
    majority_right = targets[has] == int(np.argmax(counts))
    conf = choose_sender_min_confidence(
        probs.max(axis=1) if has.any() else np.zeros(0),
        correct,
        target_precision=train_cfg.sender_target_precision,
        beats_majority=bool(correct.mean() > majority_right.mean()) if has.any() else True,
    )
    return {
        "n_images": len(tuning_examples),
        "temperature": 1.0,
        "sender_calibration": {
            "scale": scale,
            "prior_weight": prior_weight,
            "log_prior": log_prior.tolist(),
        },
        "nll_before": nll(sender_logits[has], targets[has], 1.0) if has.any() else None,
        "nll_after": nll(calibrated, targets[has], 1.0) if has.any() else None,
        "thresholds": {k: v.threshold for k, v in tuned.items()},
        "threshold_detail": {k: dataclasses.asdict(v) for k, v in tuned.items()},
        "sender_confidence": dataclasses.asdict(conf),
    }


def train_model(
    examples: Sequence[Example],
    *,
    labels: Sequence[str],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    cache_dir: Path | None,
    finetune_backbone: bool = False,
    on_progress: Progress = _noop,
    now: datetime | None = None,
) -> TrainResult:
    """Train a model from resolved examples and evaluate it on the time-split validation set.

    Stage 1 always runs (heads on frozen, cached embeddings); ``finetune_backbone`` adds stage 2
    starting from those heads. ``train_cfg.seed`` makes the run deterministic on CPU.

    Raises:
        ClassifierError: no image could be decoded.
    """
    import torch

    from classifier.backbone import build_backbone
    from classifier.checkpoint import Checkpoint, model_config_dict
    from classifier.errors import ClassifierError
    from classifier.model import MemetagModel

    now = now or datetime.now(UTC)
    torch.manual_seed(train_cfg.seed)
    prepared = prepare_data(examples, labels, train_cfg)
    if prepared.tuned_on != TUNED_ON_TUNE:
        log.warning("%s", FINETUNE_OPTIMISTIC_NOTE if finetune_backbone else OPTIMISTIC_NOTE)
    train_ex, tune_ex, val_ex = prepared.train, prepared.tune, prepared.val
    backbone, data_config = build_backbone(model_cfg)
    cache_key = embedding_cache_key(model_cfg, train_cfg.seed)
    cache = EmbeddingCache(cache_dir, cache_key)
    emb = embed_examples(
        backbone,
        data_config,
        train_ex + tune_ex + val_ex,
        model_cfg=model_cfg,
        cache=cache,
        on_progress=on_progress,
    )
    if not emb.ok.any():
        raise ClassifierError("none of the stored images could be decoded; nothing to train on")
    n_train = len(train_ex)
    ok_train, ok_held = emb.ok[:n_train], emb.ok[n_train:]
    feats_train, feats_held = emb.features[:n_train], emb.features[n_train:]
    train_good = [e for e, good in zip(train_ex, ok_train, strict=True) if good]
    # Tune and validation images travel together ("held out") until they are scored.
    held_ex = tune_ex + val_ex
    held_good = [e for e, good in zip(held_ex, ok_held, strict=True) if good]
    data = _head_data(prepared, train_good, feats_train[ok_train])
    # Stage 1 fits the sender head here (classifier.senderhead) and the category head below
    # (classifier.labelhead); fine-tuning starts from heads that learnt both here.
    heads = (
        train_heads(
            data,
            n_senders=len(prepared.senders),
            epochs=train_cfg.epochs,
            lr=train_cfg.lr,
            weight_decay=train_cfg.weight_decay,
            batch_size=train_cfg.batch_size,
            seed=train_cfg.seed,
            on_progress=on_progress,
        )
        if finetune_backbone
        else _sender_only_heads(_fit_sender(data, len(prepared.senders), train_cfg))
    )
    # A random-init backbone ("none", tests) is stored so the checkpoint rebuilds the same one.
    backbone_state = (
        {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
        if model_cfg.pretrained == "none"
        else None
    )
    if finetune_backbone:
        model = MemetagModel(backbone, heads)
        rows = [
            (e.path, (int(s), t, mk))
            for e, s, t, mk in zip(
                train_good, data.sender_targets, data.label_targets, data.label_mask, strict=True
            )
        ]
        finetune(
            model,
            rows,
            data_config=data_config,
            model_cfg=model_cfg,
            train_cfg=train_cfg,
            sender_weights=class_weights(data.sender_targets, len(prepared.senders)),
            pos_weight=label_pos_weight(data.label_targets, data.label_mask),
            epochs=train_cfg.finetune_epochs,
            seed=train_cfg.seed,
            on_progress=on_progress,
        )
        # The backbone changed, so held-out features must be computed afresh (not cached).
        held_emb = embed_examples(
            model.backbone,
            data_config,
            held_good,
            model_cfg=model_cfg,
            cache=EmbeddingCache(None, "finetuned"),
            on_progress=on_progress,
            stage="score",
        )
        ok_held_idx = np.flatnonzero(ok_held)
        ok_held = ok_held.copy()
        ok_held[ok_held_idx[~held_emb.ok]] = False
        feats_held = held_emb.features[held_emb.ok]
        model.cpu()
        heads = model.heads
        backbone_state = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
    else:
        feats_held = feats_held[ok_held]
    heads.cpu()
    label_fit = None
    label_mode = MULTI if finetune_backbone else prepared.label_mode
    emitted_mask = np.array([name in prepared.emitted_labels for name in prepared.labels])
    if not finetune_backbone:
        n_tune_good = int(ok_held[: len(tune_ex)].sum())
        label_fit = _fit_label_head(
            prepared,
            train_good + held_good[:n_tune_good],
            np.concatenate([feats_train[ok_train], feats_held[:n_tune_good]]),
            held_good[n_tune_good:],
            feats_held[n_tune_good:],
            emitted_mask,
        )
        heads = _with_label_head(heads, label_fit.validation_head)
    held_logits, held_probs = (
        predict_heads(heads, feats_held, label_mode=label_mode, emitted=emitted_mask)
        if ok_held.any()
        else (np.zeros((0, len(prepared.senders))), np.zeros((0, len(prepared.labels))))
    )
    # Rows of the scored outputs that belong to the tune part / to validation.
    is_tune = np.arange(len(held_ex))[ok_held] < len(tune_ex)
    ok_val = ok_held[len(tune_ex) :]
    if prepared.tuned_on == TUNED_ON_TUNE:
        tuning_rows = is_tune
        tuning_good = [e for e, good in zip(tune_ex, ok_held[: len(tune_ex)], strict=True) if good]
    else:
        tuning_rows = ~is_tune
        tuning_good = [e for e, good in zip(val_ex, ok_val, strict=True) if good]
    tuned = calibrate_and_tune(
        prepared, tuning_good, held_logits[tuning_rows], held_probs[tuning_rows], train_cfg
    )
    # The sender calibration lives in the head from here on (temperature 1).
    sender_cal = tuned["sender_calibration"]
    heads = _calibrated_heads(heads, sender_cal)
    held_logits = calibrated_logits(
        held_logits, sender_cal["scale"], sender_cal["prior_weight"], sender_cal["log_prior"]
    )
    validation_state = {k: v.detach().cpu() for k, v in heads.state_dict().items()}
    heads_state, refit = validation_state, None
    if label_fit is not None:
        # Category thresholds and calibration come from cross-fitting, never from validation.
        tuned["thresholds"] = {k: v.threshold for k, v in label_fit.thresholds.items()}
        tuned["threshold_detail"] = {
            k: dataclasses.asdict(v) for k, v in label_fit.thresholds.items()
        }
        # The model that ships learns from every image; the one scored below did not see
        # validation (its weights are kept too, so `memetag eval` scores the same model).
        all_good = train_good + held_good
        shipped = _refit_sender_heads(
            prepared,
            all_good,
            np.concatenate([feats_train[ok_train], feats_held]),
            train_cfg,
            sender_cal,
        )
        shipped = _with_label_head(shipped, label_fit.shipped_head)
        heads_state = {k: v.detach().cpu() for k, v in shipped.state_dict().items()}
        refit = {
            "n_images": len(all_good),
            "n_category_labelled": label_fit.n_refit,
            "note": "the shipped heads were refit on every image after thresholds and "
            "calibration were fixed; validation metrics are of the heads fitted without the "
            "validation images",
        }
    version = make_version(now, heads_state)
    min_conf = tuned["sender_confidence"]["min_confidence"]
    evaluation = evaluate_outputs(
        prepared,
        version=version,
        model_labels=prepared.labels,
        emitted_labels=prepared.emitted_labels,
        model_senders=prepared.senders,
        sender_logits=held_logits[~is_tune],
        label_probs=held_probs[~is_tune],
        thresholds=tuned["thresholds"],
        temperature=tuned["temperature"],
        sender_min_confidence=min_conf,
        ok=ok_val,
        extra={"stage": "finetune" if finetune_backbone else "heads"},
        label_mode=label_mode,
    )
    evaluation["calibration"] = {
        "temperature": tuned["temperature"],
        "sender_scale": sender_cal["scale"],
        "sender_prior_weight": sender_cal["prior_weight"],
        "fitted_on": prepared.tuned_on,
        "nll_before": tuned["nll_before"],
        "nll_after": tuned["nll_after"],
        "sender_confidence": tuned["sender_confidence"],
    }
    evaluation["thresholds"] = tuned["threshold_detail"]
    evaluation["tuning"] = {
        "tuned_on": prepared.tuned_on,
        "n_images": tuned["n_images"],
        "warning": evaluation["data"]["tuning_warning"],
    }
    evaluation["data"]["embedded_new"] = emb.n_new
    evaluation["data"]["embedded_cached"] = emb.n_cached
    evaluation["data"]["failed_images"] = len(emb.failed)
    evaluation["data"]["stage"] = evaluation["stage"]
    evaluation["data"]["embedding_cache_key"] = None if finetune_backbone else cache_key
    evaluation["data"]["label_mode"] = label_mode
    evaluation["data"]["refit"] = refit
    if label_fit is not None:
        evaluation["label_tuning"] = {
            "method": "cross-validation",
            "folds": label_fit.folds,
            "n_images": label_fit.n_out_of_fold,
            "n_fit": label_fit.n_fit,
        }
        evaluation["calibration"]["labels"] = label_fit.calibration
        evaluation["data"]["label_tuning"] = evaluation["label_tuning"]
        if prepared.tuned_on != TUNED_ON_TUNE:
            evaluation["data"]["tuning_warning"] = OPTIMISTIC_NOTE
            evaluation["tuning"]["warning"] = OPTIMISTIC_NOTE
    elif prepared.tuned_on != TUNED_ON_TUNE:
        evaluation["data"]["tuning_warning"] = FINETUNE_OPTIMISTIC_NOTE
        evaluation["tuning"]["warning"] = FINETUNE_OPTIMISTIC_NOTE
    checkpoint = Checkpoint(
        version=version,
        created_at=now.isoformat(timespec="seconds"),
        model_config=model_config_dict(model_cfg),
        data_config=dict(data_config),
        labels=list(prepared.labels),
        senders=list(prepared.senders),
        thresholds={k: float(v) for k, v in tuned["thresholds"].items()},
        temperature=float(tuned["temperature"]),
        sender_min_confidence=float(min_conf),
        heads_state=heads_state,
        backbone_state=backbone_state,
        metrics=evaluation["summary"],
        data_summary=evaluation["data"],
        emitted_labels=list(prepared.emitted_labels),
        label_mode=label_mode,
        validation_heads_state=validation_state if refit else None,
    )
    return TrainResult(
        checkpoint=checkpoint,
        evaluation=evaluation,
        prepared=prepared,
        train_config=train_cfg,
        n_embedded=emb.n_new,
        n_cached=emb.n_cached,
        failed_images=emb.failed,
    )


def _fit_label_head(
    prepared: PreparedData,
    fit_examples: Sequence[Example],
    fit_features: np.ndarray,
    val_examples: Sequence[Example],
    val_features: np.ndarray,
    emitted: np.ndarray,
) -> LabelFit:
    """The category head from train + tune (calibration and thresholds by cross-fitting
    there), refit with validation for the model that ships: ``classifier.labelhead``."""
    n_labels = len(prepared.labels)
    fy, fm = stack_label_targets(fit_examples, n_labels)
    vy, vm = stack_label_targets(val_examples, n_labels)
    return fit_labels(
        (fit_features, fy, fm),
        (val_features, vy, vm),
        prepared.labels,
        mode=prepared.label_mode,
        emitted=emitted,
    )


def _with_label_head(heads: Any, label_head: Any) -> Any:
    """A copy of ``heads`` whose category layer holds ``label_head``'s weights."""
    import torch

    from classifier.model import Heads

    n_labels = label_head.weight.shape[0]
    out = Heads(heads.in_features, heads.n_senders, n_labels, dropout=heads.dropout.p)
    with torch.no_grad():
        if heads.sender is not None:
            out.sender.load_state_dict(heads.sender.state_dict())
        if out.label is not None:
            out.label.weight.copy_(torch.from_numpy(label_head.weight).float())
            out.label.bias.copy_(torch.from_numpy(label_head.bias).float())
    out.eval()
    return out


def _refit_sender_heads(
    prepared: PreparedData,
    examples: Sequence[Example],
    features: np.ndarray,
    cfg: TrainConfig,
    calibration: dict,
) -> Any:
    """The sender head fitted as in ``train_model`` on every image (train, tune, validation),
    with the calibration fitted earlier (the prior it puts back is now every image's)."""
    data = _head_data(prepared, examples, features)
    n_senders = len(prepared.senders)
    head = _fit_sender(data, n_senders, cfg)
    log_prior = np.log(class_prior(data.sender_targets, n_senders)) if n_senders else np.zeros(0)
    head = fold_calibration(head, calibration["scale"], calibration["prior_weight"], log_prior)
    return _sender_only_heads(head)


def _fit_sender(data: HeadData, n_senders: int, cfg: TrainConfig) -> SenderHead:
    """The stage-1 sender head (``classifier.senderhead``) on these rows."""
    return fit_sender_head(
        data.features,
        data.sender_targets,
        n_senders,
        label_targets=data.label_targets,
        label_mask=data.label_mask,
        c=cfg.sender_c,
        c_categories=cfg.sender_category_c,
    )


def _sender_only_heads(head: SenderHead) -> Any:
    """``Heads`` holding this sender head and no category layer (it is added later)."""
    import torch

    from classifier.model import Heads

    n_senders, dim = head.weight.shape
    heads = Heads(dim, n_senders, 0)
    if heads.sender is not None:
        with torch.no_grad():
            heads.sender.weight.copy_(torch.from_numpy(head.weight).float())
            heads.sender.bias.copy_(torch.from_numpy(head.bias).float())
    heads.eval()
    return heads


def _calibrated_heads(heads: Any, calibration: dict) -> Any:
    """``heads`` with the sender calibration folded into its sender layer (in place)."""
    import torch

    if heads.sender is None:
        return heads
    layer = heads.sender
    head = SenderHead(layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy())
    folded = fold_calibration(
        head, calibration["scale"], calibration["prior_weight"], calibration["log_prior"]
    )
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(folded.weight).float())
        layer.bias.copy_(torch.from_numpy(folded.bias).float())
    return heads


def embedding_cache_key(model_cfg: ModelConfig, seed: int) -> str:
    """Cache key for frozen-backbone features: the preprocessing key, plus the seed for a
    random-init backbone (each seed builds a different one)."""
    from classifier.backbone import preprocessing_key

    key = preprocessing_key(model_cfg)
    return f"{key}.seed{seed}" if model_cfg.pretrained == "none" else key


def checkpoint_stage(ckpt: Any) -> str:
    """ "heads" (frozen backbone) or "finetune"."""
    stage = (ckpt.data_summary or {}).get("stage")
    if stage in ("heads", "finetune"):
        return stage
    return "finetune" if ckpt.backbone_state is not None else "heads"


def checkpoint_model_config(ckpt: Any, current: ModelConfig) -> ModelConfig:
    """The ModelConfig a checkpoint was trained with; runtime settings come from ``current``."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    saved = {k: v for k, v in (ckpt.model_config or {}).items() if k in known}
    runtime = ("device", "batch_size", "decode_workers", "max_pixels")
    return dataclasses.replace(ModelConfig(**saved), **{k: getattr(current, k) for k in runtime})


def evaluate_checkpoint(
    ckpt: Any,
    prepared: PreparedData,
    *,
    model_cfg: ModelConfig,
    cache_dir: Path | None,
    on_progress: Progress = _noop,
) -> dict:
    """Evaluate a saved model on ``prepared``'s validation images with its own thresholds,
    temperature and confidence line. A heads-only checkpoint reuses the embedding cache.

    A checkpoint whose shipped heads were refit on every image is scored with the heads it
    kept from before the refit (fitted without its validation images), so neither its own
    validation nor a later split's overlaps with what the scored heads learnt from.
    """
    from classifier.backbone import preprocessing_key
    from classifier.checkpoint import build_model

    saved_cfg = checkpoint_model_config(ckpt, model_cfg)
    model, data_config = build_model(ckpt, saved_cfg, validation=True)
    model.cpu()
    stage = checkpoint_stage(ckpt)
    if stage == "heads":
        key = (ckpt.data_summary or {}).get("embedding_cache_key") or preprocessing_key(saved_cfg)
        cache = EmbeddingCache(cache_dir, key)
    else:
        cache = EmbeddingCache(None, f"model:{ckpt.version}")
    val = prepared.val
    emb = embed_examples(
        model.backbone,
        data_config,
        val,
        model_cfg=saved_cfg,
        cache=cache,
        on_progress=on_progress,
        stage="score",
    )
    model.cpu()
    label_mode = getattr(ckpt, "label_mode", MULTI)
    emitted = np.array([name in ckpt.emitted_labels for name in ckpt.labels], dtype=bool)
    if emb.ok.any():
        sender_logits, label_probs = predict_heads(
            model.heads, emb.features[emb.ok], label_mode=label_mode, emitted=emitted
        )
    else:
        sender_logits = np.zeros((0, len(ckpt.senders)))
        label_probs = np.zeros((0, len(ckpt.labels)))
    evaluation = evaluate_outputs(
        prepared,
        version=ckpt.version,
        model_labels=ckpt.labels,
        emitted_labels=ckpt.emitted_labels,
        model_senders=ckpt.senders,
        sender_logits=sender_logits,
        label_probs=label_probs,
        thresholds=ckpt.thresholds,
        temperature=ckpt.temperature,
        sender_min_confidence=ckpt.sender_min_confidence,
        ok=emb.ok,
        extra={"stage": stage},
        label_mode=label_mode,
    )
    evaluation["calibration"]["sender_confidence"] = {"min_confidence": ckpt.sender_min_confidence}
    # How this model's thresholds were fitted, not how a run on the current split would fit them.
    # Checkpoints from before the tune split always tuned on their validation images.
    saved = ckpt.data_summary or {}
    tuned_on = saved.get("tuned_on") or "validation"
    # Only models with cross-fitted category thresholds (stage 1 since they exist) kept them
    # off validation when there was no tune part.
    note = OPTIMISTIC_NOTE if saved.get("label_tuning") else FINETUNE_OPTIMISTIC_NOTE
    warning = None if tuned_on == TUNED_ON_TUNE else note
    evaluation["data"]["tuned_on"] = tuned_on
    evaluation["data"]["tuning_warning"] = warning
    evaluation["calibration"]["fitted_on"] = tuned_on
    evaluation["tuning"] = {
        "tuned_on": tuned_on,
        "n_images": saved.get("n_tune" if tuned_on == TUNED_ON_TUNE else "n_val"),
        "warning": warning,
    }
    for key in ("label_tuning", "refit"):
        evaluation["data"][key] = saved.get(key)
    if saved.get("label_tuning"):
        evaluation["label_tuning"] = saved["label_tuning"]
    return evaluation


__all__ = [
    "NO_SENDER",
    "HeadData",
    "PreparedData",
    "TrainResult",
    "calibrate_and_tune",
    "class_weights",
    "evaluate_checkpoint",
    "evaluate_outputs",
    "finetune",
    "label_pos_weight",
    "make_version",
    "predict_heads",
    "prepare_data",
    "train_heads",
    "train_model",
]
