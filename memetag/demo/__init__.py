"""`memetag demo`: a sample chat, its Hangouts export, and the whole loop run on it offline.

``synthetic`` draws the quick, shape-only images some tests and benchmarks use; ``realset``
draws realistic ones over real photos that ship with installed packages; ``samplechat`` makes
the demo's members, history and live batch; ``run`` wires the real commands and the bot to them.
"""

from memetag.demo.synthetic import (
    CATEGORIES,
    MEMBERS,
    TALL_SHARE,
    DemoImage,
    is_screenshot,
    make_demo_chat,
    render,
)

__all__ = [
    "CATEGORIES",
    "MEMBERS",
    "TALL_SHARE",
    "DemoImage",
    "is_screenshot",
    "make_demo_chat",
    "render",
]
