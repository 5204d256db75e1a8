"""Cache snapshots: the cache as bytes and back, so a restart starts warm (pure).

Entry times are monotonic-clock values, which mean nothing to another process after a reboot;
the store time (the other times are offsets from it) is written as a wall-clock time and
turned back into the reader's monotonic clock, so an entry keeps exactly the lifetime it had
left. Entries already past their stale window are not written or read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from dnscache.core.cache import META_SIZE, Cache, CacheEntry, stale_until, wire_start

MAGIC = b"NKDC"
VERSION = 2  # 1: five absolute times per entry (netkit before the 42-octet header)
_HEAD = struct.Struct("!4sHI")  # magic, version, count
_ITEM = struct.Struct("!HI")  # key length, entry length
_STORED = struct.Struct("=d")  # an entry's first field: the store time (the rest are offsets)


class SnapshotError(ValueError):
    """A snapshot that is not ours, of another version, or cut short."""


def _shift(entry: CacheEntry, delta: float) -> CacheEntry:
    out = CacheEntry(entry)
    _STORED.pack_into(out, 0, _STORED.unpack_from(out)[0] + delta)
    return out


def dump(cache: Cache, mono_now: float, wall_now: float) -> bytes:
    to_wall = wall_now - mono_now
    items = [(k, e) for k, e in cache.entries.items() if stale_until(e) > mono_now]
    parts: list[bytes | bytearray] = [_HEAD.pack(MAGIC, VERSION, len(items))]
    for key, entry in items:
        shifted = _shift(entry, to_wall)
        parts += [_ITEM.pack(len(key), len(shifted)), key, shifted]
    return b"".join(parts)


def entries(data: bytes, mono_now: float, wall_now: float) -> Iterator[tuple[bytes, CacheEntry]]:
    """The entries of a snapshot, oldest first, in this process's monotonic clock."""
    if len(data) < _HEAD.size:
        raise SnapshotError("too short to be a cache snapshot")
    magic, version, count = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotError("not a netkit cache snapshot")
    if version != VERSION:
        raise SnapshotError(f"snapshot version {version}, this netkit reads {VERSION}")
    to_mono = mono_now - wall_now
    off = _HEAD.size
    for _ in range(count):
        if off + _ITEM.size > len(data):
            raise SnapshotError("snapshot cut short")
        klen, elen = _ITEM.unpack_from(data, off)
        off += _ITEM.size
        if off + klen + elen > len(data) or elen < META_SIZE:
            raise SnapshotError("snapshot cut short")
        key = bytes(data[off : off + klen])
        entry = _shift(CacheEntry(data[off + klen : off + klen + elen]), to_mono)
        off += klen + elen
        if not META_SIZE <= wire_start(entry) <= len(entry) - 12:
            raise SnapshotError("corrupt entry in snapshot")
        if stale_until(entry) > mono_now:
            yield key, entry


def load(cache: Cache, data: bytes, mono_now: float, wall_now: float) -> int:
    """Put a snapshot's live entries into ``cache`` (its bounds apply); returns how many."""
    n = 0
    for key, entry in entries(data, mono_now, wall_now):
        cache.put(key, entry, mono_now)
        n += 1
    return n
