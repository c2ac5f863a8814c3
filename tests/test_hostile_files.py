"""Hostile files given to every decoder: FIFOs, devices and formats outside the allow-list.

predict, explain, the Predictor and ingest must refuse the same things with the same message,
never hang on a FIFO, never read /dev/zero, and never let Pillow reach a plugin outside
``store.imageformats`` (an EPS would make Pillow run Ghostscript).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from ml_helpers import make_checkpoint, tiny_model_config, write_images
from PIL import EpsImagePlugin, Image

from classifier.checkpoint import save_checkpoint
from classifier.errors import ImageLoadError
from classifier.imaging import CenterCrop, load_center_crop, load_rgb, max_file_bytes
from classifier.predictor import ErrorResult, Predictor, Result
from ingest.errors import ImageRejected
from ingest.images import inspect_image, sniff_image_prefix
from memetag.cli import main
from store.imageformats import (
    PILLOW_FORMATS,
    FileRefused,
    open_image_file,
    refusal,
    sniff_format,
)
from tests.helpers.imagegen import make_image

MAX_PIXELS = 10_000_000
# What Pillow can write but memetag must never decode (save mode per format).
REFUSED = {"TGA": "RGB", "PCX": "RGB", "PPM": "RGB", "EPS": "RGB", "SGI": "RGB", "DDS": "RGB"}
REFUSED |= {"XBM": "1", "ICNS": "RGB"}


def _encode(fmt: str) -> bytes:
    img = Image.new("RGB", (64, 64), (200, 30, 40)).convert(REFUSED[fmt])
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def refused_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("refused")
    paths = {}
    for fmt in REFUSED:
        path = folder / f"image_{fmt.lower()}.{fmt.lower()}"
        path.write_bytes(_encode(fmt))
        paths[fmt] = path
    return paths


@pytest.fixture
def fake_ghostscript(tmp_path: Path, monkeypatch) -> Path:
    """A `gs` first on PATH that records every call; Pillow forgets any gs it found before."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gs-was-run"
    script = bin_dir / "gs"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{marker}"\nexit 1\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    return marker


@pytest.fixture(scope="module")
def model_cfg():
    return tiny_model_config()


@pytest.fixture(scope="module")
def ckpt(model_cfg):
    return make_checkpoint(model_cfg, finetuned=True, emitted_labels=["meme", "photo"], seed=1)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("good"), 1)[0]


@pytest.fixture
def cli_env(tmp_path: Path, ckpt, model_cfg) -> list[str]:
    from store.db import open_database
    from store.queries.models import insert_model

    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    save_checkpoint(ckpt, data / "models" / f"{ckpt.version}.pt")

    async def record() -> None:
        async with open_database(data / "memetag.db") as db:
            await insert_model(db, ckpt.version, f"models/{ckpt.version}.pt", {}, make_current=True)

    asyncio.run(record())
    config = tmp_path / "config.toml"
    labels = "".join(
        f'[labels.{n}]\nemoji = "{chr(0x1F600 + i)}"\ndescription = "{n}"\n'
        for i, n in enumerate(ckpt.labels)
    )
    config.write_text(
        f'[model]\nbackbone = "{model_cfg.backbone}"\npretrained = "none"\n'
        f'image_size = {model_cfg.image_size}\ndevice = "cpu"\n\n{labels}'
    )
    return ["--config", str(config), "--data", str(data)]


