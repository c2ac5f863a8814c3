"""Which file a library warning is about: named around decoding, read by the CLI's warning handler.

Pillow warns about damaged metadata ("Possibly corrupt EXIF data", "Truncated File Read") without
saying which file it was reading; the code that opens the file knows. A context variable, not a
global, carries the name from there to whoever shows the warning: decoding runs in many threads
and asyncio tasks at once (``asyncio.to_thread`` copies the caller's context into the thread).
It lives here, at the bottom of the package graph, so ``ingest`` and ``classifier`` both reach it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_subject: ContextVar[str | None] = ContextVar("memetag_warning_subject", default=None)


@contextmanager
def warnings_about(subject: object) -> Iterator[None]:
    """Warnings raised inside this block are about ``subject`` (a path, URL or export member)."""
    token = _subject.set(None if subject is None else str(subject))
    try:
        yield
    finally:
        _subject.reset(token)


def current_subject() -> str | None:
    """The innermost subject named by :func:`warnings_about` in this context, if any."""
    return _subject.get()
