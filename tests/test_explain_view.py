"""`explain` draws on the whole image: the model's view is mapped back to where it came from."""

from __future__ import annotations

import numpy as np
import pytest
from ml_helpers import LABELS, make_checkpoint, photo_like, tiny_model_config
from PIL import Image, ImageDraw

from classifier.backbone import build_backbone, build_transform
from classifier.checkpoint import save_checkpoint
from classifier.gradcam import heatmap_on_image, model_view, render_explanation, tensor_to_rgb
from memetag.cli import main

SIZES = [(900, 300), (300, 900), (64, 64), (131, 77), (77, 1200)]


@pytest.fixture(scope="module")
def data_config():
    return dict(build_backbone(tiny_model_config())[1])


def _comic(width: int = 900, height: int = 300) -> Image.Image:
    """Three panels side by side, each a different colour: the centre crop keeps only one."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    panel = width // 3
    for i, colour in enumerate(("red", "green", "blue")):
        draw.rectangle((i * panel + 8, 8, (i + 1) * panel - 8, height - 8), fill=colour)
    return img


def _model_pixels(image: Image.Image, data_config: dict, resize: str) -> np.ndarray:
    x = build_transform(data_config, resize=resize)(image)
    return tensor_to_rgb(x, data_config["mean"], data_config["std"]).astype(np.float32)


@pytest.mark.parametrize("size", SIZES)
def test_crop_view_is_the_box_the_model_saw(data_config, size):
    image = photo_like(*size, seed=3)
    view = model_view(image.size, data_config, "crop")
    seen = _model_pixels(image, data_config, "crop")
    s = view.input_size
    assert view.input_box == (0, 0, s, s) and seen.shape == (s, s, 3)
    # Resampling the original's box straight to the input size gives the model's pixels.
    ours = np.asarray(image.resize((s, s), Image.Resampling.BICUBIC, box=view.image_box))
    assert np.abs(ours.astype(np.float32) - seen).mean() < 4.0
    # A box shifted by a tenth of its width would not match: the comparison can fail.
    left, top, right, bottom = view.image_box
    shift = (right - left) / 10
    if right + shift <= size[0]:
        off = np.asarray(
            image.resize(
                (s, s), Image.Resampling.BICUBIC, box=(left + shift, top, right + shift, bottom)
            )
        )
        assert np.abs(off.astype(np.float32) - seen).mean() > 4.0


@pytest.mark.parametrize("size", SIZES)
def test_letterbox_view_is_the_whole_image(data_config, size):
    image = photo_like(*size, seed=5)
    view = model_view(image.size, data_config, "letterbox")
    assert view.whole and view.image_box == (0.0, 0.0, float(size[0]), float(size[1]))
    seen = _model_pixels(image, data_config, "letterbox")
    x0, y0, x1, y1 = view.input_box
    ours = np.asarray(image.resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC))
    assert np.abs(ours.astype(np.float32) - seen[y0:y1, x0:x1]).mean() < 4.0


def test_heat_lands_where_the_model_looked(data_config):
    image = _comic()
    view = model_view(image.size, data_config, "crop")
    assert not view.whole
    s = view.input_size
    heat = np.zeros((s, s), np.float32)
    heat[: s // 4, : s // 4] = 1.0  # the top-left corner of what the model saw
    full, seen = heatmap_on_image(heat, view, image.size)
    assert full.shape == seen.shape == (300, 900)
    left, top, right, bottom = view.image_box
    ys, xs = np.nonzero(full > 0.5)
    assert left - 1 <= xs.min() and xs.max() <= left + (right - left) / 4 + 2
    assert top - 1 <= ys.min() and ys.max() <= top + (bottom - top) / 4 + 2
    # Outside the centre square the model saw nothing: no heat, not "seen".
    assert not seen[:, : int(left) - 1].any() and not seen[:, int(right) + 1 :].any()
    assert full[:, : int(left) - 1].max() == 0 and full[:, int(right) + 1 :].max() == 0
    assert seen[int(top) + 1 : int(bottom) - 1, int(left) + 1 : int(right) - 1].all()
    assert not seen[: int(top) - 1].any() and not seen[int(bottom) + 1 :].any()


def test_letterbox_padding_is_not_mapped(data_config):
    image = _comic()
    view = model_view(image.size, data_config, "letterbox")
    s = view.input_size
    heat = np.zeros((s, s), np.float32)
    x0, y0, x1, y1 = view.input_box
    assert y0 > 0  # a wide image is padded above and below
    heat[:y0, :] = 1.0  # heat on the padding only: nothing of the image
    full, seen = heatmap_on_image(heat, view, image.size)
    assert seen.all() and full.max() < 0.5


def test_render_shows_the_whole_comic_and_dims_what_was_not_seen(data_config, tmp_path):
    image = _comic()
    view = model_view(image.size, data_config, "crop")
    s = view.input_size
    out = render_explanation(image, np.ones((s, s), np.float32), view, tmp_path / "e.png")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (1344, 448)  # whole image, short side 448
        pixels = np.asarray(png.convert("RGB"), dtype=np.int32)
    # The red panel on the left is still there, dimmed; the green centre carries the heat map.
    left_panel = pixels[224, 224]
    assert left_panel[0] > 60 and left_panel[0] < 255 * 0.5 and left_panel[1] < 20
    assert not np.array_equal(pixels[224, 672], [0, 128, 0])


def _cli_env(tmp_path, resize: str) -> list[str]:
    cfg = tiny_model_config(resize=resize)
    ckpt = make_checkpoint(cfg, finetuned=True, seed=4, version=f"v-{resize}")
    data = tmp_path / "data"
    save_checkpoint(ckpt, data / "models" / f"{ckpt.version}.pt")
    labels = "\n".join(
        f'[labels.{n}]\nemoji = "{e}"\ndescription = "{n}"\n'
        for n, e in zip(LABELS, ("😂", "🐦", "📷"), strict=True)
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\nbackbone = "{cfg.backbone}"\npretrained = "none"\nimage_size = '
        f'{cfg.image_size}\nresize = "{resize}"\ndevice = "cpu"\n\n{labels}'
    )
    return ["--config", str(config), "--data", str(data), "explain", "--model", ckpt.version]


@pytest.mark.parametrize("resize", ["crop", "letterbox"])
def test_cli_explain_draws_the_whole_image(tmp_path, capsys, resize):
    comic = tmp_path / "comic.png"
    _comic(600, 200).save(comic)
    out = tmp_path / "x.png"
    code = main([*_cli_env(tmp_path, resize), str(comic), "--label", "meme", "--out", str(out)])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == 0, captured.err
    assert lines[0] == str(out) and lines[1].startswith("meme: ")
    with Image.open(out) as png:
        assert png.size == (1344, 448)  # the 3:1 comic, not a square crop of it
    if resize == "crop":
        assert "model saw only the outlined 191x191 centre" in lines[2]
    else:
        assert "which the model saw whole" in lines[2]
