"""Bailiwick scrubbing of upstream replies (pure), after Unbound's scrubber.

An upstream serves a zone (``.`` for the default upstreams, ``cluster.local`` for a stub zone).
From its reply we keep, in the answer section, only the CNAME/DNAME chain that starts at the
query name and stays inside that zone, and in the authority and additional sections only records
inside the zone. Everything else is what a poisoning attempt looks like and is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnscache.core.wire import (
    ANSWER,
    T_ANY,
    T_CNAME,
    T_DNAME,
    T_RRSIG,
    Message,
    Name,
    is_subdomain,
    read_name,
    rebuild,
)


@dataclass(frozen=True, slots=True)
class ScrubResult:
    wire: bytes
    message: Message
    dropped: int


def _kept_records(buf: bytes, msg: Message, zone: Name) -> list[bool]:
    keep = [False] * len(msg.records)
    chain: set[Name] = {msg.qname}
    answers = [(i, r) for i, r in enumerate(msg.records) if r.section == ANSWER]
    changed = True
    while changed:  # chains may come in any order; each pass can only add names
        changed = False
        for i, r in answers:
            if keep[i] or not is_subdomain(r.name, zone):
                continue
            if r.rtype == T_DNAME:
                if any(is_subdomain(n, r.name) and n != r.name for n in chain):
                    keep[i] = True
                continue
            if r.name not in chain:
                continue
            if r.rtype == T_CNAME and msg.qtype not in (T_CNAME, T_ANY):
                target, _ = read_name(buf, r.rdata_off)
                keep[i] = changed = True
                chain.add(target)
            elif r.rtype in (msg.qtype, T_RRSIG) or msg.qtype == T_ANY:
                keep[i] = True
    for i, r in enumerate(msg.records):
        if r.section != ANSWER:
            keep[i] = is_subdomain(r.name, zone)
    return keep


def scrub(buf: bytes, msg: Message, zone: Name) -> ScrubResult:
    """Return the reply with out-of-bailiwick and off-chain records removed.

    The common case (nothing to drop) returns the input untouched. Otherwise the message is
    rebuilt with dnspython, which decompresses and recompresses names, so pointers into dropped
    records cannot dangle.
    """
    keep = _kept_records(buf, msg, zone)
    dropped = keep.count(False)
    if not dropped:
        return ScrubResult(buf, msg, 0)
    allowed = {(r.section, r.name, r.rtype) for r, k in zip(msg.records, keep, strict=True) if k}
    wire, rebuilt = rebuild(buf, lambda section, name, rtype: (section, name, rtype) in allowed)
    return ScrubResult(wire, rebuilt, dropped)
