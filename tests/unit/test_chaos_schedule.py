"""The chaos harness's pure parts: fault schedule, workload, scoring, and the answer check."""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from labs.chaos import schedule as sch
from labs.chaos.loadgen import check_reply
from labs.chaos.schedule import Window, build_schedule, harness_problems, percentile, score
from labs.chaos.workload import (
    CLS_COLD,
    CLS_HOT,
    CLS_NX,
    T_A,
    T_AAAA,
    Mix,
    build_names,
    build_stream,
    question_wire,
    zone_records,
)

# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("duration", [30.0, 60.0, 600.0, 1234.5])
def test_windows_partition_the_run(duration: float) -> None:
    ws = build_schedule(duration, seed=1)
    assert ws[0].start == 0.0
    assert ws[-1].end == pytest.approx(duration)
    for a, b in itertools.pairwise(ws):
        assert a.end == pytest.approx(b.start)
        assert a.end > a.start
    kinds = [w.kind for w in ws if w.is_fault]
    assert kinds == [
        "kill", "stop", "loss", "delay", "servfail", "garbage", "all_down", "cache_restart",
        "loss_all", "upgrade", "crash_restart",
    ]  # fmt: skip
    # a baseline between any two faults, so one fault's aftermath is not scored as the next fault
    for a, b in itertools.pairwise(ws):
        assert not (a.is_fault and b.is_fault)


def test_full_length_matches_the_issue() -> None:
    ws = {w.kind: w for w in build_schedule(600, seed=1)}
    assert ws["all_down"].end - ws["all_down"].start == pytest.approx(30.0)
    assert ws["loss"].param == 0.3
    assert ws["delay"].param == 2.0
    assert ws["all_down"].target == "all"
    assert ws["cache_restart"].target == ws["upgrade"].target == ws["crash_restart"].target == "cache"
    assert ws["loss_all"].target == "all" and ws["loss_all"].param == 0.3


def test_schedule_scales_with_duration() -> None:
    long = build_schedule(600, seed=3)
    short = build_schedule(60, seed=3)
    for a, b in zip(long, short, strict=True):
        assert b.start == pytest.approx(a.start / 10)
        assert b.end == pytest.approx(a.end / 10)
        assert (a.kind, a.target) == (b.kind, b.target)


def test_schedule_is_deterministic_by_seed_and_spreads_targets() -> None:
    assert build_schedule(600, seed=7) == build_schedule(600, seed=7)
    seen = set()
    for seed in range(20):
        ws = build_schedule(600, seed=seed)
        targets = [w.target for w in ws if w.kind in ("kill", "stop", "loss", "delay", "servfail", "garbage")]
        # every upstream gets two of the six single-upstream faults
        assert Counter(targets) == {"up1": 2, "up2": 2, "up3": 2}
        seen.add(tuple(targets))
    assert len(seen) > 5  # the seed matters


def test_too_short_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        build_schedule(10, seed=1)


def test_labels() -> None:
    ws = build_schedule(600, seed=1)
    labels = [w.label for w in ws]
    assert labels[0] == "baseline #1"
    assert any(lab.startswith("loss up") and lab.endswith("30%") for lab in labels)
    assert any(lab.startswith("delay up") and lab.endswith("+2s") for lab in labels)
    assert len(set(labels)) == len(labels)


# --------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------


def test_stream_is_deterministic_and_shaped_by_the_mix() -> None:
    mix = Mix()
    a = build_stream(20000, mix, seed=5)
    b = build_stream(20000, mix, seed=5)
    c = build_stream(20000, mix, seed=6)
    assert a.digest() == b.digest() != c.digest()
    n = len(a)
    counts = Counter(a.cls)
    assert counts[CLS_HOT] / n == pytest.approx(mix.hot, abs=0.02)
    assert counts[CLS_NX] / n == pytest.approx(mix.nx, abs=0.02)
    assert counts[CLS_COLD] == a.n_cold
    assert sum(a.tcp) / n == pytest.approx(mix.tcp, abs=0.01)
    # each cold name exactly once, in order
    cold = [a.name[i] for i in range(n) if a.cls[i] == CLS_COLD]
    assert cold == list(range(mix.cold_base, mix.cold_base + a.n_cold))


def test_hot_names_are_skewed() -> None:
    mix = Mix()
    s = build_stream(50000, mix, seed=1)
    hot = Counter(s.name[i] for i in range(len(s)) if s.cls[i] == CLS_HOT)
    top, *_ = hot.most_common(1)
    assert top[1] > 20 * (sum(hot.values()) / mix.hot_count)  # Zipf head far above the mean


