"""Library warnings reach the user as one log line naming the file, never as a raw UserWarning."""

from __future__ import annotations

import io
import logging
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

from PIL import Image

from memetag.cli import _WarningsToLog
from store.warning_context import current_subject, warnings_about

ROOT = Path(__file__).resolve().parents[1]


def corrupt_exif_jpeg(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A good JPEG whose EXIF block points a tag's data past its end (Pillow warns on reading)."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2)
    tiff += struct.pack("<HHII", 0x010E, 2, 20, 0x200)  # ImageDescription: 20 bytes at 512
    tiff += struct.pack("<HHII", 0x0112, 3, 1, 1)  # Orientation: normal
    tiff += struct.pack("<I", 0)
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), colour).save(buf, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return buf.getvalue()


def _pillow_warns_on(data: bytes) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Image.open(io.BytesIO(data)) as img:
            img.getexif().get_ifd(0)
            img.load()
            dict(img.getexif())
    return [str(w.message) for w in caught]


def test_the_fixture_really_makes_pillow_warn():
    assert _pillow_warns_on(corrupt_exif_jpeg())  # else the tests below prove nothing


def test_ingest_names_each_file_with_corrupt_exif_once(tmp_path):
    root = tmp_path / "labelled"
    for label, colour in (("memes", (200, 30, 30)), ("photos", (30, 200, 30))):
        (root / label).mkdir(parents=True)
        (root / label / "broken exif.jpg").write_bytes(corrupt_exif_jpeg(colour))
    result = subprocess.run(
        [sys.executable, "-m", "memetag.cli", "--data", str(tmp_path / "data"), "ingest",
         "folder", str(root), "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "images stored        2" in result.stdout
    err = result.stderr.splitlines()
    assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr
    assert "site-packages" not in result.stderr
    for label in ("memes", "photos"):
        named = [line for line in err if f"{label}/broken exif.jpg" in line]
        assert len(named) == 1, err  # one line per file, however often Pillow repeats itself
        assert named[0].startswith("WARNING PIL: ")


def test_explain_names_the_file_in_one_log_line(tmp_path, caplog, recwarn):
    from ml_helpers import make_checkpoint, tiny_model_config

    from classifier.checkpoint import save_checkpoint
    from memetag.cli import main

    cfg = tiny_model_config()
    ckpt = make_checkpoint(cfg, finetuned=True, version="v-w")
    save_checkpoint(ckpt, tmp_path / "data" / "models" / "v-w.pt")
    config = tmp_path / "config.toml"
    config.write_text(
        '[model]\nbackbone = "test_efficientnet"\npretrained = "none"\nimage_size = 64\n'
        'device = "cpu"\n\n[labels.meme]\nemoji = "😂"\ndescription = "m"\n\n'
        '[labels.social_media]\nemoji = "🐦"\ndescription = "s"\n\n'
        '[labels.photo]\nemoji = "📷"\ndescription = "p"\n'
    )
    image = tmp_path / "odd exif.jpg"
    image.write_bytes(corrupt_exif_jpeg())
    base = ["--config", str(config), "--data", str(tmp_path / "data")]
    with caplog.at_level(logging.WARNING):
        code = main([*base, "explain", "--model", "v-w", str(image), "--label", "meme",
                     "--out", str(tmp_path / "o.png")])  # fmt: skip
    assert code == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "PIL"]
    assert lines and all(line.startswith(f"{image}: ") for line in lines)
    assert len(lines) == len(set(lines))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_handler_names_the_subject_of_each_thread(caplog):
    handler = _WarningsToLog()
    barrier = threading.Barrier(2)

    def work(name: str) -> None:
        with warnings_about(name):
            barrier.wait()
            assert current_subject() == name
            for _ in range(3):
                handler(UserWarning("Truncated File Read"), UserWarning, "/x/PIL/Tiff.py", 1)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a.jpg", "b.jpg")]
    with caplog.at_level(logging.WARNING):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        handler(UserWarning("y_pred has\nno positives"), UserWarning, "/x/sklearn/m.py", 9)
    lines = sorted(r.getMessage() for r in caplog.records)
    assert lines == [
        "a.jpg: Truncated File Read",
        "b.jpg: Truncated File Read",
        "y_pred has no positives",
    ]
    assert current_subject() is None


def test_subject_names_are_escaped(caplog):
    handler = _WarningsToLog()
    with caplog.at_level(logging.WARNING), warnings_about("evil\x1b[2J.jpg"):
        handler(UserWarning("bad"), UserWarning, "/x/PIL/Tiff.py", 1)
    assert caplog.records[0].getMessage() == "evil\\x1b[2J.jpg: bad"
