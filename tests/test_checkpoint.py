"""Checkpoint files: round trip, atomic save, garbage and mismatches rejected clearly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ml_helpers import LABELS, make_checkpoint, photo_like, tiny_model_config

from classifier.backbone import build_transform
from classifier.checkpoint import build_model, check_compatible, load_checkpoint, save_checkpoint
from classifier.errors import ModelError


def _outputs(ckpt, cfg):
    model, data_config = build_model(ckpt, cfg)
    assert not model.training
    x = torch.stack([build_transform(data_config)(photo_like(90, 70, seed=i)) for i in range(3)])
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize("finetuned", [True, False])
def test_round_trip_same_predictions(tmp_path, finetuned):
    cfg = tiny_model_config()
    ckpt = make_checkpoint(cfg, finetuned=finetuned)
    ckpt.metrics = {"f1": np.float32(0.5), "per_label": {"meme": (1, 2)}}
    path = tmp_path / "models" / "v1.pt"
    save_checkpoint(ckpt, path)
    assert [p.name for p in path.parent.iterdir()] == ["v1.pt"]  # no temp files left
    loaded = load_checkpoint(path)
    assert loaded.labels == list(LABELS) and loaded.version == ckpt.version
    assert loaded.metrics == {"f1": 0.5, "per_label": {"meme": [1, 2]}}
    assert (loaded.backbone_state is None) is (not finetuned)
    if finetuned:  # a "none" backbone is re-randomised unless its weights are stored
        for a, b in zip(_outputs(ckpt, cfg), _outputs(loaded, cfg), strict=True):
            torch.testing.assert_close(a, b)
    # Plain data only: loads with weights_only=True.
    assert torch.load(path, weights_only=True)["format"] == "memetag.checkpoint"


def test_round_trip_package_backbone(tmp_path):
    cfg = tiny_model_config(backbone="efficientnet_lite0", pretrained="package")
    ckpt = make_checkpoint(cfg)
    save_checkpoint(ckpt, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.data_config["mean"] == [0.5, 0.5, 0.5]
    for a, b in zip(_outputs(ckpt, cfg), _outputs(loaded, cfg), strict=True):
        torch.testing.assert_close(a, b)


def test_garbage_and_incomplete_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not torch")
    with pytest.raises(ModelError, match="garbage.pt") as info:
        load_checkpoint(garbage)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelError, match="not a memetag checkpoint"):
        load_checkpoint(other)
    path = tmp_path / "partial.pt"
    save_checkpoint(make_checkpoint(), path)
    payload = torch.load(path, weights_only=True)
    del payload["senders"], payload["thresholds"]
    torch.save(payload, path)
    with pytest.raises(ModelError, match="missing senders, thresholds"):
        load_checkpoint(path)


def test_label_and_backbone_mismatch_messages():
    cfg = tiny_model_config()
    ckpt = make_checkpoint(cfg)
    check_compatible(ckpt, cfg, list(reversed(LABELS)))  # order does not matter
    with pytest.raises(ModelError) as info:
        check_compatible(ckpt, cfg, ["meme", "photo", "news"])
    msg = str(info.value)
    assert "unknown to the model: news" in msg and "not configured: social_media" in msg
    assert "memetag train" in msg and "--model" in msg and "\n" not in msg
    other = dataclasses.replace(cfg, backbone="resnet10t")
    with pytest.raises(ModelError, match="trained on backbone test_efficientnet.*resnet10t"):
        check_compatible(ckpt, other, LABELS)
    with pytest.raises(ModelError, match="backbone"):
        build_model(ckpt, other)


def test_heads_that_do_not_fit(tmp_path):
    cfg = tiny_model_config()
    ckpt = make_checkpoint(cfg)
    ckpt.labels = [*ckpt.labels, "extra"]  # head has 3 outputs, checkpoint claims 4 labels
    with pytest.raises(ModelError, match="heads do not fit"):
        build_model(ckpt, cfg)
