"""Frozen-backbone embeddings, cached on disk by (image sha256, preprocessing key).

Layout: ``<cache_dir>/embeddings/<key-slug>/`` holds ``index.json`` (the preprocessing key, the
feature width and the list of shards) and ``shard-NNNNNN.npz`` files (``sha256`` and
``features`` arrays). Each embedding run appends one shard, so a retrain only embeds new images.
Shards and the index are written to a temp file and renamed into place; a shard the index does
not list (a crash between the two writes) is ignored and overwritten later. Writers take an
advisory lock on ``.lock`` so a bot retrain and a CLI run can't lose each other's shards.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.atomic import write_atomic

log = logging.getLogger(__name__)

# Merge shards once there are this many, so loading stays a handful of file reads.
_MAX_SHARDS = 32

ProgressFn = Callable[[int, int], None]


def _slug(key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:60].strip("_")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{readable}-{digest}" if readable else digest


class EmbeddingCache:
    """Feature vectors of images under one preprocessing key."""

    def __init__(self, cache_dir: Path | None, key: str) -> None:
        """``cache_dir=None`` keeps features in memory only (e.g. a fine-tuned backbone, whose
        features are valid for one model only)."""
        self.key = key
        self.dir = Path(cache_dir) / "embeddings" / _slug(key) if cache_dir is not None else None
        self._features: dict[str, np.ndarray] | None = {} if self.dir is None else None
        self.dim: int | None = None

    # -- reading ---------------------------------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        path = self.dir / "index.json"
        if not path.is_file():
            return {"key": self.key, "dim": None, "shards": []}
        try:
            index = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("embedding cache index %s unreadable (%s); starting afresh", path, exc)
            return {"key": self.key, "dim": None, "shards": []}
        if index.get("key") != self.key:
            log.warning("embedding cache %s belongs to another key; ignoring it", self.dir)
            return {"key": self.key, "dim": None, "shards": []}
        return index

    def _load(self) -> dict[str, np.ndarray]:
        if self._features is None:
            index = self._read_index()
            self.dim = index.get("dim")
            feats: dict[str, np.ndarray] = {}
            for shard in index["shards"]:
                try:
                    with np.load(self.dir / shard["file"]) as data:
                        for sha, vec in zip(data["sha256"], data["features"], strict=True):
                            feats[str(sha)] = vec
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("embedding shard %s unreadable (%s); will re-embed", shard, exc)
            self._features = feats
        return self._features

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._load()

    def missing(self, shas: Sequence[str]) -> list[str]:
        feats = self._load()
        return [s for s in dict.fromkeys(shas) if s not in feats]

    def get_many(self, shas: Sequence[str]) -> np.ndarray:
        """(N, D) float32 features in the order of ``shas``; KeyError if one is not cached."""
        feats = self._load()
        if not shas:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.stack([feats[s] for s in shas]).astype(np.float32, copy=False)

    # -- writing ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write_atomic(self, name: str, write: Callable[[Any], object]) -> None:
        write_atomic(self.dir / name, write)

    def _write_shard(self, name: str, shas: Sequence[str], feats: np.ndarray) -> None:
        self._write_atomic(
            name,
            lambda fh: np.savez(fh, sha256=np.array(list(shas)), features=feats),
        )

    def add(self, shas: Sequence[str], features: np.ndarray) -> None:
        """Append one shard with these features and record it in the index."""
        if not len(shas):
            return
        features = np.asarray(features, dtype=np.float32)
        if self.dir is None:
            feats = self._load()
            feats.update(zip(shas, features, strict=True))
            self.dim = int(features.shape[1])
            return
        with self._locked():
            index = self._read_index()
            if index.get("dim") not in (None, features.shape[1]):
                raise ValueError(
                    f"feature width {features.shape[1]} != cached width {index['dim']}"
                )
            used = {s["file"] for s in index["shards"]}
            n = len(index["shards"])
            while f"shard-{n:06d}.npz" in used:
                n += 1
            name = f"shard-{n:06d}.npz"
            self._write_shard(name, shas, features)
            index["dim"] = int(features.shape[1])
            index["shards"].append({"file": name, "count": len(shas)})
            self._features = None  # another writer may have added shards: reload below
            self._write_index(index)
            if len(index["shards"]) > _MAX_SHARDS:
                self._compact(index)
        self._load()

    def _write_index(self, index: dict[str, Any]) -> None:
        self._write_atomic("index.json", lambda fh: fh.write(json.dumps(index).encode()))

    def _compact(self, index: dict[str, Any]) -> None:
        feats = self._load()
        shas = sorted(feats)
        old = [s["file"] for s in index["shards"]]
        name = f"shard-c{len(old):05d}-{hashlib.sha256(''.join(shas).encode()).hexdigest()[:8]}.npz"
        self._write_shard(name, shas, np.stack([feats[s] for s in shas]))
        self._write_index({**index, "shards": [{"file": name, "count": len(shas)}]})
        for f in old:
            (self.dir / f).unlink(missing_ok=True)
        log.info("compacted %d embedding shards into %s", len(old), name)


@dataclass(frozen=True)
class EmbedResult:
    """Features aligned with the requested rows; rows that failed to decode are zero and not ok."""

    features: np.ndarray  # (N, D) float32
    ok: np.ndarray  # (N,) bool
    n_new: int
    n_cached: int
    failed: list[str]  # sha256s that could not be decoded


def embed_with_cache(
    backbone: Any,
    transform: Callable[[Any], Any],
    rows: Sequence[tuple[Path, str]],
    cache: EmbeddingCache,
    *,
    device: str = "cpu",
    batch_size: int = 16,
    max_pixels: int = 80_000_000,
    num_workers: int = 0,
    on_progress: ProgressFn | None = None,
    save_every: int = 512,
    min_side: int | None = None,
) -> EmbedResult:
    """Embed ``(image_path, sha256)`` rows, computing only those not in ``cache``.

    New features are written to the cache every ``save_every`` images, so an interrupted run
    keeps most of its work. ``on_progress(done, total)`` counts images to embed, not cached ones.
    ``min_side`` lets images decode at reduced scale, exactly as the Predictor decodes them.
    """
    import torch
    from torch.utils.data import DataLoader

    from classifier.dataset import ImageDataset, collate_skip_failed

    shas = [sha for _, sha in rows]
    path_of: dict[str, Path] = {}
    for path, sha in rows:
        path_of.setdefault(sha, path)
    todo = [(path_of[sha], sha) for sha in cache.missing(shas)]
    n_cached = len(set(shas)) - len(todo)
    log.info("embedding %d new images (%d cached)", len(todo), n_cached)
    failed: list[str] = []
    if on_progress:
        on_progress(0, len(todo))
    if todo:
        backbone.eval()
        loader = DataLoader(
            ImageDataset(todo, transform, max_pixels=max_pixels, min_side=min_side),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate_skip_failed,
        )
        pending_shas: list[str] = []
        pending: list[np.ndarray] = []
        done = 0
        with torch.inference_mode():
            for images, batch_shas, bad in loader:
                failed.extend(bad)
                if images is not None:
                    out = backbone(images.to(device)).float().cpu().numpy()
                    pending.append(out)
                    pending_shas.extend(batch_shas)
                done += len(batch_shas) + len(bad)
                if len(pending_shas) >= save_every:
                    cache.add(pending_shas, np.concatenate(pending))
                    pending_shas, pending = [], []
                if on_progress:
                    on_progress(done, len(todo))
        if pending_shas:
            cache.add(pending_shas, np.concatenate(pending))
    failed_set = set(failed)
    ok = np.array([sha not in failed_set for sha in shas], dtype=bool)
    dim = cache.dim or 0
    features = np.zeros((len(rows), dim), dtype=np.float32)
    if ok.any():
        features[ok] = cache.get_many([sha for sha, good in zip(shas, ok, strict=True) if good])
    return EmbedResult(
        features=features,
        ok=ok,
        n_new=len(todo) - len(failed),
        n_cached=n_cached,
        failed=sorted(failed_set),
    )
