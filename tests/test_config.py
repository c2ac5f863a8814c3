"""Config loading: defaults, validation errors, secrets, and that config.toml documents every key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from memetag.config import _SECTIONS, AppConfig, load_config, parse_config
from memetag.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_equals_builtin_defaults():
    with open(ROOT / "config.toml", "rb") as fh:
        raw = tomllib.load(fh)
    shipped = parse_config(raw)
    default = AppConfig()
    for name in _SECTIONS:
        assert getattr(shipped, name) == getattr(default, name), name
    assert shipped.labels == default.labels


def test_config_toml_documents_every_key():
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    with open(ROOT / "config.toml", "rb") as fh:
        raw = tomllib.load(fh)
    for name, cls in _SECTIONS.items():
        assert f"[{name}]" in text
        for f in dataclasses.fields(cls):
            assert f.name in raw[name], f"[{name}] {f.name} missing from config.toml"
            # a comment line right above the key (or above its group) explains it
            lines = text.splitlines()
            idx = next(i for i, line in enumerate(lines) if line.startswith(f"{f.name} ="))
            above = lines[max(0, idx - 3) : idx]
            assert any(line.startswith("#") for line in above), f"[{name}] {f.name} undocumented"


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[ingest]\nconcurency = 3\n", "unknown key [ingest] concurency"),
        ("[ingest]\nconcurrency = 'many'\n", "[ingest] concurrency: expected an integer"),
        ("[ingest]\nskip_stickers = 1\n", "expected true or false"),
        ("[bogus]\nx = 1\n", "unknown section [bogus]"),
        ("discord_token = 'abc'\n", "secrets are read from the environment"),
        ("[train]\nval_fraction = 1.5\n", "val_fraction must be between 0 and 1"),
        ("[train]\ntune_fraction = 0.8\n", "val_fraction + tune_fraction below 1"),
        ("[train]\ntune_fraction = -0.1\n", "tune_fraction must be 0 or more"),
        ("[model]\nresize = 'stretch'\n", 'resize must be "crop" or "letterbox"'),
        ("[labels.meme]\ndescription = 'x'\n", "[labels.meme] emoji"),
        ("[labels.Meme]\nemoji = 'x'\n", "label name 'Meme'"),
        ("[people]\n'123' = 5\n", "[people] 123: expected a string"),
        ("[ingest\n", "not valid TOML"),
        ("[model]\ndevice = 'gpu'\n", "[model] device must be"),
        ("[model]\nbatch_size = 0\n", "[model] batch_size must be at least 1"),
        ("[train]\nfinetune_epochs = 0\n", "[train] finetune_epochs must be at least 1"),
        ("[train]\nsender_target_precision = 1.5\n", "sender_target_precision must be"),
        ("[bot]\ncommand_sync = 'everywhere'\n", '[bot] command_sync must be "guild"'),
        ("[bot]\nreview_random_share = 2.0\n", "review_random_share must be between 0 and 1"),
        ("[bot]\nshard_ids = [0, 'x']\n", "[bot] shard_ids must be a list of shard numbers"),
        ("[bot]\nshard_count = 2\nshard_ids = [2]\n", "shard_ids must be shard numbers below"),
        ("[bot]\nshard_ids = [0]\n", "shard_ids must be shard numbers below"),
        ("[bot]\nlog_level = 'LOUD'\n", "[bot] log_level must be"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, toml, message):
    path = tmp_path / "config.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_data_dir_precedence_and_token_from_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sub" / "config.toml"
    path.parent.mkdir()
    path.write_text('[storage]\ndata_dir = "store"\n', encoding="utf-8")
    assert load_config(path, environ={}).data_dir == tmp_path / "sub" / "store"
    assert load_config(path, environ={"MEMETAG_DATA": "/x"}).data_dir == Path("/x")
    assert load_config(path, data_dir="cli", environ={"MEMETAG_DATA": "/x"}).data_dir == Path("cli")
    (tmp_path / ".env").write_text("DISCORD_TOKEN=from-dotenv\n", encoding="utf-8")
    assert load_config(path, environ={}).discord_token == "from-dotenv"
    assert load_config(path, environ={"DISCORD_TOKEN": "env"}).discord_token == "env"
    assert "from-dotenv" not in repr(load_config(path, environ={}))


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="data directory is a file"):
        load_config(None, data_dir=str(tmp_path / "f"), environ={})


def test_people_and_custom_labels(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[people]\n"100" = "Kappa"\n[labels.cat]\nemoji = "🐱"\ndescription = "cats"\n',
        encoding="utf-8",
    )
    cfg = load_config(path, environ={})
    assert cfg.people["100"] == "Kappa"
    assert [label.name for label in cfg.labels] == ["cat"]


@pytest.mark.parametrize(
    "toml, message",
    [
        ('[bot]\nchannels = { general = "react" }\n', "'general' is not a channel id"),
        ('[bot]\nchannels = { "123" = "shout" }\n', "[bot] channels 123: mode must be one of"),
        ("[bot]\nchannels = 5\n", "[bot] channels must be a table"),
        ('[bot]\ndefault_mode = "loud"\n', "[bot] default_mode must be"),
        ("[bot]\nmax_reactions = -1\n", "[bot] max_reactions must be between 0 and 20"),
        ("[bot]\nqueue_size = 0\n", "[bot] queue_size must be at least 1"),
        ("[bot]\nworkers = 0\n", "[bot] workers must be at least 1"),
        ("[bot]\nmodel_poll_s = 0\n", "[bot] model_poll_s must be positive"),
        ("[bot]\ntoken = 'abc'\n", "secrets are read from the environment"),
    ],
)
def test_bad_bot_config_is_one_clear_line(tmp_path, toml, message):
    path = tmp_path / "config.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bot_channels_and_modes(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        '[bot]\nchannels = { "111" = "react", "222" = "reply" }\ndefault_mode = "silent"\n'
        "max_reactions = 5\nignore_bots = false\n",
        encoding="utf-8",
    )
    cfg = load_config(path, environ={})
    assert dict(cfg.bot.channels) == {"111": "react", "222": "reply"}
    assert cfg.bot.default_mode == "silent" and cfg.bot.max_reactions == 5
    assert cfg.bot.ignore_bots is False and cfg.bot.queue_size == AppConfig().bot.queue_size
