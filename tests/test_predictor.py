"""Predictor: per-item results, hostile inputs isolated, async batching, hot swap; and the CLI."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import torch
from ml_helpers import (
    LABELS,
    SENDERS,
    make_checkpoint,
    tiny_model_config,
    write_hostile_files,
    write_images,
)

from classifier.checkpoint import save_checkpoint
from classifier.errors import ImageLoadError
from classifier.predictor import ErrorResult, Predictor, Result


@pytest.fixture(scope="module")
def cfg():
    return tiny_model_config()


@pytest.fixture(scope="module")
def ckpt(cfg):
    return make_checkpoint(cfg, finetuned=True, emitted_labels=["meme", "photo"], seed=1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), 7)


def _same(a: Result, b: Result) -> bool:
    return a.labels.keys() == b.labels.keys() and all(
        abs(a.labels[k] - b.labels[k]) < 1e-4 for k in a.labels
    ) and all(
        abs(a.sender_probabilities[k] - b.sender_probabilities[k]) < 1e-4
        for k in a.sender_probabilities
    )  # fmt: skip


def test_results_in_order_with_hostile_files_isolated(ckpt, cfg, images, tmp_path):
    bad = write_hostile_files(tmp_path)
    sources = [images[0], bad["truncated"], *images[1:4], bad["bomb"], bad["not_an_image"]]
    sources += [bad["empty"], *images[4:]]
    predictor = Predictor(ckpt, cfg, max_batch=3)
    try:
        results = predictor.predict_files(sources)
        single = [predictor.predict_files([p])[0] for p in images]
    finally:
        predictor.close()
    assert len(results) == len(sources)
    good = [r for r in results if isinstance(r, Result)]
    errors = [r for r in results if isinstance(r, ErrorResult)]
    assert len(good) == len(images) and len(errors) == 4
    for err, name in zip(errors, ["truncated", "bomb", "not_an_image", "empty"], strict=True):
        assert (
            err.source == str(bad[name]) and "\n" not in err.error and str(bad[name]) in err.error
        )
    # Batched results equal one-at-a-time results, item by item (no mix-ups within a batch).
    for batched, alone in zip(good, single, strict=True):
        assert _same(batched, alone)
    r = good[0]
    assert set(r.labels) == {"meme", "photo"}  # emitted labels only
    assert r.predicted == sorted(
        [k for k, v in r.labels.items() if v >= 0.5], key=lambda k: -r.labels[k]
    )
    assert set(r.sender_probabilities) == set(SENDERS)
    assert abs(sum(r.sender_probabilities.values()) - 1) < 1e-4
    assert r.sender == max(r.sender_probabilities, key=r.sender_probabilities.get)
    assert r.model_version == ckpt.version


def test_unsure_sender_and_temperature(cfg, images):
    hot = make_checkpoint(cfg, finetuned=True, seed=1, temperature=50.0, sender_min_confidence=0.9)
    predictor = Predictor(hot, cfg)
    try:
        (result,) = predictor.predict_files(images[:1])
    finally:
        predictor.close()
    assert result.sender is None  # a high temperature flattens the softmax below 0.9
    assert max(result.sender_probabilities.values()) < 1 / len(SENDERS) + 0.05
    # Unsure, it still lists the likely senders, most probable first.
    ranked = sorted(result.sender_probabilities.items(), key=lambda kv: -kv[1])
    assert [(c.name, c.probability) for c in result.sender_candidates] == ranked[:3]


def _batch_sizes(predictor: Predictor) -> list[int]:
    """From now on, the size of each batch the predictor's model runs, in order."""
    sizes: list[int] = []
    original_run = predictor._run

    def spy(bundle, tensors):
        sizes.append(len(tensors))
        return original_run(bundle, tensors)

    predictor._run = spy
    return sizes


async def test_async_batching_matches_predict_files(ckpt, cfg, images, tmp_path):
    bad = write_hostile_files(tmp_path)
    predictor = Predictor(ckpt, cfg, max_batch=4, max_wait_ms=20)
    expected = predictor.predict_files(images)
    sizes = _batch_sizes(predictor)
    try:
        sources = [*images, images[0].read_bytes()]
        got = await asyncio.gather(*(predictor.predict(s) for s in sources))
        with pytest.raises(ImageLoadError, match="bomb.png"):
            await predictor.predict(bad["bomb"])
    finally:
        await predictor.aclose()
    for a, b in zip(got, [*expected, expected[0]], strict=True):
        assert _same(a, b)
    assert max(sizes) > 1, "concurrent requests should share a batch"
    assert sum(sizes) == len(sources)


