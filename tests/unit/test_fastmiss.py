"""The compiled miss path's entry builder (``dnscache/_upstream.c``) against the Python pipeline it
replaces (``check_reply`` -> ``scrub`` -> ``build_entry``).

- on generated replies (names, types, TTLs with the top bit set, SOA minimums, EDNS, AD/TC,
  rcodes, every variant) an entry it builds is byte-for-byte the one Python builds, and it builds
  one for every ordinary positive or negative answer (so the fast path is really taken);
- on damaged replies (an octet changed, cut short) it never builds what Python would not, and
  what it builds is Python's.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscache import _fastpath  # type: ignore[attr-defined]
from dnscache.core.cache import CacheEntry, cache_key, entry_wire, expires_at
from dnscache.core.response import CachePolicy, build_entry
from dnscache.core.scrub import scrub
from dnscache.core.wire import WireError, parse_message
from dnscache.resolver import VARIANT_FROM_BYTE

POLICY = CachePolicy(min_ttl=5, max_ttl=86400, neg_max_ttl=900, stale_window=600.0, prefetch_fraction=0.1)
FULL = replace(POLICY, minimal_responses=False)


def policy_tuple(p: CachePolicy) -> tuple[float, float, float, float, float, bool]:
    return (float(p.min_ttl), float(p.max_ttl), float(p.neg_max_ttl), p.stale_window, p.prefetch_fraction,
            p.minimal_responses)  # fmt: skip


POLICY_TUPLE = policy_tuple(POLICY)
NOW = 1234.5

labels = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-", min_size=1, max_size=12)
ttls = st.one_of(st.integers(0, 100000), st.sampled_from([0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]))


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, bytes, bool]:
    """(reply wire, cache key, whether it is an ordinary answer the engine must take)."""
    name = ".".join(draw(st.lists(labels, min_size=1, max_size=4))) + ".example."
    rdtype = draw(st.sampled_from(["A", "AAAA", "MX", "TXT"]))
    variant = draw(st.integers(0, 7))
    q = dns.message.make_query(name, rdtype)
    r = dns.message.make_response(q)
    rcode = draw(
        st.sampled_from([dns.rcode.NOERROR, dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL])
    )
    r.set_rcode(rcode)
    rdata = {"A": "192.0.2.1", "AAAA": "2001:db8::1", "MX": "10 mx.example.", "TXT": '"hello"'}[rdtype]
    answers = draw(st.integers(0, 3)) if rcode == dns.rcode.NOERROR else 0
    for i in range(answers):
        text = rdata if rdtype != "A" else f"192.0.2.{i + 1}"
        r.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, text))
    soa = draw(st.booleans()) or (answers == 0 and draw(st.booleans()))
    if soa:
        minimum = draw(st.integers(0, 5000))
        r.authority.append(
            dns.rrset.from_text("example.", 300, "IN", "SOA", f"ns.example. host.example. 1 2 3 4 {minimum}")
        )
    if draw(st.booleans()):
        r.authority.append(dns.rrset.from_text("example.", 300, "IN", "NS", "ns.example."))
        r.additional.append(dns.rrset.from_text("ns.example.", 300, "IN", "A", "192.0.2.53"))
    if draw(st.booleans()):
        r.use_edns(0, dns.flags.DO if draw(st.booleans()) else 0, 1232)
    if draw(st.booleans()):
        r.flags |= dns.flags.AD
    truncated = draw(st.booleans()) and draw(st.booleans())
    if truncated:
        r.flags |= dns.flags.TC
    wire = bytearray(r.to_wire())
    # TTLs as drawn (dnspython would not write the top bit): patch every record's TTL in place
    msg = parse_message(bytes(wire))
    for rec in msg.records:
        struct.pack_into("!I", wire, rec.ttl_off, draw(ttls))
    key = cache_key(bytes(wire[12 : msg.question_end]), bytes((variant,)))
    ordinary = not truncated and (
        (rcode == dns.rcode.NOERROR and answers > 0)
        or (rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) and soa)
    )
    return bytes(wire), key, ordinary


def python_entry(wire: bytes, key: bytes, policy: CachePolicy = POLICY) -> CacheEntry | None:
    """What the Python miss path caches for this reply, or None where it caches nothing."""
    try:
        msg = parse_message(wire)
        scrubbed = scrub(wire, msg, ())
        entry, cacheable = build_entry(
            scrubbed.wire, scrubbed.message, VARIANT_FROM_BYTE[key[-1]], policy, NOW
        )
    except WireError:
        return None
    return entry if cacheable else None


def compiled_entry(wire: bytes, key: bytes, policy: CachePolicy = POLICY) -> bytearray | None:
    entry = _fastpath.entry_from_reply(wire, key, policy_tuple(policy), NOW, CacheEntry)
    assert entry is None or type(entry) is CacheEntry
    return entry


@settings(max_examples=1500, deadline=None)
@given(replies(), st.sampled_from([POLICY, FULL]))
def test_an_entry_it_builds_is_the_one_python_builds(
    case: tuple[bytes, bytes, bool], policy: CachePolicy
) -> None:
    wire, key, ordinary = case
    built = compiled_entry(wire, key, policy)
    if built is not None:
        assert bytes(built) == bytes(python_entry(wire, key, policy) or b"")
    if ordinary:
        assert built is not None, "an ordinary answer must not need Python"


@settings(max_examples=3000, deadline=None)
@given(replies(), st.integers(0, 600), st.integers(0, 255), st.booleans(), st.sampled_from([POLICY, FULL]))
def test_a_damaged_reply_is_never_cached_differently(
    case: tuple[bytes, bytes, bool], at: int, octet: int, cut: bool, policy: CachePolicy
) -> None:
    wire, key, _ = case
    damaged = bytearray(wire[: at % (len(wire) + 1)] if cut else wire)
    if not cut and damaged:
        damaged[at % len(damaged)] = octet
    built = compiled_entry(bytes(damaged), key, policy)
    if built is not None:
        # the caller has matched ID and question; Python's pipeline must agree on the rest
        expected = python_entry(bytes(damaged), key, policy)
        assert expected is not None and bytes(built) == bytes(expected)


def sections(entry: bytearray) -> tuple[int, int, int]:
    """Answer, authority and additional counts of the entry's wire (OPT included)."""
    wire = entry_wire(entry)
    return struct.unpack_from("!HHH", wire, 6)


