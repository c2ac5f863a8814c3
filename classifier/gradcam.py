"""Grad-CAM explanations: which parts of an image drove a label or sender score."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

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
