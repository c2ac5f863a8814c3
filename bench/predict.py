"""Prediction throughput on CPU: the Predictor vs. a naive decode-resize-forward loop vs. bare forward.

Run: ``.venv/bin/python bench/predict.py`` (writes bench/results/predict.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from classifier.backbone import build_backbone  # noqa: E402
from classifier.checkpoint import (  # noqa: E402
    Checkpoint,
    build_model,
    model_config_dict,
    utc_now_iso,
)
from classifier.config import ModelConfig  # noqa: E402
from classifier.model import Heads  # noqa: E402
from classifier.predictor import Predictor, Result, _forward  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "predict.json"
LABELS = [f"label_{i}" for i in range(16)]
SENDERS = [f"Person {c}" for c in "ABCDEFGH"]


def _photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Smooth colour fields plus sensor-like noise: decodes and compresses like a photo."""
    small = rng.integers(
        0, 256, size=(max(2, height // 96), max(2, width // 96), 3), dtype=np.uint8
    )
    img = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    return Image.blend(img, noise, 0.12)


def _screenshot(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    arr = np.full((height, width, 3), 248, dtype=np.uint8)
    for top in range(24, height - 40, 34):
        length = int(rng.integers(width // 5, width - 60))
        arr[top : top + 14, 30 : 30 + length] = int(rng.integers(0, 90))
        if rng.random() < 0.08:  # an embedded picture now and then
            h = min(300, height - top - 10)
            arr[top : top + h, 30 : width - 30] = np.asarray(_photo(width - 60, h, rng))
    return Image.fromarray(arr, "RGB")


def make_images(directory: Path, seed: int = 0) -> list[Path]:
    """24 JPEG photos (1-12 MP), 10 PNG screenshots (up to 1080x8000), 6 animated GIFs."""
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    photo_sizes = [(1224, 816), (1632, 1224), (2448, 1632), (3264, 2448), (4032, 3024)]
    for i in range(24):
        w, h = photo_sizes[i % len(photo_sizes)]
        if i % 3 == 2:
            w, h = h, w  # portrait
        path = directory / f"photo{i:02d}.jpg"
        _photo(w, h, rng).save(path, quality=88)
        paths.append(path)
    shot_sizes = [(1080, 1920), (1080, 4000), (1080, 8000), (828, 1792), (1170, 2532)]
    for i in range(10):
        path = directory / f"shot{i:02d}.png"
        _screenshot(*shot_sizes[i % len(shot_sizes)], rng).save(path)
        paths.append(path)
    for i in range(6):
        frames = [_photo(480, 360, rng).quantize(64) for _ in range(4)]
        path = directory / f"anim{i:02d}.gif"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)
        paths.append(path)
    order = rng.permutation(len(paths))
    return [paths[i] for i in order]


def make_checkpoint(cfg: ModelConfig) -> Checkpoint:
    torch.manual_seed(0)
    backbone, data_config = build_backbone(cfg)
    heads = Heads(int(backbone.num_features), len(SENDERS), len(LABELS))
    return Checkpoint(
        version="bench",
        created_at=utc_now_iso(),
        model_config=model_config_dict(cfg),
        data_config=dict(data_config),
        labels=LABELS,
        senders=SENDERS,
        thresholds=dict.fromkeys(LABELS, 0.5),
        temperature=1.0,
        sender_min_confidence=0.3,
        heads_state=heads.state_dict(),
        emitted_labels=LABELS,
    )


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0


def predictor_files_rate(predictor: Predictor, paths: list[Path]) -> float:
    t0 = time.perf_counter()
    results = predictor.predict_files(paths)
    elapsed = time.perf_counter() - t0
    assert all(isinstance(r, Result) for r in results)
    return len(paths) / elapsed


def predictor_async(predictor: Predictor, paths: list[Path]) -> dict:
    """All requests at once (a burst from the bot), then one at a time (an idle bot)."""

    async def run() -> dict:
        await predictor.predict(paths[0])  # starts the batcher
        latencies: list[float] = []

        async def one(path: Path) -> None:
            t0 = time.perf_counter()
            await predictor.predict(path)
            latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(p) for p in paths))
        burst = time.perf_counter() - t0
        burst_lat = list(latencies)
        latencies.clear()
        for p in paths:
            await one(p)
        await predictor.stop_batcher()
        return {
            "burst_images_per_s": len(paths) / burst,
            "burst_latency_p50_ms": _pct(burst_lat, 50),
            "burst_latency_p95_ms": _pct(burst_lat, 95),
            "single_latency_p50_ms": _pct(latencies, 50),
            "single_latency_p95_ms": _pct(latencies, 95),
        }

    return asyncio.run(run())


def naive(model: torch.nn.Module, data_config: dict, paths: list[Path]) -> dict:
    """Full PIL decode -> torchvision Resize/CenterCrop/ToTensor/Normalize -> model, batch 1."""
    from torchvision import transforms as T

    size = data_config["input_size"][-1]
    transform = T.Compose(
        [
            T.Resize(int(size / data_config["crop_pct"]), T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(data_config["mean"], data_config["std"]),
        ]
    )
    latencies = []
    t_all = time.perf_counter()
    for path in paths:
        t0 = time.perf_counter()
        with Image.open(path) as img:
            x = transform(img.convert("RGB"))
        with torch.inference_mode():
            model(x[None])
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    return {
        "images_per_s": len(paths) / total,
        "latency_p50_ms": _pct(latencies, 50),
        "latency_p95_ms": _pct(latencies, 95),
    }


def forward_rate(model: Callable[[torch.Tensor], object], x: torch.Tensor, batches: int) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(batches):
            model(x)
        return batches * x.shape[0] / (time.perf_counter() - t0)


def _busy_cores() -> tuple[float, float]:
    """(all CPU seconds used on the machine, this process's CPU seconds) so far."""
    with open("/proc/stat") as fp:
        fields = fp.readline().split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    busy = sum(int(v) for v in fields[:3]) / ticks  # user + nice + system
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime


def _summary(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "best": max(values),
        "rounds": [round(v, 2) for v in values],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=16, help="Predictor max batch")
    parser.add_argument("--decode-workers", type=int, default=2, help="Predictor decode threads")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ModelConfig(backbone="efficientnet_lite0", pretrained="package", image_size=224)

    with tempfile.TemporaryDirectory(prefix="memetag-bench-") as tmp:
        t0 = time.perf_counter()
        paths = make_images(Path(tmp))
        made = time.perf_counter() - t0
        sizes = [Image.open(p).size for p in paths]
        mix = {
            "images": len(paths),
            "jpeg": sum(p.suffix == ".jpg" for p in paths),
            "png": sum(p.suffix == ".png" for p in paths),
            "gif": sum(p.suffix == ".gif" for p in paths),
            "megapixels_mean": float(np.mean([w * h for w, h in sizes]) / 1e6),
            "megabytes": sum(p.stat().st_size for p in paths) / 1e6,
            "generate_s": made,
        }
        ckpt = make_checkpoint(cfg)
        predictor = Predictor(ckpt, cfg, max_batch=args.batch, decode_workers=args.decode_workers)
        predictor.load()
        # The same network as trained and used plainly: eager, contiguous memory, BN unfolded.
        plain, data_config = build_model(ckpt, cfg)
        bundle = predictor._get()

        def served(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """What the Predictor runs: BN folded, channels_last, 4 images at a time on CPU."""
            return _forward(bundle, batch)

        x = torch.randn(args.batch, 3, 224, 224)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        predictor.predict_files(paths[:4])  # warm up everything once
        naive(plain, data_config, paths[:2])
        forward_rate(plain, x, 1)
        forward_rate(served, x_cl, 1)

        rates: dict[str, list[float]] = {k: [] for k in ("predictor", "naive", "bare", "ceiling")}
        naive_runs, async_runs = [], []
        busy0, own0 = _busy_cores()
        wall0 = time.perf_counter()
        # Interleaved rounds: every method sees the same background load, round by round.
        for _ in range(args.rounds):
            rates["predictor"].append(predictor_files_rate(predictor, paths))
            run = naive(plain, data_config, paths)
            naive_runs.append(run)
            rates["naive"].append(run["images_per_s"])
            rates["bare"].append(forward_rate(plain, x, 3))
            rates["ceiling"].append(forward_rate(served, x_cl, 3))
            async_runs.append(predictor_async(predictor, paths))
        busy1, own1 = _busy_cores()
        wall = time.perf_counter() - wall0
        predictor.close()

    background = max(0.0, ((busy1 - busy0) - (own1 - own0)) / wall)
    paired = {
        "predictor_vs_naive": [
            p / n for p, n in zip(rates["predictor"], rates["naive"], strict=True)
        ],
        "predictor_vs_bare_forward": [
            p / b for p, b in zip(rates["predictor"], rates["bare"], strict=True)
        ],
        "predictor_vs_own_forward": [
            p / c for p, c in zip(rates["predictor"], rates["ceiling"], strict=True)
        ],
    }
    result = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": args.threads,
            "cpu_cores": os.cpu_count(),
            "background_busy_cores": round(background, 2),
        },
        "model": "efficientnet_lite0 (package weights) + random heads (16 labels, 8 senders), "
        "224 px crop",
        "settings": {"max_batch": args.batch, "decode_workers": args.decode_workers},
        "mix": mix,
        "images_per_s": {k: _summary(v) for k, v in rates.items()},
        "naive_latency_ms": {
            "p50": statistics.median(r["latency_p50_ms"] for r in naive_runs),
            "p95": statistics.median(r["latency_p95_ms"] for r in naive_runs),
        },
        "predictor_async": {k: statistics.median(r[k] for r in async_runs) for k in async_runs[0]},
        "ratios_median_of_rounds": {k: statistics.median(v) for k, v in paired.items()},
        "ratios_best_of_rounds": {
            "predictor_vs_naive": max(rates["predictor"]) / max(rates["naive"]),
            "predictor_vs_bare_forward": max(rates["predictor"]) / max(rates["bare"]),
            "predictor_vs_own_forward": max(rates["predictor"]) / max(rates["ceiling"]),
        },
        "targets": {"predictor_vs_naive": 3.0, "predictor_vs_bare_forward": 0.8},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(result)
    return 0


def _print_table(r: dict) -> None:
    m, ips, a = r["mix"], r["images_per_s"], r["predictor_async"]
    print(
        f"{m['images']} images ({m['jpeg']} JPEG 1-12 MP, {m['png']} PNG up to 1080x8000, "
        f"{m['gif']} GIF), {m['megapixels_mean']:.1f} MP mean; torch threads "
        f"{r['machine']['torch_threads']}; other processes kept "
        f"{r['machine']['background_busy_cores']:.2f} cores busy"
    )
    batch = r["settings"]["max_batch"]
    rows = [
        ("Predictor.predict_files", ips["predictor"], None, None),
        ("Predictor.predict, burst of all", a["burst_images_per_s"], a["burst_latency_p50_ms"],
         a["burst_latency_p95_ms"]),
        ("Predictor.predict, one at a time", None, a["single_latency_p50_ms"],
         a["single_latency_p95_ms"]),
        ("naive loop (batch 1)", ips["naive"], r["naive_latency_ms"]["p50"],
         r["naive_latency_ms"]["p95"]),
        (f"bare forward, eager (batch {batch})", ips["bare"], None, None),
        (f"Predictor's own forward (batch {batch}, 4 at a time)", ips["ceiling"], None, None),
    ]  # fmt: skip
    print(f"{'':40s} {'img/s med':>9s} {'best':>6s} {'p50 ms':>7s} {'p95 ms':>7s}")
    for name, rate, p50, p95 in rows:
        if isinstance(rate, dict):
            rate_s = f"{rate['median']:9.1f} {rate['best']:6.1f}"
        elif rate is not None:
            rate_s = f"{rate:9.1f} {'':6s}"
        else:
            rate_s = f"{'':9s} {'':6s}"
        lat = f"{p50:7.0f} {p95:7.0f}" if p50 is not None else ""
        print(f"{name:40s} {rate_s} {lat}")
    targets = r["targets"]
    for key, value in r["ratios_median_of_rounds"].items():
        best = r["ratios_best_of_rounds"][key]
        target = targets.get(key)
        verdict = "" if target is None else ("  ok" if value >= target else f"  below {target}x")
        print(f"{key}: {value:.2f}x median of rounds, {best:.2f}x best vs best{verdict}")


if __name__ == "__main__":
    sys.exit(main())