def test_names_and_zone_records_agree() -> None:
    mix = Mix(n_hot=50, n_cluster=10, n_nx=20)
    names = build_names(mix, n_cold=30)
    assert len(names) == mix.cold_base + 30
    recs = zone_records(names, mix)
    assert set(recs) == {"example.test.", "cluster.local."}
    index = {(o, t): set() for _, entries in recs.items() for o, t, _, _ in entries}
    for entries in recs.values():
        for owner, rtype, rdata, _ in entries:
            index[(owner, rtype)].add(rdata)
    for n in names:
        rc_a, a = n.expected(T_A)
        rc_aaaa, aaaa = n.expected(T_AAAA)
        if n.cls == CLS_NX:
            assert (rc_a, a, rc_aaaa, aaaa) == (3, (), 3, ())
            assert not any(o == n.text for o, _ in index)
            continue
        assert rc_a == rc_aaaa == 0
        assert {str(ipaddress.IPv4Address(r)) for r in a} == index[(n.text, "A")]
        assert {str(ipaddress.IPv6Address(r)) for r in aaaa} == index.get((n.text, "AAAA"), set())
    # some names have two addresses, some AAAA, some only A (AAAA is NODATA)
    assert any(len(n.a) == 2 for n in names)
    assert any(n.aaaa for n in names) and any(n.exists and not n.aaaa for n in names)


def test_mix_validation() -> None:
    with pytest.raises(ValueError):
        Mix(hot=0.5, nx=0.1, cold=0.1)
    with pytest.raises(ValueError):
        Mix(tcp=1.5)


# --------------------------------------------------------------------------------------------
# Answer check (the load generator's hot path)
# --------------------------------------------------------------------------------------------


def _reply(qname: str, qtype: str, rcode: int = 0, rdatas: tuple[str, ...] = (), tc: bool = False) -> bytes:
    q = dns.message.make_query(qname, qtype, use_edns=False)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if rdatas:
        r.answer.append(dns.rrset.from_text(qname, 30, "IN", qtype, *rdatas))
    if tc:
        r.flags |= dns.flags.TC
    return r.to_wire()


def _expected(qname: str, qtype: int, rdatas: tuple[str, ...]) -> tuple[bytes, tuple[bytes, ...]]:
    from labs.chaos.workload import Name

    conv = ipaddress.IPv4Address if qtype == T_A else ipaddress.IPv6Address
    packed = tuple(sorted(conv(r).packed for r in rdatas))
    name = Name(
        qname, "example.test.", CLS_HOT, packed if qtype == T_A else (), packed if qtype == T_AAAA else ()
    )
    return question_wire(name, qtype), packed


def test_check_accepts_the_right_rrset_in_any_order() -> None:
    q, exp = _expected("www1.example.test.", T_A, ("198.18.16.1", "198.18.16.2"))
    wire = _reply("www1.example.test.", "A", rdatas=("198.18.16.2", "198.18.16.1"))
    assert check_reply(wire, q, T_A, 0, exp) == sch.OK


def test_check_rejects_wrong_data_rcode_tc_and_foreign_questions() -> None:
    q, exp = _expected("www1.example.test.", T_A, ("198.18.16.1", "198.18.16.2"))
    name = "www1.example.test."
    assert check_reply(_reply(name, "A", rdatas=("198.18.16.1",)), q, T_A, 0, exp) == sch.WRONG_DATA
    extra = ("198.18.16.1", "198.18.16.2", "198.18.16.3")
    assert check_reply(_reply(name, "A", rdatas=extra), q, T_A, 0, exp) == sch.WRONG_DATA
    assert check_reply(_reply(name, "A", rcode=dns.rcode.SERVFAIL), q, T_A, 0, exp) == sch.SERVFAIL
    assert check_reply(_reply(name, "A", rcode=dns.rcode.NXDOMAIN), q, T_A, 0, exp) == sch.WRONG_RCODE
    assert check_reply(_reply(name, "A", tc=True), q, T_A, 0, exp) == sch.TRUNCATED
    other = _reply("www2.example.test.", "A", rdatas=("198.18.16.1", "198.18.16.2"))
    assert check_reply(other, q, T_A, 0, exp) == sch.MALFORMED
    assert check_reply(b"\x00" * 11, q, T_A, 0, exp) == sch.MALFORMED
    query_not_reply = dns.message.make_query(name, "A", use_edns=False).to_wire()
    assert check_reply(query_not_reply, q, T_A, 0, exp) == sch.MALFORMED
    truncated_rr = _reply(name, "A", rdatas=("198.18.16.1", "198.18.16.2"))[:-3]
    assert check_reply(truncated_rr, q, T_A, 0, exp) == sch.MALFORMED


