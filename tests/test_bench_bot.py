"""bench/bot.py works: a quick run (tiny model, a few posts) writes every key other tools read.

The figures of a quick run mean nothing; the full run (``.venv/bin/python bench/bot.py``) makes
bench/results/bot.json.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bot.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_bot", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_run_writes_the_keys_with_positive_numbers(tmp_path):
    bench = _load_bench()
    out = tmp_path / "bot.json"
    threads = torch.get_num_threads()
    try:
        # In this process (torch and discord.py are imported once); it runs a real bot.
        # --max-steal -1: no round counts, so another is run in its place (at most as many
        # again), and all of them are reported as noisy.
        args = ["--quick", "--mode", "reply", "--rounds", "1", "--max-steal", "-1"]
        assert bench.main([*args, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())

    for key in ("tag_latency_ms", "bare_predict_ms"):
        assert _positive(result[key]["p50"]) and _positive(result[key]["p95"]), key
        assert result[key]["p50"] <= result[key]["p95"]
    assert result["tag_latency_ms"]["n"] == result["settings"]["posts"] == 5
    burst = result["burst"]
    assert burst["images"] == 8 and burst["dropped"] == 0
    for key in (
        "images_per_s",
        "predict_files_images_per_s",
        "ratio",
        "heartbeat_ms_max",
    ):
        assert _positive(burst[key]), key
    assert burst["heartbeat_requests"] >= 1 and burst["heartbeat_unanswered"] == 0
    assert burst["ratio"] == burst["images_per_s"] / burst["predict_files_images_per_s"]
    assert _positive(burst["steady_images_per_s"]) and _positive(burst["first_tag_s"])
    assert burst["steady_ratio"] == (
        burst["steady_images_per_s"] / burst["predict_files_images_per_s"]
    )
    # Two bursts, each between two predict_files runs; the reported one is the lower-median.
    assert [one["round"] for one in burst["rounds"]] == [0, 1]
    assert [one["counted"] for one in burst["rounds"]] == [False, False] and burst["noisy"]
    assert burst["rounds_not_counted"] == 0 and len(burst["rounds_steal_cores"]) == 2
    assert burst["rounds_ratio"] == [one["ratio"] for one in burst["rounds"]]
    assert burst["ratio"] == min(burst["rounds_ratio"])
    assert (
        burst["rounds"][0]["predict_files_runs"][1] == burst["rounds"][1]["predict_files_runs"][0]
    )
    assert burst["heartbeat_ms_max"] == max(one["heartbeat_ms_max"] for one in burst["rounds"])
    assert set(burst["cpu_ms_per_image"]) == {"bot", "predict_files"}
    # Every image went through a forward pass, in the bot and in predict_files.
    assert set(burst["forward"]) == {"bot", "predict_files"}
    for side in ("bot", "predict_files"):
        forward = burst["forward"][side]
        assert _positive(forward["ms_per_image"]) and 0 < forward["busy"] <= 1, side
        assert 1 <= forward["images_per_batch"] <= 16, side
    assert set(result["passed"]) == {
        "tag_latency_p95",
        "tag_p95_vs_bare_predict_p95",
        "burst_ratio",
        "heartbeat",
    }
    assert all(isinstance(v, bool) for v in result["passed"].values())
    assert result["targets"]["tag_latency_p95_ms"] == 150.0
    assert result["machine"]["torch_threads"] == 2
    assert result["settings"]["mode"] == "reply"
    # The stand-in's buckets are wide open: the figures are the bot's pace, not Discord's.
    assert result["settings"]["standin_bucket_per_s"] >= 10_000 and result["rate_limited"] == 0
    assert "bench/bot.py --quick" in result["command"]


def test_rounds_over_the_steal_limit_are_left_out_of_the_median():
    bench = _load_bench()
    rounds = [
        {"round": 0, "counted": True},
        {"round": 1, "counted": False},
        {"round": 2, "counted": True},
    ]
    counted, noisy = bench.counted_rounds(rounds)
    assert [one["round"] for one in counted] == [0, 2] and not noisy
    counted, noisy = bench.counted_rounds([{**one, "counted": False} for one in rounds])
    assert [one["round"] for one in counted] == [0, 1, 2] and noisy


def test_the_mean_of_two_predict_files_runs_keeps_each_forward_figures_precision():
    # busy is a share: two runs 95.3 % and 96.1 % busy are 95.7 % busy, not "1.0".
    bench = _load_bench()
    runs = [
        {"ms_per_image": 12.8, "images_per_batch": 12.5, "busy": 0.953},
        {"ms_per_image": 13.2, "images_per_batch": 11.9, "busy": 0.961},
    ]
    assert bench._mean_forward(runs) == {
        "ms_per_image": 13.0,
        "images_per_batch": 12.2,
        "busy": 0.957,
    }
    assert bench._mean_forward([runs[0], {**runs[1], "busy": None}])["busy"] is None
