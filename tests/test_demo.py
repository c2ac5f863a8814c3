"""`memetag demo`: its sample chat (deterministic, a real-format Hangouts export), the whole loop
run at a small size, and the quick synthetic chat some tests and benchmarks use."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import random
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from ingest.parsers import hangouts
from ingest.parsers.base import ParseStats
from memetag.cli import main
from memetag.demo import CATEGORIES, make_demo_chat, render
from memetag.demo import MEMBERS as SYNTHETIC_MEMBERS
from memetag.demo.samplechat import (
    HISTORY_KINDS,
    MEMBERS,
    NEW_KIND,
    LivePlan,
    SampleChat,
    make_sample_chat,
    write_hangouts_export,
)


def test_demo_chat_is_varied_and_shaped_like_a_real_chat(tmp_path):
    rows = make_demo_chat(tmp_path, images=60, seed=3, size=64)
    with open(tmp_path / "labels.csv", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["filename", "sender", "labels", "timestamp"]
        lines = list(reader)
    assert len(lines) == len(rows) == 60
    assert {line[1] for line in lines} == set(SYNTHETIC_MEMBERS)
    assert all(set(line[2].split()) <= set(CATEGORIES) for line in lines)
    times = [datetime.fromisoformat(line[3]) for line in lines]
    assert times == sorted(times)
    digests = {hashlib.sha256((tmp_path / line[0]).read_bytes()).hexdigest() for line in lines}
    assert len(digests) == 60  # no two images byte-identical
    tall = 0
    for r in rows:
        with Image.open(tmp_path / r.filename) as img:
            w, h = img.size
            fmt = img.format
        if {"social_media", "news"} & set(r.labels):
            assert fmt == "PNG"
            tall += h >= 1.5 * w
        elif {"photo", "meme", "tv_cartoon"} & set(r.labels):
            assert fmt == "JPEG" and 0.7 <= w / h <= 1.8  # square, 4:3, 3:4 or 16:9
    assert tall >= 3  # tall captures, laid out down the whole page


def _tall(labels: tuple[str, ...]) -> Image.Image:
    for seed in range(20):  # three out of four are tall captures
        img = render(labels, random.Random(seed), 256).convert("RGB")
        if img.height >= 1.5 * img.width:
            return img
    raise AssertionError(f"no tall {labels} image in 20 tries")


def test_tall_screenshots_fill_the_page_with_the_signature_at_the_edges():
    for labels in (("news",), ("social_media",)):
        img = _tall(labels)
        w, h = img.size
        assert w >= 720 and 2000 <= h <= 6000
        for k in range(5):  # something drawn in every fifth of the height, not just the middle
            band = img.crop((0, k * h // 5, w, (k + 1) * h // 5))
            assert len(band.getcolors(w * h) or ()) > 3, (labels, k)
    # A news masthead: a full-width band of one saturated colour near the top, outside the
    # square a centre crop would keep.
    img = _tall(("news",))
    w, h = img.size
    rows = [img.crop((0, y, w, y + 1)).getcolors(w) for y in range(0, h // 10)]
    bands = [c[0][1] for c in rows if c and len(c) == 1 and max(c[0][1]) - min(c[0][1]) > 60]
    assert bands and h // 10 < (h - w) // 2


# --- the sample chat `memetag demo` runs on -----------------------------------------------------


def _digests(chat: SampleChat) -> list[tuple[str, str, str, str]]:
    return [
        (i.path, i.sender, i.kind, hashlib.sha256(chat.image_bytes(i)).hexdigest())
        for i in chat.history + chat.live
    ]


def test_sample_chat_is_deterministic_and_written_as_a_real_hangouts_export(tmp_path):
    plan = LivePlan(tag=1, new=1, corrected=1, after=0)
    chat = make_sample_chat(tmp_path / "a", history=10, plan=plan, seed=5)
    again = make_sample_chat(tmp_path / "b", history=10, plan=plan, seed=5)
    assert _digests(chat) == _digests(again)
    assert {i.sender for i in chat.history} == {m.name for m in MEMBERS}
    assert {i.kind for i in chat.history} <= set(HISTORY_KINDS)
    assert NEW_KIND not in {i.kind for i in chat.history}
    assert [i.phase for i in chat.live] == ["tag", "new", "after"]  # "after" ends on a meme
    assert len({d for *_, d in _digests(chat)}) == len(chat.history) + len(chat.live)

    export = write_hangouts_export(chat, tmp_path / "Hangouts.json", "http://127.0.0.1:9")
    stats = ParseStats()
    with open(export, "rb") as fh:
        posts = list(hangouts.iter_posts(fh, file="Hangouts.json", stats=stats))
    assert stats.messages > len(chat.history)  # small talk between the images
    assert [(p.author_name, p.posted_at) for p in posts] == [
        (i.sender, i.posted_at) for i in chat.history
    ]
    assert all(
        p.url.startswith("http://127.0.0.1:9/") and p.url.endswith(Path(i.path).name)
        for p, i in zip(posts, chat.history, strict=True)
    )
    with open(tmp_path / "a" / "labels.csv", newline="", encoding="utf-8") as fh:
        sheet = list(csv.DictReader(fh))
    labelled = [i for i in chat.history if i.labelled]
    assert [(r["filename"], r["labels"], r["sender"]) for r in sheet] == [
        (i.path, i.kind, "") for i in labelled
    ]


TINY = """
[model]
backbone = "test_efficientnet"
pretrained = "none"
image_size = 64
resize = "crop"
device = "cpu"
batch_size = 8

[train]
epochs = 10
"""


@pytest.mark.slow
def test_demo_runs_the_whole_loop_at_a_small_size(tmp_path, capsys):
    """`memetag demo --small` with the tiny model: real ingest of the Hangouts export from the
    loopback host, real train and eval, the real bot in the stand-in Discord answering posts,
    a reaction, Fix tags, /tagger review and /tagger retrain, and the transcript saved."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY, encoding="utf-8")
    root = tmp_path / "demo"
    argv = ["--config", str(config), "demo", "--small", "--history", "40", "--dir", str(root)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ingested" in out and "(hangouts)" in out and "failures             0" in out
    assert "evaluated " in out
    data = root / "data"
    reports = list((data / "reports").glob("*/report.md"))
    assert reports and list((data / "reports").glob("*/*.png"))
    text = (root / "transcript.txt").read_text(encoding="utf-8")
    posts = sorted((root / "chat" / "live").glob("live_*"))
    assert text.count("ms)") == len(posts)  # every live image tagged, with its latency
    assert "reacts 📺" in text and '"Fix tags"' in text and "✓ Saved" in text
    if importlib.util.find_spec("bot.cogs.review") is not None:
        assert "/tagger review" in text and "taps " in text
    if importlib.util.find_spec("bot.cogs.retrain") is not None:
        assert "/tagger retrain" in text and "Retrain #1" in text  # the gate's answer
        assert len(list((data / "models").glob("*.pt"))) == 2
    else:
        assert "/tagger retrain is not in this build" in text
    with Image.open(root / "transcript.png") as img:
        assert img.width == 1000 and img.height > 600
    assert "Next, try:" in out and str(data / "memetag.db") in out

    # A folder the demo did not make is never deleted.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    code = main(["--config", str(config), "demo", "--small", "--dir", str(tmp_path / "mine")])
    assert code == 1 and (tmp_path / "mine" / "keep.txt").exists()
