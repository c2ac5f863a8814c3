"""A streaming JSON cursor: walk a huge document's outer structure, decode its records one by one.

Why not ijson alone: ijson's fast C generator builds objects under ONE prefix per pass, and the
parsers here need two (a small header such as Hangouts' participant list or DCE's guild/channel,
then the records), while ijson's push interface is ~2.4x slower. Here the outer levels are
walked by hand and every record is decoded by the C scanner of the standard ``json`` module,
which is faster than ijson's item builder. Memory stays at one chunk plus one record.

Bytes are decoded as latin-1 (one char per byte: ~20x faster than UTF-8 decoding once emoji
make the text 4 bytes per char, and text positions are byte offsets). JSON's structure is
ASCII and UTF-8 multi-byte sequences never contain ASCII bytes, so the structure is read
exactly; string values come out as latin-1 views of their UTF-8 bytes: pass every string a
parser emits through :func:`clean_text`, which turns them back into real text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from ingest.errors import ParseError
from ingest.parsers._encoding import sniff_encoding

log = logging.getLogger(__name__)

_WS = re.compile(r"[ \t\n\r]*")
_SEP = re.compile(r"[ \t\n\r]*(,?)[ \t\n\r]*")
_CHUNK = 1 << 20
# Decode a record on the fast path only when at least this much text follows it in the buffer,
# so a record is almost never cut by the buffer's end (records are ~1 KB, a cut costs a retry).
_LOOKAHEAD = 1 << 16
_NEAR_END = 16  # a decode error this close to the buffer's end may just be a cut record


class UnreadableValue:
    """Stands in for an array element that is valid JSON but cannot be turned into Python values.

    Today that is a number with more digits than Python converts (``sys.int_max_str_digits``,
    4300 by default): :meth:`JsonCursor.iter_values` yields this instead of raising, so a parser
    counts one bad record and goes on.
    """

    __slots__ = ("offset", "reason")

    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        return f"at byte {self.offset}: {self.reason}"


class _HugeNumber(Exception):
    """A number too long to convert was met; ``digits`` is how long it was."""

    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def _parse_int_checked(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # over the int/str conversion limit (CVE-2020-10735)
        raise _HugeNumber(len(text)) from None


class JsonCursor:
    """Reads one JSON document from a binary stream, left to right, in bounded memory.

    The caller walks containers with :meth:`iter_object` / :meth:`iter_array` and, at each
    position, consumes exactly one value with :meth:`read_value`, :meth:`skip_value` or a
    nested walk. :meth:`iter_values` decodes an array's elements one at a time (the hot path).
    Every failure (bad JSON, bad UTF-8, a read error, a value over ``max_value_bytes``, nesting
    too deep) raises ParseError with the byte offset.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        file: str,
        chunk_size: int = _CHUNK,
        max_value_bytes: int = 64 << 20,
    ) -> None:
        self.file = file
        self._stream = stream
        self._chunk = chunk_size
        self._max_value = max_value_bytes
        # strict=False: raw control characters inside strings are tolerated, as messy exports need
        self._scan = json.JSONDecoder(strict=False).scan_once
        # Used only after the fast scanner failed on an over-long number: says how long it was.
        self._scan_checked = json.JSONDecoder(strict=False, parse_int=_parse_int_checked).scan_once
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._started = False
        self._buf_start = 0  # byte offset of self._buf[0] in the stream

    # -- buffer ---------------------------------------------------------------------------

    def _read(self) -> bytes:
        try:
            chunk = self._stream.read(self._chunk)
        except ParseError:
            raise
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            raise ParseError(self.file, f"read failed: {exc}", self.offset(len(self._buf))) from exc
        if not isinstance(chunk, bytes | bytearray):
            raise ParseError(self.file, "expected a binary stream")
        return bytes(chunk)

    def _fill(self) -> bool:
        """Append the next chunk of text (dropping what was consumed); False at end of input."""
        if self._eof:
            return False
        chunk = self._read()
        if not self._started:
            while 0 < len(chunk) < 4:  # tiny reads: get enough to see a byte-order mark
                more = self._read()
                if not more:
                    break
                chunk += more
            self._started = True
            encoding, bom = sniff_encoding(chunk[:4])
            if encoding != "UTF-8":
                how = "by its byte-order mark" if bom else "by its NUL bytes"
                raise ParseError(
                    self.file,
                    f"file is {encoding} encoded ({how}), expected UTF-8 JSON: "
                    "exports are UTF-8; re-save it as UTF-8",
                    0,
                )
            if bom:
                chunk = chunk[bom:]
                self._buf_start = bom
        if not chunk:
            self._eof = True
            return False
        text = chunk.decode("latin-1")
        if self._pos:
            self._buf_start += self._pos
            self._buf = self._buf[self._pos :] + text
            self._pos = 0
        else:
            self._buf += text
        return True

    def offset(self, pos: int | None = None) -> int:
        """Byte offset in the stream of text position ``pos`` (default: the cursor)."""
        return self._buf_start + (self._pos if pos is None else pos)

    def error(self, message: str, pos: int | None = None) -> ParseError:
        """A ParseError for this file at text position ``pos`` (default: the cursor)."""
        return ParseError(self.file, message, self.offset(pos))

    # -- tokens ---------------------------------------------------------------------------

    def peek(self) -> str:
        """Skip whitespace and return the next character without consuming it ('' at the end)."""
        while True:
            i = _WS.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            self._pos = i
            if i < len(self._buf):
                return self._buf[i]
            if not self._fill():
                return ""

    def _expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            shown = repr(found) if found else "end of file"
            raise self.error(f"expected {what}, found {shown}")
        self._pos += 1

    def read_value(self) -> Any:
        """Decode the next value whole (bounded by ``max_value_bytes``).

        A number too long for Python to convert raises ParseError (see :meth:`iter_values`
        for the lenient form).
        """
        value = self._decode()
        if isinstance(value, UnreadableValue):
            raise self.error(value.reason, value.offset - self._buf_start)
        return value

    def _scan_or_unreadable(self, buf: str, pos: int) -> tuple[Any, int]:
        """The C scanner; a number over Python's conversion limit gives an UnreadableValue."""
        try:
            return self._scan(buf, pos)
        except json.JSONDecodeError:
            raise
        except ValueError:
            pass  # int() refused an over-long number: find its length, then its end
        try:
            return self._scan_checked(buf, pos)
        except _HugeNumber as exc:
            digits = exc.digits
        # Skip the value without converting numbers, to know where it ends.
        _, end = json.JSONDecoder(strict=False, parse_int=len).scan_once(buf, pos)
        reason = f"a number with {digits} digits (Python converts at most {sys.get_int_max_str_digits()})"
        return UnreadableValue(self.offset(pos), reason), end

    def _decode(self) -> Any:
        if not self.peek():
            raise self.error("unexpected end of file, expected a JSON value")
        while True:
            buf, pos = self._buf, self._pos
            if len(buf) - pos < _LOOKAHEAD and not self._eof:
                self._fill()
                continue
            try:
                value, end = self._scan_or_unreadable(buf, pos)
            except StopIteration as exc:
                err_pos, msg = exc.value, "expected a JSON value"
            except json.JSONDecodeError as exc:
                err_pos, msg = exc.pos, exc.msg
            except RecursionError:
                raise self.error("JSON nested too deeply", pos) from None
            else:
                if end < len(buf) or self._eof:  # a number ending at the buffer's end may go on
                    self._pos = end
                    return value
                err_pos, msg = end, "value cut by the buffer"
            if self._eof or not (err_pos >= len(buf) - _NEAR_END or msg.startswith("Unterminated")):
                raise self.error(msg, err_pos)
            if len(buf) - pos > self._max_value:
                limit = self._max_value >> 20
                raise self.error(f"a single JSON value is larger than {limit} MB", pos)
            self._chunk = max(self._chunk, (len(buf) - pos) // 2)  # grow geometrically
            self._fill()

    def skip_value(self) -> None:
        """Consume the next value without keeping it (containers are walked, not decoded whole)."""
        char = self.peek()
        if char == "{":
            for _ in self.iter_object():
                self.skip_value()
        elif char == "[":
            for _ in self.iter_values():
                pass
        else:
            self._decode()  # a number too long to convert is no error when it is skipped

    def iter_object(self) -> Iterator[str]:
        """Walk an object: yield each key; the caller consumes that key's value before resuming."""
        self._expect("{", "'{'")
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            if self.peek() != '"':
                raise self.error("expected an object key")
            key = self.read_value()
            self._expect(":", "':' after an object key")
            yield key
            char = self.peek()
            if char == ",":
                self._pos += 1
            elif char == "}":
                self._pos += 1
                return
            else:
                raise self.error("expected ',' or '}' in an object")

    def iter_array(self) -> Iterator[None]:
        """Walk an array: yield once per element; the caller consumes the element before resuming."""
        self._expect("[", "'['")
        if self.peek() == "]":
            self._pos += 1
            return
        while True:
            yield
            char = self.peek()
            if char == ",":
                self._pos += 1
            elif char == "]":
                self._pos += 1
                return
            else:
                raise self.error("expected ',' or ']' in an array")

    def iter_values(self) -> Iterator[Any]:
        """Yield an array's elements, each decoded whole: the hot loop of every parser.

        An element that is valid JSON but holds a number too long for Python to convert is
        yielded as an :class:`UnreadableValue`, for the parser to count as a bad record.
        """
        self._expect("[", "'['")
        if self.peek() == "]":
            self._pos += 1
            return
        scan = self._scan
        sep = _SEP.match
        while True:
            buf, pos = self._buf, self._pos
            if len(buf) - pos >= _LOOKAHEAD:
                # fast path: decode, then the separator, without leaving this frame
                try:
                    value, end = scan(buf, pos)
                except (StopIteration, ValueError, RecursionError):
                    pass  # the slow path below reports it properly (or reads a huge number)
                else:
                    m = sep(buf, end)
                    nxt = m.end()  # type: ignore[union-attr]
                    if nxt < len(buf):
                        self._pos = nxt
                        yield value
                        if m.group(1):  # type: ignore[union-attr]
                            continue
                        if buf[nxt] == "]":
                            self._pos = nxt + 1
                            return
                        raise self.error("expected ',' or ']' in an array", nxt)
            value = self._decode()
            yield value
            char = self.peek()
            if char == ",":
                self._pos += 1
                self.peek()  # land on the next element, so the fast path can take over again
            elif char == "]":
                self._pos += 1
                return
            else:
                raise self.error("expected ',' or ']' in an array")

    def expect_end(self) -> None:
        """Require that only whitespace is left after the document."""
        if self.peek():
            raise self.error("unexpected data after the end of the JSON document")


_ABOVE_LATIN1 = re.compile("[^\x00-\xff]+")
# surrogateescape'd bytes (U+DC80-U+DCFF) back to the latin-1 character of that byte
_KEEP_BYTES = {0xDC80 + i: 0x80 + i for i in range(128)}


def _utf8_run(text: str) -> str:
    """Decode a run of byte-chars as UTF-8; a byte that is not part of valid UTF-8 (a
    ``\\u0080``-``\\u00ff`` escape, or a broken byte) stays the character it was."""
    if text.isascii():
        return text
    return text.encode("latin-1").decode("utf-8", "surrogateescape").translate(_KEEP_BYTES)


def clean_text(value: object) -> str | None:
    """Real text from a string the cursor decoded, or None if ``value`` is not a string.

    Runs of U+0000-U+00FF are the raw UTF-8 bytes and are decoded; characters above U+00FF
    can only come from ``\\uXXXX`` escapes and are kept. Lone surrogates from broken escapes
    become '?', so the result is always storable.
    """
    if not isinstance(value, str):
        return None
    if value.isascii():
        return value
    if _ABOVE_LATIN1.search(value) is None:
        text = _utf8_run(value)
    else:  # escapes above U+00FF mixed with raw bytes
        parts: list[str] = []
        last = 0
        for m in _ABOVE_LATIN1.finditer(value):
            parts.append(_utf8_run(value[last : m.start()]))
            parts.append(m.group())
            last = m.end()
        parts.append(_utf8_run(value[last:]))
        text = "".join(parts)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text
