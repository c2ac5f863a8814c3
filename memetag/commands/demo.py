"""`memetag demo`: the whole job offline on a synthetic chat — ingest, train, evaluate, predict, explain."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from memetag.commands._common import UserError
from memetag.config import AppConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run ingest → train → eval → predict → explain offline on a synthetic chat",
        description="Generate a small synthetic chat (labelled images from four members), then "
        "run the real commands on it in DIR: ingest folder, train, eval, predict, explain. "
        "Uses the configured backbone and its offline weights; nothing is downloaded.",
    )
    p.add_argument(
        "--dir", default="demo", metavar="DIR", help="where to put the demo chat and its data dir"
    )
    p.add_argument("--images", type=int, default=240, metavar="N", help="images to generate")
    p.add_argument("--fresh", action="store_true", help="delete DIR first")
    p.set_defaults(handler=handle_demo)


def handle_demo(args: argparse.Namespace, cfg: AppConfig) -> int:
    from memetag.cli import main
    from memetag.demo import make_demo_chat

    root = Path(args.dir)
    if args.images < 40:
        raise UserError("--images must be at least 40 so every member and category is seen")
    if args.fresh and root.exists():
        shutil.rmtree(root)
    chat, data = root / "chat", root / "data"
    if not (chat / "labels.csv").exists():
        print(f"== generating {args.images} images from a synthetic chat in {chat}")
        make_demo_chat(chat, images=args.images)
    base = ["--data", str(data)]
    if cfg.source is not None:
        base = ["--config", str(cfg.source), *base]
    held_out = sorted(chat.glob("img_*"))[-3:]
    steps = [
        ["ingest", "folder", str(chat / "labels.csv"), "--no-progress"],
        ["stats"],
        ["train"],
        ["eval"],
        ["predict", *map(str, held_out)],
        ["explain", str(held_out[-1]), "--sender", "--out", str(root / "explain.png")],
    ]
    for step in steps:
        print(f"\n== memetag {' '.join(step)}", flush=True)
        code = main([*base, *step])
        if code != 0:
            return code
    print(f"\nDemo done. Report: {data / 'reports'}; Grad-CAM overlay: {root / 'explain.png'}")
    return 0
