"""Upstream health and selection (pure): smoothed RTT, passive failure counting, active-probe
schedule with backoff, ranked selection with exploration, retransmit interval (RTO), loss
estimate, retry budget.

Modelled on Unbound's infra cache (SRTT/RTTVAR per server, RTO = SRTT + 4*RTTVAR, a band of
near-best servers chosen among at random) and CoreDNS forward's health checks (a server is down
after ``max_fails`` consecutive failures and is probed until it answers again).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from netkit.base.addr import HostPort


class Outcome(StrEnum):
    """What one upstream exchange came to; the values are the metric label ``result``."""

    SUCCESS = "success"
    TIMEOUT = "timeout"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    MALFORMED = "malformed"
    NETWORK_ERROR = "network_error"

    @property
    def failed(self) -> bool:
        return self is not Outcome.SUCCESS


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    max_fails: int = 2  # consecutive failures before an upstream is marked down
    initial_rtt: float = 0.05  # estimate for a server never measured (explored early)
    loss_weight: float = 0.1  # how fast the loss estimate follows (an EWMA over exchanges)
    probe_backoff_min: float = 0.25
    probe_backoff_max: float = 1.0  # probes are one query: come back within a second of recovery
    explore_probability: float = 0.05
    near_best_band: float = 0.005  # servers within this of the best SRTT share the load
    failure_rtt_penalty: float = 1.0  # seconds folded into the SRTT per failure


@dataclass(slots=True)
class UpstreamState:
    address: HostPort
    srtt: float
    rttvar: float
    consecutive_failures: int = 0
    down: bool = False
    next_probe_at: float = 0.0
    probe_backoff: float = 0.0
    probing: bool = False
    last_outcome: Outcome | None = None
    loss: float = 0.0  # share of recent exchanges that failed (EWMA)
    rtt: float = 0.0  # smoothed RTT of answered exchanges only (srtt also carries failure penalties)
    results: dict[Outcome, int] = field(default_factory=dict)

    @property
    def rto(self) -> float:
        """When to give up waiting for one exchange and ask again: from answered exchanges only,
        so a lossy server is retransmitted to as quickly as a clean one."""
        return self.rtt + 4 * self.rttvar


class UpstreamPool:
    """The health view of one set of upstreams (the default set or one stub zone's)."""

    def __init__(self, addresses: list[HostPort], policy: HealthPolicy | None = None) -> None:
        if not addresses:
            raise ValueError("an upstream pool needs at least one address")
        self.policy = policy or HealthPolicy()
        p = self.policy
        self.states: list[UpstreamState] = [
            UpstreamState(a, p.initial_rtt, p.initial_rtt / 2, rtt=p.initial_rtt) for a in addresses
        ]
        self._by_address = {s.address: s for s in self.states}
        # the latest question some server of this pool answered well: what probes ask
        self.probe_question: bytes | None = None

    def state(self, address: HostPort) -> UpstreamState:
        return self._by_address[address]

    @property
    def healthy(self) -> list[UpstreamState]:
        return [s for s in self.states if not s.down]

    def ranked(self, rng: random.Random) -> list[HostPort]:
        """Order in which to try the upstreams for one query.

        Healthy servers by SRTT, servers within ``near_best_band`` of the best shuffled among
        themselves, and with ``explore_probability`` a random other healthy server first so that
        estimates of the slower ones stay current. Down servers come last: when everything is down
        they are still worth a try (their probes may simply not have run yet).
        """
        if len(self.states) == 1:
            return [self.states[0].address]
        up = sorted((s for s in self.states if not s.down), key=lambda s: s.srtt)
        down = sorted((s for s in self.states if s.down), key=lambda s: s.next_probe_at)
        if len(up) > 1:
            best = up[0].srtt
            band = [s for s in up if s.srtt <= best + self.policy.near_best_band]
            if len(band) > 1:
                rng.shuffle(band)
                up = band + [s for s in up if s not in band]
            if rng.random() < self.policy.explore_probability:
                pick = rng.randrange(1, len(up))
                up.insert(0, up.pop(pick))
        return [s.address for s in up + down]

    def retry_interval(self, address: HostPort, floor: float, ceiling: float) -> float:
        """How long to wait for ``address`` before asking again (its RTO, within the bounds)."""
        return min(max(self.state(address).rto, floor), ceiling)

    def loss(self, address: HostPort) -> float:
        return self.state(address).loss

    def record(self, address: HostPort, outcome: Outcome, rtt: float, now: float) -> None:
        """Fold one exchange (a query or a probe) into the server's health."""
        s = self.state(address)
        s.results[outcome] = s.results.get(outcome, 0) + 1
        s.last_outcome = outcome
        s.loss += ((outcome is not Outcome.SUCCESS) - s.loss) * self.policy.loss_weight
        if outcome is Outcome.SUCCESS:
            err = rtt - s.srtt
            s.srtt += err / 8
            measured = rtt - s.rtt
            s.rtt += measured / 8
            s.rttvar += (abs(measured) - s.rttvar) / 4
            s.consecutive_failures = 0
            if s.down:
                s.down = False
                s.probe_backoff = 0.0
            return
        # every failure makes the server look slower, so failing servers sink in the ranking
        s.srtt = min(s.srtt + self.policy.failure_rtt_penalty / 8, 10.0)
        s.consecutive_failures += 1
        if s.down:
            s.probe_backoff = min(
                max(s.probe_backoff * 2, self.policy.probe_backoff_min), self.policy.probe_backoff_max
            )
            s.next_probe_at = now + s.probe_backoff
        elif s.consecutive_failures >= self.policy.max_fails and self._better_than(s):
            s.down = True
            s.probe_backoff = self.policy.probe_backoff_min
            s.next_probe_at = now + s.probe_backoff

    def _better_than(self, s: UpstreamState) -> bool:
        """Is there a server to use instead of ``s``: up, and losing clearly less? When every
        server is equally lossy, losses lower their rank (the SRTT penalty) but disable none: a
        server that answers 70 % of queries is a path, and it may be the only kind there is. A
        dead one (all lost) still goes down beside any that answer at all."""
        return any(o is not s and not o.down and o.loss < s.loss / 2 for o in self.states)

    def due_probes(self, now: float) -> list[HostPort]:
        """Down servers whose next active probe is due and not already running."""
        due = [s for s in self.states if s.down and not s.probing and s.next_probe_at <= now]
        for s in due:
            s.probing = True
        return [s.address for s in due]

    def probe_done(self, address: HostPort, outcome: Outcome, rtt: float, now: float) -> None:
        self.state(address).probing = False
        self.record(address, outcome, rtt, now)

    def next_probe_time(self) -> float | None:
        times = [s.next_probe_at for s in self.states if s.down and not s.probing]
        return min(times) if times else None


class RetryBudget:
    """Retries and hedges may add at most ``ratio`` of the request rate (plus a small floor), so a
    failing upstream set cannot turn into a retry storm (Finagle's RetryBudget)."""

    def __init__(self, ratio: float = 1.0, floor_per_second: float = 20.0, cap: float = 200.0) -> None:
        self.ratio = ratio
        self.floor = floor_per_second
        self.cap = cap
        self.tokens = cap
        self._last = 0.0

    def deposit(self, now: float, requests: int = 1) -> None:
        """Called for the client requests that reach the upstream path."""
        self._refill(now)
        self.tokens = min(self.cap, self.tokens + self.ratio * requests)

    def try_spend(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def _refill(self, now: float) -> None:
        if now > self._last:
            self.tokens = min(self.cap, self.tokens + (now - self._last) * self.floor)
            self._last = now