def _predict_json(cli_env: list[str], capsys, *files: Path) -> list[dict]:
    code = main([*cli_env, "predict", "--json", *map(str, files)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out, captured.err
    rows = json.loads(captured.out)
    assert code == (0 if any("error" not in r for r in rows) else 1)
    return rows


def _explain_error(cli_env: list[str], capsys, path: Path, tmp_path: Path) -> str:
    code = main(
        [*cli_env, "explain", str(path), "--label", "meme", "--out", str(tmp_path / "o.png")]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


# -- one allow-list ----------------------------------------------------------------------------


def test_allow_list_is_what_the_readme_lists() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    from store.imageformats import DESCRIPTION

    listed = readme.split("One allow-list of formats serves every decoder", 1)[1][:400]
    for name in DESCRIPTION.replace(" or ", ", ").split(", "):
        assert f" {name}," in listed or f" {name} " in listed, name
    assert set(PILLOW_FORMATS) <= set("JPEG MPO PNG GIF WEBP BMP TIFF ICO AVIF".split())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO"])
def test_allowed_formats_decode_everywhere(fmt: str) -> None:
    data = make_image(fmt, (64, 48), seed=3)
    assert sniff_format(data) in (fmt, "JPEG")
    assert inspect_image(data, max_pixels=MAX_PIXELS).format == fmt
    assert load_rgb(data, max_pixels=MAX_PIXELS).mode == "RGB"


@pytest.mark.parametrize("fmt", sorted(REFUSED))
def test_refused_format_same_message_in_every_decoder(fmt, refused_files, tmp_path) -> None:
    path = refused_files[fmt]
    data = path.read_bytes()
    expected = refusal(data)
    assert expected.startswith("unsupported format: ") and "expected a JPEG" in expected
    assert not sniff_image_prefix(data[:64])

    with pytest.raises(ImageRejected) as rejected:
        inspect_image(data, max_pixels=MAX_PIXELS)
    assert (rejected.value.reason, rejected.value.detail) == ("not_image", expected)

    for load in (
        lambda s: load_rgb(s, max_pixels=MAX_PIXELS),
        lambda s: load_center_crop(s, max_pixels=MAX_PIXELS, crop=CenterCrop(40, 32)),
    ):
        for source in (path, data):
            with pytest.raises(ImageLoadError) as failed:
                load(source)
            assert failed.value.reason == expected


def test_refused_formats_through_the_cli(
    refused_files, cli_env, capsys, tmp_path, good, fake_ghostscript
) -> None:
    files = [refused_files[f] for f in sorted(REFUSED)]
    rows = _predict_json(cli_env, capsys, good, *files)
    assert "error" not in rows[0]
    for row, path in zip(rows[1:], files, strict=True):
        assert row["error"] == f"{path}: {refusal(path.read_bytes())}"

    for path in files:
        err = _explain_error(cli_env, capsys, path, tmp_path)
        assert err == f"memetag: error: {path}: {refusal(path.read_bytes())}"

    # Ingest refuses them with the same words, names each file, and stores only the good one.
    folder = tmp_path / "chat" / "meme"
    folder.mkdir(parents=True)
    (folder / "good.png").write_bytes(make_image("PNG", seed=5))
    for path in files:
        (folder / path.name).write_bytes(path.read_bytes())
    data = tmp_path / "ingested"
    assert (
        main(["--data", str(data), "ingest", "folder", str(tmp_path / "chat"), "--no-progress"])
        == 1
    )
    err = capsys.readouterr().err
    for path in files:
        line = next(x for x in err.splitlines() if path.name in x)
        assert line.endswith(f": not_image: {refusal(path.read_bytes())}"), line
    con = sqlite3.connect(data / "memetag.db")
    try:
        assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
    finally:
        con.close()
    assert not fake_ghostscript.exists(), fake_ghostscript.read_text()


def test_eps_never_reaches_ghostscript(refused_files, ckpt, model_cfg, fake_ghostscript) -> None:
    eps = refused_files["EPS"]
    # The EPS plugin asks `gs --version` before rendering: any call would leave the marker.
    with pytest.raises(ImageLoadError, match="unsupported format: EPS"):
        load_rgb(eps, max_pixels=MAX_PIXELS)
    with pytest.raises(ImageRejected, match="unsupported format: EPS"):
        inspect_image(eps.read_bytes(), max_pixels=MAX_PIXELS)
    predictor = Predictor(ckpt, model_cfg, max_batch=2)
    try:
        (result,) = predictor.predict_files([eps])
        (from_bytes,) = predictor.predict_files([eps.read_bytes()])
    finally:
        predictor.close()
    assert isinstance(result, ErrorResult) and "unsupported format: EPS" in result.error
    assert isinstance(from_bytes, ErrorResult) and "unsupported format: EPS" in from_bytes.error
    assert not fake_ghostscript.exists(), fake_ghostscript.read_text()
    # The marker does record a call: the same file opened by Pillow without the allow-list.
    with pytest.raises(Exception), Image.open(eps) as img:  # noqa: B017 - any gs failure
        img.load()
    assert fake_ghostscript.exists()


def test_an_eps_renamed_jpg_is_still_refused(refused_files, tmp_path, fake_ghostscript) -> None:
    disguised = tmp_path / "photo.jpg"
    disguised.write_bytes(refused_files["EPS"].read_bytes())
    with pytest.raises(ImageLoadError, match="unsupported format: EPS"):
        load_rgb(disguised, max_pixels=MAX_PIXELS)
    assert not fake_ghostscript.exists()


# -- FIFOs and devices -------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    return path


@pytest.mark.timeout(60)
def test_fifo_is_refused_without_blocking(fifo, ckpt, model_cfg, good) -> None:
    for load in (
        lambda: load_rgb(fifo, max_pixels=MAX_PIXELS),
        lambda: load_center_crop(fifo, max_pixels=MAX_PIXELS, crop=CenterCrop(40, 32)),
    ):
        with pytest.raises(ImageLoadError) as failed:
            load()
        assert str(failed.value).startswith(f"{fifo}: not a regular file (a FIFO")
    predictor = Predictor(ckpt, model_cfg, max_batch=2)
    try:
        results = predictor.predict_files([good, fifo, good])
    finally:
        predictor.close()
    assert isinstance(results[0], Result) and isinstance(results[2], Result)
    assert isinstance(results[1], ErrorResult) and "not a regular file" in results[1].error


@pytest.mark.timeout(60)
def test_fifo_through_predict_and_explain(fifo, cli_env, capsys, tmp_path, good) -> None:
    rows = _predict_json(cli_env, capsys, fifo, good)
    assert rows[0]["error"].startswith(f"{fifo}: not a regular file") and "error" not in rows[1]
    assert "not a regular file" in _explain_error(cli_env, capsys, fifo, tmp_path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.timeout(60)
def test_dev_zero_is_a_device_not_an_empty_file(cli_env, capsys, tmp_path) -> None:
    with pytest.raises(ImageLoadError) as failed:
        load_rgb("/dev/zero", max_pixels=MAX_PIXELS)
    assert failed.value.reason.startswith("not a regular file (a device)")
    assert "empty" not in failed.value.reason
    (row,) = _predict_json(cli_env, capsys, Path("/dev/zero"))
    assert row["error"].startswith("/dev/zero: not a regular file (a device)")
    assert "not a regular file (a device)" in _explain_error(
        cli_env, capsys, Path("/dev/zero"), tmp_path
    )


def test_a_directory_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="not a regular file \\(a directory\\)"):
        load_rgb(tmp_path, max_pixels=MAX_PIXELS)
    with pytest.raises(ImageLoadError, match="cannot open file"):
        load_rgb(tmp_path / "gone.png", max_pixels=MAX_PIXELS)


def test_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(make_image("PNG", seed=1))
    with pytest.raises(FileRefused, match="over the 100-byte limit"):
        open_image_file(big, max_bytes=100)
    with open_image_file(big, max_bytes=big.stat().st_size) as fp:
        assert fp.read(8) == b"\x89PNG\r\n\x1a\n"
    # The classifier's cap follows its pixel limit: no image under it needs more bytes.
    assert max_file_bytes(100) < 100 * 8 + (17 << 20)
    with pytest.raises(ImageLoadError, match="byte limit"):
        load_rgb(b"\x89PNG\r\n\x1a\n" + bytes(max_file_bytes(10)), max_pixels=10)
    sparse = tmp_path / "sparse.jpg"
    with open(sparse, "wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0")
        fh.truncate(max_file_bytes(MAX_PIXELS) + 1)  # a hole: no disk used
    with pytest.raises(ImageLoadError, match="byte limit for an image"):
        load_rgb(sparse, max_pixels=MAX_PIXELS)


@pytest.mark.timeout(120)
def test_ingest_folder_with_a_fifo_and_a_device_link(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "chat" / "meme"
    folder.mkdir(parents=True)
    (folder / "good.png").write_bytes(make_image("PNG", seed=2))
    os.mkfifo(folder / "pipe.png")
    if os.path.exists("/dev/zero"):
        (folder / "zero.png").symlink_to("/dev/zero")
    data = tmp_path / "data"
    assert (
        main(["--data", str(data), "ingest", "folder", str(tmp_path / "chat"), "--no-progress"])
        == 0
    )
    capsys.readouterr()
    con = sqlite3.connect(data / "memetag.db")
    try:
        assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
    finally:
        con.close()
    assert stat.S_ISFIFO(os.stat(folder / "pipe.png").st_mode)  # left alone


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["file", "folder"])
def test_ingest_discord_media_fifo_and_device(tmp_path: Path, capsys, how: str) -> None:
    # A --media export whose attachments were swapped for a FIFO and a link to /dev/zero: both
    # forms of passing the export skip them as missing and store the rest.
    fixtures = Path(__file__).parent / "fixtures" / "discord"
    general = "Example guild - Text Channels - general [1000000000000000001].json"
    media = f"{general}_Files"
    folder = tmp_path / "export [1]"
    shutil.copytree(fixtures / media, folder / media)
    shutil.copy(fixtures / general, folder / general)
    (folder / media / "pepecute-7C3D1.png").unlink()
    os.mkfifo(folder / media / "pepecute-7C3D1.png")
    if os.path.exists("/dev/zero"):
        (folder / media / "funny-0A1B2.gif").unlink()
        (folder / media / "funny-0A1B2.gif").symlink_to("/dev/zero")
    target = folder / general if how == "file" else folder
    args = ["--data", str(tmp_path / "data"), "ingest", "discord-export", str(target)]
    assert main([*args, "--json", "--no-progress"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["stored"] >= 2
    failed = " ".join(summary["failure_examples"])
    assert "pepecute-7C3D1.png: missing_file" in failed
    if os.path.exists("/dev/zero"):
        assert "funny-0A1B2.gif: missing_file" in failed
    assert stat.S_ISFIFO(os.stat(folder / media / "pepecute-7C3D1.png").st_mode)
