"""The time split (train, then tune, then the newest images validate) and repost-leak removal by
perceptual hash across all three parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from classifier.split import (
    find_repost_leaks,
    parse_phash,
    split_by_time,
    time_split,
    time_split_parts,
)

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
    assert split.val == [9] and split.tune == [] and split.tuned_on == "validation"
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


def _distinct_hashes(n: int) -> list[str]:
    # Multiplying by an odd 64-bit constant scatters bits: pairwise distances are large.
    return [f"{((i + 1) * 0x9E3779B97F4A7C15) & (2**64 - 1):016x}" for i in range(n)]


def test_three_parts_in_time_order():
    times = [T0 + timedelta(days=d) for d in range(100)][::-1] + [None]
    train, tune, val = time_split_parts(times, 0.2, 0.15)
    day = {i: 99 - i for i in range(100)}
    assert len(val) == 20 and len(tune) == 15 and len(train) == 66
    assert sorted(day[i] for i in val) == list(range(80, 100))
    assert sorted(day[i] for i in tune) == list(range(65, 80))  # just before validation
    assert 100 in train  # no time: always trains
    assert not set(train) & set(tune) and not set(tune) & set(val) and not set(train) & set(val)
    assert time_split(times, 0.2) == (sorted(set(range(101)) - set(val)), val)


def test_small_stores_tune_on_validation():
    times = [T0 + timedelta(days=d) for d in range(40)]
    hashes = _distinct_hashes(40)
    # 40 images: 6 would tune, too few to fit thresholds on; they go back to training.
    split = split_by_time(times, hashes, val_fraction=0.2, tune_fraction=0.15, phash_distance=6)
    assert split.tuned_on == "validation" and split.tune == [] and split.tune_cutoff is None
    assert split.tuning == split.val == list(range(32, 40))
    assert split.train == list(range(32))
    # Enough images: a real tune part, and tuning never touches validation.
    times = [T0 + timedelta(days=d) for d in range(80)]
    split = split_by_time(
        times, _distinct_hashes(80), val_fraction=0.2, tune_fraction=0.15, phash_distance=6
    )
    assert split.tuned_on == "tune" and split.tuning == split.tune == list(range(52, 64))
    assert not set(split.tuning) & set(split.val)
    assert split.tune_cutoff == times[52] and split.cutoff == times[64]
    # tune_fraction = 0 opts out explicitly.
    split = split_by_time(times, _distinct_hashes(80), val_fraction=0.2, phash_distance=6)
    assert split.tuned_on == "validation" and len(split.train) == 64


def test_repost_leaks_cross_all_three_parts():
    times = [T0 + timedelta(days=d) for d in range(80)]
    hashes = _distinct_hashes(80)
    val_img, tune_img = 70, 55  # validation is 64..79, tune 52..63
    hashes[3] = _flip_bits(hashes[val_img], 2)  # training repost of a validation image
    hashes[4] = _flip_bits(hashes[tune_img], 3)  # training repost of a tune image
    hashes[58] = _flip_bits(hashes[val_img], 1)  # tune repost of a validation image
    hashes[5] = _flip_bits(hashes[val_img], 20)  # too different: stays
    split = split_by_time(times, hashes, val_fraction=0.2, tune_fraction=0.15, phash_distance=6)
    assert split.tuned_on == "tune"
    assert split.dropped_leaks == [3, 4] and split.dropped_tune_leaks == [58]
    assert 58 not in split.tune and 58 not in split.train and len(split.tune) == 11
    assert {3, 4}.isdisjoint(split.train) and 5 in split.train
    # Nothing left in an earlier part is within reach of a later part.
    for early, late in ((split.train, split.tune + split.val), (split.tune, split.val)):
        assert find_repost_leaks(early, late, hashes, 6) == []


def test_fallback_still_drops_tune_images_that_repost_validation():
    times = [T0 + timedelta(days=d) for d in range(40)]
    hashes = _distinct_hashes(40)
    hashes[30] = _flip_bits(hashes[35], 1)  # would have been tune (26..31); repost of val 35
    split = split_by_time(times, hashes, val_fraction=0.2, tune_fraction=0.15, phash_distance=6)
    assert split.tuned_on == "validation"
    assert split.dropped_leaks == [30] and 30 not in split.train
