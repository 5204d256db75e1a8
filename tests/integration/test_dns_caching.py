"""Behaviours 1-5 of the responder against a real NSD: the fast hit path, caching rules,
serve-stale, prefetch and single-flight."""

from __future__ import annotations

import threading
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

import dnscache.server
from labs.dnspeers import NsdServer, Zone
from tests.conftest import hp
from tests.dnshelpers import answers, min_ttl, running_server, wait_for

pytestmark = pytest.mark.peers


def upstream_successes(srv) -> int:
    snap = srv.run(srv.server.snapshot)
    return sum(u["results"].get("success", 0) for u in snap["upstreams"])


# -- 1. fast hit path ----------------------------------------------------------------------------
def test_hit_is_answered_without_parsing_the_query(nsd: NsdServer, lab_zone_data: Zone, monkeypatch) -> None:
    with running_server(upstream=[hp(nsd)]) as srv:
        first = srv.query("h1.example.test")
        assert answers(first) == lab_zone_data.rdata("h1")

        def no_parsing(*_a: object) -> None:
            raise AssertionError("the hit path parsed the message")

        monkeypatch.setattr(dnscache.server, "parse_message", no_parsing)
        hit = srv.query("H1.eXample.test")
        assert answers(hit) == lab_zone_data.rdata("h1")
        assert hit.question[0].name.to_text() == "H1.eXample.test."  # the client's case comes back
        assert srv.stats.fast_answers == 1 and srv.stats.misses == 1


def test_hit_echoes_id_and_rd_and_keeps_edns_variants_apart(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)]) as srv:
        plain = srv.query("h2.example.test")
        assert plain.edns == -1
        with_edns = srv.query("h2.example.test", use_edns=0, payload=4096)
        assert with_edns.edns == 0 and with_edns.payload == 1232
        q = dns.message.make_query("h2.example.test", "A")
        q.flags &= ~dns.flags.RD
        raw = srv.query_wire(q.to_wire())
        r = dns.message.from_wire(raw)
        assert r.id == q.id and not r.flags & dns.flags.RD and r.flags & dns.flags.RA
        assert not r.flags & dns.flags.AA  # answers from a cache are not authoritative


# -- 2. correct caching --------------------------------------------------------------------------
def test_minimal_responses_leave_out_what_a_positive_answer_does_not_need(nsd: NsdServer) -> None:
    """NSD puts its NS records in the authority section of every answer; by default they are
    left out (miss and hit alike), a DO client gets them, and a negative answer keeps its SOA."""
    with running_server(upstream=[hp(nsd)]) as srv:
        for _ in range(2):  # the miss, then the hit
            r = srv.query("h5.example.test", use_edns=0)
            assert r.answer and not r.authority and not r.additional
        with_do = srv.query("h5.example.test", use_edns=0, want_dnssec=True)
        assert with_do.answer and [rr.rdtype for rr in with_do.authority] == [dns.rdatatype.NS]
        negative = srv.query("nothing-here.example.test")
        assert negative.rcode() == dns.rcode.NXDOMAIN
        assert [rr.rdtype for rr in negative.authority] == [dns.rdatatype.SOA]
    with running_server(upstream=[hp(nsd)], minimal_responses=False) as srv:
        for _ in range(2):
            r = srv.query("h5.example.test", use_edns=0)
            assert r.answer and [rr.rdtype for rr in r.authority] == [dns.rdatatype.NS]


def test_ttl_decrements_while_cached(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)]) as srv:
        assert min_ttl(srv.query("ttl10.example.test")) == 10
        time.sleep(2.05)
        later = srv.query("ttl10.example.test")
        assert 7 <= later.answer[0].ttl <= 8


def test_ttl_clamps(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)], min_ttl=60, max_ttl=120) as srv:
        assert srv.query("ttl2.example.test").answer[0].ttl == 60
        assert srv.query("h3.example.test").answer[0].ttl == 120


def test_negative_answers_are_cached_for_the_soa_minimum(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)]) as srv:
        nx = srv.query("missing.example.test")
        nodata = srv.query("h1.example.test", "TXT")
        assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].ttl == 60
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority[0].ttl == 60
        nsd.pause()  # from now on only the cache can answer
        try:
            assert srv.query("missing.example.test").rcode() == dns.rcode.NXDOMAIN
            assert srv.query("h1.example.test", "TXT").authority[0].rdtype == dns.rdatatype.SOA
            assert srv.stats.fast_answers == 2
        finally:
            nsd.resume()


