"""Caching rules (RFC 2308, TTL clamps), TTL patching, stale rendering, truncation, eviction."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from dnscache.core.cache import (
    MS_MAX,
    Cache,
    cache_key,
    entry_size,
    entry_wire,
    expires_at,
    hit,
    prefetch_at,
    recheck_at,
    render_fresh,
    render_stale,
    set_recheck_at,
    stale_until,
    stored_at,
    to_ms,
    variant_byte,
)
from dnscache.core.response import CachePolicy, Variant, build_entry, finish
from dnscache.core.wire import parse_message

PLAIN = Variant(edns=False, do=False, cd=False)
EDNS = Variant(edns=True, do=False, cd=False)


def reply(
    qname: str,
    qtype: str,
    *answers: str,
    authority: tuple[str, ...] = (),
    rcode: int = 0,
    additional: tuple[str, ...] = (),
) -> bytes:
    q = dns.message.make_query(qname, qtype, use_edns=0)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for section, texts in ((r.answer, answers), (r.authority, authority), (r.additional, additional)):
        for text in texts:
            name, ttl, cls, rtype, *rdata = text.split()
            section.append(dns.rrset.from_text(name, int(ttl), cls, rtype, " ".join(rdata)))
    return r.to_wire()


SOA = "example.test. {ttl} IN SOA ns.example.test. host.example.test. 1 3600 600 86400 {minimum}"


def entry_of(buf: bytes, policy: CachePolicy | None = None, variant: Variant = PLAIN, now: float = 1000.0):
    return build_entry(buf, parse_message(buf), variant, policy or CachePolicy(), now)


def test_positive_lifetime_is_smallest_ttl() -> None:
    buf = reply(
        "a.example.test",
        "A",
        "a.example.test. 300 IN CNAME b.example.test.",
        "b.example.test. 60 IN A 198.18.0.1",
    )
    entry, cacheable = entry_of(buf)
    assert cacheable and expires_at(entry) == 1060.0


def test_ttl_clamps_apply_to_lifetime_and_served_ttls() -> None:
    buf = reply("a.example.test", "A", "a.example.test. 5 IN A 198.18.0.1")
    entry, _ = entry_of(buf, CachePolicy(min_ttl=30, max_ttl=100))
    assert expires_at(entry) == 1030.0
    assert dns.message.from_wire(bytes(entry_wire(entry))).answer[0].ttl == 30
    buf = reply("a.example.test", "A", "a.example.test. 99999 IN A 198.18.0.1")
    entry, _ = entry_of(buf, CachePolicy(min_ttl=30, max_ttl=100))
    assert expires_at(entry) == 1100.0


@pytest.mark.parametrize(("soa_ttl", "minimum", "expected"), [(3600, 60, 60), (30, 600, 30)])
def test_nxdomain_lifetime_is_min_of_soa_ttl_and_minimum(soa_ttl: int, minimum: int, expected: int) -> None:
    buf = reply(
        "nx.example.test",
        "A",
        authority=(SOA.format(ttl=soa_ttl, minimum=minimum),),
        rcode=dns.rcode.NXDOMAIN,
    )
    entry, cacheable = entry_of(buf)
    assert cacheable and expires_at(entry) == 1000.0 + expected
    served = dns.message.from_wire(bytes(entry_wire(entry)))
    assert served.rcode() == dns.rcode.NXDOMAIN and served.authority[0].ttl == expected


def test_nodata_is_cached_negatively_and_capped() -> None:
    buf = reply("a.example.test", "TXT", authority=(SOA.format(ttl=86400, minimum=86400),))
    entry, cacheable = entry_of(buf, CachePolicy(neg_max_ttl=900))
    assert cacheable and expires_at(entry) == 1900.0


def test_negative_answer_without_soa_is_not_cached() -> None:
    _, cacheable = entry_of(reply("nx.example.test", "A", rcode=dns.rcode.NXDOMAIN))
    assert not cacheable


def test_servfail_is_not_cached() -> None:
    _, cacheable = entry_of(reply("a.example.test", "A", rcode=dns.rcode.SERVFAIL))
    assert not cacheable


def test_ttls_decrement_with_age_and_stale_ttl_is_30() -> None:
    buf = reply("a.example.test", "A", "a.example.test. 60 IN A 198.18.0.1")
    entry, _ = entry_of(buf)
    assert dns.message.from_wire(bytes(render_fresh(entry, 1000.5))).answer[0].ttl == 60
    assert dns.message.from_wire(bytes(render_fresh(entry, 1017.9))).answer[0].ttl == 43
    assert dns.message.from_wire(bytes(render_stale(entry, 30))).answer[0].ttl == 30


def test_edns_is_hop_by_hop() -> None:
    buf = reply("a.example.test", "A", "a.example.test. 60 IN A 198.18.0.1")
    plain, _ = entry_of(buf, variant=PLAIN)
    assert dns.message.from_wire(bytes(entry_wire(plain))).edns == -1
    edns, _ = entry_of(buf, variant=EDNS)
    m = dns.message.from_wire(bytes(entry_wire(edns)))
    assert m.edns == 0 and m.payload == 1232


def test_finish_patches_id_rd_and_question_case() -> None:
    buf = reply("a.example.test", "A", "a.example.test. 60 IN A 198.18.0.1")
    entry, _ = entry_of(buf)
    q = dns.message.make_query("A.Example.TEST", "A")
    q.flags &= ~dns.flags.RD
    out = dns.message.from_wire(finish(render_fresh(entry, 1000), entry, q.to_wire(), 512))
    assert out.id == q.id and not out.flags & dns.flags.RD and out.flags & dns.flags.RA
    assert out.question[0].name.to_text() == "A.Example.TEST."


def test_truncation_keeps_whole_records_and_sets_tc() -> None:
    answers = [f"many.example.test. 60 IN A 198.18.1.{i}" for i in range(1, 61)]
    buf = reply("many.example.test", "A", *answers)
    entry, _ = entry_of(buf)
    q = dns.message.make_query("many.example.test", "A", use_edns=None)
    out = finish(render_fresh(entry, 1000), entry, q.to_wire(), 512)
    assert len(out) <= 512
    m = dns.message.from_wire(out)
    assert m.flags & dns.flags.TC and 0 < len(m.answer[0]) < 60


def test_dropping_only_additional_is_not_truncation() -> None:
    extra = tuple(f"ns.example.test. 60 IN A 198.18.2.{i}" for i in range(1, 40))
    buf = reply("a.example.test", "A", "a.example.test. 60 IN A 198.18.0.1", additional=extra)
    entry, _ = entry_of(buf)
    q = dns.message.make_query("a.example.test", "A", use_edns=None)
    m = dns.message.from_wire(finish(render_fresh(entry, 1000), entry, q.to_wire(), 512))
    assert not m.flags & dns.flags.TC and len(m.answer) == 1


def make_entry(name: str, now: float = 0.0):
    buf = reply(name, "A", f"{name}. 60 IN A 198.18.0.1")
    entry, _ = entry_of(buf, now=now)
    key = cache_key(parse_message(buf).qname_wire + b"\x00\x01\x00\x01", variant_byte(False, False, False))
    return key, entry


@pytest.mark.parametrize(
    ("seconds", "ms"),
    [(0.0, 0), (-5.0, 0), (0.0004, 0), (0.0005, 1), (59.9996, 60000), (86400.0, 86_400_000),
     (37 * 86400.0, 3_196_800_000), (60 * 86400.0, MS_MAX)],
)  # fmt: skip
def test_header_times_are_whole_milliseconds_after_the_store_time(seconds: float, ms: int) -> None:
    assert to_ms(seconds) == ms


def test_an_entrys_times_read_back_from_its_header() -> None:
    _, entry = make_entry("t.example.test", now=1234.5)  # TTL 60, prefetch at 90 %, window 86400
    assert stored_at(entry) == 1234.5
    assert expires_at(entry) == 1294.5
    assert prefetch_at(entry) == pytest.approx(1234.5 + 54.0)
    assert stale_until(entry) == 1234.5 + 60 + 86400
    assert recheck_at(entry) == 0.0  # none until a refresh fails
    set_recheck_at(entry, 1300.25)
    assert recheck_at(entry) == 1300.25
    set_recheck_at(entry, 0.0)  # before the store time: none again
    assert recheck_at(entry) == 0.0


def test_cache_is_bounded_by_entries_with_second_chance() -> None:
    cache = Cache(max_entries=10, max_bytes=1 << 30)
    hot_key, hot = make_entry("hot.example.test")
    cache.put(hot_key, hot, 0)
    for i in range(50):
        hit(hot)  # the hot entry keeps being used
        key, entry = make_entry(f"n{i}.example.test")
        cache.put(key, entry, 0)
    assert 9 <= len(cache) <= 10
    assert cache.get(hot_key) is hot
    assert cache.stats.evictions == 51 - len(cache)


def test_cache_is_bounded_by_bytes() -> None:
    key, entry = make_entry("n00.example.test")
    per = len(key) + entry_size(entry)
    cache = Cache(max_entries=1000, max_bytes=per * 5)
    for i in range(20):
        cache.put(*make_entry(f"n{i:02d}.example.test"), now=0)
    assert 4 <= len(cache) <= 5 and cache.bytes <= per * 5


def test_cache_key_is_case_folded_but_keeps_type_bytes() -> None:
    v = variant_byte(False, False, False)
    assert cache_key(b"\x01A\x00\x00\x41\x00\x01", v) == cache_key(b"\x01a\x00\x00\x41\x00\x01", v)
    assert cache_key(b"\x01a\x00\x00\x41\x00\x01", v) != cache_key(b"\x01a\x00\x00\x61\x00\x01", v)


def test_sweep_drops_entries_past_the_stale_window() -> None:
    cache = Cache(100, 1 << 30)
    key, entry = make_entry("old.example.test")
    cache.put(key, entry, 0)
    assert cache.sweep(now=stale_until(entry) - 1) == 0
    assert cache.sweep(now=stale_until(entry) + 1) == 1 and len(cache) == 0


def test_opt_in_the_middle_of_additional_is_normalised_away() -> None:
    import struct as st

    q = dns.message.make_query("a.example.test", "A", use_edns=None)
    head = st.pack("!HHHHHH", q.id, 0x8180, 1, 1, 0, 2)
    question = b"\x01a\x07example\x04test\x00\x00\x01\x00\x01"
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc6\x12\x00\x01"
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    extra = b"\x02ns\xc0\x0e\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc6\x12\x00\x35"
    buf = head + question + answer + opt + extra
    entry, cacheable = entry_of(buf, CachePolicy(minimal_responses=False), variant=PLAIN)
    m = dns.message.from_wire(bytes(entry_wire(entry)))
    assert (
        cacheable
        and m.edns == -1
        and len(m.additional) == 1
        and m.additional[0].name.to_text() == "ns.example.test."
    )


def test_ttl_zero_negative_answer_is_kept_for_serve_stale_only() -> None:
    """Found by the chaos run: Unbound counts a cached NXDOMAIN's SOA TTL down to 0; such an
    answer must still be there to serve stale when every upstream is down."""
    buf = reply(
        "nx.example.test", "AAAA", authority=(SOA.format(ttl=0, minimum=300),), rcode=dns.rcode.NXDOMAIN
    )
    entry, cacheable = entry_of(buf)
    assert cacheable and expires_at(entry) == 1000.0 and stale_until(entry) > 1000.0
    assert dns.message.from_wire(bytes(render_stale(entry, 30))).authority[0].ttl == 30


def test_min_ttl_applies_to_negative_answers_too() -> None:
    buf = reply("nx.example.test", "A", authority=(SOA.format(ttl=0, minimum=0),), rcode=dns.rcode.NXDOMAIN)
    entry, _ = entry_of(buf, CachePolicy(min_ttl=5))
    assert expires_at(entry) == 1005.0
