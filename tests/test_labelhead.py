"""The category head: exclusive vs multi-label, cross-fitted calibration and thresholds, the refit
that ships, few labels per category, and the validation figure's interval."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from datetime import timedelta

import imagehash
import numpy as np
import pytest
from PIL import Image

from classifier.config import TrainConfig
from classifier.dataset import Example, resolve_label_votes
from classifier.evaluate import macro_f1_interval
from classifier.labelhead import (
    EXCLUSIVE,
    MULTI,
    detect_label_mode,
    fit_label_head,
    fit_labels,
    head_logits,
    label_probabilities,
    predict_label_sets,
    stratified_folds,
)
from classifier.train import prepare_data, train_model
from tests.ml_helpers import tiny_model_config
from tests.test_train import LABELS, SENDERS, T0, learnable_image

# --- synthetic features ------------------------------------------------------------------------


def clusters(n_per: int, n_labels: int = 4, dim: int = 32, seed: int = 0, spread: float = 1.0):
    """Features around one centre per label (one label per row), as (X, Y, mask)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_labels, dim)) * 2.0
    y_idx = np.repeat(np.arange(n_labels), n_per)
    x = centres[y_idx] + rng.normal(size=(len(y_idx), dim)) * spread
    y = np.zeros((len(y_idx), n_labels), np.float32)
    y[np.arange(len(y_idx)), y_idx] = 1
    return x, y, np.ones_like(y, bool)


def test_label_mode_is_detected_from_the_labelling():
    one_each = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)
    assert detect_label_mode(one_each) == EXCLUSIVE  # unlabelled rows do not count
    assert detect_label_mode(np.array([[1, 1, 0], [0, 1, 0]], np.float32)) == MULTI
    assert detect_label_mode(np.array([[1, 0], [1, 0]], np.float32)) == MULTI  # one label only
    assert detect_label_mode(np.zeros((3, 2), np.float32)) == MULTI


def test_folds_are_stratified_and_deterministic():
    _, y, _ = clusters(5, n_labels=3)
    folds = stratified_folds(y, np.arange(len(y)), 5)
    assert (folds >= 0).all()
    for f in range(5):
        assert y[folds == f].sum(axis=0).tolist() == [1, 1, 1]  # every label in every fold
    assert (stratified_folds(y, np.arange(len(y)), 5) == folds).all()


def test_exclusive_head_gives_one_calibrated_label_per_image():
    x, y, m = clusters(8, seed=1, spread=2.5)
    xt, yt, _ = clusters(30, seed=1, spread=2.5)
    names = ["a", "b", "c", "d"]
    fit = fit_labels(
        (x, y, m), (x[:0], y[:0], m[:0]), names, mode=EXCLUSIVE, emitted=np.ones(4, bool)
    )
    assert fit.folds == 5 and fit.n_out_of_fold == len(x)
    probs = label_probabilities(head_logits(fit.shipped_head, xt), EXCLUSIVE, np.ones(4, bool))
    assert np.allclose(probs.sum(axis=1), 1.0)
    th = np.array([fit.thresholds[n].threshold for n in names])
    pred = predict_label_sets(probs, EXCLUSIVE, th, np.ones(4, bool))
    assert (pred.sum(axis=1) == 1).all()
    assert (pred.argmax(axis=1) == yt.argmax(axis=1)).mean() > 0.8
    assert 0.25 <= fit.calibration["temperature"] <= 20.0
    # Deterministic: the same data give the same weights.
    again = fit_label_head(x, y, m, mode=EXCLUSIVE)
    assert np.array_equal(again.weight, fit_label_head(x, y, m, mode=EXCLUSIVE).weight)


def test_multi_label_head_thresholds_and_at_least_one_label():
    x, y, m = clusters(12, seed=2, spread=2.0)
    names = ["a", "b", "c", "d"]
    fit = fit_labels((x, y, m), (x[:0], y[:0], m[:0]), names, mode=MULTI, emitted=np.ones(4, bool))
    assert all(t.source == "tuned" for t in fit.thresholds.values())
    assert all(fit.calibration[n][0] > 0 for n in names)  # Platt never flips a ranking
    xt, yt, _ = clusters(30, seed=2, spread=2.0)
    probs = label_probabilities(head_logits(fit.shipped_head, xt), MULTI, np.ones(4, bool))
    th = np.array([fit.thresholds[n].threshold for n in names])
    pred = predict_label_sets(probs, MULTI, th, np.ones(4, bool))
    assert pred.any(axis=1).all()  # a category-labelled kind of image always gets one
    assert 1.0 <= pred.sum(axis=1).mean() <= 1.5
    # Without the rule, an image under every threshold gets nothing.
    bare = predict_label_sets(probs, MULTI, np.full(4, 2.0), np.ones(4, bool), at_least_one=False)
    assert not bare.any()