def test_check_nodata_nxdomain_and_case() -> None:
    q, _ = _expected("www1.example.test.", T_AAAA, ())
    assert check_reply(_reply("WWW1.Example.TEST.", "AAAA"), q, T_AAAA, 0, ()) == sch.OK
    assert check_reply(_reply("www1.example.test.", "AAAA"), q, T_AAAA, 3, ()) == sch.WRONG_RCODE
    nx = _reply("www1.example.test.", "AAAA", rcode=dns.rcode.NXDOMAIN)
    assert check_reply(nx, q, T_AAAA, 3, ()) == sch.OK
    # records of another type in the answer are not the RRset asked for
    a = _reply("www1.example.test.", "A", rdatas=("198.18.16.1",))
    assert check_reply(a, q, T_AAAA, 0, ()) == sch.MALFORMED  # the question echoes A, not AAAA


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _windows() -> list[Window]:
    return [
        Window(0.0, 10.0, "baseline", index=1),
        Window(10.0, 20.0, "all_down", "all"),
        Window(20.0, 30.0, "baseline", index=2),
    ]


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    data = [float(i) for i in range(1, 1001)]
    assert percentile(data, 50) == 500.0
    assert percentile(data, 99) == 990.0
    assert percentile(data, 99.9) == 999.0
    assert percentile([3.0], 99.9) == 3.0


def test_score_per_window_headline_and_all_down_cold() -> None:
    ws = _windows()
    t, st, lat, cls, keys = [], [], [], [], []

    def q(when: float, status: int, c: int, key: int, latency: float = 0.001) -> None:
        t.append(when)
        st.append(status)
        lat.append(latency)
        cls.append(c)
        keys.append(key)

    for i in range(100):  # baseline: hot names answered
        q(i * 0.1, sch.OK, CLS_HOT, i % 10)
    q(5.0, sch.TIMEOUT, CLS_HOT, 3, 1.0)  # one failure
    for i in range(50):  # all_down: known hot names served stale, cold names fail
        q(10.5 + i * 0.1, sch.OK, CLS_HOT, i % 10, 0.4)
    for i in range(10):
        q(10.5 + i * 0.5, sch.TIMEOUT, CLS_COLD, 1000 + i, 1.0)
    q(10.6, sch.TIMEOUT, CLS_HOT, 99, 1.0)  # a hot name never answered before: unservable
    q(19.5, sch.OK, CLS_COLD, 2000, 0.8)  # answered after the window ended: allowed
    for i in range(20):
        q(20.0 + i * 0.5, sch.OK, CLS_NX, 500 + i)
    q(25.0, sch.NOT_SENT, CLS_HOT, 1)
    s = score(t, st, lat, cls, ws, deadline=1.0, keys=keys)
    assert [w.queries for w in s.windows] == [101, 62, 20]
    assert [w.failures for w in s.windows] == [1, 11, 0]
    assert s.not_sent == 1
    assert s.overall.queries == 183
    assert s.all_down_cold.queries == 11 and s.all_down_cold.failures == 10
    assert s.all_down_cold_strict.queries == 10 and s.all_down_cold_strict.failures == 10
    assert s.headline.queries == 183 - 11 and s.headline.failures == 2
    assert s.all_down_seen.queries == 50 and s.all_down_seen.failures == 0
    assert s.all_down_unseen.queries == 12 and s.all_down_unseen.failures == 11
    summary = s.windows[0].summary()
    assert summary["availability"] == pytest.approx(100 / 101)
    assert summary["failures_by_reason"] == {"timeout": 1}
    assert summary["p50_ms"] == pytest.approx(1.0)
    assert s.windows[1].summary()["p99_ms"] == pytest.approx(800.0)
    assert s.windows[1].summary()["by_class"]["cold"] == {
        "queries": 11,
        "failures": 10,
        "availability": 1 / 11,
    }
    d = s.to_dict(ws)
    assert [w["label"] for w in d["windows"]] == ["baseline #1", "all_down all", "baseline #2"]
    assert d["all_down_cold"]["failures"] == 10
    # timeline: 1 s bins over 30 s
    assert len(s.timeline) == 30
    assert sum(b["queries"] for b in s.timeline) == 183
    assert s.timeline[5]["failures"] == 1


def test_self_check_catches_a_harness_that_scores_everything_ok() -> None:
    ws = _windows()
    n = 300
    t = [i * 0.1 for i in range(n)]
    cls = [CLS_COLD if i % 10 == 0 else CLS_HOT for i in range(n)]
    status = [
        sch.TIMEOUT if (10 <= x < 20 and c == CLS_COLD) else sch.OK for x, c in zip(t, cls, strict=True)
    ]
    good = score(t, status, [0.001] * n, cls, ws)
    assert harness_problems({"sys": good}, ws, expected_queries=n) == []
    broken = score(t, [sch.OK] * n, [0.001] * n, cls, ws)  # a checker that accepts anything
    problems = harness_problems({"sys": broken}, ws, expected_queries=n)
    assert any("answer check is broken" in p for p in problems)
    assert any(
        "queries scored, expected" in p for p in harness_problems({"sys": good}, ws, expected_queries=2 * n)
    )


