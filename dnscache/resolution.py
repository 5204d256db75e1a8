"""One query's journey through the upstreams, as an I/O-free state machine (pure).

The driver (``dnscache.resolver``) asks ``start()`` what to send, reports every exchange with
``on_reply()`` and wakes it at ``next_wakeup()`` with ``on_timer()``. This object decides which
upstream next, when to hedge, when to switch to TCP and when to give up; it is told the clock
instead of reading it, so tests drive thousands of cases with a fake clock (dnspython's
``_Resolution`` works the same way).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dnscache.upstreams import Outcome, RetryBudget, UpstreamPool
from netkit.addr import HostPort


@dataclass(frozen=True, slots=True)
class Send:
    upstream: HostPort
    tcp: bool
    timeout: float
    hedge: bool = False


@dataclass(frozen=True, slots=True)
class AttemptPolicy:
    deadline: float = 2.0  # the whole resolution, client-facing
    attempt_timeout: float = 1.0  # one exchange with one upstream
    max_attempts: int = 3  # distinct upstream attempts, hedges included (TCP retries excluded)
    hedge: bool = True


class Resolution:
    def __init__(
        self,
        pool: UpstreamPool,
        policy: AttemptPolicy,
        budget: RetryBudget,
        rng: random.Random,
        now: float,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.budget = budget
        self.order = pool.ranked(rng)
        self.started_at = now
        self.deadline_at = now + policy.deadline
        self._next = 0
        self.attempts = 0
        self.inflight: dict[tuple[HostPort, bool], float] = {}
        self.hedge_at: float | None = None
        self.done = False
        self.answered_by: HostPort | None = None
        self.failures: list[tuple[HostPort, Outcome]] = []

    # -- decisions -------------------------------------------------------------------------------
    def start(self) -> list[Send]:
        self.budget.deposit(self.started_at)
        return self._launch(self.started_at, hedge=False, spend=False)

    def on_reply(
        self, upstream: HostPort, tcp: bool, outcome: Outcome, truncated: bool, now: float
    ) -> list[Send]:
        """An exchange finished. ``truncated`` means a valid reply with TC set."""
        sent_at = self.inflight.pop((upstream, tcp), None)
        if sent_at is None:
            return []
        # late replies (a hedge's loser) still teach health: a black hole must sink in the ranking
        self.pool.record(upstream, outcome, now - sent_at, now)
        if self.done:
            return []
        if outcome is Outcome.SUCCESS:
            if truncated and not tcp:
                self.inflight[(upstream, True)] = now
                return [Send(upstream, True, self._timeout(now))]
            self.done = True
            self.answered_by = upstream
            return []
        self.failures.append((upstream, outcome))
        sends = self._launch(now, hedge=False, spend=True)
        if not sends and not self.inflight:
            self.done = True
        return sends

    def on_timer(self, now: float) -> list[Send]:
        if self.done:
            return []
        if now >= self.deadline_at:
            self.done = True
            return []
        if self.hedge_at is not None and now >= self.hedge_at:
            self.hedge_at = None
            return self._launch(now, hedge=True, spend=True)
        return []

    def next_wakeup(self) -> float:
        return min(self.deadline_at, self.hedge_at) if self.hedge_at is not None else self.deadline_at

    @property
    def failed(self) -> bool:
        return self.done and self.answered_by is None

    # -- helpers ---------------------------------------------------------------------------------
    def _timeout(self, now: float) -> float:
        return max(0.0, min(self.policy.attempt_timeout, self.deadline_at - now))

    def _launch(self, now: float, *, hedge: bool, spend: bool) -> list[Send]:
        if (
            self._next >= len(self.order)
            or self.attempts >= self.policy.max_attempts
            or now >= self.deadline_at
        ):
            return []
        if spend and not self.budget.try_spend(now):
            return []
        upstream = self.order[self._next]
        self._next += 1
        self.attempts += 1
        self.inflight[(upstream, False)] = now
        more = self._next < len(self.order) and self.attempts < self.policy.max_attempts
        self.hedge_at = now + self.pool.hedge_delay(upstream) if self.policy.hedge and more else None
        return [Send(upstream, False, self._timeout(now), hedge=hedge)]
