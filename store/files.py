"""Content-addressed image files: images/ab/<sha256>.<ext>, written atomically."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_NAME = re.compile(r"^([0-9a-f]{64})\.([a-z0-9]{1,5})$")


class ImageFiles:
    """The image directory. A file is only 'stored' once its DB row is committed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str, ext: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{ext}"

    def write(self, sha256: str, ext: str, data: bytes) -> Path:
        """Write via temp file + fsync + rename, so a crash never leaves a half file in place."""
        final = self.path_for(sha256, ext)
        if final.exists() and final.stat().st_size == len(data):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=".part")
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
        return final

    def iter_files(self):
        """Yield (sha256, path) for every stored-looking file, and (None, path) for temp leftovers."""
        if not self.root.is_dir():
            return
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                match = _NAME.match(path.name)
                yield (match.group(1) if match else None), path

    def sweep_orphans(self, known: set[str]) -> int:
        """Delete temp leftovers and files whose sha256 has no image row. Returns how many."""
        removed = 0
        for sha, path in list(self.iter_files()):
            if sha is None and not path.name.startswith(".tmp-"):
                continue  # not ours; leave it alone
            if sha is None or sha not in known:
                log.info("removing orphan image file %s", path)
                path.unlink(missing_ok=True)
                removed += 1
        return removed
