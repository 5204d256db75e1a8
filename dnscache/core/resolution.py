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

from dnscache.core.upstreams import Outcome, RetryBudget, UpstreamPool
from netkit.base.addr import HostPort


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 2 us, and one is made per miss
class Send:
    upstream: HostPort
    tcp: bool
    timeout: float
    hedge: bool = False  # sent while an earlier attempt is still out (a retransmit or a hedge)
    attempt: int = 0  # this resolution's number for the exchange: replies are matched to it


@dataclass(frozen=True, slots=True)
class AttemptPolicy:
    deadline: float = 2.0  # the whole resolution, client-facing
    attempt_timeout: float = 1.0  # one exchange with one upstream
    max_attempts: int = 10  # upstream attempts, retransmits and hedges included (TCP retries excluded)
    hedge: bool = True  # retransmit on a timer (RTO) instead of only after a failed reply
    min_retry_interval: float = 0.03  # the RTO floor: a loss on loopback or in a rack is still loss
    max_retry_interval: float = 0.4
    backoff: float = 1.1  # each further retransmit of one resolution waits this much longer
    parallel_loss: float = 0.1  # the best upstream loses at least this share: ask two at once


class Resolution:
    """Attempts go round the ranked upstreams (back to the first when all had one, so a lossy
    set is asked again, as a stub resolver retransmits), one every RTO of the upstream last asked
    (``UpstreamPool.retry_interval``: SRTT + 4 RTTVAR, at least ``min_retry_interval``, longer
    by ``backoff`` each time) until one answers, the deadline passes or ``max_attempts`` is
    spent. Each attempt keeps its own timeout, so a late reply still answers. When the best
    upstream is losing queries the first two attempts leave together. Every attempt after the
    first spends from the retry budget: a dead upstream set costs at most the budget's share."""

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
        self._ids = 0
        self.inflight: dict[int, tuple[HostPort, bool, float]] = {}  # attempt -> (upstream, tcp, sent)
        self.retry_at: float | None = None
        self.done = False
        self.answered_by: HostPort | None = None
        self.failures: list[tuple[HostPort, Outcome]] = []

    # -- decisions -------------------------------------------------------------------------------
    def start(self) -> list[Send]:
        self.budget.deposit(self.started_at)
        both = len(self.order) > 1 and self.pool.loss(self.order[0]) >= self.policy.parallel_loss
        return self._launch(self.started_at, first=True, count=2 if both else 1)

    def on_reply(self, send: Send, outcome: Outcome, truncated: bool, now: float) -> list[Send]:
        """An exchange finished. ``truncated`` means a valid reply with TC set."""
        flight = self.inflight.pop(send.attempt, None)
        if flight is None:
            return []
        upstream, tcp, sent_at = flight
        # late replies (a hedge's loser) still teach health: a black hole must sink in the ranking
        self.pool.record(upstream, outcome, now - sent_at, now)
        if self.done:
            return []
        if outcome is Outcome.SUCCESS:
            if truncated and not tcp:
                # over TCP to the same server; the retransmit timer runs on, so a TCP exchange
                # that stalls (a server that sends empty TC replies) still leads to the next one
                if self.retry_at is None and self.policy.hedge and self.attempts < self.policy.max_attempts:
                    p = self.policy
                    self.retry_at = now + self.pool.retry_interval(
                        upstream, p.min_retry_interval, p.max_retry_interval
                    )
                return [self._send(upstream, True, now, hedge=False)]
            self.done = True
            self.answered_by = upstream
            return []
        self.failures.append((upstream, outcome))
        sends = self._launch(now)
        if not sends and not self.inflight:
            self.done = True
        return sends

    def on_timer(self, now: float) -> list[Send]:
        if self.done:
            return []
        if now >= self.deadline_at:
            self.done = True
            return []
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            sends = self._launch(now)
            if not sends and not self.inflight:
                self.done = True
            return sends
        return []

    def next_wakeup(self) -> float:
        return min(self.deadline_at, self.retry_at) if self.retry_at is not None else self.deadline_at

    @property
    def failed(self) -> bool:
        return self.done and self.answered_by is None

    # -- helpers ---------------------------------------------------------------------------------
    def _timeout(self, now: float) -> float:
        return max(0.0, min(self.policy.attempt_timeout, self.deadline_at - now))

    def _send(self, upstream: HostPort, tcp: bool, now: float, hedge: bool) -> Send:
        self._ids += 1
        self.inflight[self._ids] = (upstream, tcp, now)
        return Send(upstream, tcp, self._timeout(now), hedge=hedge, attempt=self._ids)

    def _launch(self, now: float, *, first: bool = False, count: int = 1) -> list[Send]:
        sends: list[Send] = []
        for i in range(count):
            if self.attempts >= self.policy.max_attempts or now >= self.deadline_at:
                break
            if not (first and i == 0) and not self.budget.try_spend(now):
                break
            upstream = self.order[self._next % len(self.order)]
            self._next += 1
            self.attempts += 1
            sends.append(self._send(upstream, False, now, hedge=bool(self.inflight)))
        if sends and self.policy.hedge and self.attempts < self.policy.max_attempts:
            p = self.policy
            retries = max(0, self.attempts - 1)
            interval = self.pool.retry_interval(
                sends[-1].upstream, p.min_retry_interval, p.max_retry_interval
            )
            self.retry_at = now + interval * p.backoff**retries
        elif sends:
            self.retry_at = None
        return sends
