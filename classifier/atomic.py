"""Atomic file writes for checkpoints, embedding shards and reports: temp file, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temp file beside ``path``, fsync it, then ``os.replace`` it into place.

    A crash leaves either the old file or the new one, never half of one; the folder is fsynced
    too where the filesystem allows, so the rename itself survives a power cut. The file gets
    the permissions any other new file would (``0o666`` less the umask), not the ``0o600`` of a
    temp file, so a report's markdown and its plots are readable by the same people.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), new_file_mode())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    write_atomic(path, lambda fh: fh.write(data))


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file here: ``0o666`` less the process umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports the umask in /proc without changing it; os.umask() can only be read by
    # setting it, which would briefly affect files other threads create meanwhile.
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not supported on every filesystem; the replace itself is still atomic
    finally:
        os.close(fd)
