"""The sender head: it beats the majority and recent-activity guesses where members have tastes,
and says it cannot (always "unsure") where they have none."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from classifier.config import TrainConfig
from classifier.dataset import Example, resolve_label_votes
from classifier.senderhead import (
    ABSENT_LOGIT,
    calibrated_logits,
    class_prior,
    fit_sender_calibration,
    fit_sender_head,
    fold_calibration,
    sender_logits,
)
from classifier.thresholds import NEVER_NAME_SENDER
from classifier.train import (
    HeadData,
    calibrate_and_tune,
    evaluate_outputs,
    prepare_data,
)
from memetag.cli import main
from memetag.demo import CATEGORIES
from tests.helpers.tastes import bayes_top1, make_chat, sample_chat
from tests.test_reproducible import CONFIG

LABELS = list(CATEGORIES)


def _synthetic(n: int, *, tastes: bool, seed: int = 0, dim: int = 48):
    """Examples of the tastes generator with features that show each image's category (a
    random direction per category plus noise), as a frozen backbone's would."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(len(LABELS), dim)) * 1.5
    examples, feats = [], {}
    for i, (sender, category, when) in enumerate(sample_chat(n, seed=seed, tastes=tastes)):
        sha = hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()
        targets, mask = resolve_label_votes({category: 1}, LABELS)
        examples.append(Example(sha, Path(f"{sha}.png"), None, when, sender, targets, mask))
        feats[sha] = directions[LABELS.index(category)] + rng.normal(size=dim)
    return examples, feats


def _evaluate(examples, feats, cfg: TrainConfig) -> tuple[dict, dict]:
    """Fit on train, calibrate and draw the line on tune, score validation: as train_model."""
    prepared = prepare_data(examples, LABELS, cfg)

    def x(part):
        return np.stack([feats[e.sha256] for e in part])

    train = prepared.train
    data = HeadData(
        features=x(train),
        sender_targets=np.array([prepared.senders.index(e.sender) for e in train]),
        label_targets=np.stack([e.label_targets for e in train]),
        label_mask=np.stack([e.label_mask for e in train]),
    )
    head = fit_sender_head(
        data.features,
        data.sender_targets,
        len(prepared.senders),
        label_targets=data.label_targets,
        label_mask=data.label_mask,
        c=cfg.sender_c,
        c_categories=cfg.sender_category_c,
    )
    no_labels = np.zeros((len(prepared.tune), len(LABELS)))
    tuned = calibrate_and_tune(
        prepared, prepared.tune, sender_logits(head, x(prepared.tune)), no_labels, cfg
    )
    cal = tuned["sender_calibration"]
    val_logits = calibrated_logits(
        sender_logits(head, x(prepared.val)), cal["scale"], cal["prior_weight"], cal["log_prior"]
    )
    evaluation = evaluate_outputs(
        prepared,
        version="test",
        model_labels=LABELS,
        emitted_labels=[],
        model_senders=prepared.senders,
        sender_logits=val_logits,
        label_probs=np.zeros((len(prepared.val), len(LABELS))),
        thresholds={},
        temperature=1.0,
        sender_min_confidence=tuned["sender_confidence"]["min_confidence"],
    )
    return evaluation, tuned


def test_the_generator_has_tastes_or_none():
    assert bayes_top1(tastes=True) == pytest.approx(0.58, abs=0.01)
    assert bayes_top1(tastes=False) == pytest.approx(0.40)


def test_sender_head_beats_both_baselines_where_members_have_tastes():
    examples, feats = _synthetic(600, tastes=True)
    ev, tuned = _evaluate(examples, feats, TrainConfig(seed=0))
    snd, base = ev["sender"], ev["baselines"]
    assert snd["n_images"] == 120
    for rival in (base["majority"], base["recent_30d"]):
        assert snd["top1"] >= rival["top1"] + 0.08
        assert snd["macro_f1"] >= rival["macro_f1"] + 0.25
    assert snd["beats_baselines"] and snd["top1_margin"] >= 0.08
    assert ev["summary"]["sender_beats_baselines"] is True
    # It names senders where it is sure enough, and is then right at least as often as asked.
    assert tuned["sender_confidence"]["target_reached"]
    assert 0 < snd["coverage"] < 1 and snd["unsure_rate"] == pytest.approx(1 - snd["coverage"])
    assert snd["confident_precision"] >= 0.6


