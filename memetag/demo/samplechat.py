"""The demo's sample chat: members with posting styles, their history as a Hangouts Takeout
export, the labels they gave part of it, and a later batch they post live in Discord.

Four members post at uneven rates and each has a style (Person A posts image macros, Person B
news and screenshots, Person C photos, Person D comics), so both the category head and the
sender head have something real to learn. The history holds the five kinds a group chat is full
of (memes, social-media screenshots, comics, news articles, photos), drawn by
:mod:`memetag.demo.realset` over real photos that ship with installed packages. The live batch
adds a kind the history never had, TV cartoon frames, which the members teach the bot.

Deterministic for a seed: the same seed draws the same images, senders and times. Nothing is
downloaded; the Hangouts export points at a loopback server (:mod:`memetag.demo.imagehost`).
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from memetag.demo import realset

HISTORY_KINDS = ("meme", "social_media", "comic_strip", "news", "photo")
NEW_KIND = "tv_cartoon"
CONVERSATION_ID = "UgzDEMO-sample-chat-0001AaABAQ"
CONVERSATION_NAME = "Sample chat"
START = datetime(2024, 1, 1, 9, tzinfo=UTC)
# Share of the history the members gave labels to (the rest is posted, never labelled).
LABELLED_SHARE = 0.9
_SMALL_TALK = (
    "lol",
    "😂😂",
    "this is so true",
    "where is this from?",
    "again??",
    "ok this one got me",
    "classic",
    "seen it",
    "🤣",
    "send more",
)


@dataclass(frozen=True)
class Member:
    name: str
    gaia_id: str  # the id a Hangouts export gives them
    activity: float  # share of the chat's images
    style: Mapping[str, float] = field(default_factory=dict)  # kind -> weight
    about: str = ""


MEMBERS: tuple[Member, ...] = (
    Member(
        "Person A",
        "100000000000000000001",
        0.35,
        {"meme": 6, "social_media": 1, "comic_strip": 1, "news": 0.5, "photo": 1},
        "image macros, and later a TV-cartoon phase",
    ),
    Member(
        "Person B",
        "100000000000000000002",
        0.25,
        {"news": 5, "social_media": 4, "meme": 1, "photo": 0.5, "comic_strip": 0.5},
        "news articles and social-media screenshots",
    ),
    Member(
        "Person C",
        "100000000000000000003",
        0.2,
        {"photo": 6, "meme": 1, "news": 1, "social_media": 0.5, "comic_strip": 0.5},
        "their own photos",
    ),
    Member(
        "Person D",
        "100000000000000000004",
        0.2,
        {"comic_strip": 6, "meme": 1.5, "social_media": 1, "photo": 0.5, "news": 0.5},
        "comics, and runs the server",
    ),
)
ADMIN = "Person D"


@dataclass(frozen=True)
class ChatImage:
    """One image of the sample chat. ``path`` is relative to the chat folder."""

    path: str
    sender: str
    kind: str
    posted_at: datetime | None = None  # history only
    labelled: bool = False  # history only: in the labels sheet
    phase: str = "history"  # history | tag | new | after


@dataclass(frozen=True)
class SampleChat:
    folder: Path
    history: list[ChatImage]
    live: list[ChatImage]

    def image_bytes(self, image: ChatImage) -> bytes:
        return (self.folder / image.path).read_bytes()

    def live_phase(self, phase: str) -> list[ChatImage]:
        return [i for i in self.live if i.phase == phase]


@dataclass(frozen=True)
class LivePlan:
    """How many live images each phase has: known kinds to tag, new-kind images members
    correct (the rest of ``new`` is left for ``/tagger review``), and new-kind images after
    the retrain (plus one known kind)."""

    tag: int = 8
    new: int = 10
    corrected: int = 8
    after: int = 4


SMALL_PLAN = LivePlan(tag=4, new=6, corrected=6, after=2)


def member(name: str) -> Member:
    return next(m for m in MEMBERS if m.name == name)


def _pick_sender(rng: random.Random) -> Member:
    return rng.choices(MEMBERS, weights=[m.activity for m in MEMBERS])[0]


def _pick_kind(rng: random.Random, who: Member) -> str:
    kinds = list(who.style)
    return rng.choices(kinds, weights=[who.style[k] for k in kinds])[0]


class _Drawer:
    """Draws images of a kind that are never perceptual-hash reposts of an earlier one."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._hashes: list[int] = []

    def draw(self, kind: str) -> Image.Image:
        img = None
        for _attempt in range(20):
            seed = self._rng.getrandbits(64)
            if kind == NEW_KIND:
                img = realset.draw_cartoon(random.Random(seed), quick=True)
            else:
                img = realset.DRAWERS[kind](random.Random(seed))
            h = realset.phash(img)
            if all((h ^ o).bit_count() > realset.MIN_PHASH_DISTANCE for o in self._hashes):
                break
        assert img is not None
        self._hashes.append(h)
        return img

    def save(self, img: Image.Image, kind: str, folder: Path, stem: str) -> str:
        # Screenshots and drawings are PNGs like real captures; photos, memes, frames JPEGs.
        if kind in realset.PNG_CATEGORIES:
            name = f"{stem}.png"
            img.save(folder / name, compress_level=1)
        else:
            name = f"{stem}.jpg"
            img.save(folder / name, quality=self._rng.randint(80, 92))
        return name


