"""Cache snapshots: entries keep the lifetime they had left across processes and clocks."""

from __future__ import annotations

import pytest

from dnscache.core import snapshot
from dnscache.core.cache import (
    Cache,
    CacheEntry,
    entry_wire,
    expires_at,
    prefetch_at,
    recheck_at,
    set_recheck_at,
    stale_until,
    stored_at,
)
from tests.unit.test_cache_rules import make_entry


def round_trip(
    key: bytes, entry: CacheEntry, dumped: tuple[float, float], loaded: tuple[float, float]
) -> CacheEntry:
    """``entry`` written by a process at (monotonic, wall) ``dumped`` and read back by another at
    ``loaded``."""
    cache = Cache(100, 1 << 30)
    cache.put(key, entry, stored_at(entry))
    data = snapshot.dump(cache, mono_now=dumped[0], wall_now=dumped[1])
    restored = Cache(100, 1 << 30)
    assert snapshot.load(restored, data, mono_now=loaded[0], wall_now=loaded[1]) == 1
    got = restored.get(key)
    assert got is not None
    return got


def test_round_trip_keeps_remaining_lifetime_across_clocks() -> None:
    key, entry = make_entry("a.example.test", now=1000.0)  # TTL 60: expires at 1060 (monotonic)
    # another process, another monotonic clock, 5 s later in wall time
    got = round_trip(key, entry, (1010.0, 5_000_010.0), (20.0, 5_000_015.0))
    assert expires_at(got) == pytest.approx(20.0 + 45.0)  # 60 - 10 - 5 seconds left
    assert bytes(entry_wire(got)) == bytes(entry_wire(entry))


def test_every_time_of_an_entry_moves_with_its_store_time() -> None:
    # the header holds the store time and the rest as milliseconds after it: one shift moves all
    key, entry = make_entry("r.example.test", now=1000.0)
    set_recheck_at(entry, 1012.5)
    got = round_trip(key, entry, (1010.0, 7_000.0), (50.0, 7_000.0))
    delta = 50.0 - 1010.0
    for read in (stored_at, expires_at, prefetch_at, stale_until, recheck_at):
        assert read(got) == pytest.approx(read(entry) + delta, abs=1e-6), read.__name__


def test_entries_past_the_stale_window_are_not_restored() -> None:
    cache = Cache(100, 1 << 30)
    key, entry = make_entry("old.example.test", now=0.0)
    cache.put(key, entry, 0.0)
    data = snapshot.dump(cache, mono_now=1.0, wall_now=1.0)
    restored = Cache(100, 1 << 30)
    assert snapshot.load(restored, data, mono_now=0.0, wall_now=stale_until(entry) + 10) == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"XXXX\x00\x02\x00\x00\x00\x00", "not a netkit"),
        (b"NKDC\x00\x09\x00\x00\x00\x00", "version 9"),
        # version 1 held five absolute times per entry: read as version 2, its times would be wrong
        (b"NKDC\x00\x01\x00\x00\x00\x00", "snapshot version 1, this netkit reads 2"),
        (b"NKDC\x00\x02\x00\x00\x00\x02\x00\x05\x00\x00\x00\x09abc", "cut short"),
    ],
)
def test_bad_snapshots_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(snapshot.SnapshotError, match=message):
        snapshot.load(Cache(10, 1 << 20), data, 0.0, 0.0)
