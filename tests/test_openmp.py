"""classifier.openmp: the bot's short OpenMP spin is set before torch loads, never over the user's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import os, sys
from classifier.openmp import shorten_openmp_spin
print(shorten_openmp_spin(), os.environ.get("GOMP_SPINCOUNT"))
{after}
"""


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_the_spin_is_set_before_torch_loads_and_a_users_value_is_kept():
    assert _run(PROBE.format(after="")) == "True 20000"
    assert _run(PROBE.format(after=""), GOMP_SPINCOUNT="5") == "True 5"


def test_too_late_once_torch_is_loaded():
    code = "import torch\n" + PROBE.format(after="")
    assert _run(code) == "False None"
