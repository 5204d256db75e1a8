"""The I/O-free resolution state machine and upstream health, driven with a fake clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscache.resolution import AttemptPolicy, Resolution
from dnscache.upstreams import HealthPolicy, Outcome, RetryBudget, UpstreamPool
from netkit.addr import HostPort

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
    p = pool(A, max_fails=1)
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
    assert res.on_reply(sends[0].upstream, False, Outcome.SUCCESS, False, now=0.01) == []
    assert res.done and res.answered_by == sends[0].upstream


def test_failure_moves_to_the_next_upstream_at_once() -> None:
    res = Resolution(pool(A, B), AttemptPolicy(), RetryBudget(), rng(), now=0.0)
    first = res.start()[0]
    nxt = res.on_reply(first.upstream, False, Outcome.SERVFAIL, False, now=0.001)
    assert len(nxt) == 1 and nxt[0].upstream != first.upstream
    res.on_reply(nxt[0].upstream, False, Outcome.SUCCESS, False, now=0.002)
    assert res.answered_by == nxt[0].upstream


def test_truncated_reply_is_retried_over_tcp_on_the_same_upstream() -> None:
    res = Resolution(pool(A), AttemptPolicy(), RetryBudget(), rng(), now=0.0)
    first = res.start()[0]
    tcp = res.on_reply(first.upstream, False, Outcome.SUCCESS, True, now=0.01)
    assert tcp == [type(first)(A, True, tcp[0].timeout)]
    assert not res.done
    res.on_reply(A, True, Outcome.SUCCESS, False, now=0.02)
    assert res.answered_by == A


def test_hedge_fires_after_adaptive_delay() -> None:
    p = pool(A, B)
    for _ in range(30):
        p.record(A, Outcome.SUCCESS, 0.010, 0)
        p.record(B, Outcome.SUCCESS, 0.011, 0)
    res = Resolution(p, AttemptPolicy(), RetryBudget(), rng(), now=100.0)
    first = res.start()[0]
    delay = res.next_wakeup() - 100.0
    assert p.policy.min_hedge_delay - 1e-9 <= delay < 0.05  # about SRTT + 4 RTTVAR
    assert res.on_timer(100.0 + delay / 2) == []
    hedge = res.on_timer(100.0 + delay)
    assert len(hedge) == 1 and hedge[0].hedge and hedge[0].upstream != first.upstream


def test_hedging_can_be_turned_off() -> None:
    res = Resolution(pool(A, B), AttemptPolicy(hedge=False), RetryBudget(), rng(), now=0.0)
    res.start()
    assert res.next_wakeup() == res.deadline_at


def test_deadline_ends_the_resolution() -> None:
    res = Resolution(pool(A), AttemptPolicy(deadline=2.0), RetryBudget(), rng(), now=0.0)
    res.start()
    assert res.on_timer(1.0) == [] and not res.done
    res.on_timer(2.0)
    assert res.done and res.failed


def test_attempts_are_bounded() -> None:
    res = Resolution(pool(A, B, C), AttemptPolicy(max_attempts=2, hedge=False), RetryBudget(), rng(), now=0.0)
    s1 = res.start()[0]
    s2 = res.on_reply(s1.upstream, False, Outcome.TIMEOUT, False, 1.0)[0]
    assert res.on_reply(s2.upstream, False, Outcome.TIMEOUT, False, 2.0) == []
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
        retries += len(res.on_reply(s.upstream, False, Outcome.SERVFAIL, False, 0.0))
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
            inflight += res.on_reply(s.upstream, s.tcp, outcome, truncated, now)
        inflight += res.on_timer(now)
    res.on_timer(now + 10)
    assert res.done
    assert res.attempts <= policy.max_attempts
