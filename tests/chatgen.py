"""Small generated Hangouts exports (new layout) for pipeline and CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

PEOPLE = {"100000000000000000001": "Person A Example", "100000000000000000002": "Person B Example"}


def hangouts_export(path: Path, urls: list[str], *, link_urls: tuple[str, ...] = ()) -> Path:
    """Write a Hangouts.json with one PLUS_PHOTO event per URL and one LINK event per link URL."""
    participants = [
        {"id": {"gaia_id": gid, "chat_id": gid}, "fallback_name": name}
        for gid, name in PEOPLE.items()
    ]
    events = []
    gids = list(PEOPLE)
    for i, url in enumerate(urls):
        gid = gids[i % 2]
        events.append(
            {
                "conversation_id": {"id": "UgzTESTconv"},
                "sender_id": {"gaia_id": gid, "chat_id": gid},
                "timestamp": str(1600000000000000 + i * 60_000_000),
                "event_id": f"EVT{i:05d}",
                "event_type": "REGULAR_CHAT_MESSAGE",
                "chat_message": {
                    "message_content": {
                        "attachment": [
                            {
                                "embed_item": {
                                    "type": ["PLUS_PHOTO"],
                                    "plus_photo": {
                                        "thumbnail": {
                                            "url": f"https://plus.google.com/photos/albums/x?pid={i}",
                                            "image_url": url,
                                            "width_px": 200,
                                            "height_px": 150,
                                        },
                                        "owner_obfuscated_id": gid,
                                        "url": url,
                                        "media_type": "PHOTO",
                                    },
                                },
                                "id": f"ph-{i}",
                            }
                        ]
                    }
                },
            }
        )
    for j, url in enumerate(link_urls):
        gid = gids[j % 2]
        events.append(
            {
                "conversation_id": {"id": "UgzTESTconv"},
                "sender_id": {"gaia_id": gid, "chat_id": gid},
                "timestamp": str(1700000000000000 + j * 60_000_000),
                "event_id": f"LNK{j:05d}",
                "event_type": "REGULAR_CHAT_MESSAGE",
                "chat_message": {
                    "message_content": {
                        "segment": [
                            {"type": "LINK", "text": url, "link_data": {"link_target": url}}
                        ]
                    }
                },
            }
        )
    doc = {
        "conversations": [
            {
                "conversation": {
                    "conversation_id": {"id": "UgzTESTconv"},
                    "conversation": {
                        "id": {"id": "UgzTESTconv"},
                        "type": "GROUP",
                        "name": "Test chat",
                        "participant_data": participants,
                    },
                },
                "events": events,
            }
        ]
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path