def test_self_check_flags_empty_windows_and_unsent_queries() -> None:
    ws = _windows()
    s = score([1.0, 2.0], [sch.OK, sch.NOT_SENT], [0.001, -1.0], [CLS_HOT, CLS_HOT], ws)
    problems = harness_problems({"x": s}, ws, expected_queries=2)
    assert any("never sent" in p for p in problems)
    assert any("'all_down all' has no queries" in p for p in problems)


def test_nines() -> None:
    assert sch.nines(None) is None
    assert sch.nines(1.0) == 9.0
    assert sch.nines(0.99999) == pytest.approx(5.0)
    assert sch.nines(0.999) == pytest.approx(3.0)


def test_score_rejects_mismatched_columns() -> None:
    with pytest.raises(ValueError):
        score([1.0], [0, 0], [0.1], [0], _windows())


# --------------------------------------------------------------------------------------------
# The generator's bookkeeping (no network: a fake transport)
# --------------------------------------------------------------------------------------------


class _FakeTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes) -> None:
        self.sent.append(data)


class _FixedRng:
    """Always socket 0 and ID 0x1234: every query draws the same key once the last one is done."""

    def randrange(self, n: int) -> int:
        return 0

    def getrandbits(self, k: int) -> int:
        return 0x1234


def _generator() -> Any:
    from labs.chaos.loadgen import Generator

    spec = {"server": ["127.0.0.1", 53], "qps": 10, "duration": 3, "seed": 1, "sockets": 1,
            "mix": Mix(tcp=0.0).to_dict()}  # fmt: skip
    gen = Generator(spec)
    tr = _FakeTransport()
    gen.transports = [tr]
    gen.rng = _FixedRng()
    return gen, tr


def _answer(gen: Any, query: bytes) -> bytes:
    i = next(i for i in range(gen.total) if gen.status[i] == sch.TIMEOUT and gen.latency[i] < 0)
    key = (gen.stream.name[i] << 1) | gen.stream.qtype[i]
    name = gen.names[key >> 1]
    qtype = T_A if key & 1 == 0 else T_AAAA
    rcode, rdata = name.expected(qtype)
    text = tuple(str((ipaddress.IPv4Address if qtype == T_A else ipaddress.IPv6Address)(r)) for r in rdata)
    wire = _reply(name.text, "A" if qtype == T_A else "AAAA", rcode=rcode, rdatas=text)
    return query[:2] + wire[2:]


def test_a_reused_key_does_not_time_out_the_new_owner() -> None:
    gen, tr = _generator()
    gen.t0 = 100.0
    gen.clock = lambda: 100.001
    gen.send(0, 100.0)  # query 0: key (0, 0x1234)
    gen.on_udp(0, _answer(gen, tr.sent[0]))  # answered at once: the key is free again
    assert gen.status[0] == sch.OK
    gen.send(1, 100.9995)  # query 1 draws the same key; query 0's deadline entry is still queued
    gen.sweep(101.0)  # query 0's deadline: query 1 (0.5 ms old) must stay pending
    assert gen.status[0] == sch.OK, "an answered query was re-scored as a timeout"
    assert list(gen.pending.values()) == [1]
    gen.clock = lambda: 101.001
    gen.on_udp(0, _answer(gen, tr.sent[1]))
    assert gen.status[1] == sch.OK and gen.latency[1] >= 0
    gen.sweep(1000.0)
    assert gen.pending == {} and gen.done == 2 and gen.ok == 2


def test_unanswered_queries_time_out_once() -> None:
    gen, tr = _generator()
    gen.t0 = 0.0
    gen.send(0, 0.0)
    gen.sweep(0.999)
    assert gen.pending and gen.done == 0
    gen.sweep(1.0)
    assert gen.status[0] == sch.TIMEOUT and gen.latency[0] == pytest.approx(1.0)
    gen.on_udp(0, _answer_late(tr.sent[0]))  # a late reply matches nothing
    assert gen.done == 1 and gen.unmatched == 1


def _answer_late(query: bytes) -> bytes:
    return query[:2] + b"\x81\x80" + query[4:]


def test_score_flags_queries_without_an_outcome() -> None:
    ws = _windows()
    s = score([1.0, 2.0], [sch.OK, sch.TIMEOUT], [0.001, -1.0], [CLS_HOT, CLS_HOT], ws)
    assert s.unfinished == 1
    assert any("never got an outcome" in p for p in harness_problems({"x": s}, ws, expected_queries=2))
