"""Grad-CAM: a finite heatmap in [0, 1] for labels and senders, and a PNG overlay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ml_helpers import make_checkpoint, photo_like, tiny_model_config
from PIL import Image

from classifier.backbone import build_transform
from classifier.checkpoint import build_model
from classifier.errors import ModelError
from classifier.gradcam import find_target_layer, gradcam, render_overlay, tensor_to_rgb


@pytest.fixture(scope="module")
def setup():
    cfg = tiny_model_config()
    model, data_config = build_model(make_checkpoint(cfg, finetuned=True, seed=2), cfg)
    for p in model.parameters():  # a frozen backbone, as in stage-1 training
        p.requires_grad_(False)
    x = build_transform(data_config)(photo_like(120, 90, seed=4))
    return model, data_config, x


def test_heatmap_for_labels_and_senders(setup):
    model, _, x = setup
    assert find_target_layer(model, x[None]) is model.backbone.bn2
    maps = []
    with torch.inference_mode():  # callers may sit in inference mode; Grad-CAM must still work
        for target in (("label", 0), ("label", 2), ("sender", 1)):
            heat = gradcam(model, x, target=target)
            assert heat.shape == (64, 64) and heat.dtype == np.float32
            assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
            maps.append(heat)
    assert any(m.max() > 0 for m in maps)
    assert not model.training


def test_bad_targets(setup):
    model, _, x = setup
    with pytest.raises(ModelError, match="out of range"):
        gradcam(model, x, target=("label", 3))
    with pytest.raises(ModelError):
        gradcam(model, x, target=("colour", 0))  # type: ignore[arg-type]


def test_render_overlay_writes_png(setup, tmp_path):
    model, data_config, x = setup
    heat = gradcam(model, x, target=("label", 1))
    view = tensor_to_rgb(x, data_config["mean"], data_config["std"])
    assert view.shape == (64, 64, 3) and view.dtype == np.uint8
    path = render_overlay(view, heat, tmp_path / "out" / "o.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (448, 448)
