"""Checkpoint files: a trained model (heads, optional backbone, labels, thresholds) on disk."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from classifier.atomic import write_atomic
from classifier.backbone import build_backbone
from classifier.config import ModelConfig
from classifier.errors import ModelError
from classifier.model import Heads, MemetagModel

log = logging.getLogger(__name__)

FORMAT = "memetag.checkpoint"
FORMAT_VERSION = 1
# ModelConfig fields that describe the network; the rest (device, batch size...) are runtime.
_ARCH_FIELDS = ("backbone", "pretrained", "image_size", "resize")


@dataclass(kw_only=True)
class Checkpoint:
    """Everything needed to rebuild and run a trained model.

    Only plain data (str, float, list, dict, tensors) so it loads with ``weights_only=True``.
    """

    version: str
    created_at: str  # ISO 8601, UTC
    model_config: dict[str, Any]  # backbone, pretrained, image_size, resize
    data_config: dict[str, Any]  # timm data config: input_size, mean, std, crop_pct, ...
    labels: list[str]  # order of the label head's outputs
    senders: list[str]  # order of the sender head's outputs
    thresholds: dict[str, float]  # per label: probability at or above which it is predicted
    temperature: float  # sender logits are divided by this before the softmax
    sender_min_confidence: float  # calibrated max sender probability below this -> "unsure"
    heads_state: dict[str, torch.Tensor]
    emitted_labels: list[str]  # labels with enough positives; the rest are never predicted
    backbone_state: dict[str, torch.Tensor] | None = None  # only when the backbone was tuned
    metrics: dict[str, Any] = field(default_factory=dict)
    data_summary: dict[str, Any] = field(default_factory=dict)
    # "multi": a sigmoid and a threshold per label; "exclusive": a softmax over the emitted
    # labels, the most probable one predicted (classifier.labelhead).
    label_mode: str = "multi"
    # The heads as fitted without the validation images, when ``heads_state`` was refit on all
    # of them: what the stored metrics describe, and what `memetag eval` scores.
    validation_heads_state: dict[str, torch.Tensor] | None = None


_REQUIRED = tuple(
    f.name
    for f in dataclasses.fields(Checkpoint)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


def utc_now_iso() -> str:
    """Current time for ``Checkpoint.created_at``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def model_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The architecture part of a ModelConfig, as stored in ``Checkpoint.model_config``."""
    return {name: getattr(cfg, name) for name in _ARCH_FIELDS}


def save_checkpoint(ckpt: Checkpoint, path: Path) -> None:
    """Write atomically: a temp file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION}
    for f in dataclasses.fields(Checkpoint):
        value = getattr(ckpt, f.name)
        if f.name in ("heads_state", "backbone_state", "validation_heads_state"):
            payload[f.name] = _tensors(value) if value is not None else None
        else:
            payload[f.name] = _plain(value)
    write_atomic(path, lambda fp: torch.save(payload, fp))
    log.info("saved checkpoint %s to %s", ckpt.version, path)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ModelError: missing, unreadable, not a memetag checkpoint, or incomplete.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types on garbage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a readable memetag checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a memetag checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path}: checkpoint format {payload.get('format_version')!r} is not supported by "
            f"this memetag (expects {FORMAT_VERSION}); retrain with `memetag train`"
        )
    missing = [name for name in _REQUIRED if name not in payload]
    if missing:
        raise ModelError(f"{path}: checkpoint is missing {', '.join(missing)}")
    values = {f.name: payload[f.name] for f in dataclasses.fields(Checkpoint) if f.name in payload}
    ckpt = Checkpoint(**values)
    _validate(ckpt, path)
    return ckpt