def make_sample_chat(
    folder: Path, *, history: int = 300, plan: LivePlan = LivePlan(), seed: int = 0
) -> SampleChat:
    """Draw the history (``folder/history``), the live batch (``folder/live``) and the labels
    sheet (``folder/labels.csv``). Every member posts at least one of each history kind."""
    folder = Path(folder)
    (folder / "history").mkdir(parents=True, exist_ok=True)
    (folder / "live").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"memetag-demo-{seed}")
    drawer = _Drawer(rng)
    # The first posts go round every member so each is seen; then rates and styles decide.
    picks: list[tuple[Member, str]] = []
    for i in range(history):
        who = MEMBERS[i % len(MEMBERS)] if i < 2 * len(MEMBERS) else _pick_sender(rng)
        picks.append((who, _pick_kind(rng, who)))
    rows: list[ChatImage] = []
    when = START
    for i, (who, kind) in enumerate(picks):
        when += timedelta(minutes=rng.randint(60, 2400))
        name = drawer.save(drawer.draw(kind), kind, folder / "history", f"img_{i:04d}")
        labelled = rng.random() < LABELLED_SHARE
        rows.append(ChatImage(f"history/{name}", who.name, kind, when, labelled))
    live = _draw_live(folder / "live", plan, drawer, rng)
    write_labels_sheet(folder / "labels.csv", rows)
    return SampleChat(folder, rows, live)


def _draw_live(
    folder: Path, plan: LivePlan, drawer: _Drawer, rng: random.Random
) -> list[ChatImage]:
    out: list[ChatImage] = []

    def add(who: Member, kind: str, phase: str) -> None:
        stem = f"live_{len(out):02d}"
        name = drawer.save(drawer.draw(kind), kind, folder, stem)
        out.append(ChatImage(f"live/{name}", who.name, kind, phase=phase))

    # Known kinds, each member in their own style: what the bot should get right.
    favourite = {m.name: max(m.style, key=m.style.__getitem__) for m in MEMBERS}
    for i in range(plan.tag):
        who = MEMBERS[i % len(MEMBERS)]
        kind = favourite[who.name] if i < len(MEMBERS) else _pick_kind(rng, who)
        add(who, kind, "tag")
    # The new kind: mostly Person A's cartoon phase.
    for i in range(plan.new):
        add(member("Person D") if i % 4 == 3 else member("Person A"), NEW_KIND, "new")
    for i in range(plan.after):
        add(member("Person D") if i % 3 == 2 else member("Person A"), NEW_KIND, "after")
    add(member("Person A"), "meme", "after")
    return out


def write_labels_sheet(path: Path, rows: Sequence[ChatImage]) -> Path:
    """The labels the members gave part of their history, as a `memetag ingest folder` CSV.

    Sender and time stay empty: the Hangouts export already says who posted each image and
    when; this sheet only adds labels to the same images (the store matches them by content).
    """
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "sender", "labels", "timestamp"])
        for r in rows:
            if r.labelled:
                writer.writerow([r.path, "", r.kind, ""])
    return path


# --- the Hangouts Takeout export ---------------------------------------------------------------


def _micros(moment: datetime) -> str:
    return str(int(moment.timestamp()) * 1_000_000 + moment.microsecond)


def _pid(gaia_id: str) -> dict[str, str]:
    return {"gaia_id": gaia_id, "chat_id": gaia_id}


def _event(i: int, who: Member, moment: datetime, content: dict, self_id: str) -> dict:
    return {
        "conversation_id": {"id": CONVERSATION_ID},
        "sender_id": _pid(who.gaia_id),
        "timestamp": _micros(moment),
        "self_event_state": {
            "user_id": _pid(self_id),
            "client_generated_id": str(7_000_000_000_000_000_000 + i),
            "notification_level": "RING",
        },
        "chat_message": {"message_content": content},
        "event_id": f"DEMOevent{i:06d}",
        "advances_sort_timestamp": True,
        "event_otr": "ON_THE_RECORD",
        "delivery_medium": {"medium_type": "BABEL_MEDIUM"},
        "event_type": "REGULAR_CHAT_MESSAGE",
        "event_version": _micros(moment),
    }