async def test_on_cpu_concurrent_requests_go_in_batches_of_the_models_chunk(ckpt, cfg, images):
    # The model sees 4 images at a time on CPU: a batch of 10 would wait for all 10 decodes
    # before its first 4 could run, and end with a short chunk of 2.
    from classifier.predictor import _CPU_CHUNK

    predictor = Predictor(ckpt, cfg, max_batch=16, max_wait_ms=50)
    sizes = _batch_sizes(predictor)
    try:
        predictor.load()
        sources = [path.read_bytes() for path in images] * 4
        got = await asyncio.gather(*(predictor.predict(s) for s in sources))
    finally:
        await predictor.aclose()
    assert len(got) == len(sources) == sum(sizes)
    assert max(sizes) == _CPU_CHUNK == 4


async def test_forward_counts_every_batch_its_images_and_its_time(ckpt, cfg, images):
    predictor = Predictor(ckpt, cfg, max_batch=4, max_wait_ms=20)
    sizes = _batch_sizes(predictor)
    try:
        predictor.predict_files(images)
        sources = [path.read_bytes() for path in images] * 2
        await asyncio.gather(*(predictor.predict(s) for s in sources))
    finally:
        await predictor.aclose()
    forward = predictor.forward
    assert forward.batches == len(sizes) and forward.images == sum(sizes) == 3 * len(images)
    assert forward.seconds > 0


async def test_swap_while_requests_in_flight(ckpt, cfg, images):
    other = make_checkpoint(cfg, finetuned=True, seed=7, version="v-new")
    predictor = Predictor(ckpt, cfg, max_batch=2, max_wait_ms=1)
    predictor.load()
    try:
        first = [asyncio.ensure_future(predictor.predict(p)) for p in images * 3]
        await asyncio.sleep(0)  # requests queued and decoding on the old model
        await asyncio.get_running_loop().run_in_executor(None, predictor.swap, other)
        later = await asyncio.gather(*(predictor.predict(p) for p in images))
        early = await asyncio.gather(*first)
    finally:
        await predictor.aclose()
    assert all(isinstance(r, Result) for r in early)
    assert {r.model_version for r in early} <= {"v-test", "v-new"}
    assert {r.model_version for r in later} == {"v-new"}
    assert predictor.model_version == "v-new"


def test_threads_share_one_predictor(ckpt, cfg, images):
    predictor = Predictor(ckpt, cfg)
    expected = predictor.predict_files(images)
    outputs: list = [None] * 4

    def work(i: int) -> None:
        outputs[i] = predictor.predict_files(images)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    predictor.close()
    for out in outputs:
        assert all(_same(a, b) for a, b in zip(out, expected, strict=True))


