"""The CLI contract: every command documented, one-line errors with exit 1, export and stats."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from memetag.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"`memetag {' '.join((*path, name))}` has no help line"
                yield from _walk(sub, (*path, name))


def test_every_command_has_help_text():
    commands = list(_walk(build_parser()))
    names = {" ".join(p) for p, _ in commands}
    for expected in ("ingest hangouts", "ingest gchat", "ingest discord-export", "ingest folder",
                     "export", "stats", "failures", "train", "eval", "predict", "explain",
                     "models", "demo"):  # fmt: skip
        assert expected in names, f"`memetag {expected}` is missing"
    for path, parser in commands:
        if path:
            assert parser.description, f"`memetag {' '.join(path)}` has no description"
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (
                    f"`memetag {' '.join(path)} {action.option_strings[0]}` undocumented"
                )


def test_help_exits_zero_for_every_command(capsys):
    for path, _ in _walk(build_parser()):
        with pytest.raises(SystemExit) as info:
            main([*path, "--help"])
        assert info.value.code == 0
        assert "usage: memetag" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "memetag.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("memetag ")


def test_user_error_is_one_line_exit_1(tmp_path, capsys):
    code = main(["--data", str(tmp_path / "d"), "ingest", "hangouts", str(tmp_path / "nope.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "nope.json" in err and "Traceback" not in err


def test_bad_config_is_one_line_exit_1(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[ingest]\nconcurrency = 'x'\n", encoding="utf-8")
    assert main(["--config", str(cfg), "stats"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "c.toml" in err


def test_stats_and_export_without_store(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "stats"]) == 1
    assert "no store here yet" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "export", "--csv", "-"]) == 1