def test_a_label_that_is_not_emitted_is_never_predicted():
    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.1, 0.3]])
    emitted = np.array([True, False, True])
    assert predict_label_sets(probs, EXCLUSIVE, np.zeros(3), emitted).tolist() == [
        [False, False, True],
        [True, False, False],
    ]
    multi = predict_label_sets(probs, MULTI, np.full(3, 0.5), emitted)
    assert not multi[:, 1].any()


def test_macro_f1_interval_brackets_the_figure_and_narrows_with_more_images():
    rng = np.random.default_rng(0)

    def interval(n: int) -> list[float]:
        y_idx = rng.integers(0, 3, n)
        y = np.eye(3, dtype=np.float32)[y_idx]
        right = rng.random(n) < 0.7
        p_idx = np.where(right, y_idx, (y_idx + 1) % 3)
        return macro_f1_interval(y, np.ones_like(y, bool), np.eye(3, dtype=bool)[p_idx])

    small, large = interval(12), interval(600)
    assert small[0] < 0.7 < small[1] and large[0] < 0.7 < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 2
    assert macro_f1_interval(np.zeros((2, 3)), np.zeros((2, 3), bool), np.zeros((2, 3))) is None
    # Six images, all right: the bootstrap alone would say [1, 1]; six images cannot say that.
    six = np.eye(6, dtype=np.float32)
    lo, hi = macro_f1_interval(six, np.ones_like(six, bool), six.astype(bool))
    assert hi == 1.0 and lo < 0.7


# --- the pipeline, on a tiny model -------------------------------------------------------------


def exclusive_examples(directory, per_label: int, seed: int = 0) -> list[Example]:
    """``per_label`` images of each label, one label per image, in a shuffled time order."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(per_label * len(LABELS))
    examples = []
    for slot, i in enumerate(order):
        label = LABELS[i % len(LABELS)]
        sender = SENDERS[i % len(SENDERS)]
        buf = io.BytesIO()
        img = learnable_image([label], sender, seed * 100_000 + int(i))
        img.save(buf, "PNG")
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        path = directory / f"{sha}.png"
        path.write_bytes(data)
        targets, mask = resolve_label_votes({label: 1}, LABELS)
        phash = str(imagehash.phash(Image.open(io.BytesIO(data))))
        when = T0 + timedelta(hours=6 * slot)
        examples.append(Example(sha, path, phash, when, sender, targets, mask))
    return examples


def _cfgs(**train):
    values = {"min_posts_per_person": 2, "epochs": 20, "seed": 0, **train}
    return tiny_model_config(decode_workers=0, batch_size=32), dataclasses.replace(
        TrainConfig(), **values
    )


@pytest.fixture(scope="module")
def few_labels(tmp_path_factory):
    """Five labelled images per category, as a chat admin's first taps."""
    root = tmp_path_factory.mktemp("few")
    examples = exclusive_examples(root / "images", 5)
    model_cfg, train_cfg = _cfgs()
    result = train_model(
        examples, labels=LABELS, model_cfg=model_cfg, train_cfg=train_cfg, cache_dir=root / "c"
    )
    return root, examples, result


def test_with_few_labels_per_category_every_category_is_emitted(few_labels):
    _, _, result = few_labels
    data = result.evaluation["data"]
    # The training part alone has fewer than min_label_positives (5) of some label ...
    assert min(data["label_positives_train"].values()) < 5
    # ... but the model that ships learns from all five of each, so every label is emitted.
    assert data["label_positives"] == dict.fromkeys(LABELS, 5)
    assert sorted(result.checkpoint.emitted_labels) == sorted(LABELS)
    assert data["not_emitted"] == {}


