"""Serving a trained model: lazy load, batched inference with decoding overlapped, hot swap."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.functional import pil_modes_mapping

from classifier.backbone import build_transform, decode_min_side
from classifier.checkpoint import Checkpoint, build_model, load_checkpoint
from classifier.config import ModelConfig
from classifier.errors import ClassifierError, ImageLoadError
from classifier.imaging import CenterCrop, OnDecoded, load_center_crop, load_rgb
from classifier.labelhead import label_probabilities, predict_label_sets
from classifier.model import MemetagModel, fold_batchnorm

log = logging.getLogger(__name__)

Source = Path | str | bytes

# On CPU the model sees 4 images at a time, however many are batched: a larger batch's
# activations spill out of the per-core L2 cache, and each image then costs 30-60 % more
# (efficientnet_lite0 on one thread of the bench machine: 18 ms an image at 4, 29 ms at 16).
_CPU_CHUNK = 4
# How many likely senders a result lists ("Person A or Person B").
SENDER_CANDIDATES = 3


@dataclass(frozen=True)
class SenderCandidate:
    """One likely sender and its calibrated probability."""

    name: str
    probability: float


@dataclass(frozen=True)
class Result:
    """What the model says about one image."""

    labels: dict[str, float]  # emitted labels only: name -> probability
    # Most probable first: the top label (exclusive), or the labels at or over their threshold
    # and at least the top one (multi-label); see classifier.labelhead.predict_label_sets.
    predicted: list[str]
    sender: str | None  # None when the model is unsure (below sender_min_confidence)
    sender_probability: float
    sender_probabilities: dict[str, float]  # calibrated: softmax(logits / temperature)
    model_version: str
    # The (up to) three most probable senders with their calibrated probabilities, most
    # probable first; given even when ``sender`` is None ("unsure").
    sender_candidates: tuple[SenderCandidate, ...] = ()


@dataclass(frozen=True)
class ErrorResult:
    """An input that could not be predicted; ``error`` is one line naming the file."""

    source: str
    error: str


@dataclass(frozen=True)
class _Loaded:
    """One model and everything derived from its checkpoint; swapped as a whole."""

    checkpoint: Checkpoint
    model: MemetagModel
    transform: Any
    min_side: int
    # When the transform starts with Resize + CenterCrop, those run while decoding (only the
    # crop is decoded and resampled) and ``after_crop`` does the rest.
    crop: CenterCrop | None
    after_crop: Callable[[Image.Image], torch.Tensor] | None
    device: torch.device
    channels_last: bool
    max_pixels: int
    emitted_idx: np.ndarray
    emitted_names: tuple[str, ...]
    thresholds: np.ndarray


@dataclass
class ForwardStats:
    """What the model's forward passes have done so far (``Predictor.forward``): batches run,
    images in them, and seconds of wall time they took. Read it twice and subtract to see how
    busy the model was over a span: ``seconds / span`` near 1 means the forward pass ran all
    along, so the rate was set by how fast each pass ran, not by waiting for inputs."""

    batches: int = 0
    images: int = 0
    seconds: float = 0.0


@dataclass
class _Request:
    bundle: _Loaded
    decoded: asyncio.Future  # -> Tensor | ImageLoadError
    result: asyncio.Future  # -> Result


class Predictor:
    """Predicts labels and sender for images; safe to share between threads and coroutines.

    ``load()`` builds the model once (lazily, under a lock); ``predict_files`` runs a batch
    synchronously; ``await predict(x)`` batches concurrent callers. Decoding runs in a thread
    pool and overlaps the forward pass of the previous batch. With a centre-crop transform
    (``resize = "crop"``), images are decoded straight to the crop
    (:func:`~classifier.imaging.load_center_crop`).
    """

    def __init__(
        self,
        checkpoint: Checkpoint | Path | str,
        cfg: ModelConfig,
        *,
        max_batch: int = 16,
        decode_workers: int = 2,
        device: str = "cpu",
        max_wait_ms: float = 5.0,
        channels_last: bool = True,
        fold_bn: bool = True,
    ) -> None:
        self._source = checkpoint
        self._cfg = cfg
        self.max_batch = max(1, int(max_batch))
        self._max_wait = max_wait_ms / 1000.0
        self._device = _resolve_device(device)
        self._channels_last = channels_last
        self._fold_bn = fold_bn
        self._greedy = True
        self._lock = threading.Lock()  # guards _loaded
        self._compute_lock = threading.Lock()  # one forward at a time: they share the cores
        self._loaded: _Loaded | None = None
        self._decode_pool = ThreadPoolExecutor(
            max(1, decode_workers), thread_name_prefix="memetag-decode"
        )
        self._compute_pool = ThreadPoolExecutor(1, thread_name_prefix="memetag-infer")
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False
        self.forward = ForwardStats()

    # -- loading ---------------------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    @property
    def checkpoint(self) -> Checkpoint:
        return self._get().checkpoint

    @property
    def model_version(self) -> str:
        return self._get().checkpoint.version

    def load(self) -> None:
        """Build the model now (it is otherwise built on first use). Idempotent."""
        self._get()

    def _get(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._lock:
            if self._loaded is None:
                self._loaded = self._build(self._source)
            return self._loaded

    def swap(self, checkpoint: Checkpoint | Path | str) -> None:
        """Replace the model. Requests already decoding or running finish on the old one.

        The new model is built first, outside the lock; only the reference swap is locked,
        so serving never pauses. Raises ModelError (and keeps the old model) if it won't build.
        """
        new = self._build(checkpoint)
        with self._lock:
            old, self._loaded, self._source = self._loaded, new, checkpoint
        log.info(
            "model swapped: %s -> %s",
            old.checkpoint.version if old else None,
            new.checkpoint.version,
        )

    def _build(self, source: Checkpoint | Path | str) -> _Loaded:
        started = time.perf_counter()
        ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(Path(source))
        model, data_config = build_model(ckpt, self._cfg)
        model.to(self._device)
        if self._fold_bn:
            model = self._folded(model, ckpt, data_config)
        if self._channels_last:
            model.to(memory_format=torch.channels_last)
        resize = str(ckpt.model_config.get("resize", self._cfg.resize))
        emitted = [ckpt.labels.index(n) for n in ckpt.emitted_labels if n in ckpt.labels]
        transform = build_transform(data_config, resize=resize)
        crop, after_crop = _split_center_crop(transform)
        loaded = _Loaded(
            checkpoint=ckpt,
            model=model,
            transform=transform,
            min_side=decode_min_side(data_config, resize),
            crop=crop,
            after_crop=after_crop,
            device=self._device,
            channels_last=self._channels_last,
            max_pixels=self._cfg.max_pixels,
            emitted_idx=np.array(emitted, dtype=np.int64),
            emitted_names=tuple(ckpt.labels[i] for i in emitted),
            thresholds=np.array(
                [float(ckpt.thresholds.get(ckpt.labels[i], 0.5)) for i in emitted],
                dtype=np.float64,
            ),
        )
        log.info("loaded model %s in %.2fs", ckpt.version, time.perf_counter() - started)
        return loaded

    def _folded(
        self, model: MemetagModel, ckpt: Checkpoint, data_config: dict[str, Any]
    ) -> MemetagModel:
        """BatchNorm folded into the convs (~25 % faster on CPU), if the outputs still match."""
        size = int(data_config["input_size"][-1])
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, size, size, generator=generator).to(self._device)
        with torch.no_grad():
            expected = model(x)
            folded_count = fold_batchnorm(model, example=x[:1])
            got = model(x)
        if all(
            torch.allclose(a, b, rtol=1e-3, atol=1e-3) for a, b in zip(expected, got, strict=True)
        ):
            log.debug("folded %d BatchNorm layers into convolutions", folded_count)
            return model
        log.warning("BatchNorm folding changed %s's outputs; running it unfolded", ckpt.version)
        model, _ = build_model(ckpt, self._cfg)
        return model.to(self._device)

    # -- synchronous -------------------------------------------------------------------------

    def predict_files(self, sources: Sequence[Source]) -> list[Result | ErrorResult]:
        """One result per input, in order; unreadable inputs give an ErrorResult.

        Images are decoded a batch or two ahead in the decode pool while the current batch
        runs through the model.
        """
        bundle = self._get()
        results: list[Result | ErrorResult | None] = [None] * len(sources)
        window = 2 * self.max_batch
        pending: deque[tuple[int, Future]] = deque()
        next_index = 0

        def top_up() -> None:
            nonlocal next_index
            while next_index < len(sources) and len(pending) < window:
                src = sources[next_index]
                pending.append((next_index, self._decode_pool.submit(_prepare, bundle, src)))
                next_index += 1

        top_up()
        while pending:
            batch: list[tuple[int, torch.Tensor]] = []
            while pending and len(batch) < self.max_batch:
                # Waiting for a full batch would leave the model idle while the decoders fill
                # it (at start-up, or when decode is the slower side): run what is ready.
                if batch and self._greedy and not pending[0][1].done():
                    break
                index, fut = pending.popleft()
                prepared = fut.result()
                if isinstance(prepared, ImageLoadError):
                    results[index] = ErrorResult(_source_name(sources[index]), str(prepared))
                else:
                    batch.append((index, prepared))
                top_up()  # keep the decoders busy while we wait and compute
            if batch:
                outputs = self._run(bundle, [t for _, t in batch])
                for (index, _), result in zip(batch, outputs, strict=True):
                    results[index] = result
        return [r for r in results if r is not None]

    def _run(self, bundle: _Loaded, tensors: list[torch.Tensor]) -> list[Result]:
        x = torch.stack(tensors)
        with self._compute_lock, torch.inference_mode():
            started = time.perf_counter()
            x = x.to(bundle.device, non_blocking=True)
            if bundle.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sender_logits, label_logits = _forward(bundle, x)
            ckpt = bundle.checkpoint
            sender_probs = torch.softmax(sender_logits.float() / ckpt.temperature, dim=1)
            label_logits = label_logits.float().cpu().numpy()
            stats = self.forward
            stats.seconds += time.perf_counter() - started
            stats.batches += 1
            stats.images += len(tensors)
        emitted = np.zeros(label_logits.shape[1], dtype=bool)
        emitted[bundle.emitted_idx] = True
        label_probs = label_probabilities(label_logits, ckpt.label_mode, emitted)
        return _results(bundle, sender_probs.cpu().numpy(), label_probs)

    # -- asynchronous ------------------------------------------------------------------------

    async def predict(self, source: Source, *, on_decoded: OnDecoded | None = None) -> Result:
        """Predict one image; concurrent calls are batched together.

        ``on_decoded`` is handed to the decoder (see :func:`classifier.imaging.load_rgb`): it
        runs in the decode pool with the whole first frame, when the decode covered it.

        Raises:
            ImageLoadError: the input is not a readable image.
        """
        if self._closed:
            raise ClassifierError("predictor is closed")
        loop = asyncio.get_running_loop()
        bundle = self._loaded or await loop.run_in_executor(self._compute_pool, self._get)
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = _Batcher(self, loop)
        # Decoding starts now, in the pool, while earlier batches are still computing.
        decoded = loop.run_in_executor(self._decode_pool, _prepare, bundle, source, on_decoded)
        result: asyncio.Future = loop.create_future()
        batcher.queue.put_nowait(_Request(bundle, decoded, result))
        return await result

    async def stop_batcher(self) -> None:
        """Stop the running loop's batching worker; the next ``predict`` starts a new one."""
        batcher = self._batchers.pop(asyncio.get_running_loop(), None)
        if batcher is not None:
            await batcher.stop()

    async def aclose(self) -> None:
        """Stop the running loop's batching worker, then the thread pools."""
        await self.stop_batcher()
        self.close()

    def close(self) -> None:
        """Shut down the thread pools (after the work in them finishes)."""
        self._closed = True
        self._decode_pool.shutdown(wait=True)
        self._compute_pool.shutdown(wait=True)