def test_without_tastes_the_head_does_not_claim_and_stays_unsure():
    examples, feats = _synthetic(600, tastes=False)
    ev, tuned = _evaluate(examples, feats, TrainConfig(seed=0))
    snd, base = ev["sender"], ev["baselines"]
    assert snd["beats_baselines"] is False
    assert snd["top1"] <= base["majority"]["top1"] + 1e-9
    # The line is never reached: every validation image is "unsure".
    assert tuned["sender_confidence"]["min_confidence"] == NEVER_NAME_SENDER
    assert snd["coverage"] == 0.0 and snd["unsure_rate"] == 1.0
    # What it says about the images is the chat's activity, not invented tastes.
    assert tuned["sender_calibration"]["scale"] < 0.5


def test_calibration_folds_into_the_head_and_absent_senders_never_win():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8))
    targets = np.digitize(x[:, 0], [-0.5, 0.5])  # classes 0, 1 and 2; nobody posts as 3
    head = fit_sender_head(x, targets, 4, c=0.1)
    assert head.bias[3] == ABSENT_LOGIT and not head.weight[3].any()
    again = fit_sender_head(x, targets, 4, c=0.1)
    assert np.array_equal(head.weight, again.weight) and np.array_equal(head.bias, again.bias)
    z = sender_logits(head, x)
    assert (z.argmax(axis=1) != 3).all()
    log_prior = np.log(class_prior(targets, 4))
    scale, weight = fit_sender_calibration(z, targets, log_prior)
    assert scale > 0 and 0 <= weight <= 2
    folded = sender_logits(fold_calibration(head, scale, weight, log_prior), x)
    assert np.allclose(folded, calibrated_logits(z, scale, weight, log_prior))
    assert (folded[:, 3] == ABSENT_LOGIT).all()
    # Too few tuning images: the head as trained, with the full prior correction.
    assert fit_sender_calibration(z[:5], targets[:5], log_prior) == (1.0, 1.0)


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    root = tmp_path_factory.mktemp("sender")
    config = root / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    out = {}
    for tastes in (True, False):
        chat = root / f"chat-{tastes}"
        make_chat(chat, images=200, seed=7, size=64, tastes=tastes)
        base = ["--config", str(config), "--data", str(root / f"data-{tastes}")]
        _cli(*base, "ingest", "folder", str(chat / "labels.csv"), "--no-progress")
        summary = json.loads(_cli(*base, "train", "--json", "--no-progress"))
        out[tastes] = (chat, base, summary)
    yield out
    shutil.rmtree(root, ignore_errors=True)


def test_train_on_a_chat_with_tastes_beats_the_baselines(chats):
    """End to end with the tiny random-init backbone: ingest, train, predict."""
    chat, base, s = chats[True]
    snd, maj, recent = s["sender"], s["baselines"]["majority"], s["baselines"]["recent_30d"]
    assert snd["beats_baselines"] is True
    assert snd["top1"] >= max(maj["top1"], recent["top1"]) + 0.05
    assert snd["macro_f1"] >= max(maj["macro_f1"], recent["macro_f1"]) + 0.2
    assert snd["min_confidence"] <= 1.0 and snd["unsure_rate"] < 1.0
    assert s["calibration"]["temperature"] == 1.0 and s["calibration"]["sender_scale"] > 0
    rows = json.loads(_cli(*base, "predict", "--json", *map(str, sorted(chat.glob("img_*"))[-6:])))
    for row in rows:
        candidates = row["sender"]["candidates"]
        assert len(candidates) == 3
        probs = [c["probability"] for c in candidates]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert row["sender"]["probability"] == probs[0]
        if row["sender"]["name"] is not None:
            assert row["sender"]["name"] == candidates[0]["name"]
    assert any(row["sender"]["name"] is not None for row in rows)
    text = _cli(*base, "predict", *map(str, sorted(chat.glob("img_*"))[-3:]))
    assert " (or " in text or "unsure: " in text


def test_train_on_a_chat_without_tastes_says_so_and_stays_unsure(chats):
    chat, base, s = chats[False]
    snd = s["sender"]
    assert snd["beats_baselines"] is False
    assert snd["min_confidence"] == NEVER_NAME_SENDER and snd["unsure_rate"] == 1.0
    rows = json.loads(_cli(*base, "predict", "--json", *map(str, sorted(chat.glob("img_*"))[-4:])))
    assert all(row["sender"]["name"] is None for row in rows)
    assert all(len(row["sender"]["candidates"]) == 3 for row in rows)
    text = _cli(*base, "train", "--no-progress")
    assert "does NOT beat the baselines" in text and "sender never named" in text
    text = _cli(*base, "predict", str(sorted(chat.glob("img_*"))[-1]))
    assert "unsure: Person A" in text


def test_summary_keeps_the_verdict(chats):
    for tastes, (_, _, s) in chats.items():
        assert s["summary"]["sender_beats_baselines"] is tastes
        assert s["sender"]["n_images"] == 40  # the newest 20 % of 200 images