def test_lazy_load_once(ckpt, cfg, tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_checkpoint(ckpt, path)
    import classifier.predictor as mod

    calls = []
    real = mod.load_checkpoint
    monkeypatch.setattr(mod, "load_checkpoint", lambda p: calls.append(p) or real(p))
    predictor = Predictor(path, cfg)
    assert not predictor.is_loaded and not calls
    threads = [threading.Thread(target=predictor.load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    predictor.close()
    assert len(calls) == 1 and predictor.is_loaded


# -- CLI ---------------------------------------------------------------------------------


async def _record_model(data_dir, version, make_current=True):
    from store.db import open_database
    from store.queries.models import insert_model

    async with open_database(data_dir / "memetag.db") as db:
        await insert_model(db, version, f"models/{version}.pt", {}, make_current=make_current)


def _write_config(tmp_path, cfg) -> str:
    labels = "\n".join(
        f'[labels.{n}]\nemoji = "{e}"\ndescription = "{n}"\n'
        for n, e in zip(LABELS, ("😂", "🐦", "📷"), strict=True)
    )
    text = (
        f'[model]\nbackbone = "{cfg.backbone}"\npretrained = "none"\n'
        f'image_size = {cfg.image_size}\ndevice = "cpu"\n\n{labels}'
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def cli_env(tmp_path, ckpt, cfg):
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    save_checkpoint(ckpt, data / "models" / f"{ckpt.version}.pt")
    asyncio.run(_record_model(data, ckpt.version))
    return ["--config", _write_config(tmp_path, cfg), "--data", str(data)]


def test_cli_predict_json(cli_env, images, tmp_path, capsys):
    from memetag.cli import main

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    code = main([*cli_env, "predict", "--json", str(images[0]), str(bad), str(images[1])])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = json.loads(captured.out)
    assert [r["file"] for r in rows] == [str(images[0]), str(bad), str(images[1])]
    assert set(rows[0]) == {"file", "labels", "predicted", "sender"}
    assert set(rows[0]["labels"]) == {"meme", "photo"}
    assert set(rows[0]["sender"]) == {"name", "probability", "candidates"}
    candidates = rows[0]["sender"]["candidates"]
    assert [c["name"] for c in candidates][:1] == [rows[0]["sender"]["name"]]
    assert [c["probability"] for c in candidates] == sorted(
        (c["probability"] for c in candidates), reverse=True
    )
    assert len(candidates) == 3 and set(candidates[0]) == {"name", "probability"}
    assert "error" in rows[1] and "\n" not in rows[1]["error"]

    code = main([*cli_env, "predict", str(images[0])])  # the table
    out = capsys.readouterr().out
    assert code == 0 and images[0].name[-10:] in out and "v-test" in out

    code = main([*cli_env, "predict", "--json", str(bad)])
    assert code == 1 and "error" in json.loads(capsys.readouterr().out)[0]


def test_cli_explain_and_errors(cli_env, images, tmp_path, capsys, monkeypatch):
    from memetag.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([*cli_env, "explain", str(images[0]), "--label", "meme"]) == 0
    out = capsys.readouterr().out.splitlines()
    png = tmp_path / f"{images[0].stem}.meme.gradcam.png"
    assert out[0] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out[1].startswith("meme: ")

    target = tmp_path / "s.png"
    assert main([*cli_env, "explain", str(images[0]), "--sender", "--out", str(target)]) == 0
    assert target.exists() and "sender Person" in capsys.readouterr().out

    assert main([*cli_env, "explain", str(images[0]), "--label", "cats"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "meme, social_media, photo" in err

    assert main([*cli_env, "predict", "--model", "v-missing", str(images[0])]) == 1
    assert "v-missing" in capsys.readouterr().err


def test_cli_without_model(tmp_path, cfg, images, capsys):
    from memetag.cli import main

    args = ["--config", _write_config(tmp_path, cfg), "--data", str(tmp_path / "empty")]
    assert main([*args, "predict", str(images[0])]) == 1
    err = capsys.readouterr().err
    assert "no trained model yet: run `memetag train`" in err and err.count("\n") == 1


def test_predictor_thread_count_untouched(ckpt, cfg, images):
    before = torch.get_num_threads()
    predictor = Predictor(ckpt, cfg)
    predictor.predict_files(images[:2])
    predictor.close()
    assert torch.get_num_threads() == before


def test_centre_crop_decoded_directly_matches_the_transform(ckpt, cfg, images, tmp_path):
    import numpy as np
    from ml_helpers import screenshot_like

    import classifier.predictor as mod
    from classifier.imaging import load_rgb

    tall = tmp_path / "tall.png"
    screenshot_like(90, 700, seed=4).save(tall)
    sources = [*images, tall]
    predictor = Predictor(ckpt, cfg, max_batch=16)  # 8 images: the model runs 4 + 4
    try:
        bundle = predictor._get()
        assert bundle.crop is not None and (bundle.crop.resize_to, bundle.crop.crop) == (67, 64)
        for src in sources:
            fast = mod._prepare(bundle, src)
            slow = bundle.transform(load_rgb(src, max_pixels=cfg.max_pixels, min_side=67))
            diff = (fast - slow).abs() * float(np.mean(ckpt.data_config["std"])) * 255
            assert fast.shape == slow.shape and diff.max() <= 4 and diff.mean() < 0.1, src
        batched = predictor.predict_files(sources)
        single = [predictor.predict_files([s])[0] for s in sources]
    finally:
        predictor.close()
    assert all(_same(a, b) for a, b in zip(batched, single, strict=True))


def test_letterbox_model_uses_the_whole_transform(images):
    boxed_cfg = tiny_model_config(resize="letterbox")
    predictor = Predictor(make_checkpoint(boxed_cfg, finetuned=True, seed=2), boxed_cfg)
    try:
        assert predictor._get().crop is None
        results = predictor.predict_files(images[:3])
    finally:
        predictor.close()
    assert all(isinstance(r, Result) for r in results)