class _Batcher:
    """Per event loop: one worker task gathering queued requests into batches."""

    def __init__(self, predictor: Predictor, loop: asyncio.AbstractEventLoop) -> None:
        self.predictor = predictor
        self.loop = loop
        self.queue: asyncio.Queue[_Request] = asyncio.Queue()
        self.task = loop.create_task(self._work(), name="memetag-predict-batcher")

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        while not self.queue.empty():
            request = self.queue.get_nowait()
            if not request.result.done():
                request.result.set_exception(ClassifierError("predictor is closed"))

    async def _work(self) -> None:
        p = self.predictor
        while True:
            batch = [await self.queue.get()]
            deadline = self.loop.time() + p._max_wait
            limit = p.max_batch
            if batch[0].bundle.device.type == "cpu":
                # The model sees _CPU_CHUNK images at a time anyway; a bigger batch only waits
                # for all of its images to be decoded before the first chunk can start, and
                # leaves a short last chunk (9 = 4 + 4 + 1, the 1 costing ~40 % more an image).
                # Measured with bench/bot.py (bursts of 100 on 2 cores): the bot's forward pass
                # cost 30.7-33.0 ms an image in batches of up to 16, 24.5-29.5 in batches of 4.
                limit = min(limit, _CPU_CHUNK)
            while len(batch) < limit:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - self.loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            try:
                await self._run_batch(batch)
            except asyncio.CancelledError:
                for request in batch:
                    if not request.result.done():
                        request.result.set_exception(ClassifierError("predictor is closed"))
                raise

    async def _run_batch(self, batch: list[_Request]) -> None:
        # A swap() between requests means they were decoded for different models: run each
        # group on the model it was decoded for.
        groups: dict[int, list[tuple[_Request, torch.Tensor]]] = {}
        bundles: dict[int, _Loaded] = {}
        for request in batch:
            try:
                prepared = await request.decoded
            except Exception as exc:  # noqa: BLE001 - _prepare returns errors; this is a bug
                _set_exception(request, exc)
                continue
            if isinstance(prepared, ImageLoadError):
                _set_exception(request, prepared)
                continue
            if request.result.done():  # the caller gave up
                continue
            groups.setdefault(id(request.bundle), []).append((request, prepared))
            bundles[id(request.bundle)] = request.bundle
        for key, items in groups.items():
            bundle = bundles[key]
            try:
                results = await self.loop.run_in_executor(
                    self.predictor._compute_pool,
                    self.predictor._run,
                    bundle,
                    [t for _, t in items],
                )
            except Exception as exc:  # noqa: BLE001 - report to every caller, keep serving
                log.exception("batch of %d failed", len(items))
                for request, _ in items:
                    _set_exception(request, exc)
                continue
            for (request, _), result in zip(items, results, strict=True):
                if not request.result.done():
                    request.result.set_result(result)


