"""Small helpers shared by the command modules."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from memetag.errors import MemetagError

T = TypeVar("T")


class UserError(MemetagError):
    """A command was asked to do something it cannot; shown as one line, exit 1."""


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


class ProgressBars:
    """One tqdm bar per named phase on stderr, fed by a library's ``on_progress`` callback.

    Draws nothing when disabled or when stderr is not a terminal (logs, CI). A phase seen again
    with another total starts a new bar below the finished one; a bar whose total was unknown
    (``None``) takes the total when it arrives.
    """

    def __init__(
        self,
        enabled: bool,
        *,
        names: dict[str, str] | None = None,
        units: dict[str, str] | None = None,
    ) -> None:
        self.enabled = enabled
        self.names = names or {}
        self.units = units or {}
        self._bars: dict[str, Any] = {}

    def update(self, phase: str, done: int, total: int | None, **postfix: Any) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(phase)
        if bar is not None and bar.total is not None and total is not None and bar.total != total:
            bar.close()
            bar = None
        if bar is None:
            bar = self._bars[phase] = tqdm(
                desc=self.names.get(phase, phase),
                total=total,
                unit=self.units.get(phase, "it"),
                file=sys.stderr,
                dynamic_ncols=True,
                disable=None,
            )
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        if postfix:
            bar.set_postfix(refresh=False, **postfix)
        bar.refresh()
        if total is not None and done >= total:
            bar.close()  # one phase at a time: finished bars stay, the next starts below

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
