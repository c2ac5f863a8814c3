"""Training on generated images: label resolution, senders, the embedding cache, heads, fine-tuning."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import imagehash
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from classifier.config import TrainConfig
from classifier.dataset import (
    NO_SENDER,
    OTHER,
    Example,
    build_sender_vocab,
    encode_senders,
    resolve_label_votes,
)
from classifier.embeddings import EmbeddingCache
from classifier.train import (
    class_weights,
    evaluate_checkpoint,
    label_pos_weight,
    train_model,
)
from tests.ml_helpers import tiny_model_config

LABELS = ["meme", "photo", "news"]
SENDERS = ["Person A", "Person B", "Person C"]
# Each sender's images have their own background colour; each label its own drawn element.
_BACKGROUND = {"Person A": (60, 90, 200), "Person B": (220, 200, 40), "Person C": (128, 128, 128)}
T0 = datetime(2022, 1, 1, tzinfo=UTC)


def learnable_image(labels: list[str], sender: str, seed: int, size: int = 80) -> Image.Image:
    """Sender -> background colour; meme -> red disc; photo -> green noise; news -> text bars.
    Random blocks make every image's perceptual hash different (no accidental repost leaks)."""
    rng = random.Random(seed)
    bg = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in _BACKGROUND[sender])
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.randrange(size), rng.randrange(size)
        w, h = rng.randrange(10, size // 2), rng.randrange(10, size // 2)
        shade = rng.choice([-70, 70])
        draw.rectangle(
            [x0, y0, x0 + w, y0 + h], fill=tuple(max(0, min(255, c + shade)) for c in bg)
        )
    if "photo" in labels:
        arr = np.asarray(img).astype(np.int16)
        noise = np.random.default_rng(seed).integers(-60, 60, arr.shape)
        arr[..., 1] += 60
        img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
    if "news" in labels:
        for y in range(8, size - 8, 10):
            draw.rectangle([6, y, rng.randint(size // 2, size - 6), y + 3], fill=(0, 0, 0))
    if "meme" in labels:
        r = rng.randint(size // 6, size // 3)
        cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(230, 30, 30))
    return img


def generate(n: int, seed: int = 0) -> list[tuple[bytes, str, list[str], datetime]]:
    """(PNG bytes, sender, labels, time) with uneven senders and ~40 % of each label."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        sender = rng.choices(SENDERS, weights=[5, 3, 2])[0]
        labels = [name for name in LABELS if rng.random() < 0.4] or [rng.choice(LABELS)]
        buf = io.BytesIO()
        learnable_image(labels, sender, seed * 100_000 + i).save(buf, "PNG")
        out.append((buf.getvalue(), sender, labels, T0 + timedelta(days=i)))
    return out


def make_examples(directory: Path, n: int, seed: int = 0) -> list[Example]:
    directory.mkdir(parents=True, exist_ok=True)
    examples = []
    for data, sender, labels, when in generate(n, seed):
        sha = hashlib.sha256(data).hexdigest()
        path = directory / f"{sha}.png"
        path.write_bytes(data)
        targets, mask = resolve_label_votes(dict.fromkeys(labels, 1), LABELS)
        phash = str(imagehash.phash(Image.open(io.BytesIO(data))))
        examples.append(Example(sha, path, phash, when, sender, targets, mask))
    return examples


def _cfgs(**train):
    model_cfg = tiny_model_config(decode_workers=0, batch_size=32)
    values = {"min_posts_per_person": 3, "epochs": 60, "seed": 0, **train}
    return model_cfg, dataclasses.replace(TrainConfig(), **values)


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run on 150 generated images, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("train")
    examples = make_examples(root / "images", 150)
    model_cfg, train_cfg = _cfgs()
    result = train_model(
        examples,
        labels=LABELS,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        cache_dir=root / "cache",
        now=NOW,
    )
    return root, examples, result


# --- label resolution and senders --------------------------------------------------------------


def test_label_resolution_rule():
    labels = ["meme", "photo", "news", "weird"]
    # Tagged image: positive meme, explicit negative photo, tie on news, silence on weird.
    t, m = resolve_label_votes({"meme": 2, "photo": -1, "news": 0, "unknown_label": 3}, labels)
    assert t.tolist() == [1, 0, 0, 0]
    assert m.tolist() == [True, True, False, True]  # the tie is excluded, silence is negative
    # No positive label: no category targets at all (negatives and ties alike).
    t, m = resolve_label_votes({"photo": -2, "news": 0}, labels)
    assert not m.any() and not t.any()
    t, m = resolve_label_votes({}, labels)
    assert not m.any()


def test_quiet_people_are_folded_into_other():
    train = ["Person A"] * 5 + ["Person B"] * 3 + ["Person C"] * 1 + [None]
    vocab = build_sender_vocab(train, min_posts=3)
    assert vocab == ["Person A", "Person B", OTHER]
    codes = encode_senders(["Person C", "Person D", None, "Person B"], vocab)
    assert codes.tolist() == [2, 2, NO_SENDER, 1]
    # Nobody folded, nobody new: no "other" class.
    assert build_sender_vocab(["Person A"] * 3 + ["Person B"] * 3, min_posts=3) == [
        "Person A",
        "Person B",
    ]
    # A newcomer only in validation still needs a class to map to.
    assert build_sender_vocab(["Person A"] * 3, min_posts=3, other_senders=["Person E"]) == [
        "Person A",
        OTHER,
    ]


def test_imbalance_weights():
    w = class_weights(np.array([0, 0, 0, 0, 1, -1]), 3)
    assert w[1] > w[0] and w[2] == 1.0  # an absent class keeps a neutral weight
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], np.float32)
    mask = np.array([[1, 1], [1, 1], [1, 0], [1, 1]], bool)
    assert label_pos_weight(y, mask).tolist() == [3.0, 2.0]


# --- the embedding cache -----------------------------------------------------------------------


def test_embedding_cache_persists_and_reloads(tmp_path):
    cache = EmbeddingCache(tmp_path, "tiny.none.64.crop.p1/x")
    assert cache.missing(["a", "b"]) == ["a", "b"]
    cache.add(["a", "b"], np.array([[1, 2], [3, 4]], np.float32))
    cache.add(["c"], np.array([[5, 6]], np.float32))
    again = EmbeddingCache(tmp_path, "tiny.none.64.crop.p1/x")
    assert again.missing(["a", "c", "d"]) == ["d"]
    assert again.get_many(["c", "a"]).tolist() == [[5, 6], [1, 2]]
    # A shard the index doesn't list (a crash between the two writes) is ignored.
    (again.dir / "shard-000099.npz").write_bytes(b"garbage")
    assert len(EmbeddingCache(tmp_path, "tiny.none.64.crop.p1/x")) == 3
    assert EmbeddingCache(tmp_path, "another-key").missing(["a"]) == ["a"]
    memory = EmbeddingCache(None, "m")
    memory.add(["z"], np.ones((1, 3), np.float32))
    assert memory.get_many(["z"]).shape == (1, 3)


def test_retrain_only_embeds_new_images_and_is_deterministic(trained, tmp_path):
    root, examples, first = trained
    assert first.n_embedded == 150 and first.n_cached == 0
    model_cfg, train_cfg = _cfgs()
    extra = make_examples(root / "images", 160, seed=0)[150:]
    again = train_model(
        examples,
        labels=LABELS,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        cache_dir=root / "cache",
        now=NOW,
    )
    assert again.n_embedded == 0 and again.n_cached == 150
    assert again.checkpoint.version == first.checkpoint.version
    for k, v in first.checkpoint.heads_state.items():
        assert torch.equal(v, again.checkpoint.heads_state[k])
    grown = train_model(
        examples + extra,
        labels=LABELS,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        cache_dir=root / "cache",
        now=NOW,
    )
    assert grown.n_embedded == 10


# --- training quality --------------------------------------------------------------------------


def test_heads_learn_categories_and_senders(trained):
    _, _, result = trained
    ev = result.evaluation
    assert ev["n_val"] == 30 and ev["data"]["dropped_leaks"] == 0
    assert ev["categories"]["macro_f1"] >= 0.8, ev["categories"]["per_label"]
    assert ev["sender"]["top1"] > ev["baselines"]["majority"]["top1"] + 0.2
    ckpt = result.checkpoint
    assert ckpt.labels == LABELS and sorted(ckpt.emitted_labels) == sorted(LABELS)
    assert set(ckpt.senders) == set(SENDERS)
    assert set(ckpt.thresholds) == set(LABELS)
    assert all(0.0 < t < 1.0 for t in ckpt.thresholds.values())
    assert ckpt.temperature > 0 and 0.0 <= ckpt.sender_min_confidence < 1.0
    assert ckpt.metrics["score"] == ev["summary"]["score"]


def test_tuning_never_sees_validation(trained):
    """Category thresholds come from cross-fitting on train + tune, the temperature and the
    confidence line from tune outputs alone: retraining with every validation answer scrambled
    leaves them, and the heads the metrics are computed with, exactly as they were. Only the
    shipped heads, refit on every image once those were fixed, learn from validation."""
    from classifier.train import calibrate_and_tune, predict_heads, prepare_data

    root, examples, first = trained
    model_cfg, train_cfg = _cfgs()
    prepared = first.prepared
    assert prepared.tuned_on == "tune" and first.evaluation["tuning"]["tuned_on"] == "tune"
    assert first.evaluation["data"]["tuning_warning"] is None
    tune_sha = {e.sha256 for e in prepared.tune}
    val_sha = {e.sha256 for e in prepared.val}
    train_sha = {e.sha256 for e in prepared.train}
    assert len(tune_sha) == 23 and len(val_sha) == 30 and len(train_sha) == 97
    assert not tune_sha & val_sha and not train_sha & (tune_sha | val_sha)
    assert first.evaluation["tuning"]["n_images"] == 23
    assert max(e.posted_at for e in prepared.tune) < min(e.posted_at for e in prepared.val)

    # Fitting on the tune outputs alone reproduces the checkpoint's decision settings.
    from classifier.checkpoint import build_model

    model, _ = build_model(first.checkpoint, model_cfg, validation=True)
    cache = EmbeddingCache(root / "cache", first.evaluation["data"]["embedding_cache_key"])
    logits, probs = predict_heads(model.heads, cache.get_many([e.sha256 for e in prepared.tune]))
    refit = calibrate_and_tune(prepared, prepared.tune, logits, probs, train_cfg)
    assert first.evaluation["label_tuning"]["method"] == "cross-validation"
    assert first.evaluation["label_tuning"]["n_images"] == 97 + 23
    assert refit["temperature"] == first.checkpoint.temperature
    assert refit["sender_confidence"]["min_confidence"] == first.checkpoint.sender_min_confidence

    # Scramble every validation answer (labels flipped, senders rotated) and train again.
    rotate = dict(zip(SENDERS, SENDERS[1:] + SENDERS[:1], strict=True))
    scrambled = [
        dataclasses.replace(e, sender=rotate[e.sender], label_targets=1.0 - e.label_targets)
        if e.sha256 in val_sha
        else e
        for e in examples
    ]
    assert [e.sha256 for e in prepare_data(scrambled, LABELS, train_cfg).val] == [
        e.sha256 for e in prepared.val
    ]
    again = train_model(
        scrambled,
        labels=LABELS,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        cache_dir=root / "cache",
        now=NOW,
    )
    ckpt, old = again.checkpoint, first.checkpoint
    assert ckpt.thresholds == old.thresholds
    assert ckpt.temperature == old.temperature
    assert ckpt.sender_min_confidence == old.sender_min_confidence
    # The scored heads never saw validation either ...
    for k, v in old.validation_heads_state.items():
        assert torch.equal(v, ckpt.validation_heads_state[k]), k
    # ... the shipped ones did, on purpose: they were refit with it.
    assert ckpt.version != old.version
    assert not torch.equal(ckpt.heads_state["label.weight"], old.heads_state["label.weight"])
    # ... while validation itself did change, so it is what the metrics are computed on.
    assert again.evaluation["categories"]["macro_f1"] < first.evaluation["categories"]["macro_f1"]


def test_saved_checkpoint_scores_the_same(trained, tmp_path):
    from classifier.checkpoint import load_checkpoint, save_checkpoint
    from classifier.train import prepare_data

    root, examples, result = trained
    path = tmp_path / "m.pt"
    save_checkpoint(result.checkpoint, path)
    model_cfg, train_cfg = _cfgs()
    prepared = prepare_data(examples, LABELS, train_cfg)
    ev = evaluate_checkpoint(
        load_checkpoint(path), prepared, model_cfg=model_cfg, cache_dir=root / "cache"
    )
    assert np.isclose(ev["summary"]["score"], result.evaluation["summary"]["score"])


def test_undecodable_validation_image_is_left_out(trained, tmp_path):
    from classifier.train import prepare_data

    root, examples, result = trained
    model_cfg, train_cfg = _cfgs()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    newest = max(range(len(examples)), key=lambda i: examples[i].posted_at)
    changed = list(examples)
    changed[newest] = dataclasses.replace(examples[newest], sha256="0" * 64, path=broken)
    prepared = prepare_data(changed, LABELS, train_cfg)
    ev = evaluate_checkpoint(result.checkpoint, prepared, model_cfg=model_cfg, cache_dir=None)
    assert ev["n_val"] == 29 and ev["data"]["n_val"] == 30
    assert ev["tuning"]["tuned_on"] == "tune"  # how this checkpoint was tuned


def test_rare_labels_are_not_emitted(tmp_path):
    examples = make_examples(tmp_path / "images", 40)
    # Only two labelled images keep "news" (train, tune and validation together: the shipped
    # model learns from all of them); it must be reported and not emitted.
    kept = 0
    for e in examples:
        if e.label_targets[2] > 0:
            kept += 1
            if kept > 2:
                e.label_targets[2] = 0.0
    model_cfg, train_cfg = _cfgs(epochs=5)
    result = train_model(
        examples, labels=LABELS, model_cfg=model_cfg, train_cfg=train_cfg, cache_dir=None
    )
    assert "news" not in result.checkpoint.emitted_labels
    assert result.evaluation["data"]["not_emitted"] == {"news": 2}
    # 40 images leave 6 for a tune part: too few, so the sender's temperature and confidence
    # line are tuned on validation, loudly; category thresholds are cross-fitted on training.
    data = result.evaluation["data"]
    assert data["tuned_on"] == "validation" and data["n_tune"] == 0 and data["n_train"] == 32
    assert "sender metrics are optimistic" in data["tuning_warning"]
    assert result.evaluation["label_tuning"]["method"] == "cross-validation"
    assert result.evaluation["label_tuning"]["n_images"] == data["n_category_labelled_train"]
    assert result.evaluation["tuning"]["n_images"] == 8
    assert result.checkpoint.data_summary["tuned_on"] == "validation"
    assert not result.evaluation["categories"]["per_label"]["news"]["emitted"]


def test_finetune_updates_the_backbone(tmp_path):
    examples = make_examples(tmp_path / "images", 24)
    model_cfg, train_cfg = _cfgs(
        epochs=3, finetune_epochs=1, finetune_batch_size=8, min_posts_per_person=1
    )
    result = train_model(
        examples,
        labels=LABELS,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        cache_dir=tmp_path / "cache",
        finetune_backbone=True,
    )
    ckpt = result.checkpoint
    assert ckpt.backbone_state is not None
    assert ckpt.data_summary["stage"] == "finetune"
    assert ckpt.data_summary["embedding_cache_key"] is None
    from classifier.checkpoint import build_model

    model, _ = build_model(ckpt, model_cfg)  # the tuned weights load back
    assert model.num_features > 0
