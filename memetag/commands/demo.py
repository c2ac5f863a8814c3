"""`memetag demo`: the whole loop offline on a sample chat - history, training, the live bot."""

from __future__ import annotations

import argparse
from pathlib import Path

from memetag.commands._common import UserError
from memetag.config import AppConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole loop offline on a sample chat: ingest, train, eval, the live bot",
        description="Draw a sample chat (four members with posting styles, a few hundred "
        "images over real photos), write its history as a Hangouts Takeout export served from "
        "127.0.0.1, and run the real commands on it in DIR: ingest hangouts, ingest folder (the "
        "members' labels), train, eval. Then start the real bot against a local stand-in "
        "Discord, have the members post a later batch, correct the bot (a reaction, Fix tags), "
        "and an admin review and retrain; the conversation is printed and saved as "
        "DIR/transcript.txt and DIR/transcript.png. Needs no network and no token; uses the "
        "configured [model] and [train] (the backbone's offline weights). DIR is rebuilt on "
        "every run.",
    )
    p.add_argument(
        "--dir", default="demo", metavar="DIR", help="where to put everything (default: demo)"
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="a quick run: 60 images of history and a shorter live part",
    )
    p.add_argument(
        "--history", type=int, metavar="N", help="images of history (default 300; 60 with --small)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="sample chat seed (default 0)")
    p.add_argument(
        "--no-live", action="store_true", help="stop after eval: no bot, no stand-in Discord"
    )
    p.set_defaults(handler=handle_demo)


def handle_demo(args: argparse.Namespace, cfg: AppConfig) -> int:
    import dataclasses

    from memetag.demo.run import DemoOptions, run_demo

    root = Path(args.dir)
    options = (
        DemoOptions.small(root, args.seed) if args.small else DemoOptions(root, seed=args.seed)
    )
    if args.history is not None:
        if args.history < 40:
            raise UserError("--history must be at least 40 so every member and kind is seen")
        options = dataclasses.replace(options, history=args.history)
    if args.no_live:
        options = dataclasses.replace(options, live=False)
    return run_demo(cfg, options)
