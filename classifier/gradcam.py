"""Grad-CAM explanations: which parts of an image drove a label or sender score."""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from classifier.atomic import atomic_write
from classifier.errors import ModelError
from classifier.model import MemetagModel

log = logging.getLogger(__name__)

Target = tuple[Literal["label", "sender"], int]


class _OneOutput(nn.Module):
    """Expose one head's logits: pytorch_grad_cam expects a model with a single output."""

    def __init__(self, model: MemetagModel, head: str) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sender_logits, label_logits = self.model(x)
        return sender_logits if self.head == "sender" else label_logits


def gradcam(model: MemetagModel, image_tensor: torch.Tensor, *, target: Target) -> np.ndarray:
    """Grad-CAM heatmap for one image and one output.

    Args:
        model: the trained model (its train/eval mode is restored afterwards).
        image_tensor: the transformed image, [3, H, W] or [1, 3, H, W].
        target: ``("label", i)`` for the i-th label logit, ``("sender", i)`` for a sender's.

    Returns:
        float32 array [H, W] in [0, 1]; all zeros when nothing in the image raised the score.

    Raises:
        ModelError: bad target, or a backbone without a spatial feature map (e.g. a ViT).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    head, index = target
    if head not in ("label", "sender"):
        raise ModelError(f'Grad-CAM target must be "label" or "sender", not {head!r}')
    n_outputs = model.heads.n_labels if head == "label" else model.heads.n_senders
    if not 0 <= index < n_outputs:
        raise ModelError(f"Grad-CAM {head} index {index} is out of range (0..{n_outputs - 1})")
    x = image_tensor if image_tensor.dim() == 4 else image_tensor.unsqueeze(0)
    if x.shape[0] != 1 or x.dim() != 4:
        raise ModelError(f"Grad-CAM takes one image [3, H, W], got {tuple(image_tensor.shape)}")
    device = next(model.parameters()).device

    was_training = model.training
    layer = find_target_layer(model, x.to(device))
    wrapper = _OneOutput(model, head)
    try:
        # The gradient must flow even when the backbone is frozen (requires_grad=False) or the
        # caller sits inside inference_mode; the input's requires_grad takes care of the first.
        with torch.inference_mode(False), torch.enable_grad():
            # clone() here, outside inference mode, so autograd may save it for backward.
            x = x.detach().to(device).float().clone().requires_grad_(True)
            with GradCAM(model=wrapper, target_layers=[layer]) as cam:
                maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(index)])
    finally:
        model.train(was_training)
    heat = np.nan_to_num(np.asarray(maps[0], dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(heat, 0.0, 1.0)


def find_target_layer(model: MemetagModel, x: torch.Tensor) -> nn.Module:
    """The module that produces the backbone's final feature map (before pooling).

    For timm EfficientNets that is ``bn2`` (conv_head + BN + act), for ResNets ``layer4``.
    Found generically: the last module, in execution order, whose output has the shape of
    ``forward_features``.
    """
    backbone = model.backbone
    fired: list[tuple[nn.Module, tuple[int, ...]]] = []

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            fired.append((module, tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in backbone.modules() if m is not backbone]
    try:
        with torch.no_grad():
            final = backbone.forward_features(x.detach())
    finally:
        for handle in handles:
            handle.remove()
    if final.dim() != 4:
        raise ModelError(
            f"Grad-CAM needs a convolutional feature map; {type(backbone).__name__} "
            f"features are {tuple(final.shape)}"
        )
    for module, shape in reversed(fired):
        if shape == tuple(final.shape):
            return module
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ModelError(f"no convolution layer in {type(backbone).__name__} for Grad-CAM")
    return convs[-1]


def tensor_to_rgb(image_tensor: torch.Tensor, mean: tuple, std: tuple) -> np.ndarray:
    """Undo Normalize: the model's view of the image as uint8 RGB [H, W, 3]."""
    x = image_tensor.detach().cpu().float()
    x = x[0] if x.dim() == 4 else x
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    rgb = (x * s + m).clamp(0, 1).permute(1, 2, 0).numpy()
    return (rgb * 255).round().astype(np.uint8)


