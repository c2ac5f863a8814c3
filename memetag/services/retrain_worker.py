"""Training in a separate process, for a caller whose event loop must never stall (the bot).

``python -m memetag.services.retrain_worker`` reads one JSON request on stdin (the config as a
``config.toml`` table, the data dir, the ``retrain_runs`` row to close, whether to force the
promotion), runs :func:`memetag.services.training.train_and_record` — the same training, gate
and record as ``memetag train`` — and writes one JSON object per line on stdout:

- ``{"event": "started", "pid": 1234}`` once the request is read;
- ``{"stage": "embed", "n": 12, "N": 60}`` progress (stage ``embed``, ``heads``, ``finetune``
  or ``score``; at most a few a second, and always the last step of a stage);
- ``{"event": "done", ...}`` the outcome (:class:`RetrainResult`), or
  ``{"event": "failed", "error": "one line"}``.

Anything else a library prints goes to stderr. The worker closes its ``retrain_runs`` row
itself (promoted / kept / failed), so the outcome is recorded even when the process that
started it is gone. The worker lowers its own CPU priority so that the starting process keeps
answering.

:func:`start_retrain_worker` is the caller's side: it starts the process and reads the lines
back as :class:`RetrainProgress` and :class:`RetrainResult`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from memetag.config import SECRET_KEYS, AppConfig
from memetag.services.errors import ServiceError

log = logging.getLogger(__name__)

MODULE = "memetag.services.retrain_worker"
# A progress line at most this often per stage (the last step of a stage always goes out).
PROGRESS_EVERY_S = 0.25
# How much the worker lowers its CPU priority (os.nice), so the process that started it keeps
# answering while it trains.
NICE = 10
_FIGURES = (
    "category_macro_f1",
    "sender_top1",
    "sender_macro_f1",
    "majority_top1",
    "recent_30d_top1",
    "score",
)


class WorkerFailed(ServiceError):
    """The training process failed (its one-line reason) or ended without an outcome."""


@dataclass(frozen=True)
class RetrainProgress:
    """One progress step: ``stage`` is ``embed``, ``heads``, ``finetune`` or ``score``."""

    stage: str
    n: int
    total: int


@dataclass(frozen=True)
class RetrainResult:
    """What the worker's training run produced and whether the new model became current.

    ``new`` and ``old`` hold the headline validation figures (:data:`_FIGURES`) of the new
    model and of the model that was current, both scored on the new run's validation images;
    ``old`` is None when the current model could not be scored (or there was none).
    """

    version: str
    previous_version: str | None
    promoted: bool
    kind: str
    reason: str
    seconds: float
    n_val: int | None
    new: dict[str, float | None]
    old: dict[str, float | None] | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetrainResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def config_table(cfg: AppConfig) -> dict[str, Any]:
    """The config as a ``config.toml`` table (:func:`memetag.config.parse_config` reads it back).

    Only what training reads: storage, ingest, model, train, labels and people; never a secret.
    """
    return {
        "storage": dataclasses.asdict(cfg.storage),
        "ingest": dataclasses.asdict(cfg.ingest),
        "model": dataclasses.asdict(cfg.model),
        "train": dataclasses.asdict(cfg.train),
        "labels": {s.name: {"emoji": s.emoji, "description": s.description} for s in cfg.labels},
        "people": dict(cfg.people),
    }


def build_request(
    cfg: AppConfig, *, run_id: int | None, force: bool, nice: int = NICE
) -> dict[str, Any]:
    return {
        "config": config_table(cfg),
        "data_dir": str(Path(cfg.data_dir).resolve()),
        "run_id": run_id,
        "force": force,
        "nice": nice,
    }


# -- the caller's side ---------------------------------------------------------------------------


class RetrainWorker:
    """A started worker process. Read its :meth:`events`; :meth:`terminate` stops it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._stderr_task = asyncio.create_task(self._drain_stderr(), name="retrain-stderr")

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def _drain_stderr(self) -> None:
        assert self._process.stderr is not None
        while line := await self._process.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr.append(text)
                log.debug("retrain worker %s: %s", self.pid, text)

    async def events(self) -> AsyncIterator[RetrainProgress | RetrainResult]:
        """Progress steps, then the result; the process has exited when the result is given.

        Raises:
            WorkerFailed: the training failed, or the process ended without an outcome.
        """
        assert self._process.stdout is not None
        failure: str | None = None
        result: RetrainResult | None = None
        while line := await self._process.stdout.readline():
            try:
                data = json.loads(line)
            except ValueError:
                continue  # not ours: the protocol is one JSON object per line
            if not isinstance(data, dict):
                continue
            if "stage" in data:
                yield RetrainProgress(str(data["stage"]), int(data["n"]), int(data["N"]))
            elif data.get("event") == "done":
                result = RetrainResult.from_json(data)
            elif data.get("event") == "failed":
                failure = str(data.get("error") or "training failed")
        code = await self._process.wait()
        await self._stderr_task
        if result is not None and code == 0:
            yield result
            return
        if failure is None:
            failure = f"the training process ended without an outcome (exit code {code})"
            log.warning("%s; its last output: %s", failure, " | ".join(self._stderr))
        raise WorkerFailed(failure)

    async def terminate(self, grace_s: float = 5.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``grace_s``) and reap it."""
        if self._process.returncode is None:
            try:
                self._process.terminate()
                await asyncio.wait_for(self._process.wait(), grace_s)
            except ProcessLookupError:
                pass
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._stderr_task.cancel()


async def start_retrain_worker(
    cfg: AppConfig, *, run_id: int | None, force: bool = False, nice: int = NICE
) -> RetrainWorker:
    """Start ``python -m memetag.services.retrain_worker`` and hand it the request.

    The process gets the caller's environment less the Discord token, which training never needs.
    """
    env = {k: v for k, v in os.environ.items() if k not in SECRET_KEYS}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        MODULE,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    worker = RetrainWorker(process)
    assert process.stdin is not None
    process.stdin.write(
        json.dumps(build_request(cfg, run_id=run_id, force=force, nice=nice)).encode()
    )
    try:
        await process.stdin.drain()
    except ConnectionError:
        pass  # it died at once; events() reports how
    process.stdin.close()
    return worker


# -- the worker's side ---------------------------------------------------------------------------


class _Emitter:
    """Writes protocol lines; called from the training thread and the event loop."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._last: tuple[str, float] = ("", 0.0)

    def __call__(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self._stream.write(json.dumps(obj, default=str) + "\n")
            self._stream.flush()

    def progress(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        last_stage, last_at = self._last
        if stage == last_stage and done < total and now - last_at < PROGRESS_EVERY_S:
            return
        self._last = (stage, now)
        self({"stage": stage, "n": int(done), "N": int(total)})


def _protocol_stream() -> IO[str]:
    """A private copy of stdout for protocol lines; fd 1 then points at stderr, so whatever a
    library prints cannot be mistaken for the protocol."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _figures(summary: dict[str, Any]) -> dict[str, float | None]:
    return {k: summary.get(k) for k in _FIGURES}


def _result_json(outcome: Any) -> dict[str, Any]:
    from classifier.evaluate import summary_metrics

    comparison = outcome.comparison
    old = None
    if comparison is not None:
        old = {k: (comparison["metrics"].get(k) or {}).get("old") for k in _FIGURES}
    return {
        "event": "done",
        "version": outcome.version,
        "previous_version": outcome.previous_version,
        "promoted": outcome.promotion.promoted,
        "kind": outcome.promotion.kind,
        "reason": outcome.promotion.reason,
        "seconds": round(outcome.seconds, 1),
        "n_val": outcome.figures.n_val,
        "new": _figures(summary_metrics(outcome.evaluation)),
        "old": old,
    }


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:300]


async def _run(cfg: AppConfig, run_id: int | None, force: bool, emit: _Emitter) -> int:
    from classifier.errors import ClassifierError
    from memetag.errors import MemetagError
    from memetag.services.training import TrainOptions, train_and_record
    from store.db import open_database
    from store.queries.retrain import finish_retrain_run

    async with open_database(cfg.db_path) as db:
        try:
            outcome = await train_and_record(
                db, cfg, TrainOptions(promote=force), on_progress=emit.progress
            )
        except (MemetagError, ClassifierError) as exc:
            reason = _one_line(exc)
        except Exception as exc:  # noqa: BLE001 - reported as one line, the trace on stderr
            log.exception("retrain failed")
            reason = f"training failed: {_one_line(exc)}"
        else:
            data = _result_json(outcome)
            if run_id is not None:
                await finish_retrain_run(
                    db,
                    run_id,
                    status="promoted" if outcome.promoted else "kept",
                    version=outcome.version,
                    outcome=outcome.promotion.reason,
                    kind=outcome.promotion.kind,
                )
            emit(data)
            return 0
        if run_id is not None:
            await finish_retrain_run(db, run_id, status="failed", outcome=reason)
        emit({"event": "failed", "error": reason})
        return 1


def main(stdin: IO[str] | None = None, out: IO[str] | None = None) -> int:
    """Run one request from stdin; exit status 0 with an outcome, 1 when training failed, 2 on
    a bad request."""
    from memetag.config import parse_config
    from memetag.errors import ConfigError

    out = out or _protocol_stream()
    emit = _Emitter(out)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        request = json.loads((stdin or sys.stdin).read())
        cfg = parse_config(request["config"], origin="retrain request")
        cfg = dataclasses.replace(cfg, data_dir=Path(request["data_dir"]))
        run_id = request.get("run_id")
        force = bool(request.get("force", False))
        nice = int(request.get("nice", NICE))
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        emit({"event": "failed", "error": f"bad retrain request: {_one_line(exc)}"})
        return 2
    if nice > 0:
        try:
            os.nice(nice)  # the process that started it (a bot) keeps answering first
        except (AttributeError, OSError):
            pass
    emit({"event": "started", "pid": os.getpid()})
    return asyncio.run(_run(cfg, run_id, force, emit))


if __name__ == "__main__":
    sys.exit(main())
