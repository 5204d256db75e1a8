"""The I/O-free resolution state machine and upstream health, driven with a fake clock."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscache.core.resolution import AttemptPolicy, Resolution
from dnscache.core.upstreams import HealthPolicy, Outcome, RetryBudget, UpstreamPool
from netkit.base.addr import HostPort

A, B, C = (HostPort("127.0.0.1", p) for p in (5301, 5302, 5303))


def pool(*addrs: HostPort, **policy: float) -> UpstreamPool:
    return UpstreamPool(list(addrs), HealthPolicy(explore_probability=0.0, **policy))  # type: ignore[arg-type]


def rng() -> random.Random:
    return random.Random(1)


def test_fastest_upstream_is_ranked_first() -> None:
    p = pool(A, B)
    for _ in range(20):
        p.record(A, Outcome.SUCCESS, 0.050, 0)
        p.record(B, Outcome.SUCCESS, 0.002, 0)
    assert p.ranked(rng())[0] == B


def test_exploration_sometimes_tries_a_slower_upstream() -> None:
    p = UpstreamPool([A, B], HealthPolicy(explore_probability=0.2))
    for _ in range(20):
        p.record(A, Outcome.SUCCESS, 0.050, 0)
        p.record(B, Outcome.SUCCESS, 0.002, 0)
    r = random.Random(3)
    firsts = [p.ranked(r)[0] for _ in range(1000)]
    assert 100 < firsts.count(A) < 300


def test_near_equal_upstreams_share_load() -> None:
    p = pool(A, B)
    r = random.Random(5)
    firsts = [p.ranked(r)[0] for _ in range(1000)]
    assert 400 < firsts.count(A) < 600


def test_the_only_upstream_is_never_marked_down() -> None:
    """Nothing to prefer instead: down would only stop the queries that find it recovered."""
    p = pool(A, max_fails=1)
    for _ in range(10):
        p.record(A, Outcome.TIMEOUT, 1.0, now=0.0)
    assert not p.state(A).down and p.ranked(rng()) == [A]


def test_marked_down_after_max_fails_then_probed_with_backoff() -> None:
    p = pool(A, B, max_fails=2)
    p.record(A, Outcome.TIMEOUT, 1.0, now=10.0)
    assert not p.state(A).down
    p.record(A, Outcome.SERVFAIL, 0.01, now=10.0)
    assert p.state(A).down and p.ranked(rng())[-1] == A
    assert p.due_probes(10.1) == []
    assert p.due_probes(10.25) == [A]
    assert p.due_probes(10.3) == []  # a probe is already running
    p.probe_done(A, Outcome.TIMEOUT, 1.0, now=11.0)
    assert p.state(A).next_probe_at == pytest.approx(11.5)  # backoff doubled
    assert p.due_probes(11.5) == [A]
    p.probe_done(A, Outcome.SUCCESS, 0.01, now=11.6)
    assert not p.state(A).down and p.state(A).consecutive_failures == 0


def test_probe_backoff_is_capped() -> None:
    p = pool(A, B, max_fails=1)
    now = 0.0
    p.record(A, Outcome.TIMEOUT, 1, now)
    for _ in range(20):
        now = p.state(A).next_probe_at
        assert p.due_probes(now) == [A]
        p.probe_done(A, Outcome.TIMEOUT, 1, now)
    assert p.state(A).probe_backoff == p.policy.probe_backoff_max


def test_success_returns_after_one_exchange() -> None:
    res = Resolution(pool(A, B), AttemptPolicy(), RetryBudget(), rng(), now=0.0)
    sends = res.start()
    assert len(sends) == 1 and not sends[0].tcp
    assert res.on_reply(sends[0], Outcome.SUCCESS, False, now=0.01) == []
    assert res.done and res.answered_by == sends[0].upstream


def test_failure_moves_to_the_next_upstream_at_once() -> None:
    res = Resolution(pool(A, B), AttemptPolicy(), RetryBudget(), rng(), now=0.0)
    first = res.start()[0]
    nxt = res.on_reply(first, Outcome.SERVFAIL, False, now=0.001)
    assert len(nxt) == 1 and nxt[0].upstream != first.upstream
    res.on_reply(nxt[0], Outcome.SUCCESS, False, now=0.002)
    assert res.answered_by == nxt[0].upstream


def test_truncated_reply_is_retried_over_tcp_on_the_same_upstream() -> None:
    res = Resolution(pool(A), AttemptPolicy(), RetryBudget(), rng(), now=0.0)
    first = res.start()[0]
    (tcp,) = res.on_reply(first, Outcome.SUCCESS, True, now=0.01)
    assert (tcp.upstream, tcp.tcp, tcp.hedge) == (A, True, False) and tcp.attempt != first.attempt
    # should TCP stall (a server sending empty TC replies), the next attempt still comes
    assert not res.done and res.next_wakeup() < res.deadline_at
    res.on_reply(tcp, Outcome.SUCCESS, False, now=0.02)
    assert res.answered_by == A


def test_a_stalled_tcp_retry_after_an_empty_tc_reply_still_leads_to_the_next_upstream() -> None:
    res = Resolution(pool(A, B), AttemptPolicy(), RetryBudget(), rng(), now=0.0)
    first = res.start()[0]
    (_tcp,) = res.on_reply(first, Outcome.SUCCESS, True, now=0.001)
    (nxt,) = res.on_timer(res.next_wakeup())
    assert not nxt.tcp and nxt.upstream != first.upstream and nxt.hedge
    res.on_reply(nxt, Outcome.SUCCESS, False, now=res.next_wakeup())
    assert res.answered_by == nxt.upstream


def test_hedge_fires_after_adaptive_delay() -> None:
    p = pool(A, B)
    for _ in range(30):
        p.record(A, Outcome.SUCCESS, 0.010, 0)
        p.record(B, Outcome.SUCCESS, 0.011, 0)
    res = Resolution(p, AttemptPolicy(), RetryBudget(), rng(), now=100.0)
    first = res.start()[0]
    delay = res.next_wakeup() - 100.0
    assert AttemptPolicy().min_retry_interval - 1e-9 <= delay < 0.05  # about SRTT + 4 RTTVAR
    assert res.on_timer(100.0 + delay / 2) == []
    hedge = res.on_timer(100.0 + delay)
    assert len(hedge) == 1 and hedge[0].hedge and hedge[0].upstream != first.upstream


def test_hedging_can_be_turned_off() -> None:
    res = Resolution(pool(A, B), AttemptPolicy(hedge=False), RetryBudget(), rng(), now=0.0)
    res.start()
    assert res.next_wakeup() == res.deadline_at


def test_deadline_ends_the_resolution() -> None:
    res = Resolution(pool(A), AttemptPolicy(deadline=2.0, hedge=False), RetryBudget(), rng(), now=0.0)
    res.start()
    assert res.on_timer(1.0) == [] and not res.done
    res.on_timer(2.0)
    assert res.done and res.failed


def test_attempts_are_bounded() -> None:
    res = Resolution(pool(A, B, C), AttemptPolicy(max_attempts=2, hedge=False), RetryBudget(), rng(), now=0.0)
    s1 = res.start()[0]
    s2 = res.on_reply(s1, Outcome.TIMEOUT, False, 1.0)[0]
    assert res.on_reply(s2, Outcome.TIMEOUT, False, 2.0) == []
    assert res.failed and len(res.failures) == 2


def test_retry_budget_stops_a_retry_storm() -> None:
    budget = RetryBudget(ratio=0.1, floor_per_second=0.0, cap=5)
    budget.try_spend(0.0)
    budget.tokens = 0
    p = pool(A, B)
    retries = 0
    for _i in range(100):
        res = Resolution(p, AttemptPolicy(hedge=False), budget, rng(), now=0.0)
        s = res.start()[0]
        retries += len(res.on_reply(s, Outcome.SERVFAIL, False, 0.0))
        p.state(A).down = p.state(B).down = False
    assert retries <= 10  # 10 % of 100 requests


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(list(Outcome)), st.booleans(), st.floats(0, 3)), max_size=12),
    st.integers(0, 2**32),
)
def test_resolution_always_terminates_and_never_exceeds_attempts(events, seed) -> None:
    policy = AttemptPolicy(max_attempts=3)
    res = Resolution(pool(A, B, C), policy, RetryBudget(), random.Random(seed), now=0.0)
    inflight = list(res.start())
    now = 0.0
    for outcome, truncated, dt in events:
        now += dt
        if inflight:
            s = inflight.pop(0)
            inflight += res.on_reply(s, outcome, truncated, now)
        inflight += res.on_timer(now)
    res.on_timer(now + 10)
    assert res.done
    assert res.attempts <= policy.max_attempts


def test_a_lost_query_is_retransmitted_after_the_rto_to_the_same_upstreams_again() -> None:
    """Two upstreams, every datagram lost: attempts go A, B, A, B, ... one RTO apart (the floor
    on a fast path), a little longer each time, until max_attempts; all within a 1 s deadline."""
    p = pool(A, B)
    for _ in range(30):
        p.record(A, Outcome.SUCCESS, 0.001, 0)
        p.record(B, Outcome.SUCCESS, 0.001, 0)
    res = Resolution(p, AttemptPolicy(deadline=1.0), RetryBudget(), rng(), now=0.0)
    sent = res.start()
    times = [0.0]
    while not res.done:
        now = res.next_wakeup()
        more = res.on_timer(now)
        if more:
            times.append(now)
        sent += more
    assert len(sent) == AttemptPolicy().max_attempts == 10
    assert [s.upstream for s in sent] == [sent[0].upstream, sent[1].upstream] * 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert abs(gaps[0] - AttemptPolicy().min_retry_interval) < 1e-9
    assert all(b > a for a, b in itertools.pairwise(gaps)) and times[-1] < 0.5
    assert all(s.hedge for s in sent[1:]) and len({s.attempt for s in sent}) == 10
    # the first attempt's reply, late but within its own timeout, still answers
    res2 = Resolution(p, AttemptPolicy(deadline=1.0), RetryBudget(), rng(), now=0.0)
    first = res2.start()[0]
    res2.on_timer(res2.next_wakeup())
    assert res2.on_reply(first, Outcome.SUCCESS, False, 0.2) == [] and res2.answered_by == first.upstream


def test_rto_comes_from_answered_exchanges_only() -> None:
    """Failures push a server down the ranking (SRTT), not its retransmit interval: a lossy
    server is asked again as fast as a clean one."""
    p = pool(A, B)
    for i in range(100):
        p.record(A, Outcome.SUCCESS if i % 3 else Outcome.TIMEOUT, 0.001, 0)
        p.record(B, Outcome.SUCCESS, 0.001, 0)
    assert p.state(A).srtt > p.state(B).srtt
    assert p.state(A).rto < 0.01 and p.retry_interval(A, 0.03, 0.4) == 0.03


def test_equally_lossy_upstreams_are_never_all_marked_down() -> None:
    rnd = random.Random(7)
    p = pool(A, B, C)
    for _ in range(5000):
        for u in (A, B, C):
            p.record(u, Outcome.TIMEOUT if rnd.random() < 0.3 else Outcome.SUCCESS, 0.001, 0)
        assert p.healthy, "every upstream down: the only paths there are disabled"
    # but a dead one beside lossy ones goes down
    for _ in range(50):
        p.record(A, Outcome.TIMEOUT, 1.0, 0)
        p.record(B, Outcome.TIMEOUT if rnd.random() < 0.3 else Outcome.SUCCESS, 0.001, 0)
    assert p.state(A).down


def test_a_lossy_best_upstream_gets_two_queries_at_once() -> None:
    p = pool(A, B)
    for i in range(50):
        p.record(A, Outcome.SUCCESS if i % 2 else Outcome.TIMEOUT, 0.001, 0)
        p.record(B, Outcome.SUCCESS if i % 2 else Outcome.TIMEOUT, 0.001, 0)
    sends = Resolution(p, AttemptPolicy(), RetryBudget(), rng(), now=0.0).start()
    assert {s.upstream for s in sends} == {A, B} and [s.hedge for s in sends] == [False, True]
    clean = pool(A, B)
    assert len(Resolution(clean, AttemptPolicy(), RetryBudget(), rng(), now=0.0).start()) == 1


def simulate(
    loss: float, dead: bool, misses: int, rate: float, seed: int
) -> tuple[float, float, UpstreamPool]:
    """Misses at ``rate``/s through three upstreams losing ``loss`` of exchanges (RTT 1 ms), with
    the real pool, budget and policy on a fake clock: (share answered within 1 s, upstream
    queries per miss)."""
    import heapq

    rnd = random.Random(seed)
    p = UpstreamPool([A, B, C])
    budget = RetryBudget()
    events: list[tuple[float, int, str, object]] = []
    n = 0

    def push(t: float, kind: str, obj: object) -> None:
        nonlocal n
        n += 1
        heapq.heappush(events, (t, n, kind, obj))

    for i in range(misses):
        push(i / rate, "new", None)
    resolutions: list[tuple[float, Resolution]] = []
    ended: dict[int, float] = {}
    armed: dict[int, float] = {}
    sent = 0
    while events:
        t, _, kind, obj = heapq.heappop(events)
        if kind == "new":
            r = Resolution(p, AttemptPolicy(), budget, rnd, t)
            resolutions.append((t, r))
            sends = r.start()
        elif kind == "reply":
            r, s, ok = obj  # type: ignore[misc]
            sends = r.on_reply(s, Outcome.SUCCESS if ok else Outcome.TIMEOUT, False, t)
        else:
            r = obj  # type: ignore[assignment]
            if armed.get(id(r)) != t:
                continue
            sends = r.on_timer(t)
        for s in sends:
            sent += 1
            ok = not dead and rnd.random() >= loss
            push(t + (0.001 if ok else s.timeout), "reply", (r, s, ok))
        if not r.done:
            armed[id(r)] = r.next_wakeup()
            push(armed[id(r)], "timer", r)
        else:
            ended.setdefault(id(r), t)
    answered = sum(1 for t0, r in resolutions if r.answered_by is not None and ended[id(r)] - t0 <= 1.0)
    return answered / misses, sent / misses, p


def test_with_30_percent_loss_on_every_upstream_misses_are_answered_within_1_s() -> None:
    answered, per_miss, p = simulate(0.3, dead=False, misses=60000, rate=500, seed=3)
    assert answered >= 0.9999, answered
    assert per_miss < 2.0 and p.healthy


def test_every_upstream_dead_the_upstream_query_rate_stays_bounded() -> None:
    """A retry storm would be 10 queries per miss; the budget allows 1 + ratio (plus its floor)."""
    answered, per_miss, _ = simulate(0.0, dead=True, misses=20000, rate=500, seed=3)
    assert answered == 0
    assert per_miss <= 1 + RetryBudget().ratio + RetryBudget().floor / 500 + 0.01, per_miss
