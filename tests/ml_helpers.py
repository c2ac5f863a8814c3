"""Shared ML test helpers: a tiny random-init model config, checkpoints and generated images."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classifier.backbone import build_backbone
from classifier.checkpoint import Checkpoint, model_config_dict, utc_now_iso
from classifier.config import ModelConfig
from classifier.model import Heads

# timm's smallest EfficientNet (~0.1 M parameters): same code paths as efficientnet_lite0,
# a forward pass in milliseconds.
TINY_BACKBONE = "test_efficientnet"
LABELS = ("meme", "social_media", "photo")
SENDERS = ("Person A", "Person B", "Person C")


def tiny_model_config(**overrides: object) -> ModelConfig:
    """A random-init, 64-pixel ModelConfig for fast tests."""
    values: dict[str, object] = {
        "backbone": TINY_BACKBONE,
        "pretrained": "none",
        "image_size": 64,
        "resize": "crop",
        "device": "cpu",
        "batch_size": 4,
        "decode_workers": 2,
    }
    values.update(overrides)
    return ModelConfig(**values)  # type: ignore[arg-type]


def make_checkpoint(
    cfg: ModelConfig | None = None,
    *,
    labels: Sequence[str] = LABELS,
    senders: Sequence[str] = SENDERS,
    emitted_labels: Sequence[str] | None = None,
    version: str = "v-test",
    seed: int = 0,
    temperature: float = 1.0,
    sender_min_confidence: float = 0.0,
    threshold: float = 0.5,
    finetuned: bool = False,
) -> Checkpoint:
    """A checkpoint with random (seeded) heads on the tiny backbone.

    ``finetuned=True`` stores the (random) backbone weights too, so the checkpoint rebuilds
    the exact same network; without it a "none" backbone is re-randomised on every build.
    """
    cfg = cfg or tiny_model_config()
    torch.manual_seed(seed)
    backbone, data_config = build_backbone(cfg)
    heads = Heads(int(backbone.num_features), len(senders), len(labels))
    return Checkpoint(
        version=version,
        created_at=utc_now_iso(),
        model_config=model_config_dict(cfg),
        data_config=dict(data_config),
        labels=list(labels),
        senders=list(senders),
        thresholds={name: threshold for name in labels},
        temperature=temperature,
        sender_min_confidence=sender_min_confidence,
        heads_state=heads.state_dict(),
        backbone_state=backbone.state_dict() if finetuned else None,
        emitted_labels=list(labels if emitted_labels is None else emitted_labels),
        metrics={},
        data_summary={},
    )


def photo_like(width: int, height: int, *, seed: int = 0) -> Image.Image:
    """Smooth colour gradients plus noise: compresses like a photo, unlike flat test colours."""
    rng = np.random.default_rng(seed)
    small = rng.integers(
        0, 256, size=(max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8
    )
    img = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    noise = rng.integers(-12, 13, size=(height, width, 3), dtype=np.int16)
    arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def screenshot_like(width: int, height: int, *, seed: int = 0) -> Image.Image:
    """White page with dark text-like bars: what a social media screenshot compresses like."""
    rng = np.random.default_rng(seed)
    arr = np.full((height, width, 3), 250, dtype=np.uint8)
    for top in range(20, height - 20, 28):
        length = int(rng.integers(width // 4, max(width // 4 + 1, width - 40)))
        arr[top : top + 12, 20 : 20 + length] = rng.integers(0, 80)
    return Image.fromarray(arr, "RGB")


def encode(img: Image.Image, fmt: str, **save_args: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_args)
    return buf.getvalue()


def write_images(directory: Path, n: int = 6, *, size: tuple[int, int] = (96, 80)) -> list[Path]:
    """A handful of small, distinct, valid images (JPEG and PNG alternately)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = photo_like(size[0] + 8 * i, size[1] + 4 * i, seed=i)
        path = directory / (f"img{i}.jpg" if i % 2 == 0 else f"img{i}.png")
        img.save(path, quality=90) if path.suffix == ".jpg" else img.save(path)
        paths.append(path)
    return paths


def write_hostile_files(directory: Path) -> dict[str, Path]:
    """Files that must fail cleanly: truncated JPEG, PNG bomb header, not an image, empty."""
    directory.mkdir(parents=True, exist_ok=True)
    truncated = directory / "truncated.jpg"
    truncated.write_bytes(encode(photo_like(200, 150, seed=9), "JPEG")[:600])
    bomb = directory / "bomb.png"
    bomb.write_bytes(png_bomb_header(50_000, 50_000))
    text = directory / "notes.png"
    text.write_text("this is not an image\n")
    empty = directory / "empty.jpg"
    empty.write_bytes(b"")
    return {"truncated": truncated, "bomb": bomb, "not_an_image": text, "empty": empty}


def png_bomb_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