def test_cache_is_bounded(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)], cache_size=10) as srv:
        for i in range(40):
            srv.query(f"h{i}.example.test")
        snap = srv.run(srv.server.snapshot)
        assert snap["cache_entries"] == 10 and snap["cache_evictions"] == 30


def test_truncated_upstream_reply_is_retried_over_tcp(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)]) as srv:
        full = srv.query("big.example.test", "TXT", tcp=True)
        assert len(full.answer[0]) == 12  # the whole RRset: netkit fetched it over TCP after TC
        snap = srv.run(srv.server.snapshot)
        assert snap["upstreams"][0]["results"]["success"] == 2  # UDP (TC) then TCP


def test_udp_answers_are_truncated_to_what_the_client_can_take(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)]) as srv:
        small = srv.query("many.example.test")  # no EDNS: 512 octets
        assert small.flags & dns.flags.TC
        assert len(small.to_wire()) <= 512
        edns = srv.query("many.example.test", use_edns=0, payload=1232)
        assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 60
        tcp = srv.query("many.example.test", tcp=True)
        assert len(tcp.answer[0]) == 60


def test_edns_version_we_do_not_speak_gets_badvers(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)]) as srv:
        r = srv.query("h1.example.test", use_edns=1)
        assert r.rcode() == dns.rcode.BADVERS and r.edns == 0


# -- 3. serve-stale ------------------------------------------------------------------------------
def test_serve_stale_when_every_upstream_is_down(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)], stale_answer_timeout=0.3) as srv:
        fresh = srv.query("short1.example.test")
        nsd.pause()  # a black hole: queries time out
        try:
            time.sleep(1.2)  # the entry (TTL 1) is now expired
            t0 = time.monotonic()
            stale = srv.query("short1.example.test")
            elapsed = time.monotonic() - t0
            assert answers(stale) == answers(fresh) and stale.answer[0].ttl == 30
            assert elapsed < 0.8
            assert srv.stats.served_stale == 1
            # a name the cache never saw cannot be answered: SERVFAIL within the deadline
            assert srv.query("h150.example.test", timeout=5).rcode() == dns.rcode.SERVFAIL
        finally:
            nsd.resume()


def test_stale_window_is_bounded(nsd: NsdServer) -> None:
    with running_server(
        upstream=[hp(nsd)], stale_window=0.5, stale_answer_timeout=0.2, deadline=0.6, attempt_timeout=0.5
    ) as srv:
        srv.query("short2.example.test")
        nsd.pause()
        try:
            time.sleep(1.7)  # expired 0.7 s ago: outside the 0.5 s stale window
            assert srv.query("short2.example.test", timeout=3).rcode() == dns.rcode.SERVFAIL
        finally:
            nsd.resume()


def test_fresh_answer_is_preferred_over_stale(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)]) as srv:
        srv.query("short3.example.test")
        time.sleep(1.1)
        again = srv.query("short3.example.test")
        assert again.answer[0].ttl == 1 and srv.stats.served_stale == 0


# -- 4. prefetch ---------------------------------------------------------------------------------
def test_hot_names_are_refreshed_before_they_expire(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)], prefetch_fraction=0.5, prefetch_min_hits=2) as srv:
        srv.query("ttl2.example.test")  # TTL 2: prefetch window opens after 1 s
        srv.query("ttl2.example.test")
        time.sleep(1.1)
        srv.query("ttl2.example.test")  # a hit inside the window starts the refresh
        assert wait_for(lambda: upstream_successes(srv) == 2)
        misses = srv.stats.misses
        time.sleep(1.2)  # past the original expiry
        r = srv.query("ttl2.example.test")
        assert r.answer[0].ttl >= 1 and srv.stats.misses == misses and srv.stats.prefetches == 1


def test_cold_names_are_not_prefetched(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)], prefetch_fraction=0.5, prefetch_min_hits=3) as srv:
        srv.query("ttl2.example.test")
        time.sleep(1.1)
        srv.query("ttl2.example.test")
        time.sleep(0.2)
        assert srv.stats.prefetches == 0


# -- 5. single-flight ----------------------------------------------------------------------------
def test_concurrent_identical_misses_make_one_upstream_query(nsd: NsdServer, lab_zone_data: Zone) -> None:
    with running_server(upstream=[hp(nsd)], hedge=False) as srv:
        nsd.pause()
        results: list[list[str]] = []

        def ask() -> None:
            results.append(answers(srv.query("h42.example.test", timeout=5)))

        threads = [threading.Thread(target=ask) for _ in range(50)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        nsd.resume()
        for t in threads:
            t.join(10)
        assert results == [lab_zone_data.rdata("h42")] * 50
        assert upstream_successes(srv) == 1
        assert srv.stats.coalesced_queries == 49