def test_minimal_responses_keep_the_answers_of_a_positive_reply_only() -> None:
    """As Unbound's minimal-responses: a positive answer loses its authority NS and additional
    glue; with DO it keeps them (they may prove a wildcard), and a negative answer keeps its SOA."""
    q = dns.message.make_query("h1.example.", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("h1.example.", 60, "IN", "A", "192.0.2.1"))
    r.authority.append(dns.rrset.from_text("example.", 30, "IN", "NS", "ns.example."))
    r.additional.append(dns.rrset.from_text("ns.example.", 30, "IN", "A", "192.0.2.53"))
    wire = r.to_wire()
    question = wire[12 : parse_message(wire).question_end]
    plain, dnssec = cache_key(question, b"\x01"), cache_key(question, b"\x03")  # EDNS; EDNS+DO
    for build in (python_entry, compiled_entry):
        minimal = build(wire, plain, POLICY)
        assert minimal is not None and sections(minimal) == (1, 0, 1)  # the answer and our OPT
        assert expires_at(minimal) == NOW + 60  # the NS's 30 s no longer bounds it
        full = build(wire, plain, FULL)
        assert full is not None and sections(full) == (1, 1, 2) and expires_at(full) == NOW + 30
        with_do = build(wire, dnssec, POLICY)
        assert with_do is not None and sections(with_do) == (1, 1, 2)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.NXDOMAIN)
    r.authority.append(dns.rrset.from_text("example.", 300, "IN", "SOA", "ns.example. h.example. 1 2 3 4 60"))
    wire = r.to_wire()
    for build in (python_entry, compiled_entry):
        negative = build(wire, plain, POLICY)
        assert negative is not None and sections(negative) == (0, 1, 1)


def test_a_cname_chain_and_a_short_key_go_to_python() -> None:
    q = dns.message.make_query("www.example.", "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.", 60, "IN", "CNAME", "cdn.example."))
    r.answer.append(dns.rrset.from_text("cdn.example.", 60, "IN", "A", "192.0.2.1"))
    wire = r.to_wire()
    key = cache_key(wire[12 : parse_message(wire).question_end], b"\x00")
    assert compiled_entry(wire, key) is None
    assert compiled_entry(wire, b"\x00") is None


def engine(**changes: object) -> object:
    from array import array

    from dnscache.core.stats import DURATION_BUCKETS, ENGINE_COUNTERS, RCODE_SLOTS

    args: dict[str, object] = {
        "python_inflight": {},
        "entry_type": CacheEntry,
        "on_done": lambda results: None,
        "counters": array("Q", bytes(8 * ENGINE_COUNTERS)),
        "durations": array("Q", bytes(8 * (len(DURATION_BUCKETS) + 2))),
        "rcodes": array("Q", bytes(8 * RCODE_SLOTS)),
        "buckets": DURATION_BUCKETS,
        "policy": POLICY_TUPLE,
        "case_exact": False,
    }
    args.update(changes)
    return _fastpath.Engine(*args.values())


def test_an_engine_refuses_bad_arguments_and_a_closed_one_says_so() -> None:
    import pytest

    from dnscache.core.stats import ENGINE_COUNTERS

    with pytest.raises(ValueError, match="counters"):
        engine(counters=bytearray(8 * ENGINE_COUNTERS))
    with pytest.raises(TypeError, match="callable"):
        engine(on_done=None)
    with pytest.raises(ValueError, match="buckets"):
        engine(buckets=[0.1] * 40)
    e = engine()
    with pytest.raises(ValueError, match="numeric"):
        e.set_route(0, "upstream.example", 53, 0.05, 1.0, (), POLICY_TUPLE)  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="zones"):
        e.set_route(0, "127.0.0.1", 53, 0.05, 1.0, ("cluster.local",), POLICY_TUPLE)  # type: ignore[attr-defined]
    e.set_route(0, "::1", 53, 0.05, 1.0, (b"\x07cluster\x05local\x00",), POLICY_TUPLE)  # type: ignore[attr-defined]
    assert e.waiting() == 0  # type: ignore[attr-defined]
    fd = e.fileno()  # type: ignore[attr-defined]
    assert fd >= 0
    assert e.close() == 0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="closed"):
        e.fileno()  # type: ignore[attr-defined]
    e()  # type: ignore[operator]  # a wake-up still queued after close: nothing happens
