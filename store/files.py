"""Content-addressed image files: images/ab/<sha256>.<ext>, written atomically.

Any number of writers (an ingest, the bot) may write here at once. A file is only 'stored' once
its image row is committed; until then the writer has announced it with
``store.queries.images.claim_image_file``. ``store.orphans`` decides what is garbage.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_NAME = re.compile(r"^([0-9a-f]{64})\.([a-z0-9]{1,5})$")
# .tmp-<host>-<pid>-<random>.part: who is writing it, so a sweep can tell a dead writer's leftover
# from a file another live process is writing right now.
_TMP = re.compile(r"^\.tmp-(?:([A-Za-z0-9]{0,32})-(\d+)-)?.*\.part$")
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def _process_is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except OSError:
        return True  # cannot tell: assume it is alive
    return True


class ImageFiles:
    """The image directory. A file is only 'stored' once its DB row is committed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str, ext: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{ext}"

    def write(self, sha256: str, ext: str, data: bytes) -> Path:
        """Write via temp file + fsync + rename, so a crash never leaves a half file in place.

        A file already there with the right size is kept and its time refreshed: it is in use
        again, and an age-based sweep must see it as fresh.
        """
        final = self.path_for(sha256, ext)
        for attempt in range(3):
            try:
                st = final.stat()
            except FileNotFoundError:
                pass
            else:
                if st.st_size == len(data):
                    try:
                        os.utime(final)
                    except OSError:
                        pass  # another user's file: the commit-time check still protects it
                    return final
            try:
                self._write_new(final, data)
                return final
            except FileNotFoundError:
                # Our temp file vanished before the rename (a sweep that took it for a dead
                # writer's leftover, or the folder was removed): write it again.
                if attempt == 2:
                    raise
                log.info("temp file for %s vanished; writing it again", final)
        return final

    def ensure(self, sha256: str, ext: str, data: bytes) -> Path:
        """Make sure the file is in place, writing it only if it is missing or the wrong size.

        For the check a writer repeats under the store's write lock just before linking a file
        it wrote moments ago: one stat when all is well (``write`` already refreshed its time).
        """
        final = self.path_for(sha256, ext)
        try:
            if final.stat().st_size == len(data):
                return final
        except FileNotFoundError:
            pass
        return self.write(sha256, ext, data)

    def _write_new(self, final: Path, data: bytes) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=final.parent, prefix=f".tmp-{_HOST}-{os.getpid()}-", suffix=".part"
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def remove(self, sha256: str, ext: str) -> bool:
        """Delete one stored file; True if it was there."""
        path = self.path_for(sha256, ext)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        log.info("removed orphan image file %s", path)
        return True

    def iter_files(self) -> Iterator[tuple[str | None, Path]]:
        """Yield (sha256, path) for every stored-looking file, and (None, path) for anything else."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                match = _NAME.match(path.name)
                yield (match.group(1) if match else None), path

    def count_image_files(self) -> int:
        """How many content-addressed files are here (temp files and strangers not counted)."""
        return sum(1 for sha, _ in self.iter_files() if sha is not None)

    def remove_dead_temp_files(self, grace_s: float) -> int:
        """Delete temp files left by writers that died mid-write. Returns how many.

        A temp file that names a process of this host is a dead writer's exactly when that
        process no longer runs. Any other temp file (another host or container, an older
        memetag) is one when it is older than ``grace_s``: no write takes that long, and a live
        writer that loses its temp file anyway writes it again (see ``write``).
        """
        removed = 0
        now = time.time()
        for sha, path in list(self.iter_files()):
            match = None if sha is not None else _TMP.match(path.name)
            if match is None:
                continue  # a stored file, or not ours: leave it alone
            host, pid = match.group(1), match.group(2)
            if pid is not None and host == _HOST:
                garbage = not _process_is_alive(int(pid))
            else:
                try:
                    garbage = now - path.stat().st_mtime > grace_s
                except FileNotFoundError:
                    continue  # renamed into place meanwhile
            if garbage:
                log.info("removing temp file %s left by an interrupted write", path)
                path.unlink(missing_ok=True)
                removed += 1
        return removed
