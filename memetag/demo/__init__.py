"""`memetag demo`: a sample chat, its Hangouts export, and the whole loop run on it offline.

``synthetic`` draws the quick, shape-only images some tests and benchmarks use; ``realset``
draws realistic ones over real photos that ship with installed packages; ``samplechat`` makes
the demo's members, history, Hangouts export and live batch; ``imagehost`` serves the export's
images on 127.0.0.1; ``live`` plays the members against the real bot in the stand-in Discord;
``transcript`` saves what happened as text and PNG; ``run`` wires it all to the real commands.
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
