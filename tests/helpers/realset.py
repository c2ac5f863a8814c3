"""The realistic offline image set now lives in the product (``memetag.demo.realset``, which
``memetag demo`` draws its sample chat with); this module keeps the old import path working for
the tests and ``bench/label_efficiency.py`` / ``bench/active_learning.py``."""

from memetag.demo.realset import (  # noqa: F401
    _DRAW,
    _PNG,
    CATEGORIES,
    DRAWERS,
    MIN_PHASH_DISTANCE,
    PNG_CATEGORIES,
    RealImage,
    _photo,
    _photo_sources,
    draw_cartoon,
    draw_comic,
    draw_meme,
    draw_news,
    draw_photo,
    draw_social,
    make_real_set,
    phash,
    read_truth,
)
