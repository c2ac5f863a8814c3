"""`memetag train --seed` reproduces: the same labelled images give the same model whatever order
they were ingested in (image ids are assigned in ingest order and must not matter)."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from classifier.checkpoint import load_checkpoint
from memetag.cli import main
from memetag.demo import CATEGORIES
from tests.helpers.tastes import make_chat, write_labels_csv

CONFIG = """
[model]
backbone = "test_efficientnet"
pretrained = "none"
image_size = 64
# The tiny random-init backbone tells the drawn categories apart by what fills its 64 px frame;
# letterboxing (the default, chosen on real features in bench/label_efficiency.py) shrinks the
# tall and wide drawings into a corner of it, so these end-to-end tests crop.
resize = "crop"
device = "cpu"
batch_size = 16
decode_workers = 0

[train]
min_posts_per_person = 3
epochs = 20
""" + "".join(
    f'\n[labels.{name}]\nemoji = "{emoji}"\ndescription = "{name}"\n'
    for name, emoji in zip(CATEGORIES, ["😂", "🐦", "🗯️", "📰", "📷", "📺"], strict=True)
)


def _run(capsys, *argv: str) -> str:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> Path:
    """80 small images from the chat with tastes, in two CSVs of different row order. One pair
    in every ten images shares a timestamp, so the split must break ties by content."""
    folder = tmp_path_factory.mktemp("chat")
    rows = make_chat(folder, images=80, seed=3, size=48)
    for i in range(0, len(rows) - 1, 10):
        rows[i + 1] = dataclasses.replace(rows[i + 1], timestamp=rows[i].timestamp)
    write_labels_csv(folder / "labels.csv", rows)
    shuffled = list(reversed(rows[: len(rows) // 2])) + rows[len(rows) // 2 :]
    random.Random(1).shuffle(shuffled)
    write_labels_csv(folder / "shuffled.csv", shuffled)
    return folder


def test_same_images_in_another_order_train_the_same_model(chat, tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    runs = []
    for name, labels_csv in (("a", "labels.csv"), ("b", "shuffled.csv")):
        base = ["--config", str(config), "--data", str(tmp_path / name)]
        _run(capsys, *base, "ingest", "folder", str(chat / labels_csv), "--no-progress")
        summary = json.loads(_run(capsys, *base, "train", "--seed", "0", "--json", "--no-progress"))
        runs.append((summary, load_checkpoint(Path(summary["model_path"]))))
    (first, a), (second, b) = runs
    # The ingests really did number the images differently.
    with open(chat / "labels.csv", newline="") as fh:
        order_a = [r["filename"] for r in csv.DictReader(fh)]
    with open(chat / "shuffled.csv", newline="") as fh:
        order_b = [r["filename"] for r in csv.DictReader(fh)]
    assert sorted(order_a) == sorted(order_b) and order_a != order_b

    assert json.dumps(a.thresholds, sort_keys=True) == json.dumps(b.thresholds, sort_keys=True)
    assert a.temperature == b.temperature
    assert a.sender_min_confidence == b.sender_min_confidence
    assert a.senders == b.senders and a.emitted_labels == b.emitted_labels
    assert a.heads_state.keys() == b.heads_state.keys()
    for key in a.heads_state:
        assert torch.equal(a.heads_state[key], b.heads_state[key]), key
    assert a.version.rsplit("-", 1)[1] == b.version.rsplit("-", 1)[1]  # hash of the weights
    assert first["summary"] == second["summary"]
    assert first["sender"] == second["sender"] and first["categories"] == second["categories"]
    assert first["baselines"] == second["baselines"]
    assert np.isfinite(first["summary"]["score"])
