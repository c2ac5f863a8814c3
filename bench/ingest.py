"""Ingest benchmark: Hangouts parser throughput and peak memory against json.load and bare ijson,
downloads, and a whole `memetag ingest folder labels.csv` run at two sizes.

Usage:
    .venv/bin/python bench/ingest.py                  # ~250 MB synthetic Hangouts.json
    .venv/bin/python bench/ingest.py --events 20000   # quick run
    .venv/bin/python bench/ingest.py --skip-download  # parser part only
    .venv/bin/python bench/ingest.py --only csv --csv-rows 1000000   # the labels CSV only

Each contender runs in its own subprocess on the same file; peak RSS is that child's own
``ru_maxrss``. Results go to bench/results/ingest.json (a partial run keeps the other
sections) and a table on stdout.

The labels CSV: ``filename,sender,labels,timestamp`` rows naming distinct files that are hard
links to 2 000 small PNGs (reposts: most rows are duplicates by content), ingested end to end
(parse, record, read, decode, hash, store) into a fresh data dir, at ``--csv-rows`` and at a
quarter of it. Linear time means the same CPU time per row at both sizes; bounded memory means
peak RSS that does not grow with the row count. Ingest checks a repost's bytes once per run, so
a second pair of runs with no reposts at all (every picture decoded, hashed and written), at an
eighth and at half of ``--csv-rows``, shows the other end and is held to the same linearity and
memory targets; the rows/s target is judged on the large run with reposts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "ingest.json"
EVENTS_PREFIX = "conversations.item.events.item"
TARGETS = {"max_rss_mb": 100.0, "vs_json_load": 1.2, "vs_ijson": 0.7}
# 1 000 000 rows in under 10 minutes; the big run costs at most 25% more CPU per row than the
# run with a quarter of the rows (linear time); peak RSS under 150 MB.
CSV_TARGETS = {"rows_per_s": 1700.0, "max_rss_mb": 150.0, "cpu_per_row_large_vs_small": 1.25}
# Runs in this order: (name, fraction of --csv-rows, reposts). Each ratio compares a run with the
# one four times smaller of the same kind, measured in the same invocation.
CSV_RUNS = (
    ("small", 4, True),
    ("large", 1, True),
    ("no_reposts_small", 8, False),  # every row a picture of its own: decode, hash, fsync
    ("no_reposts", 2, False),
)
CSV_POOL = 2000

# -- synthetic export ----------------------------------------------------------------------

_WORDS = "lol meme the example what nice ok haha tomorrow 😂 see you later look at this one".split()


def _ident(obj: object, depth: int) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False).replace("\n", "\n" + " " * depth)


def _participant(gaia: str, name: str) -> dict:
    return {
        "id": {"gaia_id": gaia, "chat_id": gaia},
        "fallback_name": name,
        "invitation_status": "ACCEPTED_INVITATION",
        "participant_type": "GAIA",
        "new_invitation_status": "ACCEPTED_INVITATION",
    }


def _event(conv_id: str, n: int, rng: random.Random, gaias: list[str]) -> dict:
    sender = gaias[rng.randrange(len(gaias))]
    ts = str(1400000000000000 + n * 1_000_003)
    event: dict = {
        "conversation_id": {"id": conv_id},
        "sender_id": {"gaia_id": sender, "chat_id": sender},
        "timestamp": ts,
        "self_event_state": {"user_id": {"gaia_id": gaias[0], "chat_id": gaias[0]}},
    }
    kind = "REGULAR_CHAT_MESSAGE"
    if n % 10 == 0:  # 10% carry a photo
        lh3 = f"https://lh3.googleusercontent.com/-EX{n:08d}/AAAAAAAAAAA/EXAMPLE-{n:08d}/s0/{n}.jpg"
        event["chat_message"] = {
            "message_content": {
                "attachment": [
                    {
                        "embed_item": {
                            "type": ["PLUS_PHOTO"],
                            "plus_photo": {
                                "thumbnail": {
                                    "url": f"https://plus.google.com/photos/albums/p{n}?pid={n}&oid={sender}",
                                    "image_url": lh3,
                                    "width_px": 200,
                                    "height_px": 150,
                                },
                                "owner_obfuscated_id": sender,
                                "photo_id": str(7000000000000000000 + n),
                                "url": lh3,
                                "original_content_url": f"https://lh3.googleusercontent.com/EXORIG{n:08d}",
                                "media_type": "PHOTO",
                            },
                        },
                        "id": f"ph-{n}-fb",
                    }
                ]
            }
        }
    elif n % 50 == 1:
        kind = "HANGOUT_EVENT"
        event["hangout_event"] = {
            "event_type": "START_HANGOUT",
            "participant_id": [{"gaia_id": sender}],
        }
    elif n % 50 == 3:
        event["chat_message"] = {
            "message_content": {
                "segment": [
                    {
                        "type": "LINK",
                        "text": f"https://example.com/{n}.gif",
                        "link_data": {
                            "link_target": f"https://www.google.com/url?q=https://example.com/{n}.gif"
                        },
                    }
                ]
            }
        }
    else:
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(1, 9)))
        event["chat_message"] = {"message_content": {"segment": [{"type": "TEXT", "text": text}]}}
    event.update({"event_id": f"EXAMPLEevt{n:010d}", "event_type": kind, "event_version": ts})
    return event


def generate_hangouts(
    path: Path, *, events: int | None, size_mb: float, conversations: int = 12
) -> dict:
    """Stream a synthetic new-layout Hangouts.json to ``path`` (never held in memory).

    ``events`` events, or as many as make about ``size_mb`` MB. Half of them go to the first
    conversation (real exports have one huge chat), the rest are shared by the others.
    """
    gaias0 = [f"1000000000000000{j:05d}" for j in range(2)]
    if events is None:
        probe = random.Random(0)
        sample = [
            len(_ident(_event("UgzEXAMPLEconv0000AaABAQ", n, probe, gaias0), 8).encode()) + 10
            for n in range(1000)
        ]
        events = max(1, int(size_mb * 1e6 / (sum(sample) / len(sample))))
    rng = random.Random(1)
    first_share = events // 2
    other_share = (events - first_share) // (conversations - 1)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write('{\n  "conversations": [')
        for c in range(conversations):
            conv_id = f"UgzEXAMPLEconv{c:04d}AaABAQ"
            gaias = [f"1000000000000000{c * 10 + j:05d}" for j in range(2 + c % 5)]
            header = {
                "conversation_id": {"id": conv_id},
                "conversation": {
                    "id": {"id": conv_id},
                    "type": "GROUP",
                    "name": f"Group {c}",
                    "participant_data": [
                        _participant(g, f"Person {g[-3:]} Example") for g in gaias
                    ],
                },
            }
            f.write(("," if c else "") + '\n    {\n      "conversation": ' + _ident(header, 6))
            f.write(',\n      "events": [')
            count = first_share if c == 0 else other_share
            if c == conversations - 1:
                count = events - n
            for i in range(count):
                f.write(
                    ("," if i else "") + "\n        " + _ident(_event(conv_id, n, rng, gaias), 8)
                )
                n += 1
            f.write("\n      ]\n    }")
        f.write("\n  ]\n}\n")
    return {"events": n, "bytes": path.stat().st_size, "conversations": conversations}


# -- contenders (each runs in a child process) ---------------------------------------------


def _child(mode: str, path: str) -> dict:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    count = 0
    if mode == "ours":
        sys.path.insert(0, str(ROOT))
        from ingest.parsers import hangouts
        from ingest.parsers.base import ParseStats

        stats = ParseStats()
        start = time.perf_counter()
        with open(path, "rb") as f:
            for _ in hangouts.iter_posts(f, file=path, stats=stats):
                count += 1
        extra = {"messages": stats.messages, "bad_records": stats.bad_records}
    elif mode == "json_load":
        start = time.perf_counter()
        with open(path, "rb") as f:
            data = json.load(f)
        count = sum(len(c["events"]) for c in data["conversations"])
        extra = {}
    elif mode == "ijson_items":
        import ijson

        backend = ijson.get_backend("yajl2_c")
        start = time.perf_counter()
        with open(path, "rb") as f:
            for _ in backend.items(f, EVENTS_PREFIX):
                count += 1
        extra = {"backend": "yajl2_c"}
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - start
    size = os.path.getsize(path)
    return {
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_at_start_mb": round(rss_before, 1),
        "items": count,
        **extra,
    }


def _measure(mode: str, path: Path, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--_child", mode, str(path)],
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(json.loads(out.stdout))
    best = max(runs, key=lambda r: r["mb_per_s"])
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    best["runs_mb_per_s"] = [r["mb_per_s"] for r in runs]
    return best


# -- labels CSV (a whole `memetag ingest folder`) -------------------------------------------


def _tiny_png(i: int) -> bytes:
    """A distinct 16x16 PNG for each ``i`` (a few hundred bytes)."""
    import io

    from PIL import Image

    rng = random.Random(i)
    img = Image.frombytes("RGB", (16, 16), rng.randbytes(16 * 16 * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def generate_labels_csv(root: Path, rows: int, *, reposts: bool = True) -> dict:
    """``root/labels.csv`` with ``rows`` rows, each naming its own file under ``root/img``.

    With ``reposts`` the files' bytes come from a pool of ``CSV_POOL`` pictures; without, every
    row's bytes are a picture of its own.
    """
    pool = root / "pool"
    pool.mkdir(parents=True)
    pool_size = CSV_POOL if reposts else rows
    for i in range(pool_size):
        (pool / f"{i}.png").write_bytes(_tiny_png(i))
    rng = random.Random(2)
    labels = ["meme", "photo", "comic_strip", "social_media", "news"]
    with open(root / "labels.csv", "w", encoding="utf-8", newline="") as f:
        f.write("filename,sender,labels,timestamp\n")
        for n in range(rows):
            folder = root / "img" / f"{n // 1000:04d}"
            if n % 1000 == 0:
                folder.mkdir(parents=True)
            name = f"{n:07d}.png"
            os.link(pool / f"{rng.randrange(CSV_POOL) if reposts else n}.png", folder / name)
            label = labels[rng.randrange(len(labels))]
            f.write(f"img/{n // 1000:04d}/{name},Person {rng.randrange(12)},{label},"
                    f"{1500000000 + n * 37}\n")  # fmt: skip
    return {"rows": rows, "distinct_images": min(rows, pool_size)}


def _csv_child(csv_path: str, data_dir: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import contextlib
    import io

    from memetag.cli import main as memetag_main

    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = memetag_main(["--data", data_dir, "ingest", "folder", csv_path, "--json",
                             "--no-progress"])  # fmt: skip
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = json.loads(out.getvalue())
    rows = summary["messages_read"]
    return {
        "exit_code": code,
        "rows": rows,
        "stored": summary["stored"],
        "new_images": summary["new_images"],
        "failures": summary["failures_by_reason"],
        "bad_records": summary["bad_records"],
        "seconds": round(seconds, 1),
        "rows_per_s": round(rows / seconds, 1),
        # CPU time (all threads) per row: the linearity check, steadier than wall time on a
        # machine that other work shares.
        "cpu_ms_per_row": round((usage.ru_utime + usage.ru_stime) * 1000 / rows, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def _csv_section(rows: int, tmp: Path) -> dict:
    runs = {}
    for label, fraction, reposts in CSV_RUNS:
        n = max(1, rows // fraction)
        root = tmp / f"csv-{label}"
        start = time.perf_counter()
        info = generate_labels_csv(root, n, reposts=reposts)
        print(f"generated a {n}-row labels CSV in {time.perf_counter() - start:.1f} s")
        out = subprocess.run(
            [sys.executable, __file__, "--_csv_child", str(root / "labels.csv"),
             str(root / "data")],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        runs[label] = {**info, "reposts": reposts, **json.loads(out.stdout)}
        print(f"  {label}: {runs[label]}")
        shutil.rmtree(root)

    def ratio(large: str, small: str) -> float:
        return round(runs[large]["cpu_ms_per_row"] / runs[small]["cpu_ms_per_row"], 2)

    with_reposts = ratio("large", "small")
    without = ratio("no_reposts", "no_reposts_small")
    limit = CSV_TARGETS["cpu_per_row_large_vs_small"]
    return {
        "runs": runs,
        "cpu_per_row_large_vs_small": with_reposts,
        "cpu_per_row_no_reposts_large_vs_small": without,
        "targets": CSV_TARGETS,
        "targets_met": {
            "rows_per_s": runs["large"]["rows_per_s"] >= CSV_TARGETS["rows_per_s"],
            "max_rss_mb": max(run["peak_rss_mb"] for run in runs.values())
            < CSV_TARGETS["max_rss_mb"],
            "cpu_per_row_large_vs_small": with_reposts <= limit,
            "cpu_per_row_no_reposts_large_vs_small": without <= limit,
        },
    }


# -- download section (another engineer's bench/_download.py) --------------------------------


def _download_section(args: argparse.Namespace) -> dict | None:
    # >>> DOWNLOAD BENCH HOOK: bench/_download.py provides run_download_bench(images, concurrency)
    if args.skip_download:
        return None
    module_path = Path(__file__).with_name("_download.py")
    if not module_path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_download", module_path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT))
    spec.loader.exec_module(module)
    return module.run_download_bench(
        images=args.download_images, concurrency=args.download_concurrency
    )
    # <<< DOWNLOAD BENCH HOOK


def _parser_section(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="memetag-bench-") as tmp:
        path = Path(tmp) / "Hangouts.json"
        start = time.perf_counter()
        info = generate_hangouts(path, events=args.events, size_mb=args.size_mb)
        info["generate_seconds"] = round(time.perf_counter() - start, 1)
        print(
            f"generated {info['bytes'] / 1e6:.1f} MB, {info['events']} events in {info['generate_seconds']} s"
        )
        results = {
            name: _measure(name, path, args.repeat) for name in ("ours", "json_load", "ijson_items")
        }
        if args.keep:
            args.keep.write_bytes(path.read_bytes())
    ours = results["ours"]
    ratios = {
        "vs_json_load": round(ours["mb_per_s"] / results["json_load"]["mb_per_s"], 2),
        "vs_ijson": round(ours["mb_per_s"] / results["ijson_items"]["mb_per_s"], 2),
    }
    print(f"\n{'contender':<14}{'MB/s':>8}{'seconds':>9}{'peak RSS MB':>13}{'items':>9}")
    for name, row in results.items():
        print(
            f"{name:<14}{row['mb_per_s']:>8}{row['seconds']:>9}{row['peak_rss_mb']:>13}{row['items']:>9}"
        )
    print(f"\nours / json.load = {ratios['vs_json_load']}x (target >= {TARGETS['vs_json_load']})")
    print(f"ours / ijson     = {ratios['vs_ijson']}x (target >= {TARGETS['vs_ijson']})")
    print(f"ours peak RSS    = {ours['peak_rss_mb']} MB (target < {TARGETS['max_rss_mb']})")
    return {
        "file": info,
        "results": results,
        "ratios": ratios,
        "targets": TARGETS,
        "targets_met": {
            "max_rss_mb": ours["peak_rss_mb"] < TARGETS["max_rss_mb"],
            "vs_json_load": ratios["vs_json_load"] >= TARGETS["vs_json_load"],
            "vs_ijson": ratios["vs_ijson"] >= TARGETS["vs_ijson"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-mb", type=float, default=250.0, help="synthetic file size (default 250)"
    )
    parser.add_argument(
        "--events", type=int, default=None, help="generate exactly N events instead"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per contender (best throughput kept)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="also keep the generated file here")
    parser.add_argument("--skip-download", action="store_true", help="skip the download benchmark")
    parser.add_argument("--download-images", type=int, default=500)
    parser.add_argument("--download-concurrency", type=int, default=8)
    parser.add_argument(
        "--csv-rows", type=int, default=200_000, help="labels CSV rows (default 200000)"
    )
    parser.add_argument(
        "--only",
        choices=("parser", "download", "csv"),
        action="append",
        help="run only these sections (repeatable); the others keep their last results",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--_child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--_csv_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(_child(*args._child)))
        return 0
    if args._csv_child:
        print(json.dumps(_csv_child(*args._csv_child)))
        return 0

    sections = set(args.only or ("parser", "download", "csv"))
    if args.skip_download:
        sections.discard("download")
    report: dict = {}
    if args.output.exists():
        report = json.loads(args.output.read_text())
    if "parser" in sections:
        report["parser"] = _parser_section(args)
    if "download" in sections:
        download = _download_section(args)
        if download is not None:
            report["download"] = download
            print("download: " + ", ".join(f"{k}={v}" for k, v in download.items()))
    if "csv" in sections:
        with tempfile.TemporaryDirectory(prefix="memetag-bench-csv-") as tmp:
            report["labels_csv"] = csv = _csv_section(args.csv_rows, Path(tmp))
        large = csv["runs"]["large"]
        print(
            f"labels CSV: {large['rows']} rows at {large['rows_per_s']} rows/s "
            f"(target >= {CSV_TARGETS['rows_per_s']}), peak RSS {large['peak_rss_mb']} MB "
            f"(target < {CSV_TARGETS['max_rss_mb']}), CPU per row vs a quarter of the rows "
            f"{csv['cpu_per_row_large_vs_small']}x "
            f"(target <= {CSV_TARGETS['cpu_per_row_large_vs_small']}x); without reposts "
            f"{csv['runs']['no_reposts']['rows']} rows at {csv['runs']['no_reposts']['rows_per_s']} "
            f"rows/s, peak RSS {csv['runs']['no_reposts']['peak_rss_mb']} MB, CPU per row vs a "
            f"quarter of the rows {csv['cpu_per_row_no_reposts_large_vs_small']}x"
        )
    report["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
