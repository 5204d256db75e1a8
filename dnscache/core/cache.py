"""The answer cache (pure): entries are ready-to-send replies whose TTLs are patched in place.

Keys are the raw question bytes, case-folded, plus one variant byte for what changes the answer
(EDNS present, DO, CD). The store is bounded by entries and by bytes; eviction is FIFO with a
second chance for entries hit since they were last looked at (CLOCK), which costs the hit path
one octet store. Expired entries are kept for the serve-stale window (RFC 8767) and dropped
after it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TypeAlias

_TTL = struct.Struct("!I")

# Per-entry overhead beyond the entry's and the key's own octets (object headers, the dict slot,
# allocator rounding); used for the byte bound, checked against RSS in the benchmark.
ENTRY_OVERHEAD = 150

VARIANT_EDNS = 0x01
VARIANT_DO = 0x02
VARIANT_CD = 0x04


def variant_byte(edns: bool, do: bool, cd: bool) -> bytes:
    return bytes(((VARIANT_EDNS if edns else 0) | (VARIANT_DO if do else 0) | (VARIANT_CD if cd else 0),))


def cache_key(question: bytes, variant: bytes) -> bytes:
    """``question`` is the raw question section: name (any case), type and class."""
    return question[:-4].lower() + question[-4:] + variant


# An entry is one bytearray: a fixed header of metadata, one 8-octet row per record (TTL offset,
# TTL as cached, end offset), then the reply itself, ready to send. One object per entry instead
# of a dozen keeps 100,000 names in about 30 MiB (measured in benchmarks/dns_qps.py).
#
# Times: the store time as a double (the monotonic clock), the others as whole milliseconds after
# it (an unsigned 32-bit count: 49 days, above the longest max_ttl plus stale_window the config
# accepts), which is 16 octets less per entry than five doubles. Every reader, Python or C, takes
# a time as ``stored_at + ms / 1000.0``.
_META = struct.Struct("=dIIIIiBBHHHHHH")
# stored_at, expires, prefetch, stale_until, recheck (ms after stored_at; recheck 0: none),
# rendered_age, hits (saturating at 255), referenced (hit since eviction last looked), wire_start,
# records, an, ns, ar (without OPT), qend
# what the hit path reads at once: stored, expires, prefetch, age, wire start
HOT = struct.Struct("=dII8xi2xH")
_ROW = struct.Struct("=HIH")
_MS = struct.Struct("=I")
_STORED = struct.Struct("=d")
EXPIRES_MS, PREFETCH_MS, STALE_MS, RECHECK_MS = 8, 12, 16, 20
RENDERED_AGE, HITS, REFERENCED = 24, 28, 29
MS_MAX = 0xFFFFFFFF
META_SIZE = _META.size
assert META_SIZE == 42 and HOT.size == 32


def to_ms(seconds: float) -> int:
    """Seconds as the header's whole milliseconds, rounded and clamped to 0 .. 2^32 - 1 (the C
    builder in _upstream.c computes the same, so the entries it builds are byte-identical)."""
    v = seconds * 1000.0 + 0.5
    return 0 if v <= 0 else MS_MAX if v >= MS_MAX else int(v)


# An entry is a plain bytearray, not a subclass with methods: a subclass's instances carry a
# garbage-collector header (16 octets each) and are scanned by every full collection, 100,000
# of them at 100k names. The functions below read and write its header.
CacheEntry: TypeAlias = bytearray


def build_cache_entry(
    wire: bytes | bytearray,
    qend: int,
    rows: list[tuple[int, int, int]],
    counts: tuple[int, int, int],
    stored_at: float,
    lifetime: float,
    stale_window: float,
    prefetch_fraction: float,
) -> CacheEntry:
    """One cached reply with its metadata; ``rows``: (TTL offset, TTL, end offset) of each record,
    offsets within ``wire``. What gets sent is ``entry_wire`` after patching ID, RD and the
    question's case."""
    start = _META.size + _ROW.size * len(rows)
    head = _META.pack(
        stored_at, to_ms(lifetime), to_ms(lifetime * (1.0 - prefetch_fraction)),
        to_ms(lifetime + stale_window), 0, 0, 0, 0, start, len(rows), *counts, qend,
    )  # fmt: skip
    return bytearray(head + b"".join(_ROW.pack(*row) for row in rows) + wire)


def _meta(e: CacheEntry) -> tuple[float, int, int, int, int, int, int, int, int, int, int, int, int, int]:
    return _META.unpack_from(e)


def _at(e: CacheEntry, offset: int) -> float:
    return float(_STORED.unpack_from(e)[0]) + int(_MS.unpack_from(e, offset)[0]) / 1000.0


def stored_at(e: CacheEntry) -> float:
    return float(_STORED.unpack_from(e)[0])


def expires_at(e: CacheEntry) -> float:
    return _at(e, EXPIRES_MS)


def prefetch_at(e: CacheEntry) -> float:
    return _at(e, PREFETCH_MS)


def stale_until(e: CacheEntry) -> float:
    return _at(e, STALE_MS)


