"""The answer cache (pure): entries are ready-to-send replies whose TTLs are patched in place.

Keys are the raw question bytes, case-folded, plus one variant byte for what changes the answer
(EDNS present, DO, CD). The store is bounded by entries and by bytes; eviction is FIFO with a
second chance for entries hit since they were last looked at (CLOCK), which costs the hit path
nothing more than the hit counter it keeps anyway. Expired entries are kept for the serve-stale
window (RFC 8767) and dropped after it.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

_TTL = struct.Struct("!I")

# Rough per-entry overhead of the Python objects around the wire bytes (slots object, key,
# OrderedDict node, tuples); used for the byte bound, checked against RSS in the benchmark.
ENTRY_OVERHEAD = 360

VARIANT_EDNS = 0x01
VARIANT_DO = 0x02
VARIANT_CD = 0x04


def variant_byte(edns: bool, do: bool, cd: bool) -> bytes:
    return bytes(((VARIANT_EDNS if edns else 0) | (VARIANT_DO if do else 0) | (VARIANT_CD if cd else 0),))


def cache_key(question: bytes, variant: bytes) -> bytes:
    """``question`` is the raw question section: name (any case), type and class."""
    return question[:-4].lower() + question[-4:] + variant


class CacheEntry:
    """One cached reply. ``wire`` is sent as is after patching ID, RD and the question's case."""

    __slots__ = (
        "an",
        "ar",
        "expires_at",
        "hits",
        "hits_seen",
        "ns",
        "prefetch_at",
        "qend",
        "rcode",
        "recheck_at",
        "record_ends",
        "rendered_age",
        "stale_until",
        "stored_at",
        "ttl_offsets",
        "ttls",
        "wire",
    )

    def __init__(
        self,
        wire: bytearray,
        qend: int,
        ttl_offsets: tuple[int, ...],
        ttls: tuple[int, ...],
        record_ends: tuple[int, ...],
        counts: tuple[int, int, int],
        rcode: int,
        stored_at: float,
        lifetime: float,
        stale_window: float,
        prefetch_fraction: float,
    ) -> None:
        self.wire = wire
        self.qend = qend
        self.ttl_offsets = ttl_offsets
        self.ttls = ttls
        self.record_ends = record_ends
        self.an, self.ns, self.ar = counts
        self.rcode = rcode
        self.stored_at = stored_at
        self.expires_at = stored_at + lifetime
        self.stale_until = self.expires_at + stale_window
        self.prefetch_at = stored_at + lifetime * (1.0 - prefetch_fraction)
        self.hits = 0
        self.hits_seen = 0
        self.rendered_age = 0
        self.recheck_at = 0.0  # after a failed refresh: serve stale at once until then (RFC 8767)

    @property
    def size(self) -> int:
        return len(self.wire) + ENTRY_OVERHEAD

    def remaining_ttl(self, now: float) -> float:
        return self.expires_at - now

    def render_fresh(self, now: float) -> bytearray:
        """Bring the TTLs in ``wire`` to the current whole-second age (at most once per second)."""
        age = int(now - self.stored_at)
        if age != self.rendered_age:
            self.rendered_age = age
            wire = self.wire
            for off, ttl in zip(self.ttl_offsets, self.ttls, strict=True):
                _TTL.pack_into(wire, off, ttl - age if ttl > age else 0)
        return self.wire

    def render_stale(self, stale_ttl: int) -> bytearray:
        """Expired entries are served with the RFC 8767 stale TTL (30 s by default)."""
        if self.rendered_age != -1:
            self.rendered_age = -1
            wire = self.wire
            for off in self.ttl_offsets:
                _TTL.pack_into(wire, off, stale_ttl)
        return self.wire


@dataclass(slots=True)
class CacheStats:
    evictions: int = 0
    expired_removed: int = 0


class Cache:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("cache limits must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self.bytes = 0
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: bytes) -> CacheEntry | None:
        return self.entries.get(key)

    def put(self, key: bytes, entry: CacheEntry, now: float) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(key) + old.size
        self.entries[key] = entry
        self.bytes += len(key) + entry.size
        self._shrink(now)

    def remove(self, key: bytes) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(key) + old.size

    def items(self) -> Iterator[tuple[bytes, CacheEntry]]:
        return iter(list(self.entries.items()))

    def resize(self, max_entries: int, max_bytes: int, now: float) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._shrink(now)

    def _shrink(self, now: float) -> None:
        entries = self.entries
        chances = 8
        while len(entries) > self.max_entries or self.bytes > self.max_bytes:
            key, entry = entries.popitem(last=False)
            if now < entry.stale_until and entry.hits > entry.hits_seen and chances > 0:
                chances -= 1  # hit since we last looked: one more round at the tail
                entry.hits_seen = entry.hits
                entries[key] = entry
                continue
            self.bytes -= len(key) + entry.size
            if now >= entry.stale_until:
                self.stats.expired_removed += 1
            else:
                self.stats.evictions += 1

    def sweep(self, now: float, budget: int = 1000) -> int:
        """Drop up to ``budget`` entries past their stale window, oldest first; returns how many."""
        removed = 0
        for key, entry in list(islice(self.entries.items(), budget)):
            if now >= entry.stale_until:
                self.remove(key)
                self.stats.expired_removed += 1
                removed += 1
        return removed
