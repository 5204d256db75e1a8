"""The fault schedule as data and the scoring of query records (pure: no I/O, no clock).

Schedule: a fixed plan on a nominal 600 s timeline, scaled to ``--duration``, with the fault
targets and a small start jitter drawn from the seed. The windows partition ``[0, duration)``:
every instant is either a fault window or a ``baseline`` window between two faults, and a query
belongs to the window its send time falls in.

Scoring: a query succeeds when the correct answer arrived within the deadline (the load
generator decides that and stores a status per query). Per window: queries, failures,
availability, latency percentiles of the successful queries, failures by reason and by name
class. During ``all_down`` no cache can answer a name it never saw, so the headline excludes
the cold names sent in that window and reports them on their own.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labs.chaos.workload import CLASS_NAMES, CLS_COLD

NOMINAL_DURATION = 600.0
MIN_DURATION = 30.0

UPSTREAMS = ("up1", "up2", "up3")

# kind -> what it does (for reports and --help)
FAULTS: dict[str, str] = {
    "baseline": "no fault",
    "kill": "SIGKILL one upstream resolver, start it again at the end of the window",
    "stop": "SIGSTOP one upstream resolver (a black hole that keeps its sockets), SIGCONT at the end",
    "loss": "the fault proxy of one upstream drops 30 % of datagrams in each direction",
    "delay": "the fault proxy of one upstream delays every query by 2 s",
    "servfail": "the fault proxy of one upstream answers SERVFAIL to everything",
    "garbage": "the fault proxy of one upstream answers random bytes, wrong IDs or empty TC replies",
    "all_down": "every fault proxy black-holes everything: all upstreams down",
    "cache_restart": "the cache under test restarts (netkit: zero-gap handover; others: stop + start)",
    "loss_all": "every fault proxy drops 30 % of replies: no upstream is better than another",
    "upgrade": "a new cache process beside the old one, then SIGTERM to the old one, as a DaemonSet "
    "rolls with maxSurge (netkit: takeover; Unbound: a second instance on SO_REUSEPORT; dnsmasq, "
    "which cannot share its address: stop + start)",
    "crash_restart": "SIGKILL the process that resolves (netkit: its worker, forked again by the "
    "keeper that holds its sockets; the others: their only process, started again)",
}

# (kind, nominal start, nominal length, parameter) on the 600 s timeline; baselines fill the gaps
PLAN: tuple[tuple[str, float, float, float | None], ...] = (
    ("kill", 20.0, 30.0, None),
    ("stop", 65.0, 30.0, None),
    ("loss", 110.0, 40.0, 0.3),
    ("delay", 165.0, 40.0, 2.0),
    ("servfail", 220.0, 30.0, None),
    ("garbage", 265.0, 30.0, None),
    ("all_down", 310.0, 30.0, None),
    ("cache_restart", 355.0, 30.0, None),
    ("loss_all", 400.0, 40.0, 0.3),
    ("upgrade", 455.0, 35.0, None),
    ("crash_restart", 505.0, 35.0, None),
)
CACHE_FAULTS = ("cache_restart", "upgrade", "crash_restart")  # done to the cache under test
ALL_UPSTREAMS = ("all_down", "loss_all")
JITTER = 3.0  # nominal seconds; gaps in PLAN are at least 15 s


@dataclass(frozen=True)
class Window:
    """One interval of the run: ``[start, end)`` seconds after the first query."""

    start: float
    end: float
    kind: str
    target: str | None = None  # "up2", "all" (all upstreams), "cache" (the system under test)
    param: float | None = None  # loss probability, delay in seconds
    index: int = 0

    @property
    def label(self) -> str:
        if self.kind == "baseline":
            return f"baseline #{self.index}"
        detail = self.target or ""
        if self.kind in ("loss", "loss_all") and self.param is not None:
            detail += f" {self.param * 100:g}%"
        elif self.kind == "delay" and self.param is not None:
            detail += f" +{self.param:g}s"
        return f"{self.kind} {detail}".strip()

    @property
    def is_fault(self) -> bool:
        return self.kind != "baseline"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "target": self.target,
            "param": self.param,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
        }


def build_schedule(duration: float, seed: int, upstreams: Sequence[str] = UPSTREAMS) -> list[Window]:
    """The windows of a run of ``duration`` seconds, deterministic by ``seed``."""
    if duration < MIN_DURATION:
        raise ValueError(f"duration must be at least {MIN_DURATION:g} s (the fault plan is compressed to it)")
    if len(upstreams) < 2:
        raise ValueError("the schedule needs at least two upstreams")
    rng = random.Random(f"chaos-schedule-{seed}")
    scale = duration / NOMINAL_DURATION
    singles = [k for k, *_ in PLAN if k not in CACHE_FAULTS + ALL_UPSTREAMS]
    # every upstream gets its share of the single-upstream faults, in a seeded order
    pool: list[str] = []
    while len(pool) < len(singles):
        batch = list(upstreams)
        rng.shuffle(batch)
        pool += batch
    targets = dict(zip(singles, pool, strict=False))
    faults: list[Window] = []
    for kind, start, length, param in PLAN:
        jitter = rng.uniform(-JITTER, JITTER)
        s = (start + jitter) * scale
        e = s + length * scale
        target = targets.get(kind) or ("all" if kind in ALL_UPSTREAMS else "cache")
        faults.append(Window(s, e, kind, target, param))
    windows: list[Window] = []
    t = 0.0
    for f in faults:
        if f.start > t:
            windows.append(Window(t, f.start, "baseline"))
        windows.append(f)
        t = f.end
    if t < duration:
        windows.append(Window(t, duration, "baseline"))
    out: list[Window] = []
    n_base = 0
    for i, w in enumerate(windows):
        if w.kind == "baseline":
            n_base += 1
        out.append(Window(w.start, w.end, w.kind, w.target, w.param, n_base if w.kind == "baseline" else i))
    return out


# --------------------------------------------------------------------------------------------
# Query outcomes (what the load generator stores per query)
# --------------------------------------------------------------------------------------------

OK = 0
TIMEOUT = 1  # no reply within the deadline
LATE = 2  # the correct answer, after the deadline
SERVFAIL = 3
WRONG_RCODE = 4
WRONG_DATA = 5  # right rcode, wrong RRset
TRUNCATED = 6  # TC set (the cache should have retried over TCP itself)
MALFORMED = 7  # not a reply to our question
NETERR = 8  # TCP refused/reset, socket error
NOT_SENT = 255

STATUS_NAMES: dict[int, str] = {
    OK: "ok",
    TIMEOUT: "timeout",
    LATE: "late",
    SERVFAIL: "servfail",
    WRONG_RCODE: "wrong_rcode",
    WRONG_DATA: "wrong_data",
    TRUNCATED: "truncated",
    MALFORMED: "malformed",
    NETERR: "neterr",
    NOT_SENT: "not_sent",
}


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in percent) of an ascending sequence; None when empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n / 100.0 - 1e-9))  # 99.9 % of 1000 is rank 999, not 1000
    return sorted_values[min(rank, n) - 1]


@dataclass
class Tally:
    """Queries and failures of one slice of the run, with the latencies of its successes."""

    queries: int = 0
    failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    by_class: dict[str, list[int]] = field(default_factory=dict)  # class -> [queries, failures]
    latencies: list[float] = field(default_factory=list)

    def add(self, status: int, latency: float, cls: int) -> None:
        self.queries += 1
        c = self.by_class.setdefault(CLASS_NAMES[cls] if cls < len(CLASS_NAMES) else str(cls), [0, 0])
        c[0] += 1
        if status == OK:
            self.latencies.append(latency)
        else:
            self.failures += 1
            c[1] += 1
            name = STATUS_NAMES.get(status, str(status))
            self.reasons[name] = self.reasons.get(name, 0) + 1

    @property
    def availability(self) -> float | None:
        return None if self.queries == 0 else (self.queries - self.failures) / self.queries

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "queries": self.queries,
            "failures": self.failures,
            "availability": self.availability,
            "nines": nines(self.availability),
            "p50_ms": _ms(percentile(lat, 50)),
            "p99_ms": _ms(percentile(lat, 99)),
            "p999_ms": _ms(percentile(lat, 99.9)),
            "max_ms": _ms(lat[-1] if lat else None),
            "failures_by_reason": dict(sorted(self.reasons.items())),
            "by_class": {
                k: {"queries": v[0], "failures": v[1], "availability": (v[0] - v[1]) / v[0] if v[0] else None}
                for k, v in sorted(self.by_class.items())
            },
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def nines(availability: float | None) -> float | None:
    """Availability as a count of nines (0.999 -> 3.0); None for no data, inf-safe (capped at 9)."""
    if availability is None:
        return None
    if availability >= 1.0:
        return 9.0
    return round(min(9.0, -math.log10(1.0 - availability)), 2)


@dataclass
class Score:
    """Everything the report needs about one system."""

    windows: list[Tally]
    overall: Tally
    headline: Tally  # overall minus cold names sent during all_down
    all_down_cold: Tally  # cold names sent during all_down (reported on their own)
    # cold names sent during all_down at least one deadline before it ended: nothing can answer
    # them, so every one must fail; a success here means the harness is broken
    all_down_cold_strict: Tally
    # all_down split by whether this system had answered the same question (name and type)
    # correctly before the window began: only those can come from its cache
    all_down_seen: Tally
    all_down_unseen: Tally
    not_sent: int
    unfinished: int  # sent queries without an outcome (a generator bug if not 0)
    timeline: list[dict[str, Any]]
    bin_width: float

    def to_dict(self, windows: Sequence[Window]) -> dict[str, Any]:
        return {
            "overall": self.overall.summary(),
            "headline": self.headline.summary(),
            "all_down_cold": self.all_down_cold.summary(),
            "all_down_cold_strict": self.all_down_cold_strict.summary(),
            "all_down_seen_before": self.all_down_seen.summary(),
            "all_down_never_answered_before": self.all_down_unseen.summary(),
            "not_sent": self.not_sent,
            "unfinished": self.unfinished,
            "windows": [{**w.to_dict(), **t.summary()} for w, t in zip(windows, self.windows, strict=True)],
        }


def timeline_bin(duration: float) -> float:
    """Width of the timeline bins: 1 s, wider for long runs (at most ~300 points)."""
    return max(1.0, math.ceil(duration / 300.0))


def score(
    t_send: Sequence[float],
    status: Sequence[int],
    latency: Sequence[float],
    cls: Sequence[int],
    windows: Sequence[Window],
    deadline: float = 1.0,
    bin_width: float | None = None,
    keys: Sequence[int] | None = None,
    start_margin: float = 0.2,
) -> Score:
    """Aggregate per-query records (parallel sequences, in send order) into per-window tallies
    and a timeline.

    ``keys`` (one cache key per query: name and type) splits the ``all_down`` windows into
    questions answered correctly before the window began and the rest. ``start_margin``: the
    strict self-check ignores queries sent this soon after ``all_down`` began (the fault is
    applied by another process a few milliseconds after its scheduled time).
    """
    if not (len(t_send) == len(status) == len(latency) == len(cls)):
        raise ValueError("record columns differ in length")
    if keys is not None and len(keys) != len(status):
        raise ValueError("keys differ in length from the records")
    if not windows:
        raise ValueError("no windows")
    starts = [w.start for w in windows]
    duration = windows[-1].end
    width = bin_width or timeline_bin(duration)
    n_bins = max(1, math.ceil(duration / width))
    bin_q = [0] * n_bins
    bin_f = [0] * n_bins
    bin_lat: list[list[float]] = [[] for _ in range(n_bins)]
    tallies = [Tally() for _ in windows]
    overall, headline, adc, strict = Tally(), Tally(), Tally(), Tally()
    seen_t, unseen_t = Tally(), Tally()
    down = {i for i, w in enumerate(windows) if w.kind == "all_down"}
    answered: set[int] = set()  # keys answered correctly so far
    frozen: dict[int, set[int]] = {}  # all_down window -> keys answered before it began
    not_sent = 0
    unfinished = 0
    for i in range(len(status)):
        st = status[i]
        if st == NOT_SENT:
            not_sent += 1
            continue
        t = t_send[i]
        lat = latency[i]
        if lat < 0:
            unfinished += 1  # sent, but the generator never recorded an outcome
        c = cls[i]
        wi = max(0, bisect_right(starts, t) - 1)
        tallies[wi].add(st, lat, c)
        overall.add(st, lat, c)
        if wi in down:
            if keys is not None:
                before = frozen.get(wi)
                if before is None:
                    before = frozen[wi] = set(answered)
                (seen_t if keys[i] in before else unseen_t).add(st, lat, c)
            if c == CLS_COLD:
                adc.add(st, lat, c)
                if windows[wi].start + start_margin <= t <= windows[wi].end - deadline:
                    strict.add(st, lat, c)
            else:
                headline.add(st, lat, c)
        else:
            headline.add(st, lat, c)
        if keys is not None and st == OK:
            answered.add(keys[i])
        b = min(n_bins - 1, max(0, int(t // width)))
        bin_q[b] += 1
        if st == OK:
            bin_lat[b].append(lat)
        else:
            bin_f[b] += 1
    timeline = []
    for b in range(n_bins):
        lats = sorted(bin_lat[b])
        q = bin_q[b]
        timeline.append(
            {
                "t": round(b * width, 3),
                "queries": q,
                "failures": bin_f[b],
                "availability": (q - bin_f[b]) / q if q else None,
                "p50_ms": _ms(percentile(lats, 50)),
                "p99_ms": _ms(percentile(lats, 99)),
            }
        )
    return Score(
        tallies, overall, headline, adc, strict, seen_t, unseen_t, not_sent, unfinished, timeline, width
    )


def harness_problems(
    scores: dict[str, Score],
    windows: Sequence[Window],
    expected_queries: int,
    tolerance: float = 0.02,
) -> list[str]:
    """Self-checks of the harness (not of the systems): a non-empty list means results are suspect.

    - every system got the expected number of queries (within ``tolerance``), none unsent, and
      every sent query has an outcome;
    - every window saw queries;
    - cold names asked during ``all_down`` (a deadline before its end) failed for every system:
      they are in no cache and no upstream answers, so a success means answers are not checked.
    """
    problems: list[str] = []
    for name, s in scores.items():
        q = s.overall.queries
        if abs(q - expected_queries) > tolerance * expected_queries:
            problems.append(f"{name}: {q} queries scored, expected {expected_queries} (±{tolerance:.0%})")
        if s.not_sent:
            problems.append(f"{name}: {s.not_sent} queries were never sent")
        if s.unfinished:
            problems.append(f"{name}: {s.unfinished} queries were sent but never got an outcome")
        for w, t in zip(windows, s.windows, strict=True):
            if t.queries == 0:
                problems.append(f"{name}: window {w.label!r} has no queries")
        st = s.all_down_cold_strict
        if st.queries and st.failures != st.queries:
            problems.append(
                f"{name}: {st.queries - st.failures} of {st.queries} cold names asked while every "
                "upstream was down were scored as answered: the answer check is broken"
            )
    return problems
