"""Frozen row types handed out by store queries (never tuples or cursors)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Person:
    id: int
    name: str


@dataclass(frozen=True)
class Image:
    id: int
    sha256: str
    phash: str | None
    width: int
    height: int
    format: str
    ext: str
    bytes: int

    @property
    def relpath(self) -> str:
        """Path under the data dir: images/ab/<sha256>.<ext>."""
        return f"images/{self.sha256[:2]}/{self.sha256}.{self.ext}"


@dataclass(frozen=True)
class NewPost:
    """A post to record; author is resolved through person aliases."""

    source: str
    source_id: str
    conversation_id: str | None
    conversation_name: str | None
    author_source: str | None
    author_ref: str | None
    author_name: str | None
    posted_at: datetime | None
    url: str | None
    local_ref: str | None
    media_hint: str | None = None
    must_sniff: bool = False
    reaction_count: int | None = None
    labels: tuple[str, ...] = ()
    fallback_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Post:
    id: int
    source: str
    source_id: str
    conversation_id: str | None
    conversation_name: str | None
    author_id: int | None
    author_name: str | None
    posted_at: datetime | None
    url: str | None
    fallback_urls: tuple[str, ...]
    local_ref: str | None
    media_hint: str | None
    must_sniff: bool
    image_id: int | None
    status: str
    failure_reason: str | None
    failure_detail: str | None
    attempts: int
    reaction_count: int | None


@dataclass(frozen=True)
class Label:
    id: int
    name: str
    emoji: str | None
    description: str
    active: bool


@dataclass(frozen=True)
class Vote:
    image_id: int
    label: str
    voter: str
    vote: int
    origin: str
    created_at: datetime


@dataclass(frozen=True)
class LabelledImage:
    """One stored image with what training needs: its first post and its net label votes."""

    image: Image
    sender: str | None
    posted_at: datetime | None
    net_votes: dict[str, int]


@dataclass(frozen=True)
class ModelRecord:
    id: int
    version: str
    path: str
    metrics: dict
    created_at: datetime
    is_current: bool


@dataclass(frozen=True)
class NewPrediction:
    """What a model predicted for an image, to be logged (``store.queries.predictions``)."""

    image_id: int
    model_version: str
    probabilities: dict[str, float]
    sender_name: str | None
    sender_probability: float | None


@dataclass(frozen=True)
class Prediction:
    image_id: int
    model_version: str
    probabilities: dict[str, float]
    sender_name: str | None
    sender_probability: float | None
    created_at: datetime


@dataclass(frozen=True)
class ExportRow:
    filename: str
    sender: str | None
    timestamp: datetime | None
    source: str
    labels: tuple[str, ...]
    conversation: str | None
    url: str | None


@dataclass(frozen=True)
class Stats:
    posts_by_source: dict[str, int]
    image_posts_by_source: dict[str, int]
    images: int
    people: int
    label_votes: dict[str, int]
    pending: int
    failures_by_reason: dict[str, int]
    not_images: int
    models: int


@dataclass(frozen=True)
class FailedPost:
    """A post whose image could not be stored, with the last failure's reason and time."""

    post_id: int
    source: str
    reason: str
    detail: str | None
    url: str | None
    local_ref: str | None
    conversation: str | None
    sender: str | None
    posted_at: datetime | None
    failed_at: datetime | None
    attempts: int
