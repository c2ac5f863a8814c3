"""OpenMP's wait policy for a process where the model shares the cores with other threads.

With two intra-op threads, torch's OpenMP runtime (GNU libgomp in the PyPI wheels) lets a
thread that reaches the end of a parallel region spin, by default for 300 000 iterations,
waiting for the other. In the bot, decode threads, the event loop and SQLite want the same
cores while the model runs: a thread the OS took off the core leaves its partner spinning on
a core that could be decoding. Measured with ``bench/bot.py`` (2 cores, burst of 100, three
rounds each): the model's forward pass cost the bot 35.7 ms of CPU an image against 27.8 in
``Predictor.predict_files``; with a spin of 20 000 iterations, 28.1-30.7 against 26.8-27.6,
and ``predict_files`` itself unchanged.

libgomp reads ``GOMP_SPINCOUNT`` once, when torch loads it: call :func:`shorten_openmp_spin`
before the first ``import torch``. A value the user set is kept.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "20000"


def shorten_openmp_spin() -> bool:
    """Set ``GOMP_SPINCOUNT`` for this process unless set already; False once torch is loaded."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
    return True