def render_overlay(
    rgb_image: Image.Image | np.ndarray, heatmap: np.ndarray, path: Path, *, min_side: int = 448
) -> Path:
    """Write the heatmap blended over the image as a PNG; returns the path.

    The heatmap is resized to the image; images smaller than ``min_side`` are upscaled first
    so a 224-pixel model view is still legible.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    img = rgb_image if isinstance(rgb_image, Image.Image) else Image.fromarray(rgb_image)
    img = img.convert("RGB")
    if min(img.size) < min_side:
        scale = min_side / min(img.size)
        img = img.resize(
            (round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC
        )
    heat = Image.fromarray(np.clip(heatmap, 0, 1).astype(np.float32), mode="F")
    heat = np.asarray(heat.resize(img.size, Image.Resampling.BILINEAR), dtype=np.float32)
    base = np.asarray(img, dtype=np.float32) / 255.0
    overlay = show_cam_on_image(base, np.clip(heat, 0, 1), use_rgb=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay).save(path, format="PNG")
    return path


# --- the whole picture -------------------------------------------------------------------------
# The model sees a square: with ``resize = "crop"`` the centre of the image (a three-panel comic
# becomes its middle panel), with ``"letterbox"`` the whole image shrunk onto a padded square.
# Explanations are drawn on the whole original image: the heat map, computed on exactly what the
# model saw, is mapped back to where those pixels came from, and whatever the model did not see
# is dimmed and outlined.

_DIM = 0.35  # brightness of the parts of the image the model did not see
_OUTLINE = (255, 255, 255)


@dataclass(frozen=True)
class ModelView:
    """Where the model's square input sits on the original image.

    ``image_box`` is the part of the original image the model saw (original pixels, left, top,
    right, bottom); ``input_box`` is where that part lies in the model's ``input_size`` square
    input (the rest of a letterboxed input is padding).
    """

    image_size: tuple[int, int]
    image_box: tuple[float, float, float, float]
    input_box: tuple[int, int, int, int]
    input_size: int

    @property
    def whole(self) -> bool:
        """True when the model saw the whole image (letterbox)."""
        w, h = self.image_size
        left, top, right, bottom = self.image_box
        return left <= 0.5 and top <= 0.5 and right >= w - 0.5 and bottom >= h - 0.5

    def describe(self, resize: str) -> str:
        """One line for the user: what the overlay shows and what the model saw."""
        w, h = self.image_size
        if self.whole:
            return (
                f"heat map over the whole {w}x{h} image, which the model saw whole "
                f'(resize = "{resize}")'
            )
        left, top, right, bottom = (round(v) for v in self.image_box)
        return (
            f"heat map over the whole {w}x{h} image; the model saw only the outlined "
            f'{right - left}x{bottom - top} centre (resize = "{resize}"), the dimmed rest '
            "did not count"
        )


def model_view(image_size: tuple[int, int], data_config: dict, resize: str) -> ModelView:
    """The geometry of ``build_transform(data_config, resize=resize)`` for an image this size.

    Crop: torchvision's ``Resize(floor(size / crop_pct))`` of the short side, then
    ``CenterCrop(size)``; letterbox: the long side fitted to ``size`` and centred.
    """
    w, h = image_size
    size = int(data_config["input_size"][-1])
    if resize == "letterbox":
        scale = size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        left, top = (size - new_w) // 2, (size - new_h) // 2
        return ModelView(
            (w, h), (0.0, 0.0, float(w), float(h)), (left, top, left + new_w, top + new_h), size
        )
    if (data_config.get("crop_mode") or "center") != "center":
        raise ModelError(f"explain cannot map crop_mode {data_config.get('crop_mode')!r} back")
    resize_to = math.floor(size / float(data_config.get("crop_pct") or 1.0))
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(resize_to * long / short)
    new_w, new_h = (resize_to, new_long) if w <= h else (new_long, resize_to)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return ModelView((w, h), box, (0, 0, size, size), size)


def heatmap_on_image(
    heatmap: np.ndarray, view: ModelView, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Map a heat map over the model's input onto the original image, drawn at ``size``.

    Returns:
        ``(heat, seen)``: float32 [H, W] in [0, 1], zero where the model saw nothing, and a
        bool [H, W] mask of the pixels the model saw.
    """
    out_w, out_h = size
    sx, sy = out_w / view.image_size[0], out_h / view.image_size[1]
    left, top, right, bottom = view.image_box
    x0, y0 = max(0, round(left * sx)), max(0, round(top * sy))
    x1, y1 = min(out_w, max(x0 + 1, round(right * sx))), min(out_h, max(y0 + 1, round(bottom * sy)))
    heat = np.zeros((out_h, out_w), dtype=np.float32)
    seen = np.zeros((out_h, out_w), dtype=bool)
    ix0, iy0, ix1, iy1 = view.input_box
    scale = heatmap.shape[0] / view.input_size  # Grad-CAM maps come at input resolution
    part = heatmap[round(iy0 * scale) : round(iy1 * scale), round(ix0 * scale) : round(ix1 * scale)]
    patch = Image.fromarray(np.clip(part, 0, 1).astype(np.float32), mode="F")
    heat[y0:y1, x0:x1] = np.asarray(patch.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
    seen[y0:y1, x0:x1] = True
    return np.clip(heat, 0.0, 1.0), seen


def render_explanation(
    image: Image.Image,
    heatmap: np.ndarray,
    view: ModelView,
    path: Path,
    *,
    min_side: int = 448,
    max_side: int = 2048,
) -> Path:
    """Write :func:`explanation_png` to ``path`` (atomically); returns the path."""
    path = Path(path)
    atomic_write(path, explanation_png(image, heatmap, view, min_side=min_side, max_side=max_side))
    return path


def explanation_png(
    image: Image.Image,
    heatmap: np.ndarray,
    view: ModelView,
    *,
    min_side: int = 448,
    max_side: int = 2048,
) -> bytes:
    """The heat map over the whole original image, as PNG bytes.

    What the model did not see is dimmed and the part it saw is outlined. The picture is
    scaled so its short side is at least ``min_side`` and its long side at most ``max_side``.
    """
    from PIL import ImageDraw
    from pytorch_grad_cam.utils.image import show_cam_on_image

    img = image.convert("RGB")
    scale = max(min_side / min(img.size), 1.0)
    scale = min(scale, max_side / max(img.size))
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if size != img.size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    heat, seen = heatmap_on_image(heatmap, view, size)
    base = np.asarray(img, dtype=np.float32) / 255.0
    blended = show_cam_on_image(base, heat, use_rgb=True)
    out = np.where(seen[..., None], blended, (base * _DIM * 255).round().astype(np.uint8))
    picture = Image.fromarray(out.astype(np.uint8))
    if not seen.all():
        ys, xs = np.nonzero(seen)
        width = max(2, round(min(size) / 200))
        ImageDraw.Draw(picture).rectangle(
            (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())),
            outline=_OUTLINE,
            width=width,
        )
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()
