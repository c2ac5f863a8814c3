"""Errors the CLI reports as one line; each package's own hierarchy hangs off MemetagError."""


class MemetagError(Exception):
    """Base for every error meant to be shown to a user as one line."""


class ConfigError(MemetagError):
    """config.toml or the environment holds something we cannot use."""