def _set_exception(request: _Request, exc: BaseException) -> None:
    if not request.result.done():
        request.result.set_exception(exc)


def _forward(bundle: _Loaded, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model on a batch; on CPU a few images at a time (see _CPU_CHUNK)."""
    if bundle.device.type != "cpu" or len(x) <= _CPU_CHUNK:
        return bundle.model(x)
    sender, labels = zip(*(bundle.model(part) for part in x.split(_CPU_CHUNK)), strict=True)
    return torch.cat(sender), torch.cat(labels)


def _prepare(
    bundle: _Loaded, source: Source, on_decoded: OnDecoded | None = None
) -> torch.Tensor | ImageLoadError:
    """Decode + transform one input (runs in the decode pool); returns errors, never raises."""
    try:
        if bundle.crop is not None and bundle.after_crop is not None:
            img = load_center_crop(
                source, max_pixels=bundle.max_pixels, crop=bundle.crop, on_decoded=on_decoded
            )
            return bundle.after_crop(img)
        img = load_rgb(
            source, max_pixels=bundle.max_pixels, min_side=bundle.min_side, on_decoded=on_decoded
        )
        return bundle.transform(img)
    except ImageLoadError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - one hostile file must not sink the batch
        path = None if isinstance(source, bytes | bytearray) else source
        log.warning("could not prepare %s", path or "image bytes", exc_info=True)
        return ImageLoadError(path, f"could not decode ({type(exc).__name__}: {exc})")


def _split_center_crop(
    transform: Any,
) -> tuple[CenterCrop | None, Callable[[Image.Image], torch.Tensor] | None]:
    """Split a ``Resize(short side) + CenterCrop + ...`` transform into the crop and the rest.

    Anything else (letterbox, squash, a crop bigger than the resized side) gives (None, None):
    the whole transform then runs on the decoded image.
    """
    steps = list(getattr(transform, "transforms", None) or [])
    if len(steps) < 3 or type(steps[0]) is not T.Resize or type(steps[1]) is not T.CenterCrop:
        return None, None
    resize, crop = steps[0], steps[1]
    size = resize.size
    if isinstance(size, list | tuple):
        size = size[0] if len(size) == 1 else None
    resample = pil_modes_mapping.get(resize.interpolation)
    crop_h, crop_w = crop.size
    if (
        not isinstance(size, int)
        or resize.max_size is not None
        or resample is None
        or crop_h != crop_w
        or crop_h > size
    ):
        return None, None
    return CenterCrop(size, crop_h, Image.Resampling(resample)), T.Compose(steps[2:])


def _source_name(source: Source) -> str:
    return "<image bytes>" if isinstance(source, bytes | bytearray) else str(source)


def _results(bundle: _Loaded, sender_probs: np.ndarray, label_probs: np.ndarray) -> list[Result]:
    ckpt = bundle.checkpoint
    out = []
    for s_row, l_row in zip(sender_probs, label_probs, strict=True):
        emitted = l_row[bundle.emitted_idx] if len(bundle.emitted_idx) else l_row[:0]
        labels = {name: float(p) for name, p in zip(bundle.emitted_names, emitted, strict=True)}
        # Exclusive: the most probable label; multi-label: those over their thresholds, and
        # the most probable one when none is (classifier.labelhead.predict_label_sets).
        chosen = predict_label_sets(
            emitted[None, :], ckpt.label_mode, bundle.thresholds, np.ones(len(emitted), bool)
        )[0]
        predicted = [
            bundle.emitted_names[i] for i in np.argsort(-emitted, kind="stable") if chosen[i]
        ]
        sender_probabilities = {name: float(p) for name, p in zip(ckpt.senders, s_row, strict=True)}
        order = np.argsort(-s_row, kind="stable")[:SENDER_CANDIDATES]
        candidates = tuple(SenderCandidate(ckpt.senders[i], float(s_row[i])) for i in order)
        if len(s_row):
            best = int(np.argmax(s_row))
            probability = float(s_row[best])
            confident = is_confident_sender(probability, ckpt.sender_min_confidence)
            sender = ckpt.senders[best] if confident else None
        else:
            probability, sender = 0.0, None
        out.append(
            Result(
                labels=labels,
                predicted=predicted,
                sender=sender,
                sender_probability=probability,
                sender_probabilities=sender_probabilities,
                model_version=ckpt.version,
                sender_candidates=candidates,
            )
        )
    return out


def is_confident_sender(probability: float, min_confidence: float) -> bool:
    """Whether a sender guess this probable is named, or shown as "unsure" (the confidence
    line of the checkpoint; above 1.0 it never is)."""
    return probability >= min_confidence and not math.isnan(probability)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
