"""Read an export in place (folder, .zip, .tar/.tgz or one bare .json file) without extracting it."""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import tarfile
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from ingest.errors import MemberMissing, MemberTooLarge, ParseError

log = logging.getLogger(__name__)

_EXPECTED = "expected a folder, a .zip, a .tar/.tgz/.tar.gz archive, or a .json or .csv file"
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def normalize_member(name: str) -> str | None:
    """Return ``name`` as a clean '/'-separated relative member path, or None if it is unsafe.

    Backslashes count as separators (Windows-made archives), ``.`` components and a leading
    ``./`` disappear; absolute names, drive letters, ``..`` components and NUL bytes are unsafe.
    """
    name = name.replace("\\", "/")
    if not name or "\x00" in name or name.startswith("/") or _WINDOWS_DRIVE.match(name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _display_name(name: str) -> str:
    """Turn a surrogate-escaped (non-UTF-8) file name into printable text; U+FFFD marks bad bytes."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@lru_cache(maxsize=64)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a '/'-aware glob: ``*`` and ``?`` stay inside one component, ``**/`` spans any depth."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def match_member(member: str, pattern: str) -> bool:
    """True if ``member`` matches the glob ``pattern`` (see :meth:`ExportSource.find`)."""
    return _glob_regex(pattern).match(member) is not None


class _SafeReader(io.RawIOBase):
    """A read-only stream that turns archive and I/O failures into ParseError naming the member."""

    def __init__(self, raw: BinaryIO, label: str) -> None:
        super().__init__()
        self._raw = raw
        self._label = label

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._raw.read(len(b))
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise ParseError(self._label, f"cannot read: {exc}") from exc
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class ExportSource(ABC):
    """An export opened for reading: a tree of members addressed by '/'-separated relative names.

    Member names are only ever keys into the source's own index, never filesystem paths, so an
    archive entry named ``../../etc/passwd`` can neither be listed nor escape anything.
    """

    is_archive = True  # zip/tar (and a bare file); a folder on disk says False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name or str(path)
        self._index: dict[str, object] = {}

    def _add(self, name: str, entry: object) -> None:
        member = normalize_member(_display_name(name))
        if member is None:
            log.warning("%s: skipping unsafe member name %r", self.name, name)
        elif member in self._index:
            log.debug("%s: duplicate member %r, keeping the first", self.name, member)
        else:
            self._index[member] = entry

    def iter_members(self) -> Iterator[str]:
        """Yield every file member (no directories), in archive or sorted-walk order."""
        return iter(list(self._index))

    def find(self, pattern: str) -> list[str]:
        """Members matching a glob, sorted.

        ``*``/``?`` match inside one path component and ``**/`` any number of leading
        directories, so ``**/Hangouts*.json`` matches ``Hangouts.json`` and
        ``Takeout/Hangouts/Hangouts2.json``.
        """
        regex = _glob_regex(pattern)
        return sorted(m for m in self._index if regex.match(m))

    def find_required(self, pattern: str, what: str) -> list[str]:
        """Like :meth:`find`, but raise ParseError saying ``what`` was expected when nothing matches."""
        found = self.find(pattern)
        if not found:
            raise ParseError(self.name, f"no file matching '{pattern}': expected {what}")
        return found

    def label(self, member: str) -> str:
        """How messages name ``member``: ``<export>:<member>``."""
        return f"{self.name}:{member}"

    def exists(self, member: str) -> bool:
        """True if ``member`` is a file in this source."""
        return member in self._index

    def size(self, member: str) -> int:
        """Uncompressed size in bytes, as the archive or filesystem declares it."""
        return self._size(self._entry(member))

    def open(self, member: str) -> BinaryIO:
        """A streaming binary reader for ``member``; read failures raise ParseError."""
        raw = self._open(self._entry(member))
        label = f"{self.name}:{member}"
        return io.BufferedReader(_SafeReader(raw, label), buffer_size=1 << 16)  # type: ignore[return-value]

    def read_bytes(self, member: str, max_bytes: int) -> bytes:
        """The whole member; MemberMissing if there is none, MemberTooLarge if it is larger
        than ``max_bytes``."""
        chunks = []
        held = 0
        with self.open(member) as f:
            # Small reads first: read(max_bytes + 1) would allocate the whole limit (tens of
            # MB) for every small image.
            size = 1 << 16
            while held <= max_bytes and (chunk := f.read(min(size, max_bytes + 1 - held))):
                chunks.append(chunk)
                held += len(chunk)
                size = min(size * 4, 1 << 24)
        if held > max_bytes:
            raise MemberTooLarge(f"{self.name}:{member}", max_bytes)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing open
        """Release the underlying archive handle."""

    def _entry(self, member: str) -> object:
        try:
            return self._index[member]
        except KeyError:
            raise MemberMissing(self.name, member) from None

    @abstractmethod
    def _open(self, entry: object) -> BinaryIO: ...

    @abstractmethod
    def _size(self, entry: object) -> int: ...


class _DirSource(ExportSource):
    # The folder the user named is the root; an archive may wrap everything in one folder.
    is_archive = False

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._root = os.path.realpath(path)
        for dirpath, dirnames, filenames in os.walk(self._root, followlinks=False):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self._root)
            for fname in sorted(filenames):
                rel = fname if rel_dir == "." else os.path.join(rel_dir, fname)
                full = os.path.join(dirpath, fname)
                if self._inside(full) and os.path.isfile(full):
                    self._add(rel.replace(os.sep, "/"), rel)
                else:
                    log.warning(
                        "%s: skipping %r (not a regular file inside the folder)", self.name, rel
                    )

    def _inside(self, full: str) -> bool:
        real = os.path.realpath(full)
        return real == self._root or real.startswith(self._root + os.sep)

    def _resolve(self, entry: object) -> str:
        full = os.path.join(self._root, str(entry))
        if not self._inside(full):  # re-checked at open time: the tree may have changed
            raise ParseError(self.name, f"{entry!r} now points outside the export folder")
        return full

    def _open(self, entry: object) -> BinaryIO:
        try:
            return open(self._resolve(entry), "rb")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise ParseError(self.name, f"cannot open {entry!r}: {exc}") from exc

    def _size(self, entry: object) -> int:
        try:
            return os.stat(self._resolve(entry)).st_size
        except OSError as exc:
            raise ParseError(self.name, f"cannot stat {entry!r}: {exc}") from exc


class _ZipSource(ExportSource):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._zip = zipfile.ZipFile(path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ParseError(str(path), f"not a readable .zip archive ({exc})") from exc
        for info in infos:
            if not info.is_dir():
                self._add(info.filename, info)

    def _open(self, entry: object) -> BinaryIO:
        assert isinstance(entry, zipfile.ZipInfo)
        try:
            return self._zip.open(entry)  # type: ignore[return-value]
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, zlib.error) as exc:
            raise ParseError(f"{self.name}:{entry.filename}", f"cannot open: {exc}") from exc

    def _size(self, entry: object) -> int:
        assert isinstance(entry, zipfile.ZipInfo)
        return entry.file_size

    def close(self) -> None:
        self._zip.close()


class _TarSource(ExportSource):
    """A .tar or .tar.gz. Opening the source decompresses the whole stream once to index it;
    opening a member seeks in the gzip stream, which restarts decompression from the start when
    it has to go backwards, so members are cheapest to read in archive order."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._tar = tarfile.open(path, "r:*")
            members = self._tar.getmembers()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ParseError(str(path), f"not a readable .tar/.tgz archive ({exc})") from exc
        for info in members:
            if info.isfile():  # links, devices and directories are never members
                self._add(info.name, info)

    def _open(self, entry: object) -> BinaryIO:
        assert isinstance(entry, tarfile.TarInfo)
        try:
            f = self._tar.extractfile(entry)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ParseError(f"{self.name}:{entry.name}", f"cannot open: {exc}") from exc
        if f is None:
            raise ParseError(f"{self.name}:{entry.name}", "not a regular file")
        return f  # type: ignore[return-value]

    def _size(self, entry: object) -> int:
        assert isinstance(entry, tarfile.TarInfo)
        return entry.size

    def close(self) -> None:
        self._tar.close()


@dataclass(frozen=True)
class _FileEntry:
    path: Path


class _FileSource(ExportSource):
    """One bare file (a Hangouts.json, a DCE channel .json, a labels .csv) as a one-member source.

    The file is the only member listed or found, but a file it refers to beside it — a DCE
    ``--media`` export's ``<name>.json_Files/`` folder, or another channel's — can be checked
    and read by its path relative to the file's folder, exactly as when that folder is given.
    Such paths are resolved on demand (the folder is never walked: it may be a huge Downloads
    folder) and only inside that folder: ``..``, absolute paths and symlinks leading out of it
    are not members.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._add(path.name, _FileEntry(path))
        self._root = os.path.realpath(path.parent)

    def _beside(self, member: str) -> _FileEntry | None:
        """The file ``member`` names inside the bare file's folder, or None."""
        if normalize_member(member) != member:
            return None
        real = os.path.realpath(os.path.join(self._root, *member.split("/")))
        return _FileEntry(Path(real)) if self._inside(real) and os.path.isfile(real) else None

    def _inside(self, real: str) -> bool:
        return real.startswith(self._root.rstrip(os.sep) + os.sep)

    def exists(self, member: str) -> bool:
        return member in self._index or self._beside(member) is not None

    def label(self, member: str) -> str:
        return str(self.path if member in self._index else self.path.parent / member)

    def _entry(self, member: str) -> object:
        entry = self._index.get(member) or self._beside(member)
        if entry is None:
            raise MemberMissing(self.name, member)
        return entry

    def open(self, member: str) -> BinaryIO:
        if member in self._index:
            return super().open(member)
        raw = self._open_beside(member)
        return io.BufferedReader(_SafeReader(raw, f"{self.name}:{member}"), buffer_size=1 << 16)  # type: ignore[return-value]

    def _open_beside(self, member: str) -> BinaryIO:
        """Open the regular file ``member`` names inside the folder: one open, then the opened
        file itself says where it is (no per-component walk of the path, which costs more than
        reading a small image when a CSV names tens of thousands of files).

        Opened non-blocking, so a FIFO among the files cannot hang the ingest; a FIFO, device,
        folder, or anything that resolves outside the folder is no member.
        """
        if normalize_member(member) != member:
            raise MemberMissing(self.name, member)
        path = os.path.join(self._root, *member.split("/"))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except (FileNotFoundError, NotADirectoryError):
            raise MemberMissing(self.name, member) from None
        except OSError as exc:
            raise ParseError(path, f"cannot open: {exc}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or not self._inside(_opened_path(fd, path)):
                raise MemberMissing(self.name, member)
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb", buffering=0)  # buffered by open()
        except BaseException:
            os.close(fd)
            raise

    def _open(self, entry: object) -> BinaryIO:
        assert isinstance(entry, _FileEntry)
        try:
            return open(entry.path, "rb")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise ParseError(str(entry.path), f"cannot open: {exc}") from exc

    def _size(self, entry: object) -> int:
        assert isinstance(entry, _FileEntry)
        return entry.path.stat().st_size


def _opened_path(fd: int, path: str) -> str:
    """The real path of the file open as ``fd`` (opened from ``path``).

    Linux names it under /proc/self/fd, which is exact even if ``path`` changed since; elsewhere
    the path is resolved again.
    """
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def _sniff_kind(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise ParseError(str(path), f"cannot read: {exc}") from exc
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return "tar"
    if path.suffix.lower() in (".json", ".csv") or head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (
        b"{",
        b"[",
    ):
        return "file"
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix in (".zip", ".tgz", ".tar.gz", ".tar"):
        raise ParseError(str(path), f"corrupt or truncated archive: {_EXPECTED}")
    raise ParseError(str(path), f"unknown file type: {_EXPECTED}")


def build_export_source(path: Path) -> ExportSource:
    """Open ``path`` as an ExportSource (the caller closes it; prefer :func:`open_export`)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise ParseError(str(path), f"no such file or folder: {_EXPECTED}")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ParseError(str(path), f"cannot access: {exc}") from exc
    if stat.S_ISDIR(mode):
        return _DirSource(path)
    if not stat.S_ISREG(mode):
        raise ParseError(str(path), f"not a regular file: {_EXPECTED}")
    kind = _sniff_kind(path)
    if kind == "zip":
        return _ZipSource(path)
    if kind == "tar":
        return _TarSource(path)
    return _FileSource(path)


@contextmanager
def open_export(path: Path) -> Iterator[ExportSource]:
    """Open a folder, .zip, .tar/.tgz/.tar.gz, or bare .json/.csv export for reading, in place.

    Raises:
        ParseError: the path does not exist, the archive is corrupt, or the type is unknown.
    """
    source = build_export_source(path)
    try:
        yield source
    finally:
        source.close()
