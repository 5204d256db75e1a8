"""The L2 node agent (effects): apply once (with probes and rollback), status, and the
long-running agent that repairs drift from netlink events.

The decisions are all in ``plan``; this module reads the kernel, asks the planner, applies what
it says, and measures. ``Agent.reconcile`` is one read -> plan -> apply round; the agent runs it
at start, after netlink events (debounced), after SIGHUP (reload), and every ``resync`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from netkit.base.netns import netns_exec
from netkit.l2 import filter as underlay
from netkit.l2.core.model import L2Network
from netkit.l2.core.plan import (
    AddFdb,
    AddNeigh,
    CreateLink,
    DelFdb,
    DelNeigh,
    Plan,
    network_status,
    plan,
    plan_restore,
    simulate,
)
from netkit.l2.core.state import ObservedState
from netkit.l2.kernel import ApplyError, ApplyResult, Event, Kernel, KernelError, Monitor
from netkit.l2.netlink import AF_BRIDGE

log = logging.getLogger("netkit.l2")

NUD_NOARP, NUD_PERMANENT = 0x40, 0x80


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------


class L2Metrics:
    """The agent's Prometheus metrics, on their own registry (so tests can have several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "netkit_l2_reconcile_seconds",
            "Time of one reconcile round (read the kernel, plan, apply), by trigger.",
            ["trigger"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.netlink_writes = Counter(
            "netkit_l2_netlink_writes",
            "Netlink requests that changed the kernel, by operation.",
            ["op"],
            registry=self.registry,
        )
        self.drift_repairs = Counter(
            "netkit_l2_drift_repairs",
            "Reconcile rounds after the first that found the kernel differing from the desired "
            "networks and changed it, by trigger (event, resync).",
            ["trigger"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "netkit_l2_reconcile_errors",
            "Reconcile rounds that failed (kernel unreadable, a netlink request refused).",
            registry=self.registry,
        )
        self.networks = Gauge(
            "netkit_l2_networks",
            "Networks on this node by state after the last reconcile "
            "(ok, missing, drifted, conflict, error, orphaned).",
            ["status"],
            registry=self.registry,
        )
        for s in ("ok", "missing", "drifted", "conflict", "error", "orphaned"):
            self.networks.labels(s).set(0)

    def count_writes(self, result: ApplyResult) -> None:
        for op, n in result.writes_by_op.items():
            self.netlink_writes.labels(op).inc(n)
        if result.filter_writes:
            self.netlink_writes.labels("filter").inc(result.filter_writes)


# ------------------------------------------------------------------------------------------
# One reconcile round
# ------------------------------------------------------------------------------------------


@dataclass
class Reconciled:
    plan: Plan
    observed: ObservedState
    writes: int = 0
    seconds: float = 0.0
    error: str | None = None


def reconcile_once(
    kernel: Kernel,
    networks: Sequence[L2Network],
    node: str,
    *,
    dry_run: bool = False,
    underlay_filter: bool = True,
    full: bool = False,
) -> tuple[Plan, ObservedState, ApplyResult]:
    """Read, plan, apply (unless ``dry_run``), then make the underlay filter match (``filter``
    module; one ``nft`` write when it changes). ``full``: read every table, not only those
    notifications announced. Raises ``KernelError``/``ApplyError``."""
    observed = kernel.read(full=full)
    pl = plan(networks, node, observed)
    result = ApplyResult() if dry_run or pl.empty else kernel.apply(pl)
    if underlay_filter and not dry_run:
        result.filter_writes += ensure_filter(kernel, networks, node, pl, full=full)
    return pl, observed, result


# (network objects, node) by their ids -> (the objects, which keeps the ids valid, the text)
_rendered: dict[tuple[tuple[int, ...], str], tuple[tuple[L2Network, ...], str | None]] = {}


def filter_text(networks: Sequence[L2Network], node: str, pl: Plan) -> str | None:
    """The underlay filter for the networks ``pl`` built on ``node`` (memoised by identity:
    1,000 networks take ~0.1 s to render and milliseconds to hash)."""
    nets = tuple(underlay.filtered_networks(networks, node, pl))
    key = (tuple(map(id, nets)), node)
    hit = _rendered.get(key)
    if hit is None or any(a is not b for a, b in zip(hit[0], nets, strict=True)):
        if len(_rendered) > 16:
            _rendered.clear()
        hit = _rendered[key] = (nets, underlay.render(nets, node))
    return hit[1]


def ensure_filter(
    kernel: Kernel, networks: Sequence[L2Network], node: str, pl: Plan, *, full: bool = True
) -> int:
    """Make the underlay filter match (``filter.ensure``); writes (0 or 1). Unless ``full``,
    a filter this kernel session already checked is not looked at again while no nftables
    change is announced (nfnetlink notifications)."""
    text = filter_text(networks, node, pl)
    if not full and kernel.filter_current(text):
        return 0
    try:
        writes = underlay.ensure(kernel.netns, text)
    except underlay.FilterError as exc:
        raise KernelError(f"underlay filter: {exc}") from exc
    kernel.filter_known(text)
    return writes


# ------------------------------------------------------------------------------------------
# Probes and rollback
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A reachability check over the new segment: ``check()`` is True when it got through."""

    name: str
    check: Callable[[], bool]


def ping_probe(target: str, netns: str | None = None, timeout: float = 1.0) -> Probe:
    """``ping -c1 -W1 IP``, inside ``netns`` (``ip netns exec``) when given.

    ``target`` is ``[NETNS/]IP``: the namespace of a port (a pod) to ping from, or ``netns``.
    """
    ns, _, ip = target.rpartition("/")
    ns = ns or (netns or "")
    ping = shutil.which("ping")
    if ping is None:
        raise FileNotFoundError("ping not found (Debian package iputils-ping)")
    cmd = [ping, "-c1", "-n", f"-W{max(1, round(timeout))}", ip]
    if ns:
        cmd = netns_exec(ns, cmd)

    def check() -> bool:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout + 5, check=False)
        return res.returncode == 0

    return Probe(f"ping {ip}" + (f" from {ns}" if ns else ""), check)


def run_probes(
    probes: Sequence[Probe],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 0.2,
) -> list[str]:
    """Run every probe until it succeeds or ``timeout`` passes; the names of those that failed."""
    pending = list(probes)
    deadline = clock() + timeout
    while pending:
        pending = [p for p in pending if not p.check()]
        if not pending or clock() + interval > deadline:
            break
        sleep(interval)
    return [p.name for p in pending]


@dataclass
class ApplyOutcome:
    plan: Plan
    applied: ApplyResult = field(default_factory=ApplyResult)
    error: str | None = None
    probe_failures: list[str] = field(default_factory=list)
    rolled_back: bool = False
    rollback_plan: Plan | None = None
    rollback_writes: int = 0
    rollback_error: str | None = None


def rollback(kernel: Kernel, checkpoint: ObservedState, node: str) -> tuple[Plan, int]:
    """Bring the owned objects back to ``checkpoint`` (nmstate-style). Returns plan and writes."""
    restore = plan_restore(checkpoint, kernel.read(), node)
    result = kernel.apply(restore) if not restore.empty else ApplyResult()
    left = plan_restore(checkpoint, kernel.read(), node)
    if not left.empty:
        raise KernelError("rollback incomplete:\n" + left.render())
    return restore, result.writes


def apply_with_rollback(
    kernel: Kernel,
    networks: Sequence[L2Network],
    node: str,
    probes: Sequence[Probe] = (),
    timeout: float = 10.0,
    *,
    run: Callable[[Sequence[Probe], float], list[str]] = run_probes,
    underlay_filter: bool = True,
) -> ApplyOutcome:
    """Checkpoint, apply, probe; roll back to the checkpoint if applying or a probe fails."""
    checkpoint = kernel.read()
    pl = plan(networks, node, checkpoint)
    outcome = ApplyOutcome(pl)
    old_filter: str | None = None
    try:
        if underlay_filter:
            old_filter = underlay.current(kernel.netns)
    except underlay.FilterError:
        old_filter = None
    try:
        outcome.applied = kernel.apply(pl) if not pl.empty else ApplyResult()
        if underlay_filter:
            outcome.applied.filter_writes += ensure_filter(kernel, networks, node, pl)
    except ApplyError as exc:
        outcome.error = str(exc)
        outcome.applied = exc.result
    except KernelError as exc:
        outcome.error = str(exc)
    if outcome.error is None and probes:
        outcome.probe_failures = run(probes, timeout)
    if outcome.error is not None or outcome.probe_failures:
        log.warning(
            "rolling back to the state before apply",
            extra={"node": node, "error": outcome.error, "probe_failures": outcome.probe_failures},
        )
        try:
            outcome.rollback_plan, outcome.rollback_writes = rollback(kernel, checkpoint, node)
            if underlay_filter:
                underlay.restore(kernel.netns, old_filter)
            outcome.rolled_back = True
        except (ApplyError, KernelError, underlay.FilterError) as exc:
            outcome.rollback_error = str(exc)
            log.error("rollback failed", extra={"node": node, "error": str(exc)})
    return outcome


# ------------------------------------------------------------------------------------------
# The agent
# ------------------------------------------------------------------------------------------

_STOP = object()
_RELOAD = object()
_RESYNC = object()


class Agent:
    """Keeps a namespace matching the desired networks: events, debounce, periodic resync.

    Netlink events arrive on a ``Monitor`` thread and are queued; the agent's loop waits for the
    first relevant one, then for ``debounce`` seconds of quiet (at most ``max_delay`` after the
    first), and reconciles once for the whole burst. A storm therefore costs one round per
    ``max_delay``. Events that cannot matter are dropped: bridge learning and ARP churn
    (dynamic FDB and neighbour entries) and entries on links the agent does not own.
    """

    def __init__(
        self,
        networks: Sequence[L2Network],
        node: str,
        netns: str | None = None,
        *,
        metrics: L2Metrics | None = None,
        resync: float = 30.0,
        debounce: float = 0.05,
        max_delay: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        underlay_filter: bool = True,
        on_round: Callable[[Reconciled], None] | None = None,
    ) -> None:
        self.underlay_filter = underlay_filter
        self.on_round = on_round  # told every round's outcome (the control plane's report)
        self.networks = list(networks)
        self.node = node
        self.netns = netns
        self.metrics = metrics or L2Metrics()
        self.resync = resync
        self.debounce = debounce
        self.max_delay = max_delay
        self.clock = clock
        self.kernel: Kernel | None = None
        self.monitor: Monitor | None = None
        self.rounds = 0
        self.last: Reconciled | None = None
        self._queue: queue.Queue[object] = queue.Queue()
        self._watched: set[int] = set()
        self._problems: tuple[str, ...] = ()
        self._retry = 0.5

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Reconciled:
        """Open the namespace, subscribe to events, converge once."""
        self.kernel = Kernel(self.netns)
        self.monitor = Monitor(self.netns, self._on_event)
        self.monitor.start()
        return self.reconcile("start")

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None

    def stop(self) -> None:
        """Ask ``run`` to return (thread-safe)."""
        self._queue.put(_STOP)

    def reload(self, networks: Sequence[L2Network]) -> None:
        """Replace the desired networks and reconcile (thread-safe)."""
        self._queue.put((_RELOAD, list(networks)))

    def converged(self) -> bool:
        """The last round read, planned and applied without an error (``/readyz``)."""
        last = self.last
        return last is not None and last.error is None

    def trigger_resync(self) -> None:
        self._queue.put(_RESYNC)

    # -- events ---------------------------------------------------------------------------

    def _on_event(self, ev: Event | None) -> None:
        self._queue.put(ev)

    def relevant(self, ev: object) -> bool:
        if ev is None:  # notifications lost: look at everything
            return True
        if not isinstance(ev, Event):
            return True
        if ev.kind in ("RTM_NEWNEIGH", "RTM_DELNEIGH"):
            if not ev.state & (NUD_NOARP | NUD_PERMANENT):
                return False  # learning and ARP churn
            if ev.family == AF_BRIDGE or ev.family in (2, 10):
                return ev.ifindex in self._watched
        return True

    # -- rounds ---------------------------------------------------------------------------

    def reconcile(self, trigger: str) -> Reconciled:
        """One round: read, plan, apply; metrics and logs. Never raises for kernel errors."""
        assert self.kernel is not None
        started = self.clock()
        observed = ObservedState()
        pl = Plan(self.node)
        rec: Reconciled
        try:
            pl, observed, result = reconcile_once(
                self.kernel,
                self.networks,
                self.node,
                underlay_filter=self.underlay_filter,
                full=trigger == "resync",
            )
            rec = Reconciled(pl, observed, result.writes)
            self.metrics.count_writes(result)
            self._retry = 0.5
        except (KernelError, ApplyError) as exc:
            writes = 0
            if isinstance(exc, ApplyError):
                self.metrics.count_writes(exc.result)
                writes = exc.writes
            rec = Reconciled(pl, observed, writes, error=str(exc))
            self.metrics.reconcile_errors.inc()
            log.error("reconcile failed", extra={"node": self.node, "trigger": trigger, "error": str(exc)})
        rec.seconds = self.clock() - started
        self.metrics.reconcile_seconds.labels(trigger).observe(rec.seconds)
        if self.rounds > 0 and trigger in ("event", "resync") and not pl.empty and rec.error is None:
            self.metrics.drift_repairs.labels(trigger).inc()
        self.rounds += 1
        self.last = rec
        if rec.error is None:
            self._after(rec, trigger)
        if self.on_round is not None:
            try:
                self.on_round(rec)
            except Exception:  # a report that fails must not stop the data plane
                log.exception("round report failed")
        return rec

    def _after(self, rec: Reconciled, trigger: str) -> None:
        assert self.kernel is not None
        # watch our own links (and FDB/neighbour entries on them) for events
        owned = {lk.name for lk in rec.observed.owned_links()}
        owned |= {op.link.name for op in rec.plan.ops if isinstance(op, CreateLink)}
        watched: set[int] = set()
        for name in owned:
            with contextlib.suppress(KernelError):
                watched.add(self.kernel.index(name))
        self._watched = watched
        # the state this round left behind, without reading the kernel again. A round that
        # applied its plan leaves nothing to do (planning again after applying finds no
        # operations: a tested property of the planner), so the statuses follow from the
        # plan's problems and which networks own links afterwards: only the link operations
        # need simulating, not 50,000 FDB entries.
        if rec.plan.empty:
            statuses = network_status(rec.plan, rec.observed)
        else:
            link_ops = [op for op in rec.plan.ops if not isinstance(op, (AddFdb, DelFdb, AddNeigh, DelNeigh))]
            done = Plan(self.node, (), rec.plan.problems, rec.plan.networks)
            statuses = network_status(done, simulate(rec.observed, link_ops))
        counts = dict.fromkeys(("ok", "missing", "drifted", "conflict", "error", "orphaned"), 0)
        for s in statuses:
            counts[s.status] += 1
        for k, v in counts.items():
            self.metrics.networks.labels(k).set(v)
        extra = {
            "node": self.node,
            "trigger": trigger,
            "ops": len(rec.plan.ops),
            "writes": rec.writes,
            "seconds": round(rec.seconds, 4),
        }
        if rec.plan.ops:
            log.info("reconciled: changed the kernel", extra={**extra, "summary": rec.plan.counts()})
            for op in rec.plan.ops:
                log.debug("op", extra={"network": op.network, "op": f"{op.symbol} {op.render()}"})
        else:
            log.debug("reconciled: nothing to do", extra=extra)
        problems = tuple(f"{p.network}: {p.render()}" for p in rec.plan.problems)
        if problems != self._problems:
            for p in rec.plan.problems:
                log.warning(p.message, extra={"node": self.node, "network": p.network, "problem": p.kind})
            self._problems = problems

    def run(self, stop: threading.Event | None = None) -> None:
        """Reconcile on events and every ``resync`` seconds until ``stop()`` (or ``stop`` is set)."""
        next_resync = self.clock() + self.resync
        while stop is None or not stop.is_set():
            wait = max(0.0, min(next_resync - self.clock(), 0.5 if stop is not None else 3600.0))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                if self.clock() >= next_resync:
                    rec = self.reconcile("resync")
                    next_resync = self.clock() + (self._backoff() if rec.error else self.resync)
                continue
            if item is _STOP:
                return
            if isinstance(item, tuple) and item and item[0] is _RELOAD:
                self.networks = list(item[1])
                self.reconcile("reload")
                continue
            if item is not _RESYNC and not self.relevant(item):
                continue
            if self._drain_burst():
                return
            rec = self.reconcile("event" if item is not _RESYNC else "resync")
            if rec.error:
                next_resync = min(next_resync, self.clock() + self._backoff())

    def _backoff(self) -> float:
        delay, self._retry = self._retry, min(self._retry * 2, self.resync)
        return delay

    def _drain_burst(self) -> bool:
        """Swallow the rest of an event burst; True if a stop request came in."""
        first = self.clock()
        while True:
            remaining = min(self.debounce, first + self.max_delay - self.clock())
            if remaining <= 0:
                return False
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            if isinstance(item, tuple) and item and item[0] is _RELOAD:
                self.networks = list(item[1])
