"""`memetag train`, `eval` and `models` end to end on a real store filled through the store API."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from pathlib import Path

import imagehash
import pytest
from PIL import Image

from memetag.cli import main
from store.db import open_database
from store.files import ImageFiles
from store.queries import labels as label_queries
from store.queries import models as model_queries
from store.queries import posts as post_queries
from store.rows import NewPost
from tests.test_train import LABELS, generate

CONFIG = """
[model]
backbone = "test_efficientnet"
pretrained = "none"
image_size = 64
device = "cpu"
batch_size = 32
decode_workers = 0

[train]
min_posts_per_person = 3
epochs = 40

[labels.meme]
emoji = "😂"
description = "A meme"

[labels.photo]
emoji = "📷"
description = "A photo"

[labels.news]
emoji = "📰"
description = "News"
"""


async def fill_store(data_dir: Path, items) -> list[int]:
    """Record one post per (PNG bytes, sender, labels, time) and store its image file."""
    files = ImageFiles(data_dir / "images")
    image_ids = []
    async with open_database(data_dir / "memetag.db") as db:
        posts = [
            NewPost(
                source="folder",
                source_id=f"p{i}",
                conversation_id="c1",
                conversation_name="Chat",
                author_source="folder",
                author_ref=sender,
                author_name=sender,
                posted_at=when,
                url=None,
                local_ref=f"{i}.png",
                labels=tuple(labels),
            )
            for i, (_, sender, labels, when) in enumerate(items)
        ]
        await post_queries.insert_posts(db, posts, {})
        pending = await post_queries.list_posts_to_fetch(db)
        for post, (data, *_rest) in zip(pending, items, strict=True):
            sha = hashlib.sha256(data).hexdigest()
            files.write(sha, "png", data)
            img = Image.open(io.BytesIO(data))
            stored = post_queries.StoredImage(
                sha, str(imagehash.phash(img)), img.width, img.height, "PNG", "png", len(data)
            )
            image_id = (await post_queries.record_stored(db, post.id, stored)).image_id
            image_ids.append(image_id)
    return image_ids


async def _vote(data_dir: Path, image_id: int, label: str, vote: int) -> None:
    async with open_database(data_dir / "memetag.db") as db:
        await label_queries.add_vote(db, image_id, label, "member", vote, "reaction")


async def _current(data_dir: Path):
    async with open_database(data_dir / "memetag.db") as db:
        return await model_queries.get_current_model(db)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def store(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    data = tmp_path / "data"
    return config, data


def test_train_eval_models_end_to_end(store, capsys):
    config, data = store
    ids = asyncio.run(fill_store(data, generate(120, seed=3)))
    # A member disagrees about one image's label: votes net to a tie, so it is excluded.
    asyncio.run(_vote(data, ids[0], "meme", -1))
    base = ["--config", str(config), "--data", str(data)]

    code, out, err = _run(capsys, *base, "train", "--no-progress", "--seed", "1")
    assert code == 0, err
    assert "promoted     yes: no current model" in out
    assert "repost leaks 0" in out
    assert "images       120: train 78, tune 18 (from " in out and "validation 24" in out
    assert "fitted on the 18 tune images; validation only scored" in out
    assert "optimistic" not in out
    # The validation figure comes with how many images it rests on and an interval, never bare,
    # and the summary says the shipped heads were refit on everything.
    assert re.search(
        r"macro-F1 \d\.\d\d \(95% interval \d\.\d\d–\d\.\d\d, 24 validation images with "
        r"categories\)",
        out,
    ), out
    assert "shipped      heads refit on all 120 images once tuned" in out
    first = asyncio.run(_current(data))
    assert first is not None and first.path == f"models/{first.version}.pt"
    assert (data / first.path).is_file()
    resolved = json.loads((data / "models" / f"{first.version}.json").read_text())
    assert resolved["train"]["seed"] == 1 and resolved["model"]["backbone"] == "test_efficientnet"
    report_dir = data / "reports" / first.version
    for name in (
        "report.json",
        "report.md",
        "sender_confusion.png",
        "label_f1_vs_threshold.png",
        "sender_reliability.png",
    ):
        assert (report_dir / name).is_file(), name
    assert first.metrics["category_macro_f1"] >= 0.7
    assert first.metrics["sender_top1"] > first.metrics["majority_top1"]

    # A barely trained model: compared with the current one on the same validation images.
    code, out, err = _run(capsys, *base, "train", "--no-progress", "--epochs", "1", "--json")
    assert code == 0, err
    second = json.loads(out)
    comparison = second["comparison"]
    assert comparison["old"] == first.version and comparison["new"] == second["version"]
    new_score = comparison["metrics"]["score"]["new"]
    old_score = comparison["metrics"]["score"]["old"]
    assert second["promoted"] == (new_score >= old_score)
    assert "same" in second["promotion_reason"]
    current = asyncio.run(_current(data))
    assert current.version == (second["version"] if second["promoted"] else first.version)

    code, out, _ = _run(capsys, *base, "models")
    assert code == 0 and first.version in out and second["version"] in out
    assert f"* {current.version}" in out

    code, out, err = _run(capsys, *base, "eval", "--json", "--no-progress")
    assert code == 0, err
    report = json.loads(out)
    assert report["version"] == current.version and report["n_val"] == 24
    assert "macro_f1" in report["categories"] and "recent_30d" in report["baselines"]

    code, out, err = _run(
        capsys, *base, "eval", "--compare", first.version, second["version"], "--no-progress"
    )
    assert code == 0, err
    assert "Both evaluated on the same 24 validation images" in out
    assert (
        data / "reports" / f"compare-{first.version}-vs-{second['version']}" / "compare.json"
    ).is_file()

    code, out, _ = _run(capsys, *base, "models", "use", first.version)
    assert code == 0 and first.version in out
    assert asyncio.run(_current(data)).version == first.version

    code, _, err = _run(capsys, *base, "models", "use", "nope")
    assert code == 1 and err.count("\n") == 1 and "nope" in err
    code, _, err = _run(capsys, *base, "eval", "--model", "nope")
    assert code == 1 and err.count("\n") == 1


def test_promote_flag_and_promotion_of_a_better_model(store, capsys):
    config, data = store
    asyncio.run(fill_store(data, generate(60, seed=4)))
    base = ["--config", str(config), "--data", str(data)]
    code, out, err = _run(capsys, *base, "train", "--no-progress", "--epochs", "1", "--json")
    assert code == 0, err
    weak = json.loads(out)
    assert weak["tuning"]["tuned_on"] == "validation" and weak["data"]["n_tune"] == 0
    code, out, err = _run(capsys, *base, "train", "--no-progress", "--json")
    assert code == 0, err
    strong = json.loads(out)
    assert strong["promoted"], strong["promotion_reason"]
    code, out, err = _run(capsys, *base, "train", "--no-progress", "--epochs", "1", "--promote")
    assert code == 0 and "promoted     yes: --promote given" in out
    # 60 images leave 9 for a tune part: too few, and the summary says what that means: the
    # sender's calibration came from validation, the categories' from cross-validation.
    assert "train 48, tune 0" in out
    assert (
        "warning      sender temperature and confidence line tuned on validation: too few "
        "images for a tune split — sender metrics are optimistic" in out
    )
    assert "from 5-fold cross-validation on the 48 train and tune images with categories" in out
    assert weak["summary"]["n_val"] == strong["summary"]["n_val"] == 12


def test_not_enough_data_is_one_line(store, capsys):
    config, data = store
    base = ["--config", str(config), "--data", str(data)]
    code, _, err = _run(capsys, *base, "train")
    assert code == 1 and err.count("\n") == 1 and "no store yet" in err
    items = [(d, "Person A", [], t) for d, _, _, t in generate(4, seed=5)]
    asyncio.run(fill_store(data, items))
    code, _, err = _run(capsys, *base, "train", "--no-progress")
    assert code == 1 and err.count("\n") == 1 and "not enough data" in err
    code, _, err = _run(capsys, *base, "eval")
    assert code == 1 and "no current model" in err
    code, out, _ = _run(capsys, *base, "models")
    assert code == 0 and "no models yet" in out


def test_labels_match_the_generator():
    assert LABELS == ["meme", "photo", "news"]
