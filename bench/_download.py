"""Download throughput: N distinct JPEGs from a loopback server through Downloader, validated."""

from __future__ import annotations

import asyncio
import io
import json
import random
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from ingest.download import Downloader, FetchRequest, create_session  # noqa: E402
from ingest.errors import DownloadError  # noqa: E402
from ingest.images import inspect_image  # noqa: E402

MAX_PIXELS = 50_000_000


def _base_jpegs(count: int = 6, seed: int = 0) -> list[bytes]:
    """A few photo-sized JPEGs of 100-300 KB: smooth gradients plus noise, like real photos."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for i in range(count):
        side = 560 + 36 * i
        noise = Image.frombytes("RGB", (side // 2, side // 2), rng.randbytes(side * side * 3 // 4))
        gradient = Image.linear_gradient("L").resize((side, side)).convert("RGB")
        img = Image.blend(gradient, noise.resize((side, side)), 0.5)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80 + 2 * i)
        out.append(buf.getvalue())
    return out


def build_corpus(images: int) -> list[bytes]:
    """``images`` distinct JPEGs: the base ones with a unique COM segment after SOI each."""
    bases = _base_jpegs()
    corpus = []
    for i in range(images):
        base = bases[i % len(bases)]
        comment = f"memetag bench image {i}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        corpus.append(base[:2] + segment + base[2:])
    return corpus


@contextmanager
def _serve(corpus: list[bytes]) -> Iterator[str]:
    """Serve the corpus from a loopback server on its own thread and loop; yields the base URL."""
    ready: Future[str] = Future()
    stop = threading.Event()

    async def handler(request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        return web.Response(body=corpus[index], content_type="image/jpeg")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/img/{index:\\d+}.jpg", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set_result(f"http://127.0.0.1:{port}")
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        yield ready.result(timeout=10)
    finally:
        stop.set()
        thread.join(timeout=5)


async def _download_all(base_url: str, images: int, concurrency: int, validate: bool) -> float:
    requests = [FetchRequest(f"{base_url}/img/{i}.jpg", must_be_image=True) for i in range(images)]
    failures: list[DownloadError] = []

    async def on_result(request: FetchRequest, result: bytes | DownloadError) -> None:
        if isinstance(result, DownloadError):
            failures.append(result)
        elif validate:
            await asyncio.to_thread(inspect_image, result, max_pixels=MAX_PIXELS)

    async with create_session(concurrency=concurrency, allow_private=True) as session:
        downloader = Downloader(session, concurrency=concurrency, allow_private=True)
        start = time.perf_counter()
        await downloader.fetch_many(requests, on_result)
        seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} downloads failed, first: {failures[0]}")
    return seconds


async def run_download_bench_async(images: int = 500, concurrency: int = 8) -> dict[str, float]:
    """:func:`run_download_bench` for callers already inside an event loop."""
    corpus = build_corpus(images)
    total_mb = sum(map(len, corpus)) / 1e6
    start = time.perf_counter()
    for data in corpus[: min(images, 100)]:
        inspect_image(data, max_pixels=MAX_PIXELS)
    inspect_s = (time.perf_counter() - start) / min(images, 100)
    with _serve(corpus) as base_url:
        await _download_all(base_url, min(images, 20), concurrency, validate=False)  # warm-up
        seconds = await _download_all(base_url, images, concurrency, validate=False)
        validated_s = await _download_all(base_url, images, concurrency, validate=True)
    return {
        "images": images,
        "concurrency": concurrency,
        "mean_kb": round(total_mb * 1000 / images, 1),
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 1),
        "mb_per_s": round(total_mb / seconds, 1),
        "validated_seconds": round(validated_s, 3),
        "validated_images_per_s": round(images / validated_s, 1),
        "inspect_ms_per_image": round(inspect_s * 1000, 2),
    }


def run_download_bench(images: int = 500, concurrency: int = 8) -> dict[str, float]:
    """Serve ``images`` distinct ~100-300 KB JPEGs on loopback and download them all.

    Returns images, concurrency, seconds, images_per_s and mb_per_s for downloading alone, and
    validated_* for downloading with ``inspect_image`` run on each body in a thread (as the
    pipeline does), plus inspect_ms_per_image measured serially. The server runs on its own
    thread, but shares the GIL with the client: the numbers are a floor for the client.
    """
    return asyncio.run(run_download_bench_async(images, concurrency))


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    conc = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    print(json.dumps(run_download_bench(count, conc), indent=2))
