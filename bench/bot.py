"""The live bot's speed: MESSAGE_CREATE to tag at rest, and a burst, against the stand-in Discord.

The real bot (``MemetagBot`` with its cogs and shared deps, the default efficientnet_lite0 with
its package weights and seeded random heads) runs against the stand-in Discord on 127.0.0.1 with
2 torch threads. Every figure comes from timestamps taken inside the stand-in: when it wrote the
MESSAGE_CREATE frame, when the bot's first tag action (reaction PUT or reply POST) reached it,
and when the bot answered a heartbeat the gateway asked for.

(a) one ~1 MP JPEG at a time, the bot idle before each: MESSAGE_CREATE -> first tag action,
    next to ``await Predictor.predict`` on the same bytes (same predictor settings), interleaved.
(b) a burst posted at once: images/s from the first MESSAGE_CREATE to the last first tag,
    against ``Predictor.predict_files`` on the same images (run just before and just after the
    burst), and the gateway's heartbeat requests (op 1, every 250 ms) answered during the burst.
    ``--rounds`` bursts (new images each) alternate with ``predict_files`` runs; the round with
    the median ratio is reported, and every round is kept in the JSON. A round during which
    the hypervisor took more than ``--max-steal`` of a core (``/proc/stat`` steal, from its
    ``predict_files`` run before to the one after) is not counted and another is run in its
    place, at most ``--rounds`` more; it stays in the JSON with ``counted: false``.

Run: ``.venv/bin/python bench/bot.py`` (writes bench/results/bot.json). ``--quick`` runs a few
posts with the tiny random-init test model (tests/test_bench_bot.py) to prove the script works.
The stand-in runs in a child process (``memetag.standin.process``; :class:`StandinSide` is its
part of the benchmark), so its work (serving the attachments, taking the requests, writing the
gateway frames) is not on the bot's event loop or GIL; both processes share the same cores.
It answers with Discord's rate-limit headers, but with buckets far wider than Discord's
(``BUCKET_PER_S``): the figures are the bot's speed, not Discord's pace.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import logging
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from classifier.openmp import shorten_openmp_spin  # noqa: E402

shorten_openmp_spin()  # as `memetag bot` does, before torch loads (classifier/openmp.py)

import discord  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bot.app import MemetagBot  # noqa: E402
from bot.deps import open_deps  # noqa: E402
from classifier.backbone import build_backbone  # noqa: E402
from classifier.checkpoint import (  # noqa: E402
    Checkpoint,
    model_config_dict,
    save_checkpoint,
    utc_now_iso,
)
from classifier.config import ModelConfig  # noqa: E402
from classifier.model import Heads  # noqa: E402
from classifier.predictor import Result  # noqa: E402
from memetag.config import DEFAULT_LABELS, AppConfig, BotConfig, LabelSpec  # noqa: E402
from memetag.services.models import build_predictor  # noqa: E402
from memetag.standin import Message, RemoteStandin, StandinDiscord, running_bot  # noqa: E402
from store.db import open_database  # noqa: E402
from store.queries.models import insert_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bot.json"
QUICK_RESULTS = Path(tempfile.gettempdir()) / "memetag-bench-bot-quick.json"
SENDERS = ("Person A", "Person B", "Person C", "Person D")
TARGETS = {
    "tag_latency_p95_ms": 150.0,  # at most
    "tag_p95_vs_bare_predict_p95": 2.0,  # at most
    "burst_ratio": 0.8,  # at least: bot images/s over predict_files images/s
    "heartbeat_ms_max": 1000.0,  # below
}
# discord.py answers a heartbeat request through its gateway rate limiter (110 sends a
# minute); past that it stops reading the gateway until the minute is over. At 10 requests a
# second, three bursts within a minute ran out of it; 4 a second stays well inside.
PROBE_EVERY_S = 0.25
# No heartbeat of the client's own schedule during the run (Discord asks for ~41 s): each
# heartbeat the gateway reads is then the answer to its own request.
HEARTBEAT_INTERVAL_MS = 3_600_000
# The stand-in's buckets, a second each, for every route during the bench. Discord paces a bot
# (about 50 requests a second in all, a reaction every ~0.25 s in one channel) far below what
# the model tags on 2 fast cores (~90 images/s), and the stand-in's default of 50 a second a
# route and channel already capped the burst at ~32 images/s there (0.35x, the model busy 42 %
# of the time). The benchmark measures the bot; Discord's pace is what tests/test_bot_tagging.py
# covers. The headers still come with every answer, so discord.py's bucket code runs as it would.
BUCKET_PER_S = 100_000


# -- inputs ----------------------------------------------------------------------------------------


def _photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Smooth colour fields plus sensor-like noise: decodes and compresses like a photo."""
    small = rng.integers(
        0, 256, size=(max(2, height // 96), max(2, width // 96), 3), dtype=np.uint8
    )
    img = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def make_jpegs(n: int, size: tuple[int, int], rng: np.random.Generator) -> list[bytes]:
    """``n`` distinct JPEGs, landscape and portrait alternately."""
    out = []
    for i in range(n):
        w, h = size if i % 2 == 0 else size[::-1]
        buf = io.BytesIO()
        _photo(w, h, rng).save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


def default_setup() -> tuple[ModelConfig, tuple[LabelSpec, ...], Checkpoint]:
    """The default backbone (package weights, no download) with seeded random heads."""
    cfg = ModelConfig(backbone="efficientnet_lite0", pretrained="package", device="cpu")
    labels = [spec.name for spec in DEFAULT_LABELS]
    torch.manual_seed(0)
    backbone, data_config = build_backbone(cfg)
    heads = Heads(int(backbone.num_features), len(SENDERS), len(labels))
    ckpt = Checkpoint(
        version="bench",
        created_at=utc_now_iso(),
        model_config=model_config_dict(cfg),
        data_config=dict(data_config),
        labels=labels,
        senders=list(SENDERS),
        thresholds=dict.fromkeys(labels, 0.5),
        temperature=1.0,
        sender_min_confidence=0.3,
        heads_state=heads.state_dict(),
        emitted_labels=labels,
    )
    return cfg, DEFAULT_LABELS, ckpt


def quick_setup() -> tuple[ModelConfig, tuple[LabelSpec, ...], Checkpoint]:
    """The tests' tiny random-init model (a forward pass in milliseconds)."""
    from tests.ml_helpers import LABELS, make_checkpoint, tiny_model_config

    cfg = tiny_model_config()
    emojis = {"meme": "😂", "social_media": "🐦", "photo": "📷"}
    specs = tuple(LabelSpec(name, emojis[name], name) for name in LABELS)
    ckpt = make_checkpoint(cfg, version="bench", senders=SENDERS, finetuned=True)
    return cfg, specs, ckpt


# -- what the stand-in saw ---------------------------------------------------------------------------


class TagWatch:
    """The first tag action per message, read from the stand-in's request records."""

    def __init__(self, standin: StandinDiscord, mode: str) -> None:
        self.standin = standin
        self.mode = mode
        self.first: dict[str, float] = {}  # message id -> time.monotonic() it arrived
        self.downloads: dict[str, float] = {}  # attachment id -> first CDN request
        self._seen = 0

    def scan(self) -> None:
        requests = self.standin.requests
        for record in requests[self._seen :]:
            message_id = self._tagged(record)
            if message_id is not None:
                self.first.setdefault(message_id, record.at)
            elif record.method == "GET" and "/attachments/" in record.path:
                self.downloads.setdefault(record.path.split("/")[-2], record.at)
        self._seen = len(requests)

    def _tagged(self, record: Any) -> str | None:
        parts = record.path.split("/")
        # /channels/{cid}/messages/{mid}/reactions/{emoji}/@me
        if self.mode == "react" and record.method == "PUT" and "reactions" in parts:
            return parts[4]
        # /channels/{cid}/messages with a reply reference
        if self.mode == "reply" and record.method == "POST" and len(parts) == 4:
            ref = (record.body or {}).get("message_reference") or {}
            if ref.get("message_id") is not None:
                return str(ref["message_id"])
        return None

    def tagged(self, messages: Sequence[Message]) -> bool:
        self.scan()
        return all(str(m.id) in self.first for m in messages)


def sent_at(standin: StandinDiscord, message: Message) -> float:
    """When the stand-in wrote the message's MESSAGE_CREATE frame (time.monotonic())."""
    wanted = str(message.id)
    for event, ident, at in reversed(standin.gateway.sent_times):
        if event == "MESSAGE_CREATE" and ident == wanted:
            return at
    raise AssertionError(f"no MESSAGE_CREATE was written for message {wanted}")


class StandinSide:
    """The stand-in's part, in its own process: posts the images, and reads from its own records
    and clock when each was tagged and how fast heartbeats were answered."""

    def __init__(
        self,
        standin: StandinDiscord,
        *,
        mode: str,
        members: Sequence[str],
        images: dict[str, list[bytes]],
    ) -> None:
        self.standin = standin
        self.mode = mode
        self.names = list(members)
        self.images = images
        self.members: list[Any] = []
        self.watch = TagWatch(standin, mode)

    async def setup(self) -> None:
        self.standin.rate_limits.set("*", "*", limit=BUCKET_PER_S, per_s=1.0)
        self.members = [await self.standin.add_member(name) for name in self.names]

    def describe(self) -> dict[str, Any]:
        return {
            "channel_id": self.standin.channel.id,
            "members": [(m.id, m.name) for m in self.members],
        }

    async def sync(self) -> None:
        await self.standin.sync()

    async def check(self) -> None:
        self.standin.check()

    async def refused(self) -> int:
        """Requests the stand-in answered 429 because their bucket was empty."""
        return self.standin.rate_limits.refused

    async def cpu_s(self) -> float:
        """CPU seconds the stand-in's process used so far."""
        return _own_cpu_s()

    async def post_and_wait(self, kind: str, index: int, timeout: float) -> dict[str, Any]:
        """Post one image, wait for its first tag: seconds from MESSAGE_CREATE to the tag and to
        the attachment's download."""
        standin = self.standin
        message = await standin.post_message(
            standin.channel,
            self.members[index % len(self.members)],
            attachments=[(f"{kind}{index}.jpg", self.images[kind][index])],
        )
        await standin.wait_for(lambda: self.watch.tagged([message]), timeout, what="the tag")
        sent = sent_at(standin, message)
        download = self.watch.downloads.get(str(message.attachments[0].id))
        return {
            "tag_s": self.watch.first[str(message.id)] - sent,
            "download_s": None if download is None else download - sent,
        }

    async def burst(self, timeout: float, kind: str = "burst0") -> dict[str, Any]:
        """Post every burst image at once and wait until each is tagged; heartbeat requests
        (op 1) every PROBE_EVERY_S meanwhile. Times are time.monotonic()."""
        standin = self.standin
        probes: list[tuple[float, float | None]] = []  # (sent, round trip)
        stop, kick = asyncio.Event(), asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                at = time.monotonic()
                rtt = await standin.gateway.request_heartbeat(timeout=10.0)
                probes.append((at, rtt))
                try:
                    await asyncio.wait_for(kick.wait(), PROBE_EVERY_S)
                except TimeoutError:
                    pass
                kick.clear()

        prober = asyncio.create_task(probe(), name="bench-heartbeat-probe")
        await asyncio.sleep(2 * PROBE_EVERY_S)  # a couple of answers at rest first
        standin.client_listening = False  # post without waiting for the client to read each one
        try:
            posted0 = time.monotonic()
            messages = [
                await standin.post_message(
                    standin.channel,
                    self.members[i % len(self.members)],
                    attachments=[(f"b{i}.jpg", data)],
                )
                for i, data in enumerate(self.images[kind])
            ]
            posted_s = time.monotonic() - posted0
            kick.set()  # one request right behind the whole burst, too
            await standin.wait_for(
                lambda: self.watch.tagged(messages), timeout, what="every burst image tagged"
            )
        finally:
            standin.client_listening = True
            stop.set()
            kick.set()
            await prober
        return {
            "sent": [sent_at(standin, m) for m in messages],
            "tagged": [self.watch.first[str(m.id)] for m in messages],
            "posted_s": posted_s,
            "probes": probes,
        }


# -- the run ---------------------------------------------------------------------------------------


def _ms(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64) * 1000.0
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
        "n": int(arr.size),
    }


def _busy_cores() -> tuple[float, float, float]:
    """(all CPU seconds used on the machine, this process's CPU seconds, CPU seconds the
    hypervisor took from this machine: steal) so far."""
    with open("/proc/stat") as fp:
        fields = fp.readline().split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    busy = sum(int(v) for v in fields[:3]) / ticks  # user + nice + system
    steal = int(fields[7]) / ticks if len(fields) > 7 else 0.0
    return busy, _own_cpu_s(), steal


def _clock_and_steal() -> tuple[float, float]:
    return time.perf_counter(), _busy_cores()[2]


def _own_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    model_cfg, label_specs, ckpt = quick_setup() if args.quick else default_setup()
    # "exclusive": one label an image, as `memetag train` ships for a chat that labels one
    # category per image (a reaction PUT an image in react mode); "multi": seeded random
    # heads with 0.5 thresholds put most labels over the line (max_reactions PUTs an image).
    ckpt = dataclasses.replace(ckpt, label_mode=args.label_mode)
    rng = np.random.default_rng(args.seed)
    size = (320, 240) if args.quick else (1224, 816)  # 1.0 MP
    t0 = time.perf_counter()
    warm = make_jpegs(args.warmup, size, rng)
    single = make_jpegs(args.posts, size, rng)
    # New images for every round, and for as many rounds again (see --max-steal).
    bursts = [make_jpegs(args.burst, size, rng) for _ in range(2 * args.rounds)]
    generated_s = time.perf_counter() - t0

    async with RemoteStandin.start(
        Path(__file__).resolve(),
        "StandinSide",
        standin_options={"heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS},
        driver_options={
            "mode": args.mode,
            "members": SENDERS[:2],
            "images": {
                "warm": warm,
                "single": single,
                **{f"burst{r}": images for r, images in enumerate(bursts)},
            },
        },
    ) as standin:
        with standin.patch_client():
            members = standin.info["members"]
            cfg = AppConfig(
                model=model_cfg,
                labels=label_specs,
                bot=BotConfig(
                    channels=MappingProxyType({str(standin.info["channel_id"]): args.mode}),
                    **({"workers": args.workers} if args.workers else {}),
                ),
                people=MappingProxyType({str(ident): name for ident, name in members}),
                data_dir=workdir / "data",
                discord_token=standin.token,
            )
            cfg.models_dir.mkdir(parents=True, exist_ok=True)
            path = cfg.models_dir / "bench.pt"
            await asyncio.to_thread(save_checkpoint, ckpt, path)
            async with open_database(cfg.db_path) as db:
                await insert_model(db, "bench", str(path), {}, make_current=True)
            async with open_deps(cfg, allow_private=True) as deps:
                if not deps.models.ready:
                    raise SystemExit(f"the bot has no model: {deps.models.problem}")
                client = MemetagBot(deps=deps, guild_ready_timeout=0.05)
                async with running_bot(standin, client, error_loggers=("discord", "bot")):
                    bare = build_predictor(cfg, ckpt)  # the bot's predictor settings
                    await asyncio.to_thread(bare.load)
                    try:
                        result = await _measure(args, standin, client, bare, warm, single, bursts)
                    finally:
                        await bare.aclose()
                standin.check()
                await standin.call("check")
                result["rate_limited"] = await standin.call("refused")

    bot_cfg = cfg.bot
    result["settings"] = {
        "mode": args.mode,
        "posts": args.posts,
        "burst": args.burst,
        "rounds": args.rounds,
        "max_steal": args.max_steal,
        "label_mode": args.label_mode,
        "warmup_posts": args.warmup,
        "image": f"{size[0]}x{size[1]} JPEG q88 (landscape/portrait), "
        f"{statistics.mean(len(b) for b in single) / 1e3:.0f} kB mean",
        "generate_s": round(generated_s, 2),
        "bot": {
            "queue_size": bot_cfg.queue_size,
            "workers": bot_cfg.workers,
            "channel_workers": bot_cfg.channel_workers,
            "max_reactions": bot_cfg.max_reactions,
        },
        "predictor": {
            "max_batch": model_cfg.batch_size,
            "decode_workers": model_cfg.decode_workers,
            "resize": model_cfg.resize,
            "image_size": model_cfg.image_size,
            "device": model_cfg.device,
        },
        "heartbeat_probe_every_s": PROBE_EVERY_S,
        "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
        "standin_bucket_per_s": BUCKET_PER_S,
    }
    result["model"] = (
        "tiny random-init test model (--quick)"
        if args.quick
        else f"efficientnet_lite0 (package weights) + seeded random heads ({len(label_specs)} "
        f"labels, {args.label_mode}, {len(SENDERS)} senders), {model_cfg.image_size} px "
        f"{model_cfg.resize}"
    )
    return result


async def _measure(
    args: argparse.Namespace,
    standin: RemoteStandin,
    client: MemetagBot,
    bare: Any,
    warm: Sequence[bytes],
    single: Sequence[bytes],
    bursts: Sequence[Sequence[bytes]],
) -> dict[str, Any]:
    tagging = client.get_cog("Tagging")
    assert tagging is not None, "the tagging cog is not loaded"
    timeout = 30.0 if args.quick else 120.0

    async def settle() -> None:
        await standin.call("sync")
        await asyncio.wait_for(tagging.queue.join(), timeout)
        await asyncio.sleep(0.02)  # the bot's listeners for its own tag's echo

    async def post_and_wait(kind: str, i: int) -> dict[str, Any]:
        seen = await standin.call("post_and_wait", kind=kind, index=i, timeout=timeout)
        await settle()
        return seen

    async def bare_predict(data: bytes) -> float:
        t0 = time.perf_counter()
        result = await bare.predict(data)
        assert isinstance(result, Result)
        return time.perf_counter() - t0

    for i, data in enumerate(warm):  # first calls: thread pools, allocator, caches
        await post_and_wait("warm", i)
        await bare_predict(data)

    # (a) one at a time, at rest; bare predict interleaved (first on even posts, after on odd).
    predict_mark, store_mark = len(tagging.stats.predict_s), len(tagging.stats.store_s)
    tag_s, bare_s, to_download_s = [], [], []
    busy0, own0, steal0 = _busy_cores()
    own0 += await standin.call("cpu_s")
    wall0 = time.perf_counter()
    for i, data in enumerate(single):
        if i % 2 == 0:
            bare_s.append(await bare_predict(data))
            await asyncio.sleep(0.02)
        seen = await post_and_wait("single", i)
        if i % 2 == 1:
            await asyncio.sleep(0.02)
            bare_s.append(await bare_predict(data))
        tag_s.append(seen["tag_s"])
        if seen["download_s"] is not None:
            to_download_s.append(seen["download_s"])
    at_rest = time.perf_counter() - wall0, _busy_cores()[2] - steal0
    single_predict_s = list(tagging.stats.predict_s)[predict_mark:]
    single_store_s = list(tagging.stats.store_s)[store_mark:]

    # (b) bursts posted at once, alternating with Predictor.predict_files on the same kind of
    # images: every burst has a predict_files run just before and just after it, so a drift in
    # the machine's speed hits both sides of its ratio alike. The round with the median ratio
    # is reported, every round is kept.
    dropped0 = tagging.queue.stats.dropped
    # (time, steal seconds) before predict_files run 0, then after every burst and every run:
    # round r spans marks[2r] (before the run ahead of it) to marks[2r + 3] (after the next).
    marks = [_clock_and_steal()]
    files = [await _files_rate(bare, bursts[0])]
    marks.append(_clock_and_steal())
    rounds: list[dict[str, Any]] = []
    while sum(one["counted"] for one in rounds) < args.rounds and len(rounds) < len(bursts):
        r = len(rounds)
        images = bursts[r]
        one = await _burst_round(standin, client, tagging, r, images, timeout, settle)
        marks.append(_clock_and_steal())
        files.append(await _files_rate(bare, images))
        marks.append(_clock_and_steal())
        (before, before_cpu, before_fwd), (after, after_cpu, after_fwd) = files[r], files[r + 1]
        one["predict_files_images_per_s"] = statistics.mean([before, after])
        one["predict_files_runs"] = [before, after]
        one["ratio"] = one["images_per_s"] / one["predict_files_images_per_s"]
        steady = one["steady_images_per_s"]
        one["steady_ratio"] = steady / one["predict_files_images_per_s"] if steady else None
        one["cpu_ms_per_image"]["predict_files"] = _mean_breakdown([before_cpu, after_cpu])
        one["forward"]["predict_files"] = _mean_forward([before_fwd, after_fwd])
        (start, stolen_start), (end, stolen_end) = marks[2 * r], marks[2 * r + 3]
        one["steal_cores"] = round((stolen_end - stolen_start) / (end - start), 3)
        one["counted"] = one["steal_cores"] <= args.max_steal
        rounds.append(one)
    busy1, own1, steal1 = _busy_cores()
    own1 += await standin.call("cpu_s")
    wall = time.perf_counter() - wall0
    counted, noisy = counted_rounds(rounds)
    median = sorted(counted, key=lambda one: one["ratio"])[(len(counted) - 1) // 2]
    heartbeats = [one["heartbeat_ms_max"] for one in rounds]

    tag = _ms(tag_s)
    bare_ms = _ms(bare_s)
    result = {
        "tag_latency_ms": tag,
        "bare_predict_ms": bare_ms,
        "tag_stages_ms": {
            "sent_to_download": _ms(to_download_s) if to_download_s else None,
            "predict_in_bot": _ms(single_predict_s) if single_predict_s else None,
            "store_in_bot": _ms(single_store_s) if single_store_s else None,
        },
        "burst": {
            # The median round's figures (by ratio); heartbeats and drops over every round.
            **{k: median[k] for k in _BURST_KEYS},
            "round": median["round"],
            "rounds_ratio": [one["ratio"] for one in counted],
            # rounds run but left out (steal over --max-steal), and the steal of every round
            # run, in cores; noisy: no round was under the limit, so every round is counted
            "rounds_not_counted": len(rounds) - len(counted),
            "rounds_steal_cores": [one["steal_cores"] for one in rounds],
            "noisy": noisy,
            "heartbeat_ms_max": None if None in heartbeats else max(heartbeats),
            "dropped": tagging.queue.stats.dropped - dropped0,
            "commits": {"runs": tagging.commits.runs, "images": tagging.commits.items},
            "rounds": rounds,
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "discord.py": discord.__version__,
            "torch_threads": torch.get_num_threads(),
            "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
            "cpu_cores": os.cpu_count(),
            # CPU the other processes (not the bot's, not the stand-in's) used during (a) and
            # (b), in cores: > 0 means noise.
            "background_busy_cores": round(max(0.0, ((busy1 - busy0) - (own1 - own0)) / wall), 2),
            # Cores' worth of time the hypervisor gave to other machines (steal): > 0 is noise.
            "steal_cores": round((steal1 - steal0) / wall, 2),
            "steal_cores_at_rest": round(at_rest[1] / at_rest[0], 2),  # during (a) only
        },
        "targets": dict(TARGETS),
        "method": {
            "tag_latency_ms": "stand-in clock: MESSAGE_CREATE frame written -> first reaction "
            "PUT (react) or reply POST (reply) received; one post at a time, the bot idle",
            "bare_predict_ms": "await Predictor.predict(same bytes), a second Predictor with the "
            "bot's settings, interleaved with the posts",
            "tag_stages_ms": "sent_to_download: stand-in clock to the attachment GET; "
            "predict_in_bot / store_in_bot: the tagging cog's own timings",
            "burst.images_per_s": "images / (last first-tag received - first MESSAGE_CREATE "
            "written); all posted at once",
            "burst.steady_images_per_s": "images / s between the 10th and the 90th percentile "
            "tag of the burst (without the pipeline filling and draining); steady_ratio: that "
            "against the same predict_files rate. first_tag_s: first MESSAGE_CREATE -> first tag",
            "burst.predict_files_images_per_s": "Predictor.predict_files on the same kind of "
            "bytes, mean of the run just before and the run just after the burst",
            "burst.rounds": "bursts alternating with predict_files runs; burst.* are the round "
            "with the median ratio (burst.round) among the counted rounds, burst.rounds every "
            "round run. A round whose steal (from the start of the predict_files run before it "
            "to the end of the one after) is over --max-steal cores is not counted and one "
            "more is run, up to twice --rounds in all",
            "burst.heartbeat_ms_max": "the stand-in asks for a heartbeat (op 1) every 250 ms: "
            "request written -> heartbeat read, worst during the burst",
            "standin": "the stand-in Discord runs in a child process (memetag.standin.process), "
            "on the same cores as the bot: its work is off the bot's event loop and GIL but "
            "still takes CPU from it (burst.cpu_s: both processes' CPU seconds in the burst)",
            "burst.commits": "the tagging cog's shared commits over the whole run: runs, images",
            "burst.forward": "the model's forward passes during the burst (bot: from the "
            "first MESSAGE_CREATE to the last tag) and during the predict_files runs (mean of the "
            "two): wall ms an image, images a batch, and busy, the share of that time a forward "
            "pass was running (Predictor.forward). busy near 1 in both: the model never waited "
            "for inputs, and the ratio is how much slower each pass ran beside the bot's other "
            "work on the same cores",
            "burst.cpu_ms_per_image": "each thread's CPU time (/proc/self/task) over the burst "
            "(until its last image was stored) or over a predict_files run, per image, grouped "
            "by thread: the model's forward pass (the thread that runs it plus torch's own "
            "threads), the Predictor's decode pool, the default executor (the store's image "
            "checks and file writes), SQLite's thread and the event loop",
        },
    }
    b = result["burst"]
    result["passed"] = {
        "tag_latency_p95": tag["p95"] <= TARGETS["tag_latency_p95_ms"],
        "tag_p95_vs_bare_predict_p95": tag["p95"]
        <= TARGETS["tag_p95_vs_bare_predict_p95"] * bare_ms["p95"],
        "burst_ratio": b["ratio"] >= TARGETS["burst_ratio"],
        "heartbeat": b["heartbeat_ms_max"] is not None
        and b["heartbeat_ms_max"] < TARGETS["heartbeat_ms_max"]
        and b["dropped"] == 0,
    }
    return result


_BURST_KEYS = (
    "images",
    "images_per_s",
    "predict_files_images_per_s",
    "predict_files_runs",
    "ratio",
    "steady_images_per_s",
    "steady_ratio",
    "first_tag_s",
    "heartbeat_ms_p50",
    "heartbeat_requests",
    "heartbeat_unanswered",
    "client_heartbeat_latency_ms_max",
    "posted_in_s",
    "span_s",
    "tag_latency_ms",
    "predict_in_bot_ms",
    "store_in_bot_ms",
    "cpu_s",
    "forward",
    "cpu_ms_per_image",
)


def counted_rounds(rounds: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The rounds the reported median is taken over: those under the steal limit, or every
    round (and True: the figures are noisy) when none was."""
    counted = [one for one in rounds if one["counted"]]
    return (counted, False) if counted else (list(rounds), True)


async def _burst_round(
    standin: RemoteStandin,
    client: MemetagBot,
    tagging: Any,
    r: int,
    burst: Sequence[bytes],
    timeout: float,
    settle: Any,
) -> dict[str, Any]:
    """Post round ``r``'s images at once, wait until each is tagged and stored: its figures."""
    latencies: list[tuple[float, float]] = []  # (when, the client's last heartbeat -> ACK)
    stop = asyncio.Event()

    async def watch_latency() -> None:
        while not stop.is_set():
            latencies.append((time.monotonic(), client.latency))
            try:
                await asyncio.wait_for(stop.wait(), PROBE_EVERY_S)
            except TimeoutError:
                pass

    predict_mark, store_mark = len(tagging.stats.predict_s), len(tagging.stats.store_s)
    predictor = tagging.deps.models.predictor
    forward0 = dataclasses.replace(predictor.forward)
    cpu0 = (_own_cpu_s(), await standin.call("cpu_s"))
    threads0 = _thread_cpu()
    watcher = asyncio.create_task(watch_latency(), name="bench-client-latency")
    try:
        seen = await standin.call("burst", kind=f"burst{r}", timeout=timeout * 5)
    finally:
        stop.set()
        await watcher
    await settle()
    cpu1 = (_own_cpu_s(), await standin.call("cpu_s"))
    images = len(seen["sent"])
    burst_threads = _cpu_ms_per_image(threads0, _thread_cpu(), images)
    burst_predict_s = list(tagging.stats.predict_s)[predict_mark:]
    burst_store_s = list(tagging.stats.store_s)[store_mark:]

    first_sent = min(seen["sent"])
    last_tag = max(seen["tagged"])
    burst_tag_s = [t - s for s, t in zip(seen["sent"], seen["tagged"], strict=True)]
    forward = _forward_figures(forward0, predictor.forward, last_tag - first_sent)
    # The rate between the tenth and the ninetieth percentile tag: the burst without the
    # pipeline filling up (download, decode, first batch) and draining (the last commits).
    tags = sorted(seen["tagged"])
    low, high = len(tags) // 10, len(tags) - 1 - len(tags) // 10
    steady = (high - low) / (tags[high] - tags[low]) if tags[high] > tags[low] else None
    # Requests in flight at any time between the first MESSAGE_CREATE and the last tag.
    probes = seen["probes"]
    during = [p for p in probes if p[0] <= last_tag and (p[1] is None or p[0] + p[1] >= first_sent)]
    answered = [p[1] for p in during if p[1] is not None]
    client_latencies = [
        lat for at, lat in latencies if first_sent <= at <= last_tag and np.isfinite(lat)
    ]
    return {
        "round": r,
        "images": images,
        "images_per_s": images / (last_tag - first_sent),
        "steady_images_per_s": steady,
        "first_tag_s": tags[0] - first_sent,
        "heartbeat_ms_max": max(answered) * 1000.0
        if len(answered) == len(during) and during
        else None,
        "heartbeat_ms_p50": statistics.median(answered) * 1000.0 if answered else None,
        "heartbeat_requests": len(during),
        "heartbeat_unanswered": len(during) - len(answered),
        "client_heartbeat_latency_ms_max": max(client_latencies) * 1000.0
        if client_latencies
        else None,
        "posted_in_s": seen["posted_s"],
        "span_s": last_tag - first_sent,
        "tag_latency_ms": _ms(burst_tag_s),
        "predict_in_bot_ms": _ms(burst_predict_s) if burst_predict_s else None,
        "store_in_bot_ms": _ms(burst_store_s) if burst_store_s else None,
        # CPU seconds from just before the burst until its last image was stored.
        "cpu_s": {"bot": cpu1[0] - cpu0[0], "standin": cpu1[1] - cpu0[1]},
        # The model's forward passes over the burst (wall time, batches, share of the burst).
        "forward": {"bot": forward},
        # Where the CPU went, in ms per image, by thread (Linux only; {} elsewhere).
        "cpu_ms_per_image": {
            "bot": burst_threads
            | {"stand-in process": round(1000 * (cpu1[1] - cpu0[1]) / images, 1)},
        },
    }


async def _files_rate(
    predictor: Any, images: Sequence[bytes]
) -> tuple[float, dict[str, float], dict[str, float]]:
    """images/s of ``Predictor.predict_files`` (a worker thread of its own, so the gateway keeps
    going), its CPU ms per image by thread, and its forward passes (``_forward_figures``)."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix=_FORWARD_THREADS[0]) as pool:
        before = _thread_cpu()
        forward0 = dataclasses.replace(predictor.forward)
        t0 = time.perf_counter()
        results = await loop.run_in_executor(pool, predictor.predict_files, list(images))
        elapsed = time.perf_counter() - t0
        cpu = _cpu_ms_per_image(before, _thread_cpu(), len(images))
        forward = _forward_figures(forward0, predictor.forward, elapsed)
    assert all(isinstance(r, Result) for r in results), results
    return len(images) / elapsed, cpu, forward


def _forward_figures(before: Any, after: Any, span_s: float) -> dict[str, float]:
    """The model's forward passes between two ``Predictor.forward`` readings: wall ms an image,
    images a batch, and the share of ``span_s`` they ran (1.0: the model never waited)."""
    images = after.images - before.images
    seconds = after.seconds - before.seconds
    batches = after.batches - before.batches
    figures = {
        "ms_per_image": 1000 * seconds / images if images else None,
        "images_per_batch": images / batches if batches else None,
        "busy": seconds / span_s if span_s > 0 else None,
    }
    return {key: _round_forward(key, value) for key, value in figures.items()}


# Decimal places of the forward figures: busy is a share (0.953), the others milliseconds and
# images, so a mean of two runs keeps each figure's own precision.
_FORWARD_DIGITS = {"ms_per_image": 1, "images_per_batch": 1, "busy": 3}


def _round_forward(key: str, value: float | None) -> float | None:
    return None if value is None else round(value, _FORWARD_DIGITS[key])


def _mean_forward(runs: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """The mean of ``_forward_figures`` readings, key by key (None if a run had none)."""
    return {
        key: None
        if any(run[key] is None for run in runs)
        else _round_forward(key, statistics.mean(run[key] for run in runs))
        for key in _FORWARD_DIGITS
    }


# Parts of thread names -> what their CPU time is spent on. Threads with no Python name are
# torch's own (intra-op) threads.
_FORWARD_THREADS = ("bench-predict-files", "memetag-infer")
_THREAD_GROUPS = (
    (_FORWARD_THREADS, "model forward"),
    (("memetag-decode",), "predictor decode"),
    (("asyncio",), "worker threads (store checks, file writes)"),
    (("_connection_worker_thread",), "SQLite"),  # aiosqlite's: "Thread-N (_connection_wo...)"
    (("MainThread",), "event loop"),
)


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """This process's threads: native id -> (group, CPU seconds so far). {} off Linux."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as fp:
                fields = fp.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        name = names.get(int(tid))
        group = "model forward" if name is None else "other threads"
        for prefixes, label in _THREAD_GROUPS:
            if name is not None and any(part in name for part in prefixes):
                group = label
                break
        out[int(tid)] = (group, (int(fields[11]) + int(fields[12])) / ticks)
    return out


def _cpu_ms_per_image(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], images: int
) -> dict[str, float]:
    """CPU ms per image by thread group between two ``_thread_cpu`` readings."""
    groups: dict[str, float] = {}
    for tid, (group, seconds) in after.items():
        used = seconds - before.get(tid, (group, 0.0))[1]
        groups[group] = groups.get(group, 0.0) + 1000 * used / images
    return {k: round(v, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1]) if v > 0}


def _mean_breakdown(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = {k for run in runs for k in run}
    return {k: round(sum(run.get(k, 0.0) for run in runs) / len(runs), 1) for k in sorted(keys)}


# -- the command -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, help="single posts at rest (default 200; quick 5)")
    parser.add_argument("--burst", type=int, help="images posted at once (default 100; quick 8)")
    parser.add_argument(
        "--rounds", type=int, help="bursts, each between predict_files runs (default 5; quick 1)"
    )
    parser.add_argument("--mode", choices=("react", "reply"), default="react")
    parser.add_argument(
        "--label-mode",
        choices=("exclusive", "multi"),
        default="exclusive",
        help="the label head: one label an image (default) or random multi-label heads that "
        "emit several (react mode: up to [bot] max_reactions PUTs an image)",
    )
    parser.add_argument(
        "--max-steal",
        type=float,
        default=0.1,
        help="a burst round during which the hypervisor took more than this many cores "
        "(steal) is not counted, and another is run in its place (at most --rounds more)",
    )
    parser.add_argument("--warmup", type=int, help="posts before measuring (default 5; quick 1)")
    parser.add_argument("--workers", type=int, help="[bot] workers (default: the config's)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="image generator seed")
    parser.add_argument(
        "--quick", action="store_true", help="a small run with the tiny test model (for tests)"
    )
    parser.add_argument(
        "--out", type=Path, help=f"JSON path (default {RESULTS}; quick: a temp file)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.posts = args.posts if args.posts is not None else (5 if quick else 200)
    args.burst = args.burst if args.burst is not None else (8 if quick else 100)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 5)
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 5)
    out = args.out or (QUICK_RESULTS if quick else RESULTS)
    if args.posts < 1 or args.burst < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--posts, --burst and --rounds must be at least 1")
    torch.set_num_threads(args.threads)
    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice here

    with tempfile.TemporaryDirectory(prefix="memetag-bench-bot-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    result["command"] = shlex.join(
        ["python", "bench/bot.py", *(argv if argv is not None else sys.argv[1:])]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_ordered(result), indent=2) + "\n")
    _print_table(result)
    print(f"wrote {out}")
    return 0


def _ordered(result: dict[str, Any]) -> dict[str, Any]:
    first = ("command", "model", "machine", "settings", "tag_latency_ms", "bare_predict_ms")
    return {k: result[k] for k in first if k in result} | {
        k: v for k, v in result.items() if k not in first
    }


def _print_table(r: dict[str, Any]) -> None:
    t, p, b = r["tag_latency_ms"], r["bare_predict_ms"], r["burst"]
    m = r["machine"]
    print(
        f"{r['model']}; mode {r['settings']['mode']}; torch threads {m['torch_threads']} of "
        f"{m['cpu_cores']} cores; other processes kept {m['background_busy_cores']:.2f} cores busy, "
        f"steal {m['steal_cores']:.2f} cores"
    )
    print(f"{'':44s} {'p50 ms':>7s} {'p95 ms':>7s} {'max ms':>7s}")
    print(f"{'MESSAGE_CREATE -> first tag (' + str(t['n']) + ' at rest)':44s} "
          f"{t['p50']:7.1f} {t['p95']:7.1f} {t['max']:7.1f}")  # fmt: skip
    print(f"{'Predictor.predict, same images':44s} {p['p50']:7.1f} {p['p95']:7.1f} {p['max']:7.1f}")
    for name, stage in r["tag_stages_ms"].items():
        if stage:
            print(f"{'  ' + name:44s} {stage['p50']:7.1f} {stage['p95']:7.1f} {stage['max']:7.1f}")
    bt = b["tag_latency_ms"]
    print(
        f"{'burst: MESSAGE_CREATE -> first tag':44s} {bt['p50']:7.1f} {bt['p95']:7.1f} {bt['max']:7.1f}"
    )
    hb = b["heartbeat_ms_max"]
    ratios = ", ".join(f"{x:.2f}" for x in b["rounds_ratio"])
    skipped = b["rounds_not_counted"]
    noisy = f" ({skipped} more not counted: steal over the limit)" if skipped else ""
    if b["noisy"]:
        noisy = " (NOISY: every round lost more than --max-steal cores to the hypervisor)"
    print(f"burst rounds' ratios: {ratios}{noisy}; the median round ({b['round']}):")
    print(
        f"burst of {b['images']}: {b['images_per_s']:.1f} images/s vs predict_files "
        f"{b['predict_files_images_per_s']:.1f} ({b['ratio']:.2f}x); heartbeat answered in at most "
        f"{'n/a' if hb is None else f'{hb:.0f} ms'} (all rounds; {b['heartbeat_requests']} "
        f"requests in this one); dropped {b['dropped']}"
    )
    if b["steady_ratio"] is not None:
        print(
            f"  between the 10th and 90th percentile tags: {b['steady_images_per_s']:.1f} "
            f"images/s ({b['steady_ratio']:.2f}x); first tag after {b['first_tag_s'] * 1000:.0f} ms"
        )
    for side, fwd in b["forward"].items():
        print(
            f"model forward, {side}: {fwd['ms_per_image']} ms an image (wall), "
            f"{fwd['images_per_batch']} images a batch, running {fwd['busy']:.0%} of the time"
        )
    for side, groups in b["cpu_ms_per_image"].items():
        total = sum(groups.values())
        parts = ", ".join(f"{k} {v:.1f}" for k, v in groups.items())
        print(f"CPU ms per image, {side}: {total:.1f} ({parts})")
    print("targets: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in r["passed"].items()))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