def _validate(ckpt: Checkpoint, path: Path) -> None:
    problems = []
    if not isinstance(ckpt.heads_state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in ckpt.heads_state.values()
    ):
        problems.append("heads_state is not a dict of tensors")
    for name in ("labels", "senders", "emitted_labels"):
        value = getattr(ckpt, name)
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            problems.append(f"{name} is not a list of names")
    if not isinstance(ckpt.model_config, Mapping) or "backbone" not in ckpt.model_config:
        problems.append("model_config has no backbone")
    if not isinstance(ckpt.thresholds, Mapping):
        problems.append("thresholds is not a dict")
    if not isinstance(ckpt.temperature, int | float) or ckpt.temperature <= 0:
        problems.append(f"temperature {ckpt.temperature!r} is not a positive number")
    if ckpt.label_mode not in ("multi", "exclusive"):
        problems.append(f"label_mode {ckpt.label_mode!r} is not multi or exclusive")
    if ckpt.validation_heads_state is not None and (
        not isinstance(ckpt.validation_heads_state, Mapping)
        or not all(isinstance(v, torch.Tensor) for v in ckpt.validation_heads_state.values())
    ):
        problems.append("validation_heads_state is not a dict of tensors")
    if problems:
        raise ModelError(f"{path}: damaged checkpoint: {'; '.join(problems)}")


def check_compatible(ckpt: Checkpoint, cfg: ModelConfig, labels: Sequence[Any]) -> None:
    """Refuse a model whose backbone or label set differs from the config.

    Args:
        labels: the configured label names (or LabelSpec-like objects with ``.name``).

    Raises:
        ModelError: naming what differs and what to do about it.
    """
    trained_backbone = ckpt.model_config.get("backbone")
    if trained_backbone != cfg.backbone:
        raise ModelError(
            f"model {ckpt.version} was trained on backbone {trained_backbone}, but [model] "
            f"backbone is {cfg.backbone}; retrain with `memetag train` or set it back"
        )
    configured = [getattr(label, "name", label) for label in labels]
    not_in_model = sorted(set(configured) - set(ckpt.labels))
    not_in_config = sorted(set(ckpt.labels) - set(configured))
    if not_in_model or not_in_config:
        parts = []
        if not_in_model:
            parts.append(f"configured but unknown to the model: {', '.join(not_in_model)}")
        if not_in_config:
            parts.append(f"in the model but not configured: {', '.join(not_in_config)}")
        raise ModelError(
            f"model {ckpt.version} was trained on a different label set ({'; '.join(parts)}); "
            "retrain with `memetag train` or pick a matching model with --model"
        )


def build_model(
    ckpt: Checkpoint, cfg: ModelConfig, *, validation: bool = False
) -> tuple[MemetagModel, dict[str, Any]]:
    """Rebuild the trained network in eval mode, with the data config it was trained with.

    The architecture and backbone weights come from the checkpoint (its ``model_config``, or
    ``backbone_state`` when fine-tuned); ``cfg`` must name the same backbone. ``validation``
    picks the heads fitted without the validation images when the checkpoint has them.

    Raises:
        ModelError: backbone mismatch, or weights that do not fit.
    """
    trained = {k: ckpt.model_config[k] for k in _ARCH_FIELDS if k in ckpt.model_config}
    model_cfg = dataclasses.replace(cfg, **trained)
    if model_cfg.backbone != cfg.backbone:
        raise ModelError(
            f"model {ckpt.version} was trained on backbone {model_cfg.backbone}, but [model] "
            f"backbone is {cfg.backbone}; retrain with `memetag train` or set it back"
        )
    backbone, data_config = build_backbone(model_cfg, load_weights=ckpt.backbone_state is None)
    if ckpt.backbone_state is not None:
        _load_state(backbone, ckpt.backbone_state, f"model {ckpt.version} backbone")
    heads = Heads(int(backbone.num_features), len(ckpt.senders), len(ckpt.labels))
    state = ckpt.heads_state
    if validation and ckpt.validation_heads_state is not None:
        state = ckpt.validation_heads_state
    _load_state(heads, state, f"model {ckpt.version} heads")
    model = MemetagModel(backbone, heads).eval()
    return model, dict(ckpt.data_config) if ckpt.data_config else data_config


def _load_state(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ModelError(f"{what} do not fit the network ({detail[:300]})") from None


def _tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {str(k): v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _plain(value: Any) -> Any:
    """Numpy scalars, tuples, Paths... -> plain Python, so the file loads with weights_only."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    return str(value)
