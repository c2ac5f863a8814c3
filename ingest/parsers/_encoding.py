"""Which Unicode encoding a text file (a JSON export, a labels CSV) is in, from its first bytes."""

from __future__ import annotations

# Longest first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\xef\xbb\xbf", "UTF-8"),
    (b"\xfe\xff", "UTF-16-BE"),
    (b"\xff\xfe", "UTF-16-LE"),
)


def sniff_encoding(head: bytes) -> tuple[str, int]:
    """(encoding name, length of its byte-order mark) of a file whose text starts with ASCII.

    A byte-order mark decides; without one, the NUL bytes around the first (ASCII) character
    tell UTF-16 and UTF-32 apart from UTF-8 (RFC 4627, section 3): ``{\\x00"\\x00`` is
    UTF-16-LE. Needs the first 4 bytes; anything else is taken as UTF-8.
    """
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    if len(head) >= 4:
        if head[:3] == b"\x00\x00\x00" and head[3]:
            return "UTF-32-BE", 0
        if head[0] and head[1:4] == b"\x00\x00\x00":
            return "UTF-32-LE", 0
    if len(head) >= 2:
        if head[0] == 0 and head[1]:
            return "UTF-16-BE", 0
        if head[0] and head[1] == 0:
            return "UTF-16-LE", 0
    return "UTF-8", 0


def python_codec(name: str, bom: int) -> str:
    """The codec that reads such a file from its first byte, skipping the mark if there is one."""
    if name == "UTF-8":
        return "utf-8-sig"
    if bom:  # "utf-16"/"utf-32" read the mark and take the byte order from it
        return name[:6].lower()
    return name.lower()
