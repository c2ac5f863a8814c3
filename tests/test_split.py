"""The time split (newest images validate) and repost-leak removal by perceptual hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from classifier.split import find_repost_leaks, parse_phash, split_by_time, time_split

T0 = datetime(2023, 1, 1, tzinfo=UTC)


def _flip_bits(phash: str, n: int) -> str:
    value = int(phash, 16)
    for bit in range(n):
        value ^= 1 << (bit * 7 % 64)
    return f"{value:016x}"


def test_newest_fraction_validates_and_untimed_images_train():
    times = [T0 + timedelta(days=d) for d in (5, 1, 9, 3, 7, 2, 8, 4)] + [None, None]
    train, val = time_split(times, 0.2)
    assert sorted(val) == [2, 6]  # days 9 and 8: the newest two of ten
    assert set(train) == set(range(10)) - {2, 6}
    assert 8 in train and 9 in train  # no time: can't be placed on the timeline


def test_split_is_deterministic_with_equal_times():
    times = [T0] * 10
    shas = [f"{i:064x}" for i in range(10)][::-1]
    a = time_split(times, 0.3, tiebreak=shas)
    b = time_split(list(times), 0.3, tiebreak=list(shas))
    assert a == b and len(a[1]) == 3


def test_tiny_stores():
    assert time_split([T0], 0.2) == ([0], [])
    assert time_split([T0, T0 + timedelta(days=1)], 0.2) == ([0], [1])
    assert time_split([None, None, None], 0.5) == ([0, 1, 2], [])


def test_naive_and_aware_times_mix():
    times = [datetime(2023, 1, 2), T0, datetime(2023, 1, 3, tzinfo=UTC)]
    assert time_split(times, 0.34)[1] == [2]


def test_repost_leaks_are_dropped_and_counted():
    base = "f0e1d2c3b4a59687"
    far = "0123456789abcdef"
    times = [T0 + timedelta(days=d) for d in range(10)]
    phashes = [far] * 10
    phashes[9] = base  # newest: validation
    phashes[0] = _flip_bits(base, 3)  # a repost of it, slightly re-encoded, in training
    phashes[1] = _flip_bits(base, 12)  # different enough to stay
    phashes[2] = None  # no hash: never a leak
    phashes[3] = "not-hex"
    for i in (4, 5, 6, 7, 8):
        phashes[i] = f"{(i * 0x1F2E3D4C5B6A7988) & (2**64 - 1):016x}"
    split = split_by_time(times, phashes, val_fraction=0.1, phash_distance=6)
    assert split.val == [9]
    assert split.dropped_leaks == [0]
    assert 0 not in split.train and {1, 2, 3} <= set(split.train)
    assert split.cutoff == times[9]


def test_leak_search_handles_chunks_and_threshold():
    val_hash = "ffff0000ffff0000"
    train_hashes = [_flip_bits(val_hash, k) for k in range(10)]
    phashes = [*train_hashes, val_hash]
    leaks = find_repost_leaks(list(range(10)), [10], phashes, 4, chunk=3)
    assert leaks == [0, 1, 2, 3, 4]
    assert find_repost_leaks(list(range(10)), [10], phashes, -1) == []


def test_parse_phash():
    assert parse_phash("ffffffffffffffff") == 2**64 - 1
    assert parse_phash(None) is None and parse_phash("") is None and parse_phash("zz") is None
