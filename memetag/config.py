"""The one config tree: config.toml + environment (+ .env) loaded once, validated, passed down."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dotenv import dotenv_values

from classifier.config import ModelConfig, TrainConfig
from memetag.errors import ConfigError

SECRET_KEYS = {"discord_token", "token", "DISCORD_TOKEN"}


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = "./data"


@dataclass(frozen=True)
class IngestConfig:
    concurrency: int = 8
    timeout_s: float = 30.0
    retries: int = 4
    deadline_s: float = 60.0
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 80_000_000
    skip_stickers: bool = True
    batch_size: int = 500


@dataclass(frozen=True)
class LabelSpec:
    name: str
    emoji: str
    description: str


# The seed chat's label set, with an emoji members can react with.
DEFAULT_LABELS: tuple[LabelSpec, ...] = (
    LabelSpec("meme", "😂", "A meme: image macro, reaction image, template"),
    LabelSpec(
        "social_media", "🐦", "A screenshot from social media (Twitter, Reddit, Facebook, ...)"
    ),
    LabelSpec("comic_strip", "🗯️", "A multi-panel comic (xkcd, SMBC, ...)"),
    LabelSpec("game_of_thrones", "🐉", "Game of Thrones"),
    LabelSpec("simpsons", "🍩", "The Simpsons (also tagged tv_cartoon)"),
    LabelSpec("rick_and_morty", "🥒", "Rick and Morty (also tagged tv_cartoon)"),
    LabelSpec("tv_cartoon", "📺", "Any TV cartoon: South Park, Futurama, Family Guy, ..."),
    LabelSpec("star_trek_wars", "🚀", "Star Trek or Star Wars"),
    LabelSpec("marvel", "🦸", "Avengers and other Marvel"),
    LabelSpec("lotr", "💍", "Lord of the Rings"),
    LabelSpec("news", "📰", "A news item rather than a joke"),
    LabelSpec("ali_express", "🛒", "Odd things from online shops"),
    LabelSpec("photo", "📷", "A real-life photo rather than an internet image"),
    LabelSpec("trump", "🍊", "Trump-related"),
    LabelSpec("beacon", "🎮", "A beacon to come play video games"),
    LabelSpec("weird", "🤪", "Unusual, even for this chat"),
)


BOT_MODES = ("react", "reply", "silent")


@dataclass(frozen=True)
class BotConfig:
    """``memetag bot``: which channels it watches, how it shows tags, how much work it queues."""

    # channel id -> "react" | "reply" | "silent"
    channels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Mode for channels not listed: "off" (ignore them) or one of BOT_MODES.
    default_mode: str = "off"
    max_reactions: int = 3
    ignore_bots: bool = True
    ignore_self: bool = True
    queue_size: int = 200
    workers: int = 16
    # Most workers one channel's messages may hold at once (the others stay for other channels).
    channel_workers: int = 12
    max_images_per_message: int = 10
    drain_timeout_s: float = 10.0
    model_poll_s: float = 30.0
    sender_in_reply: bool = True
    # Slash commands: registered per guild on start ("guild", at once) or globally ("global").
    command_sync: str = "guild"
    # Channel id for retrain outcomes and other notices ("" = none).
    log_channel: str = ""
    # Retrain by itself after this many new member votes (0 = only when an admin asks).
    retrain_after_votes: int = 0
    # Channel id where `/tagger review` posts ("" = a thread in the channel it was asked in).
    review_channel: str = ""
    # Share of review picks drawn at random rather than by uncertainty (exploration).
    review_random_share: float = 0.1
    # Largest CSV `/tagger export` attaches (Discord's upload limit for a server without boosts).
    export_max_bytes: int = 10 * 1024 * 1024
    # Backfill: most users fetched per label-emoji reaction when turning reactions into votes.
    backfill_reaction_users: int = 100
    # Logging: level, and one JSON object per line for log shippers.
    log_level: str = "INFO"
    log_json: bool = False
    # Sharding: 0 = one process, no sharding. With shard_count N, this process runs shard_ids
    # (empty = all N) with discord.py's AutoShardedBot; run one process per shard range.
    shard_count: int = 0
    shard_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class AppConfig:
    storage: StorageConfig = field(default_factory=StorageConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    labels: tuple[LabelSpec, ...] = DEFAULT_LABELS
    # source id (Hangouts gaia_id, Google Chat email, Discord user id) -> display name
    people: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    data_dir: Path = Path("data")
    discord_token: str | None = field(default=None, repr=False)
    source: Path | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "memetag.db"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


_SECTIONS: dict[str, type] = {
    "storage": StorageConfig,
    "ingest": IngestConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "bot": BotConfig,
}


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _check_value(where: str, value: Any, expected: type) -> Any:
    # TOML ints are fine where a float is expected; bools are not ints here.
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {_type_name(expected)}, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {_type_name(expected)}, got {value!r}")
    return value


def _build_section(origin: str, name: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: [{name}] must be a table")
    if cls is BotConfig and "channels" in table:
        table = dict(table)
        channels = _parse_channels(origin, table.pop("channels"))
        return dataclasses.replace(_build_section(origin, name, cls, table), channels=channels)
    if cls is BotConfig and "shard_ids" in table:
        table = dict(table)
        ids = table.pop("shard_ids")
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise ConfigError(f"{origin}: [bot] shard_ids must be a list of shard numbers")
        return dataclasses.replace(_build_section(origin, name, cls, table), shard_ids=tuple(ids))
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    types = {"int": int, "float": float, "str": str, "bool": bool}
    values = {}
    for key, value in table.items():
        if key in SECRET_KEYS:
            raise ConfigError(
                f"{origin}: [{name}] {key}: secrets are read from the environment or .env, "
                "never from config.toml"
            )
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{origin}: unknown key [{name}] {key} (known: {known})")
        expected = types[str(hints[key])]
        values[key] = _check_value(f"{origin}: [{name}] {key}", value, expected)
    return cls(**values)


def _parse_channels(origin: str, table: Any) -> Mapping[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: [bot] channels must be a table of channel id = mode")
    for key, mode in table.items():
        if not key.isdigit():
            raise ConfigError(
                f"{origin}: [bot] channels: {key!r} is not a channel id (Discord: right-click the "
                "channel, Copy Channel ID)"
            )
        if mode not in BOT_MODES:
            raise ConfigError(
                f"{origin}: [bot] channels {key}: mode must be one of {', '.join(BOT_MODES)}, "
                f"not {mode!r}"
            )
    return MappingProxyType(dict(table))


def _validate_ranges(origin: str, cfg: AppConfig) -> None:
    checks = [
        (cfg.ingest.concurrency >= 1, "[ingest] concurrency must be at least 1"),
        (cfg.ingest.timeout_s > 0, "[ingest] timeout_s must be positive"),
        (cfg.ingest.retries >= 0, "[ingest] retries must be 0 or more"),
        (cfg.ingest.deadline_s > 0, "[ingest] deadline_s must be positive"),
        (cfg.ingest.max_bytes > 0, "[ingest] max_bytes must be positive"),
        (cfg.ingest.max_pixels > 0, "[ingest] max_pixels must be positive"),
        (cfg.ingest.batch_size >= 1, "[ingest] batch_size must be at least 1"),
        (0.0 < cfg.train.val_fraction < 1.0, "[train] val_fraction must be between 0 and 1"),
        (
            0.0 <= cfg.train.tune_fraction and cfg.train.val_fraction + cfg.train.tune_fraction < 1,
            "[train] tune_fraction must be 0 or more, and val_fraction + tune_fraction below 1",
        ),
        (cfg.model.resize in ("crop", "letterbox"), '[model] resize must be "crop" or "letterbox"'),
        (cfg.model.image_size >= 32, "[model] image_size must be at least 32"),
        (cfg.train.epochs >= 1, "[train] epochs must be at least 1"),
        (
            re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", cfg.model.device) is not None,
            '[model] device must be "auto", "cpu", "cuda", "cuda:N" or "mps"',
        ),
        (cfg.model.batch_size >= 1, "[model] batch_size must be at least 1"),
        (cfg.model.decode_workers >= 0, "[model] decode_workers must be 0 or more"),
        (cfg.model.max_pixels > 0, "[model] max_pixels must be positive"),
        (cfg.train.lr > 0, "[train] lr must be positive"),
        (cfg.train.weight_decay >= 0, "[train] weight_decay must be 0 or more"),
        (cfg.train.batch_size >= 1, "[train] batch_size must be at least 1"),
        (cfg.train.min_posts_per_person >= 1, "[train] min_posts_per_person must be at least 1"),
        (cfg.train.min_label_positives >= 1, "[train] min_label_positives must be at least 1"),
        (0 <= cfg.train.phash_distance <= 64, "[train] phash_distance must be between 0 and 64"),
        (cfg.train.finetune_epochs >= 1, "[train] finetune_epochs must be at least 1"),
        (cfg.train.finetune_lr > 0, "[train] finetune_lr must be positive"),
        (cfg.train.finetune_batch_size >= 1, "[train] finetune_batch_size must be at least 1"),
        (
            0 < cfg.train.finetune_layer_decay <= 1,
            "[train] finetune_layer_decay must be above 0 and at most 1",
        ),
        (
            cfg.bot.default_mode in ("off", *BOT_MODES),
            '[bot] default_mode must be "off", "react", "reply" or "silent"',
        ),
        (0 <= cfg.bot.max_reactions <= 20, "[bot] max_reactions must be between 0 and 20"),
        (cfg.bot.queue_size >= 1, "[bot] queue_size must be at least 1"),
        (cfg.bot.workers >= 1, "[bot] workers must be at least 1"),
        (cfg.bot.channel_workers >= 1, "[bot] channel_workers must be at least 1"),
        (
            cfg.bot.max_images_per_message >= 1,
            "[bot] max_images_per_message must be at least 1",
        ),
        (cfg.bot.drain_timeout_s >= 0, "[bot] drain_timeout_s must be 0 or more"),
        (cfg.bot.model_poll_s > 0, "[bot] model_poll_s must be positive"),
        (
            cfg.bot.command_sync in ("guild", "global"),
            '[bot] command_sync must be "guild" or "global"',
        ),
        (cfg.bot.retrain_after_votes >= 0, "[bot] retrain_after_votes must be 0 or more"),
        (
            0 <= cfg.bot.review_random_share <= 1,
            "[bot] review_random_share must be between 0 and 1",
        ),
        (cfg.bot.export_max_bytes >= 1, "[bot] export_max_bytes must be at least 1"),
        (cfg.bot.backfill_reaction_users >= 0, "[bot] backfill_reaction_users must be 0 or more"),
        (
            cfg.bot.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            '[bot] log_level must be "DEBUG", "INFO", "WARNING" or "ERROR"',
        ),
        (cfg.bot.shard_count >= 0, "[bot] shard_count must be 0 or more"),
        (
            all(0 <= i < max(cfg.bot.shard_count, 1) for i in cfg.bot.shard_ids)
            and (not cfg.bot.shard_ids or cfg.bot.shard_count > 0),
            "[bot] shard_ids must be shard numbers below shard_count",
        ),
        (cfg.train.sender_c >= 0, "[train] sender_c must be 0 or more"),
        (cfg.train.sender_category_c >= 0, "[train] sender_category_c must be 0 or more"),
        (
            0 < cfg.train.sender_target_precision <= 1,
            "[train] sender_target_precision must be above 0 and at most 1",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{origin}: {message}")


def _parse_labels(origin: str, table: Any) -> tuple[LabelSpec, ...]:
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{origin}: [labels] must hold at least one [labels.<name>] table")
    specs = []
    for name, body in table.items():
        if not name.replace("_", "").isalnum() or not name.islower():
            raise ConfigError(
                f"{origin}: label name {name!r}: expected lower-case letters, digits and _"
            )
        if not isinstance(body, dict):
            raise ConfigError(f"{origin}: [labels.{name}] must be a table with emoji, description")
        unknown = set(body) - {"emoji", "description"}
        if unknown:
            raise ConfigError(f"{origin}: unknown key [labels.{name}] {sorted(unknown)[0]}")
        emoji = _check_value(f"{origin}: [labels.{name}] emoji", body.get("emoji", ""), str)
        description = _check_value(
            f"{origin}: [labels.{name}] description", body.get("description", ""), str
        )
        if not emoji:
            raise ConfigError(f"{origin}: [labels.{name}] emoji: expected an emoji")
        specs.append(LabelSpec(name, emoji, description))
    emojis = [s.emoji for s in specs]
    dupes = {e for e in emojis if emojis.count(e) > 1}
    if dupes:
        raise ConfigError(f"{origin}: [labels] emoji {sorted(dupes)[0]} is used by two labels")
    return tuple(specs)


def _parse_people(origin: str, table: Any) -> Mapping[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: [people] must be a table of source id = display name")
    for key, value in table.items():
        _check_value(f"{origin}: [people] {key}", value, str)
        if not value.strip():
            raise ConfigError(f"{origin}: [people] {key}: expected a non-empty display name")
    return MappingProxyType(dict(table))


def parse_config(raw: Mapping[str, Any], origin: str = "config.toml") -> AppConfig:
    """Build an AppConfig from an already-parsed TOML mapping, rejecting unknown keys."""
    sections: dict[str, Any] = {}
    labels = DEFAULT_LABELS
    people: Mapping[str, str] = MappingProxyType({})
    for key, value in raw.items():
        if key in SECRET_KEYS:
            raise ConfigError(
                f"{origin}: {key}: secrets are read from the environment or .env, "
                "never from config.toml"
            )
        if key in _SECTIONS:
            sections[key] = _build_section(origin, key, _SECTIONS[key], value)
        elif key == "labels":
            labels = _parse_labels(origin, value)
        elif key == "people":
            people = _parse_people(origin, value)
        else:
            known = ", ".join(sorted([*_SECTIONS, "labels", "people"]))
            raise ConfigError(f"{origin}: unknown section [{key}] (known: {known})")
    cfg = AppConfig(labels=labels, people=people, **sections)
    _validate_ranges(origin, cfg)
    return cfg


def load_config(
    path: Path | None = None,
    *,
    data_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = None,
) -> AppConfig:
    """Load config.toml (if given or present in the working directory) plus the environment.

    Precedence for the data directory: ``data_dir`` argument (``--data``), then ``MEMETAG_DATA``,
    then ``[storage] data_dir`` (relative to the config file), then ``./data``.
    """
    environ = os.environ if environ is None else environ
    if path is None:
        if environ.get("MEMETAG_CONFIG"):
            path = Path(environ["MEMETAG_CONFIG"])
        elif Path("config.toml").is_file():
            path = Path("config.toml")
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file does not exist")
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    cfg = parse_config(raw, origin)

    if data_dir is not None:
        resolved = Path(data_dir)
    elif environ.get("MEMETAG_DATA"):
        resolved = Path(environ["MEMETAG_DATA"])
    elif path is not None and "data_dir" in raw.get("storage", {}):
        resolved = path.parent / cfg.storage.data_dir
    else:
        resolved = Path(cfg.storage.data_dir)
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"{resolved}: data directory is a file, expected a directory")

    env_file = dotenv_path if dotenv_path is not None else Path(".env")
    file_values = dotenv_values(env_file) if env_file.is_file() else {}
    token = environ.get("DISCORD_TOKEN") or file_values.get("DISCORD_TOKEN") or None
    return dataclasses.replace(cfg, data_dir=resolved, discord_token=token, source=path)
