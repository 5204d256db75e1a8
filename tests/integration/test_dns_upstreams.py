"""Behaviours 6, 7 and 9 against real NSDs and a scripted upstream: health checks, failover,
hedging, deadlines, poisoning defences and metrics."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import dns.message
import dns.rcode
import pytest

from labs.dnspeers import NsdServer, Zone
from labs.runid import free_port
from tests.conftest import hp
from tests.dnshelpers import ScriptedUpstream, ServerThread, answers, reply_to, running_server, wait_for

pytestmark = pytest.mark.peers


def upstream(srv: ServerThread, address: str) -> dict[str, Any]:
    snap = srv.run(srv.server.snapshot)
    return next(u for u in snap["upstreams"] if u["upstream"] == address)


# -- 6. upstream health --------------------------------------------------------------------------
def test_dead_upstream_is_marked_down_and_probed_back(
    nsd: NsdServer, nsd2: NsdServer, lab_zone_data: Zone
) -> None:
    with running_server(upstream=[hp(nsd), hp(nsd2)]) as srv:
        nsd.stop()  # connection refused from now on
        # the dead server is found through traffic: as first choice, or through exploration
        for i in range(200):
            r = srv.query(f"h{i}.example.test")
            assert answers(r) == lab_zone_data.rdata(f"h{i}")
            if upstream(srv, hp(nsd))["healthy"] == 0:
                break
        assert upstream(srv, hp(nsd))["healthy"] == 0
        assert upstream(srv, hp(nsd2))["healthy"] == 1
        nsd.start()
        assert wait_for(lambda: upstream(srv, hp(nsd))["healthy"] == 1, timeout=8)  # the active probe


def test_servfail_and_refused_count_as_failures(nsd: NsdServer) -> None:
    def servfail(q: dns.message.Message, _raw: bytes) -> list[bytes]:
        return [reply_to(q, rcode=dns.rcode.SERVFAIL)]

    with ScriptedUpstream(servfail) as bad, running_server(upstream=[bad.address, hp(nsd)]) as srv:
        for i in range(200):
            assert srv.query(f"h{i}.example.test").rcode() == dns.rcode.NOERROR
            if upstream(srv, bad.address)["healthy"] == 0:
                break
        assert upstream(srv, bad.address)["healthy"] == 0
        assert upstream(srv, bad.address)["srtt"] > upstream(srv, hp(nsd))["srtt"]  # it sank in the ranking
        assert upstream(srv, bad.address)["results"].get("servfail", 0) >= 2


def test_garbage_from_an_upstream_is_a_failure_not_a_crash(nsd: NsdServer) -> None:
    def garbage(q: dns.message.Message, raw: bytes) -> list[bytes]:
        return [raw[:2] + b"\x81\x80" + b"\xff" * 30]  # our ID, a response, nonsense inside

    with ScriptedUpstream(garbage) as bad, running_server(upstream=[bad.address, hp(nsd)]) as srv:
        srv.prefer(bad.address)
        for i in range(10):
            assert srv.query(f"h{i}.example.test").rcode() == dns.rcode.NOERROR
        assert upstream(srv, bad.address)["results"].get("malformed", 0) >= 1


def test_hedged_query_hides_a_black_hole_upstream(nsd: NsdServer, nsd2: NsdServer) -> None:
    with running_server(upstream=[hp(nsd), hp(nsd2)], max_fails=100, attempt_timeout=0.5) as srv:
        srv.prefer(hp(nsd))  # the black hole below is the first choice
        nsd.pause()
        try:
            latencies = []
            for i in range(30):
                t0 = time.monotonic()
                assert srv.query(f"h{i}.example.test").rcode() == dns.rcode.NOERROR
                latencies.append(time.monotonic() - t0)
            # without the hedge the first queries would wait the whole attempt timeout
            assert max(latencies) < 0.45, latencies
            assert srv.stats.hedges >= 1
            # the hedge's losers still time out in the background and teach the ranking
            assert wait_for(lambda: upstream(srv, hp(nsd))["results"].get("timeout", 0) >= 1)
            assert upstream(srv, hp(nsd))["srtt"] > upstream(srv, hp(nsd2))["srtt"]
        finally:
            nsd.resume()


def test_without_hedging_a_black_hole_costs_the_attempt_timeout(nsd: NsdServer, nsd2: NsdServer) -> None:
    """The counterpart of the test above: shows what the hedge saves."""
    with running_server(upstream=[hp(nsd), hp(nsd2)], max_fails=100, hedge=False, attempt_timeout=0.8) as srv:
        srv.prefer(hp(nsd))
        nsd.pause()
        try:
            t0 = time.monotonic()
            assert srv.query("h1.example.test").rcode() == dns.rcode.NOERROR
            assert time.monotonic() - t0 >= 0.75
            assert srv.stats.hedges == 0
        finally:
            nsd.resume()


def test_deadline_answers_servfail_when_nothing_answers(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)], deadline=0.5, attempt_timeout=0.3) as srv:
        nsd.pause()
        try:
            t0 = time.monotonic()
            assert srv.query("h5.example.test", timeout=3).rcode() == dns.rcode.SERVFAIL
            assert time.monotonic() - t0 < 1.0
        finally:
            nsd.resume()


def test_stub_zone_goes_to_its_own_upstreams_longest_suffix_wins(nsd: NsdServer) -> None:
    def cluster(q: dns.message.Message, _raw: bytes) -> list[bytes]:
        name = q.question[0].name.to_text()
        return [reply_to(q, f"{name} 5 IN A 198.18.5.5")]

    with (
        ScriptedUpstream(cluster) as kube_dns,
        running_server(
            upstream=[hp(nsd)],
            zone=[f"cluster.local={kube_dns.address}", f"svc.example.test={kube_dns.address}"],
        ) as srv,
    ):
        assert answers(srv.query("api.default.svc.cluster.local")) == ["198.18.5.5"]
        assert answers(srv.query("x.svc.example.test")) == ["198.18.5.5"]  # longer than example.test
        assert srv.query("h1.example.test").answer  # everything else: the default upstream
        assert [s[2] for s in kube_dns.seen] == ["api.default.svc.cluster.local.", "x.svc.example.test."]


# -- 7. poisoning defences -----------------------------------------------------------------------
def test_random_source_port_and_id_per_upstream_query() -> None:
    def ok(q: dns.message.Message, _raw: bytes) -> list[bytes]:
        return [reply_to(q, f"{q.question[0].name} 60 IN A 198.18.0.1")]

    with ScriptedUpstream(ok) as up, running_server(upstream=[up.address]) as srv:
        for i in range(40):
            srv.query(f"n{i}.example.test")
        ports = {p for p, _, _ in up.seen}
        ids = {i for _, i, _ in up.seen}
        assert len(up.seen) == 40 and len(ports) >= 38 and len(ids) >= 38


def test_replies_with_wrong_id_question_or_port_are_ignored() -> None:
    def spoofing(q: dns.message.Message, _raw: bytes) -> list[bytes]:
        name = q.question[0].name.to_text()
        wrong_id = dns.message.from_wire(reply_to(q, f"{name} 60 IN A 198.18.6.6"))
        wrong_id.id ^= 0x5555
        other = dns.message.make_query("other.example.test", "A")
        other.id = q.id
        return [
            reply_to(q, f"{name} 60 IN A 198.18.6.7"),  # right ID, but from another port (see below)
            wrong_id.to_wire(),
            reply_to(other, "other.example.test. 60 IN A 198.18.6.8"),  # right ID, wrong question
            reply_to(q, f"{name} 60 IN A 198.18.0.1"),  # the real one, last
        ]

    with ScriptedUpstream(spoofing) as up, running_server(upstream=[up.address]) as srv:
        up.spoof_first_from_other_port = True
        assert answers(srv.query("victim.example.test")) == ["198.18.0.1"]
        assert srv.stats.spoofed == 2  # the other-port one never reaches us: the kernel drops it


def test_out_of_bailiwick_records_are_dropped(nsd: NsdServer) -> None:
    def poisoner(q: dns.message.Message, _raw: bytes) -> list[bytes]:
        name = q.question[0].name.to_text()
        return [
            reply_to(
                q,
                f"{name} 5 IN A 198.18.5.5",
                "h1.example.test. 86400 IN A 198.18.6.6",
                authority=("example.test. 86400 IN NS evil.attacker.test.",),
                additional=("evil.attacker.test. 86400 IN A 198.18.6.6",),
            )
        ]

    with (
        ScriptedUpstream(poisoner) as kube_dns,
        running_server(upstream=[hp(nsd)], zone=[f"cluster.local={kube_dns.address}"]) as srv,
    ):
        r = srv.query("web.default.svc.cluster.local")
        assert answers(r) == ["198.18.5.5"] and not r.authority and not r.additional
        assert srv.stats.scrubbed_records == 3
        # and the cache was not poisoned for the real zone
        assert answers(srv.query("h1.example.test")) != ["198.18.6.6"]


def test_0x20_requires_the_case_echoed() -> None:
    def lowercasing(q: dns.message.Message, raw: bytes) -> list[bytes]:
        r = dns.message.from_wire(reply_to(q, f"{q.question[0].name} 60 IN A 198.18.0.1"))
        r.question[0].name = dns.name.from_text(q.question[0].name.to_text().lower())
        return [r.to_wire()]

    def echoing(q: dns.message.Message, _raw: bytes) -> list[bytes]:
        return [reply_to(q, f"{q.question[0].name} 60 IN A 198.18.0.1")]

    with ScriptedUpstream(echoing) as good, running_server(upstream=[good.address], dns0x20=True) as srv:
        assert answers(srv.query("abcdefghijklmnop.example.test")) == ["198.18.0.1"]
        sent = good.seen[0][2]
        assert sent.lower() == "abcdefghijklmnop.example.test." and sent != sent.lower()
    with (
        ScriptedUpstream(lowercasing) as bad,
        running_server(upstream=[bad.address], dns0x20=True, deadline=0.5, attempt_timeout=0.4) as srv,
    ):
        assert srv.query("abcdefghijklmnop.example.test", timeout=3).rcode() == dns.rcode.SERVFAIL
        assert srv.stats.spoofed >= 1


# -- 9. metrics ----------------------------------------------------------------------------------
def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_health_and_ready(nsd: NsdServer) -> None:
    from dnscache.metrics import endpoints
    from netkit.base.addr import HostPort

    mport = free_port()
    with running_server(upstream=[hp(nsd)]) as srv:
        metrics = endpoints(HostPort("127.0.0.1", mport), srv.server.snapshot, lambda: srv.server.ready)
        srv.call(metrics.start())
        try:
            srv.query("h1.example.test")
            srv.query("h1.example.test")
            srv.query("nope.example.test")
            srv.query("h1.example.test", tcp=True)
            status, text = http_get(mport, "/metrics")
            assert status == 200
            lines = {
                line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line and not line.startswith("#")
            }
            assert lines['netkit_dns_requests_total{proto="udp"}'] == 3
            assert lines['netkit_dns_requests_total{proto="tcp"}'] == 1
            assert lines['netkit_dns_responses_total{rcode="NOERROR"}'] == 3
            assert lines['netkit_dns_responses_total{rcode="NXDOMAIN"}'] == 1
            assert lines["netkit_dns_cache_hits_total"] == 2
            assert lines["netkit_dns_cache_misses_total"] == 2
            compiled = 2 if srv.server.cfg.fast_path == "compiled" else 0  # the miss engine took both
            assert lines["netkit_dns_compiled_misses_total"] == compiled
            assert lines["netkit_dns_compiled_miss_answers_total"] == compiled
            assert lines["netkit_dns_served_stale_total"] == 0
            assert lines["netkit_dns_cache_entries"] == 2
            assert lines["netkit_dns_request_duration_seconds_count"] == 4
            assert lines[f'netkit_dns_upstream_healthy{{upstream="{hp(nsd)}"}}'] == 1
            assert 0 < lines[f'netkit_dns_upstream_rtt_seconds{{upstream="{hp(nsd)}"}}'] < 1
            assert lines[f'netkit_dns_upstream_requests_total{{result="success",upstream="{hp(nsd)}"}}'] == 2
            for alive, ready in (("/healthz", "/readyz"), ("/health", "/ready")):  # and the old names
                assert http_get(mport, alive) == (200, "OK\n")
                assert http_get(mport, ready) == (200, "OK\n")
            srv.server.ready = False
            assert http_get(mport, "/readyz") == (503, "not ready\n")
            assert http_get(mport, "/nope")[0] == 404
        finally:
            srv.call(metrics.stop())


def test_odd_questions_are_not_forwarded_and_cannot_knock_upstreams_down(nsd: NsdServer) -> None:
    """Found by the fuzz benchmark: NSD answers an odd class with a question-less FORMERR, which
    once counted as a malformed reply, so two such queries marked the upstream down."""
    import struct

    with running_server(upstream=[hp(nsd)]) as srv:
        for i in range(10):
            q = struct.pack("!HHHHHH", 0x1000 + i, 0x0100, 1, 0, 0, 0) + b"\x02h1\x07example\x04test\x00"
            raw = srv.query_wire(q + struct.pack("!HH", 1, 0x5713))
            assert raw is not None and raw[3] & 0xF == dns.rcode.REFUSED
        state = upstream(srv, hp(nsd))
        assert state["healthy"] == 1 and not state["results"]  # nothing went upstream


def test_a_question_less_refusal_from_upstream_is_not_garbage(nsd: NsdServer) -> None:
    def refusing(q: dns.message.Message, raw: bytes) -> list[bytes]:
        return [raw[:2] + b"\x81\x81" + b"\x00" * 8]  # FORMERR, no question, as NSD does

    # No hedge: the next upstream is asked only once the refusal has been judged, so the answer
    # below proves the failover and the refusal is already counted when it arrives. (With the
    # hedge, a refusal slower than the 150 ms hedge delay under load lost the race to the other
    # upstream and was counted only after the assertion had looked.)
    with (
        ScriptedUpstream(refusing) as up,
        running_server(upstream=[up.address, hp(nsd)], hedge=False) as srv,
    ):
        srv.prefer(up.address)  # asked first, without exploration
        assert srv.query("h1.example.test").rcode() == dns.rcode.NOERROR  # the next upstream answered
        assert len(up.seen) == 1
        assert upstream(srv, up.address)["results"] == {"refused": 1}


def test_a_server_in_two_zones_logs_each_transition_once(
    nsd: NsdServer, nsd2: NsdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in the long chaos run: the same address as default and stub-zone upstream made the
    transition log alternate between the two states every probe tick."""
    import logging

    caplog.set_level(logging.INFO, logger="netkit.dns")
    with running_server(upstream=[hp(nsd), hp(nsd2)], zone=[f"example.test={hp(nsd)},{hp(nsd2)}"]) as srv:
        # nsd must stay the first choice until it has failed max_fails (2) times, or it is never
        # marked down: a failure adds 1/8 s to its SRTT and an answer takes 1/8 of the distance
        # to the RTT off nsd2's, so from 0.2 s both met at 0.175 s after the first query, the
        # near-best shuffle put nsd2 first half the time and only exploration reached nsd again.
        srv.prefer(hp(nsd), others_rtt=1.0)
        nsd.stop()
        for i in range(30):
            srv.query(f"h{i}.example.test")

        def downs() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage() == "upstream marked down"]

        assert wait_for(lambda: len(downs()) >= 1, timeout=5), srv.run(srv.server.snapshot)["upstreams"]
        time.sleep(1.0)  # several probe ticks: a flapping log would add lines now
        assert len(downs()) <= 2, [(r.upstream, r.zone) for r in downs()]  # type: ignore[attr-defined]