def _photo_content(i: int, who: Member, url: str, size: tuple[int, int]) -> dict:
    photo_id = str(7_100_000_000_000_000_000 + i)
    album_id = str(7_200_000_000_000_000_000 + i)
    scale = 200 / max(size)
    return {
        "attachment": [
            {
                "embed_item": {
                    "type": ["PLUS_PHOTO"],
                    "plus_photo": {
                        "thumbnail": {
                            "url": "https://plus.google.com/photos/albums/pdemo"
                            f"?pid={photo_id}&oid={who.gaia_id}",
                            "image_url": url,
                            "width_px": max(1, int(size[0] * scale)),
                            "height_px": max(1, int(size[1] * scale)),
                        },
                        "owner_obfuscated_id": who.gaia_id,
                        "album_id": album_id,
                        "photo_id": photo_id,
                        "url": url,
                        "original_content_url": url,
                        "media_type": "PHOTO",
                        "stream_id": [
                            f"BABEL_UNIQUE_ID_{photo_id}",
                            "BABEL_STREAM_ID",
                            f"shared_group_{photo_id}",
                        ],
                    },
                },
                "id": f"ph-{photo_id}-demo",
            }
        ]
    }


def image_url(base_url: str, image: ChatImage, index: int) -> str:
    """Where the export says an image lives: an lh3-shaped path on the loopback host."""
    return f"{base_url}/-DEMO{index:06d}/s0/{Path(image.path).name}"


def write_hangouts_export(chat: SampleChat, path: Path, base_url: str, *, seed: int = 0) -> Path:
    """Write the history as a new-layout ``Hangouts.json``: one group conversation, a
    PLUS_PHOTO event per image (its URL on ``base_url``) and some small talk between them."""
    rng = random.Random(f"memetag-demo-talk-{seed}")
    self_id = MEMBERS[0].gaia_id
    events: list[dict] = []
    for i, image in enumerate(chat.history):
        who = member(image.sender)
        assert image.posted_at is not None
        with Image.open(chat.folder / image.path) as img:
            size = img.size
        url = image_url(base_url, image, i)
        events.append(
            _event(len(events), who, image.posted_at, _photo_content(i, who, url, size), self_id)
        )
        if rng.random() < 0.3:
            other = rng.choice([m for m in MEMBERS if m is not who])
            text = {"segment": [{"type": "TEXT", "text": rng.choice(_SMALL_TALK)}]}
            later = image.posted_at + timedelta(seconds=rng.randint(20, 900))
            events.append(_event(len(events), other, later, text, self_id))
    events.sort(key=lambda e: int(e["timestamp"]))
    last = events[-1]["timestamp"] if events else _micros(START)
    participants = [
        {
            "id": _pid(m.gaia_id),
            "fallback_name": m.name,
            "invitation_status": "ACCEPTED_INVITATION",
            "participant_type": "GAIA",
            "new_invitation_status": "ACCEPTED_INVITATION",
            "in_different_customer_as_requester": False,
            "domain_id": "100000000000000000009",
        }
        for m in MEMBERS
    ]
    doc = {
        "conversations": [
            {
                "conversation": {
                    "conversation_id": {"id": CONVERSATION_ID},
                    "conversation": {
                        "id": {"id": CONVERSATION_ID},
                        "type": "GROUP",
                        "name": CONVERSATION_NAME,
                        "self_conversation_state": {
                            "self_read_state": {
                                "participant_id": _pid(self_id),
                                "latest_read_timestamp": last,
                            },
                            "status": "ACTIVE",
                            "notification_level": "RING",
                            "view": ["INBOX_VIEW"],
                            "inviter_id": _pid(MEMBERS[-1].gaia_id),
                            "invite_timestamp": _micros(START),
                            "sort_timestamp": last,
                            "active_timestamp": last,
                            "delivery_medium_option": [
                                {
                                    "delivery_medium": {"medium_type": "BABEL_MEDIUM"},
                                    "current_default": True,
                                }
                            ],
                            "is_guest": False,
                        },
                        "read_state": [
                            {"participant_id": _pid(m.gaia_id), "latest_read_timestamp": last}
                            for m in MEMBERS
                        ],
                        "has_active_hangout": False,
                        "otr_status": "ON_THE_RECORD",
                        "otr_toggle": "ENABLED",
                        "current_participant": [_pid(m.gaia_id) for m in MEMBERS],
                        "participant_data": participants,
                        "fork_on_external_invite": False,
                        "network_type": ["BABEL"],
                        "force_history_state": "NO_FORCE",
                        "group_link_sharing_status": "LINK_SHARING_OFF",
                    },
                },
                "events": events,
            }
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written as Takeout writes the new layout: "key": value, raw UTF-8 emoji.
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    return path
