"""The live-migration lab: N nodes in namespaces, each a real BIRD or FRR (alternating)
announcing its pod CIDR, migrated from the full mesh to route reflectors and back while every
node's kernel FIB is sampled every 80 ms; in between, one reflector is killed and restarted.

    node n<i>: underlay 198.18.0.<i>/24 (session address), 198.18.1.<i>/24 (alternate address,
               for sessions built beside old ones), pod CIDR 198.19.<i>.0/24, zone z<i mod 3>

``run_migration_lab`` returns a report whose ``ok`` says whether any required prefix was missing
from any FIB at any sample; ``netkit bgp migrate --lab`` and the integration test run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from bgp.core.inventory import Inventory, Node, Policy
from bgp.core.model import Timers
from bgp.core.planner import SessionPlan, mesh_plan, plan, speakers_for
from bgp.migrate import MigrationResult, run_migration, session_problems
from labs.bgpspeakers import BgpSpeaker, BirdSpeaker, FrrSpeaker
from labs.fibwatch import FibReport, FibWatch
from labs.l2lab import L2Lab
from labs.runid import RunDir

__all__ = ["MigrationLabReport", "lab_inventory", "migration_lab", "run_migration_lab", "speaker_class"]

Progress = Callable[[str], None]
SAMPLE_INTERVAL = 0.08  # s: a sweep of every FIB starts this often; the report has the real gap


def lab_inventory(nodes: int, policy: Policy | None = None, zones: int = 3) -> Inventory:
    return Inventory(
        tuple(
            Node(
                f"n{i}",
                f"198.18.0.{i}",
                f"198.18.0.{i}",
                64512,
                {"zone": f"z{i % zones}"},
                None,
                (f"198.19.{i}.0/24",),
                f"198.18.1.{i}",
            )
            for i in range(1, nodes + 1)
        ),
        policy or Policy(),
    )


@dataclass
class Phase:
    name: str
    seconds: float
    fib: FibReport
    migration: MigrationResult | None = None
    detail: str = ""


@dataclass
class MigrationLabReport:
    nodes: int
    kinds: dict[str, str] = field(default_factory=dict)
    reflectors: list[str] = field(default_factory=list)
    mesh_sessions: int = 0
    rr_sessions: int = 0
    phases: list[Phase] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(not p.fib.misses and not p.fib.errors for p in self.phases)

    @property
    def max_gap_ms(self) -> float:
        return max((p.fib.max_gap_ms for p in self.phases), default=0.0)

    def lines(self) -> list[str]:
        bird = sum(1 for k in self.kinds.values() if k == "bird")
        out = [
            f"{self.nodes} nodes ({bird} BIRD, {self.nodes - bird} FRR); reflectors: "
            + ", ".join(f"{r} ({self.kinds[r]})" for r in self.reflectors),
            f"sessions: full mesh {self.mesh_sessions} -> reflectors {self.rr_sessions}",
            f"{'phase':<34} {'seconds':>8} {'FIB samples':>12} {'longest gap ms':>15} {'missing':>8}",
        ]
        for p in self.phases:
            fib = p.fib
            out.append(
                f"{p.name:<34} {p.seconds:8.2f} {fib.samples:12d} {fib.max_gap_ms:15.0f} {len(fib.misses):8d}"
            )
            if p.detail:
                out.append(f"    {p.detail}")
        out.append("result: " + ("0 prefixes missing at any sample" if self.ok else "PREFIXES WENT MISSING"))
        return out


def speaker_class(i: int) -> type[BgpSpeaker]:
    """BIRD on odd node numbers, FRR on even ones."""
    return BirdSpeaker if i % 2 else FrrSpeaker


def _wait(check: Callable[[], list[str] | dict[str, set[str]]], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while True:
        problems = check()
        if not problems:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not reached in {timeout:.0f} s: {str(problems)[:800]}")
        time.sleep(0.1)


@contextmanager
def migration_lab(nodes: int, run: RunDir) -> Iterator[L2Lab]:
    """The namespaces of the module docstring, alternate addresses included."""
    with L2Lab(nodes=nodes, run_id=run.run_id) as lab:
        for node, ns in lab.node_ns.items():
            i = int(node[1:])
            with IPRoute(netns=ns, flags=0) as ipr:
                idx = ipr.link_lookup(ifname=lab.underlay[node])[0]
                ipr.addr("add", index=idx, address=f"198.18.1.{i}", prefixlen=24)
        yield lab


def run_migration_lab(
    nodes: int = 12,
    batch: int = 10,
    kill_reflector: bool = True,
    reverse: bool = True,
    progress: Progress = lambda _line: None,
    keep_dir: bool = False,
) -> MigrationLabReport:
    """Build the lab, run mesh -> reflectors (-> kill/restart a reflector) (-> mesh); report."""
    if not 4 <= nodes <= 200:
        raise ValueError("the lab takes 4 to 200 nodes")
    inv = lab_inventory(nodes)
    mesh, rr = mesh_plan(inv), plan(inv)
    timers = Timers.lab()
    report = MigrationLabReport(nodes, reflectors=sorted(rr.reflectors))
    report.mesh_sessions, report.rr_sessions = len(mesh.sessions), len(rr.sessions)
    prefixes = {n.name: set(n.prefixes) for n in inv.nodes}
    every = set().union(*prefixes.values())

    def required(down: frozenset[str] = frozenset()) -> dict[str, set[str]]:
        gone = set().union(*(prefixes[d] for d in down)) if down else set()
        return {n: every - prefixes[n] - gone for n in inv.names if n not in down}

    with RunDir(keep=keep_dir) as run, migration_lab(nodes, run) as lab, ExitStack() as stack:
        progress(f"lab {run.run_id}: {nodes} namespaces on a bridge, files in {run.path}")
        configs = speakers_for(inv, mesh.sessions, {}, timers)
        speakers: dict[str, BgpSpeaker] = {}
        for node in inv.names:
            i = int(node[1:])
            sp = speaker_class(i)(lab.ns(node), run.path, configs[node])
            speakers[node] = stack.enter_context(sp)  # started; stopped when the stack unwinds
            report.kinds[node] = "bird" if isinstance(sp, BirdSpeaker) else "frr"
        progress(f"started {nodes} speakers in a full mesh ({len(mesh.sessions)} sessions)")
        watch = stack.enter_context(FibWatch(lab.node_ns, SAMPLE_INTERVAL))
        watch.require_all(required())
        t = _wait(
            lambda: session_problems(configs, speakers) or watch.missing_now(), 90, "full mesh converged"
        )
        progress(f"full mesh converged in {t:.1f} s: every FIB holds every other node's pod CIDR")

        def phase(name: str, fn: Callable[[], tuple[MigrationResult | None, str]]) -> None:
            watch.reset()
            t0 = time.monotonic()
            result, detail = fn()
            seconds = time.monotonic() - t0
            time.sleep(3 * SAMPLE_INTERVAL)  # a few more samples after the last change
            fib = watch.reset()
            report.phases.append(Phase(name, seconds, fib, result, detail))
            progress(f"{name}: {seconds:.2f} s, {fib.summary()}")

        def step_progress(i: int, n: int, step: object) -> None:
            progress(f"  step {i}/{n}: {step}")

        def forward() -> tuple[MigrationResult, str]:
            res = run_migration(inv, mesh, rr, speakers, batch=batch, timers=timers, on_step=step_progress)
            return res, f"{len(res.steps)} steps"

        phase("mesh -> reflectors", forward)
        done = report.phases[-1].migration
        assert done is not None
        now = SessionPlan("rr", rr.reflectors, done.sessions, rr.nodes)  # where the reflector sessions run

        if kill_reflector:
            victim = next(
                (r for r in sorted(rr.reflectors) if report.kinds[r] == "bird"), sorted(rr.reflectors)[0]
            )
            down = frozenset([victim])

            def kill() -> tuple[None, str]:
                watch.require_all(required(down))
                speakers[victim].kill()
                cfg_now = speakers_for(inv, now.sessions, now.cluster_ids, timers)
                clients = [n for n in inv.names if victim in now.reflectors_of(n)]
                # every client sees the session to the dead reflector drop, and keeps every route
                _wait(
                    lambda: [
                        c
                        for c in clients
                        if speakers[c].sessions().get(cfg_now[c].neighbor(victim).address) == "Established"
                    ],
                    30,
                    f"clients noticing {victim} is gone",
                )
                time.sleep(2.0)
                return None, f"killed {victim} ({report.kinds[victim]}), reflector of {len(clients)} clients"

            phase(f"kill reflector {victim}", kill)

            def restart() -> tuple[None, str]:
                # the others keep everything meanwhile; the victim's own FIB and its prefix at the
                # others are required from the moment they are back
                speakers[victim].start()
                want = required()

                def back() -> list[str]:
                    fib = watch.latest
                    lacking = [f"{n} lacks {p}" for n, ps in want.items() for p in ps - fib.get(n, set())]
                    return session_problems({victim: speakers[victim].cfg}, speakers) + lacking

                t = _wait(back, 60, f"{victim} re-learning")
                watch.require_all(want)
                return None, f"{victim} back, re-learnt and re-advertised every prefix in {t:.1f} s"

            phase(f"restart reflector {victim}", restart)

        if reverse:

            def back() -> tuple[MigrationResult, str]:
                res = run_migration(
                    inv, now, mesh, speakers, batch=batch, timers=timers, on_step=step_progress
                )
                return res, f"{len(res.steps)} steps"

            phase("reflectors -> mesh", back)
    return report
