"""From an upstream reply to a cache entry, and from an entry to what fits a client (pure).

Caching rules: positive answers live for the smallest TTL in the message, clamped to
[min_ttl, max_ttl]; negative answers (NXDOMAIN, NODATA) per RFC 2308: min(SOA TTL, SOA MINIMUM),
capped by neg_max_ttl, and the SOA is served with that TTL; a negative answer without a SOA is not
cached. EDNS is hop by hop: the upstream's OPT is dropped and ours is appended for clients that
sent one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from dnscache.core.cache import CacheEntry, build_cache_entry, entry_counts, entry_qend, record_ends
from dnscache.core.wire import (
    AD,
    ANSWER,
    AUTHORITY,
    CD,
    EDNS_UDP_SIZE,
    NOERROR,
    NXDOMAIN,
    QR,
    RA,
    T_ANY,
    T_CNAME,
    T_SOA,
    TC,
    Message,
    header,
    opt_record,
    rebuild,
)

_U16 = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class CachePolicy:
    min_ttl: int = 0
    max_ttl: int = 86400
    neg_max_ttl: int = 3600
    stale_window: float = 86400.0  # how long past expiry an entry may still be served stale
    stale_ttl: int = 30  # TTL of stale answers (RFC 8767)
    prefetch_fraction: float = 0.1  # refresh when less than this share of the TTL is left
    minimal_responses: bool = True  # positive answers without authority and additional records


@dataclass(frozen=True, slots=True)
class Variant:
    edns: bool
    do: bool
    cd: bool


def normalise(buf: bytes, msg: Message) -> tuple[bytes, Message]:
    """Make sure the upstream's OPT (if any) is the last record, so it can be cut off."""
    if msg.edns is None or msg.opt_start == len(buf) - 11 - len(msg.edns.options):
        return buf, msg
    return rebuild(buf)


def positive(msg: Message) -> bool:
    """NOERROR with data of the asked type in the answer section (not NXDOMAIN, NODATA or a CNAME
    chain that ends in nothing)."""
    return msg.rcode == NOERROR and any(
        r.section == ANSWER
        and (r.rtype == msg.qtype or msg.qtype == T_ANY or (msg.qtype == T_CNAME and r.rtype == T_CNAME))
        for r in msg.records
    )


def minimal(msg: Message) -> tuple[Message, int]:
    """The reply with its answer section only, and where that section ends on the wire: what
    Unbound's ``minimal-responses`` sends for a positive answer. Records are in wire order and
    compression points backwards only, so cutting after the answers leaves no pointer dangling."""
    answers = [r for r in msg.records if r.section == ANSWER]
    end = answers[-1].end if answers else msg.question_end
    return replace(msg, records=answers, edns=None, opt_start=-1), end


def cache_lifetime(buf: bytes, msg: Message, policy: CachePolicy) -> tuple[int | None, list[int]]:
    """Seconds the reply may be cached (None: not at all), and the TTL to serve for each record.

    A lifetime of 0 (a TTL-0 answer, or a negative answer counted down to 0 by a recursive
    upstream) is still kept: expired at once, it is never served fresh, but it can be served
    stale when the upstreams fail (RFC 8767).
    """
    ttls = [min(max(r.ttl, policy.min_ttl), policy.max_ttl) for r in msg.records]
    rcode = msg.rcode
    if rcode not in (NOERROR, NXDOMAIN):
        return None, ttls
    if positive(msg):
        return (min(ttls) if ttls else 0), ttls
    # negative: NXDOMAIN or NODATA (possibly at the end of a CNAME chain)
    soa = next((i for i, r in enumerate(msg.records) if r.section == AUTHORITY and r.rtype == T_SOA), None)
    if soa is None:
        return None, ttls  # RFC 2308 5: a negative answer without a SOA is not cached
    rec = msg.records[soa]
    (minimum,) = struct.unpack_from("!I", buf, rec.end - 4)
    negative = min(max(min(rec.ttl, minimum), policy.min_ttl), policy.neg_max_ttl)
    ttls[soa] = negative
    chain = [t for r, t in zip(msg.records, ttls, strict=True) if r.section == ANSWER]
    return min([negative, *chain]), ttls


def build_entry(
    buf: bytes, msg: Message, variant: Variant, policy: CachePolicy, now: float
) -> tuple[CacheEntry, bool]:
    """Turn a validated, scrubbed upstream reply into an entry; the flag says whether to cache it."""
    buf, msg = normalise(buf, msg)
    body_end = msg.opt_start if msg.edns is not None else len(buf)
    if policy.minimal_responses and not variant.do and positive(msg):
        # authority and additional records are not needed here; with DO they may be (the NSEC
        # records that prove a wildcard answer), so those clients get the whole reply
        msg, body_end = minimal(msg)
    kept, ttls = cache_lifetime(buf, msg, policy)
    lifetime = kept or 0
    counts = [0, 0, 0]
    for r in msg.records:
        counts[r.section - 1] += 1
    flags = QR | RA | (msg.flags & 0xF)
    if variant.do and msg.flags & AD:
        flags |= AD
    if variant.cd:
        flags |= CD
    opt = opt_record(EDNS_UDP_SIZE, variant.do) if variant.edns else b""
    wire = bytearray(header(0, flags, 1, counts[0], counts[1], counts[2] + (1 if opt else 0)))
    question = buf[12 : msg.question_end]
    wire += question[:-4].lower() + question[-4:]
    wire += buf[msg.question_end : body_end]
    wire += opt
    for r, ttl in zip(msg.records, ttls, strict=True):
        struct.pack_into("!I", wire, r.ttl_off, ttl)
    entry = build_cache_entry(
        wire,
        msg.question_end,
        [(r.ttl_off, ttl, r.end) for r, ttl in zip(msg.records, ttls, strict=True)],
        (counts[0], counts[1], counts[2]),
        now,
        float(lifetime),
        policy.stale_window,
        policy.prefetch_fraction,
    )
    return entry, kept is not None


def finish(wire: bytearray, entry: CacheEntry, query: bytes, limit: int) -> bytes:
    """Personalise a rendered copy of an entry for one query (ID, RD, question case) and fit it
    in ``limit``."""
    out = wire if len(wire) <= limit else fit(wire, entry, limit)
    qend = entry_qend(entry)
    out[0:2] = query[0:2]
    out[2] = (out[2] & 0xFE) | (query[2] & 0x01)
    out[12:qend] = query[12:qend]
    return bytes(out)


def fit(wire: bytearray, entry: CacheEntry, limit: int) -> bytearray:
    """Cut a reply at a record boundary so it fits ``limit`` octets (RFC 2181 9).

    Compression pointers only point backwards, so any prefix of whole records stays valid. TC is
    set when an answer or authority record had to go; dropping additional records alone is not
    truncation.
    """
    ends = record_ends(entry)
    qend = entry_qend(entry)
    an_all, ns_all, _ = entry_counts(entry)
    body_end = ends[-1] if ends else qend
    opt = wire[body_end:]
    room = limit - len(opt)
    kept = 0
    while kept < len(ends) and ends[kept] <= room:
        kept += 1
    end = ends[kept - 1] if kept else qend
    an = min(an_all, kept)
    ns = min(ns_all, kept - an)
    ar = kept - an - ns
    out = bytearray(wire[:end]) + opt
    _U16.pack_into(out, 6, an)
    _U16.pack_into(out, 8, ns)
    _U16.pack_into(out, 10, ar + (1 if opt else 0))
    if kept < an_all + ns_all:
        out[2] |= TC >> 8
    return out
