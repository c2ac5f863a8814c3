"""Explaining one image: a Grad-CAM overlay of a category or the likely sender, as PNG bytes.

The :class:`Explainer` holds a model of its own, built once (lazily, under a lock) and never
the Predictor's: the Predictor folds BatchNorm into the convolutions for speed, and Grad-CAM
needs the network as trained. Probabilities and the sender's "unsure" rule are the Predictor's
own (:func:`classifier.labelhead.label_probabilities`,
:func:`classifier.predictor.is_confident_sender`), so the two never disagree about an image.
Everything here is blocking (torch): call it from a worker thread in async code.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from classifier.checkpoint import Checkpoint, build_model
from classifier.config import ModelConfig
from classifier.errors import ModelError
from classifier.gradcam import ModelView, explanation_png, gradcam, model_view
from classifier.imaging import load_rgb
from classifier.labelhead import label_probabilities
from classifier.model import MemetagModel
from classifier.predictor import is_confident_sender

__all__ = ["Explainer", "Explanation", "UnknownTarget"]


class UnknownTarget(ModelError):
    """The label is not one the model knows, or it has no sender head to explain."""


@dataclass(frozen=True)
class Explanation:
    """A Grad-CAM overlay and what it is of.

    For a label, ``name`` is the label; for the sender, ``name`` is the sender the map is of (the
    most likely one) and ``named`` whether the model would name them at all: below the
    confidence line the Predictor says "unsure", and so must whoever shows this.
    """

    png: bytes
    target: Literal["label", "sender"]
    name: str
    probability: float
    named: bool
    min_confidence: float | None  # the sender confidence line (sender only)
    emitted: bool  # label only: False when the model never predicts it (too few examples)
    view: ModelView
    description: str  # one line: what the overlay shows and what the model saw
    model_version: str


@dataclass
class _Built:
    model: MemetagModel
    data_config: dict[str, Any]
    resize: str
    transform: Any


class Explainer:
    """Grad-CAM for one checkpoint; build once, call :meth:`explain` as often as needed.

    Safe to share between threads: explanations run one at a time (Grad-CAM hooks the model).
    """

    def __init__(self, checkpoint: Checkpoint, cfg: ModelConfig) -> None:
        self.checkpoint = checkpoint
        self._cfg = cfg
        self._lock = threading.Lock()
        self._built: _Built | None = None

    @property
    def model_version(self) -> str:
        return self.checkpoint.version

    def check_target(self, *, label: str | None = None, sender: bool = False) -> None:
        """Raise UnknownTarget unless the model can explain this label or its sender guess."""
        ckpt = self.checkpoint
        if label is not None and label not in ckpt.labels:
            raise UnknownTarget(
                f"unknown label {label!r}; model {ckpt.version} knows: {', '.join(ckpt.labels)}"
            )
        if sender and not ckpt.senders:
            raise UnknownTarget(
                f"model {ckpt.version} has no sender head (too few posts per person)"
            )
        if (label is None) == (not sender):
            raise ValueError("explain either one label or the sender")

    def _get(self) -> _Built:
        if self._built is None:
            from classifier.backbone import build_transform

            model, data_config = build_model(self.checkpoint, self._cfg)
            resize = str(self.checkpoint.model_config.get("resize", self._cfg.resize))
            transform = build_transform(data_config, resize=resize)
            self._built = _Built(model, data_config, resize, transform)
        return self._built

    def explain(
        self,
        image: Image.Image | Path | str | bytes,
        *,
        label: str | None = None,
        sender: bool = False,
    ) -> Explanation:
        """The overlay for ``label`` or (``sender=True``) the most likely sender.

        Args:
            image: a decoded image, or a file / encoded bytes (decoded under ``[model]
                max_pixels``, with the checks every decoder applies).

        Raises:
            UnknownTarget: a label the model does not know, or no sender head.
            ImageLoadError: the file or bytes are not a usable image.
        """
        self.check_target(label=label, sender=sender)
        if not isinstance(image, Image.Image):
            image = load_rgb(image, max_pixels=self._cfg.max_pixels)
        ckpt = self.checkpoint
        with self._lock:
            built = self._get()
            x = built.transform(image)
            with torch.inference_mode():
                sender_logits, label_logits = built.model(x.unsqueeze(0))
            if label is not None:
                index = ckpt.labels.index(label)
                emitted = np.array([n in ckpt.emitted_labels for n in ckpt.labels], dtype=bool)
                probs = label_probabilities(label_logits.float().numpy(), ckpt.label_mode, emitted)
                probability = float(probs[0, index])
                target: tuple[Literal["label", "sender"], int] = ("label", index)
                name, named, line, is_emitted = label, True, None, bool(emitted[index])
            else:
                probs_t = torch.softmax(sender_logits[0].float() / ckpt.temperature, dim=0)
                index = int(torch.argmax(probs_t))
                probability = float(probs_t[index])
                target = ("sender", index)
                line = float(ckpt.sender_min_confidence)
                name = ckpt.senders[index]
                named = is_confident_sender(probability, line)
                is_emitted = True
            heat = gradcam(built.model, x, target=target)
        # Computed on exactly what the model saw, drawn over the whole original image.
        view = model_view(image.size, built.data_config, built.resize)
        return Explanation(
            png=explanation_png(image, heat, view),
            target=target[0],
            name=name,
            probability=probability,
            named=named,
            min_confidence=line,
            emitted=is_emitted,
            view=view,
            description=view.describe(built.resize),
            model_version=ckpt.version,
        )
