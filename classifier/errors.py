"""The classifier's error hierarchy: the CLI shows these as one line, never a traceback."""

from __future__ import annotations

from pathlib import Path


class ClassifierError(Exception):
    """Base for everything the classifier package raises on purpose."""


class ModelError(ClassifierError):
    """A checkpoint or weights file is unreadable, incomplete or does not fit the config."""


class ImageLoadError(ClassifierError):
    """An input could not be decoded into an RGB image.

    Attributes:
        path: the file that failed, or None when the image came as bytes.
        reason: what was wrong, one line (e.g. "truncated JPEG data").
    """

    def __init__(self, path: Path | str | None, reason: str) -> None:
        self.path = Path(path) if path is not None else None
        self.reason = " ".join(str(reason).split())  # keep it one line
        where = str(self.path) if self.path is not None else "<image bytes>"
        super().__init__(f"{where}: {self.reason}")
