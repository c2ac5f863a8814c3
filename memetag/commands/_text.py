"""Untrusted text (names, URLs, file names from exports) made safe to print on a terminal."""

from __future__ import annotations

import unicodedata

# Longest a single value (a name, a URL, a file name) or a whole message line is shown.
VALUE_LIMIT = 300
LINE_LIMIT = 1000

# Control characters (ANSI escapes, \r, \n, backspace), format characters (BIDI overrides such
# as U+202E, zero-width spaces), line/paragraph separators and lone surrogates (undecodable
# file-name bytes) are shown escaped: they could rewrite the terminal, reorder what is shown, or
# fail to encode at all.
_ESCAPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Zero-width (non-)joiners hold emoji sequences and Persian or Indic words together.
_KEPT = frozenset("\u200c\u200d")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def shown(value: object, limit: int = VALUE_LIMIT) -> str:
    """``value`` as one printable line of at most about ``limit`` characters.

    Control and invisible formatting characters are written as escapes (``\\x1b``, ``\\n``,
    ``\\u202e``); an overlong value keeps its start and its end (where a file name or the
    reason of an error line is) around a note of how much was cut. Meant for display only.
    """
    text = str(value)
    if len(text) <= limit:
        return _escape(text)
    tail = max(limit // 3, 1)
    head = max(limit - tail, 1)
    cut = len(text) - head - tail
    return f"{_escape(text[:head])}…[{cut:,} characters cut]…{_escape(text[-tail:])}"


def shown_line(value: object) -> str:
    """A whole message line (an error, a failure) through :func:`shown` with the line limit."""
    return shown(value, LINE_LIMIT)


def _escape(text: str) -> str:
    if text.isprintable():  # the common case: nothing to escape
        return text
    return "".join(_escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    if c in _KEPT or unicodedata.category(c) not in _ESCAPED:
        return c
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
