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
