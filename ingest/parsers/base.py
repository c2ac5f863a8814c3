"""The record every parser yields, and the counters it fills in."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingest.errors import CLIP_LIMIT, clip


def as_utc(moment: datetime) -> datetime | None:
    """``moment`` in UTC (naive means UTC already), or None when that is outside years 1-9999.

    ``0001-01-01T00:00:00+01:00`` is a valid ISO time whose UTC form is in year 0: Python's
    ``astimezone`` raises OverflowError for it (and for late 9999 with a negative offset).
    """
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


@dataclass(frozen=True)
class ParsedPost:
    """One image-bearing item of one source message.

    ``source_id`` is unique within ``source`` and stable across re-runs: the message id plus the
    item's position in the message (``"<message id>:<n>"``), so two attachments give two posts.
    Exactly one of ``url`` / ``local_ref`` is normally set: ``url`` for bytes to download,
    ``local_ref`` for bytes inside the export itself (a '/'-separated path relative to the export
    root, as the export names it: never used as a filesystem path without resolving it safely).
    """

    source: str  # "hangouts" | "gchat" | "discord" | "folder"
    source_id: str
    conversation_id: str | None
    conversation_name: str | None
    author_ref: str | None  # gaia_id / email / Discord user id / CSV sender
    author_name: str | None  # the source's display name for the author
    posted_at: datetime | None  # timezone-aware, UTC
    url: str | None = None
    local_ref: str | None = None
    # PHOTO / ANIMATED_PHOTO (Hangouts), LINK, attachment, embed, sticker, file
    media_hint: str | None = None
    # True when the item is only an image if its bytes say so (a LINK segment, an embed):
    # not being an image is then no failure, just not a post.
    must_sniff: bool = False
    labels: tuple[str, ...] = ()
    reaction_count: int | None = None  # the chat's own "likes", where the source has them
    fallback_urls: tuple[str, ...] = ()
    # Where the export lists the item ("labels.csv line 9"), for sources where listing one item
    # twice is a mistake to report (a labels CSV naming a file twice): the pipeline then counts
    # a later listing as a bad record instead of merging it into the post. It is the pipeline,
    # not the parser, that finds such repeats: remembering every name a million-row file listed
    # would make memory grow with the file.
    listed_at: str | None = None


@dataclass
class ParseStats:
    """Counters a parser fills in while it runs; the pipeline reports them."""

    messages: int = 0
    image_items: int = 0
    skipped: Counter = field(
        default_factory=Counter
    )  # reason -> count (video, sticker, voicemail…)
    bad_records: int = 0
    bad_examples: list[str] = field(default_factory=list)  # first few one-line descriptions
    # Ids and names of the conversations a filter selected (Hangouts --conversation).
    selected_conversations: set[str] = field(default_factory=set)

    def bad(self, description: str) -> None:
        self.bad_records += 1
        if len(self.bad_examples) < 5:
            # descriptions quote ids and values from the export, which may be megabytes long
            self.bad_examples.append(clip(description, 3 * CLIP_LIMIT))