def test_exclusive_labelling_gives_one_label_per_image(few_labels, tmp_path):
    from classifier.checkpoint import save_checkpoint
    from classifier.predictor import Predictor

    root, examples, result = few_labels
    ckpt = result.checkpoint
    assert (
        ckpt.label_mode == EXCLUSIVE and result.evaluation["categories"]["label_mode"] == EXCLUSIVE
    )
    assert result.evaluation["categories"]["labels_per_image"] == 1.0
    save_checkpoint(ckpt, tmp_path / "m.pt")
    unseen = exclusive_examples(tmp_path / "unseen", 3, seed=7)
    predictor = Predictor(tmp_path / "m.pt", tiny_model_config(decode_workers=0))
    try:
        results = predictor.predict_files([e.path for e in unseen])
    finally:
        predictor.close()
    assert [len(r.predicted) for r in results] == [1] * len(unseen)
    for r in results:
        assert np.isclose(sum(r.labels.values()), 1.0, atol=1e-4)
        assert r.predicted[0] == max(r.labels, key=r.labels.get)


def test_thresholds_never_come_from_validation_on_a_tiny_store(few_labels):
    """No tune part on 15 images: the category calibration is cross-fitted on training, so
    scrambling every validation answer changes nothing the model decides with, and the report
    says what was fitted on validation (the sender's calibration)."""
    root, examples, result = few_labels
    data = result.evaluation["data"]
    assert data["tuned_on"] == "validation" and data["n_tune"] == 0
    assert result.evaluation["label_tuning"]["method"] == "cross-validation"
    assert "sender metrics are optimistic" in data["tuning_warning"]
    model_cfg, train_cfg = _cfgs()
    # Every validation answer moved to another validation image: the counts per label (what
    # decides which labels are emitted) stay, every answer the scored images had is gone.
    val = [e.sha256 for e in result.prepared.val]
    by_sha = {e.sha256: e for e in examples}
    moved = {sha: by_sha[val[(i + 1) % len(val)]].label_targets for i, sha in enumerate(val)}
    assert any(not np.array_equal(moved[sha], by_sha[sha].label_targets) for sha in val)
    flipped = [
        dataclasses.replace(e, label_targets=moved[e.sha256]) if e.sha256 in moved else e
        for e in examples
    ]
    again = train_model(
        flipped, labels=LABELS, model_cfg=model_cfg, train_cfg=train_cfg, cache_dir=root / "c"
    )
    assert again.checkpoint.thresholds == result.checkpoint.thresholds
    assert again.evaluation["calibration"]["labels"] == result.evaluation["calibration"]["labels"]
    old, new = result.checkpoint.validation_heads_state, again.checkpoint.validation_heads_state
    assert all(np.array_equal(old[k].numpy(), new[k].numpy()) for k in old)


def test_the_model_that_ships_is_refit_on_every_labelled_image(few_labels):
    from classifier.embeddings import EmbeddingCache

    root, examples, result = few_labels
    ckpt, prepared = result.checkpoint, result.prepared
    everything = prepared.train + prepared.tune + prepared.val
    assert ckpt.data_summary["refit"]["n_images"] == len(everything) == 15
    assert ckpt.data_summary["refit"]["n_category_labelled"] == 15
    # The shipped category head is exactly the head fitted on all 15 images ...
    cache = EmbeddingCache(root / "c", ckpt.data_summary["embedding_cache_key"])
    feats = cache.get_many([e.sha256 for e in everything])
    y = np.stack([e.label_targets for e in everything])
    m = np.stack([e.label_mask for e in everything])
    n_fit = len(prepared.train) + len(prepared.tune)
    fit = fit_labels(
        (feats[:n_fit], y[:n_fit], m[:n_fit]),
        (feats[n_fit:], y[n_fit:], m[n_fit:]),
        LABELS,
        mode=EXCLUSIVE,
        emitted=np.ones(3, bool),
    )
    shipped = ckpt.heads_state["label.weight"].numpy()
    assert np.allclose(shipped, fit.shipped_head.weight, atol=1e-5)
    # ... which differs from the head the validation figures come from (it never saw those 3).
    scored = ckpt.validation_heads_state["label.weight"].numpy()
    assert np.allclose(scored, fit.validation_head.weight, atol=1e-5)
    assert not np.allclose(shipped, scored, atol=1e-3)


def test_prepare_data_counts_positives_over_every_labelled_image(few_labels):
    _, examples, _ = few_labels
    prepared = prepare_data(examples, LABELS, _cfgs()[1])
    assert prepared.label_positives == dict.fromkeys(LABELS, 5)
    assert sum(prepared.label_positives_train.values()) == len(prepared.train)
    assert prepared.label_mode == EXCLUSIVE