def recheck_at(e: CacheEntry) -> float:
    """After a failed refresh: serve stale at once until then (RFC 8767 failure recheck); 0.0
    when there is none."""
    return _at(e, RECHECK_MS) if _MS.unpack_from(e, RECHECK_MS)[0] else 0.0


def set_recheck_at(e: CacheEntry, when: float) -> None:
    _MS.pack_into(e, RECHECK_MS, to_ms(when - stored_at(e)))


def entry_hits(e: CacheEntry) -> int:
    return e[HITS]


def hit(e: CacheEntry) -> None:
    """What the hit path does inline: count (saturating) and mark referenced."""
    if e[HITS] < 255:
        e[HITS] += 1
    e[REFERENCED] = 1


def wire_start(e: CacheEntry) -> int:
    return int(_meta(e)[8])


def entry_wire(e: CacheEntry) -> bytearray:
    """A copy of the reply as it stands (TTLs as last rendered)."""
    return e[wire_start(e) :]


def entry_qend(e: CacheEntry) -> int:
    return int(_meta(e)[13])


def entry_counts(e: CacheEntry) -> tuple[int, int, int]:
    m = _meta(e)
    return int(m[10]), int(m[11]), int(m[12])


def entry_rows(e: CacheEntry) -> list[tuple[int, int, int]]:
    return list(_ROW.iter_unpack(e[_META.size : wire_start(e)]))


def record_ends(e: CacheEntry) -> list[int]:
    return [end for _, _, end in entry_rows(e)]


def entry_size(e: CacheEntry) -> int:
    """What the entry counts against the cache's byte bound."""
    return len(e) + ENTRY_OVERHEAD


def render_fresh(e: CacheEntry, now: float) -> bytearray:
    """Bring the TTLs to the current whole-second age (at most once per second); a copy."""
    start = wire_start(e)
    age = int(now - stored_at(e))
    if age != _meta(e)[5]:
        struct.pack_into("=i", e, RENDERED_AGE, age)
        for off, ttl, _ in entry_rows(e):
            _TTL.pack_into(e, start + off, ttl - age if ttl > age else 0)
    return e[start:]


def render_stale(e: CacheEntry, stale_ttl: int) -> bytearray:
    """Expired entries are served with the RFC 8767 stale TTL (30 s by default); a copy."""
    start = wire_start(e)
    if _meta(e)[5] != -1:
        struct.pack_into("=i", e, RENDERED_AGE, -1)
        for off, _, _ in entry_rows(e):
            _TTL.pack_into(e, start + off, stale_ttl)
    return e[start:]


def second_chance(e: CacheEntry) -> bool:
    """True (once) if the entry was hit since the last time eviction looked at it."""
    if e[REFERENCED]:
        e[REFERENCED] = 0
        return True
    return False


@dataclass(slots=True)
class CacheStats:
    evictions: int = 0
    expired_removed: int = 0


class Cache:
    """A dict of entries in insertion order, bounded by entries and bytes.

    Over a bound, it evicts a batch from the old end (down to 98 % of the bound, so the scan past
    deleted slots is paid once per batch), giving entries hit since they were last looked at a
    second round at the young end (CLOCK).
    """

    LOW_WATER = 0.98

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("cache limits must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: dict[bytes, CacheEntry] = {}
        self.bytes = 0
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: bytes) -> CacheEntry | None:
        return self.entries.get(key)

    def put(self, key: bytes, entry: CacheEntry, now: float) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(key) + entry_size(old)
        self.entries[key] = entry
        self.bytes += len(key) + entry_size(entry)
        if len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self._shrink(now)

    def remove(self, key: bytes) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(key) + entry_size(old)

    def items(self) -> Iterator[tuple[bytes, CacheEntry]]:
        return iter(list(self.entries.items()))

    def resize(self, max_entries: int, max_bytes: int, now: float) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        if len(self.entries) > max_entries or self.bytes > max_bytes:
            self._shrink(now)

    def _shrink(self, now: float) -> None:
        entries = self.entries
        low_entries = int(self.max_entries * self.LOW_WATER)
        low_bytes = int(self.max_bytes * self.LOW_WATER)
        rounds = 0
        while (len(entries) > low_entries or self.bytes > low_bytes) and entries:
            rounds += 1
            batch = list(islice(entries.items(), max(64, len(entries) - low_entries)))
            for key, entry in batch:
                if len(entries) <= low_entries and self.bytes <= low_bytes:
                    return
                del entries[key]
                if rounds <= 2 and now < stale_until(entry) and second_chance(entry):
                    entries[key] = entry  # hit since we last looked: one more round at the young end
                    continue
                self.bytes -= len(key) + entry_size(entry)
                if now >= stale_until(entry):
                    self.stats.expired_removed += 1
                else:
                    self.stats.evictions += 1

    def sweep(self, now: float, budget: int = 1000) -> int:
        """Drop up to ``budget`` entries past their stale window, oldest first; returns how many."""
        removed = 0
        for key, entry in list(islice(self.entries.items(), budget)):
            if now >= stale_until(entry):
                self.remove(key)
                self.stats.expired_removed += 1
                removed += 1
        return removed
