"""Run a migration (effects): apply each step's configs to live speakers and wait, between
steps, until the sessions are up and no node misses a prefix.

The speakers are anything with ``apply(SpeakerConfig)``, ``sessions()`` and ``routes(family)``
(the lab's BIRD and FRR managers; an agent on a real node would offer the same three calls).
The steps and the checks are pure (``bgp.core.migration``); this module only drives and waits. On a
timeout it stops with the problems it saw: the topology in force is the last step applied,
which is always a complete, working one (make before break). A speaker whose state cannot be
read counts as a problem until the timeout; one that refuses a step's config stops the run at
once, and the error names the nodes that already took it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bgp.core.inventory import Inventory
from bgp.core.migration import Step, expectations, migration_steps, realize, unmet
from bgp.core.model import Session, SpeakerConfig, Timers, speaker_configs
from bgp.core.planner import SessionPlan, node_infos

__all__ = ["MigrationError", "MigrationResult", "Speaker", "StepResult", "run_migration", "session_problems"]

log = logging.getLogger("netkit.bgp.migrate")


class PathLike(Protocol):
    @property
    def from_address(self) -> str | None: ...


class Speaker(Protocol):
    def apply(self, new: SpeakerConfig) -> None: ...

    def sessions(self) -> dict[str, str]: ...

    def routes(self, family: str = "ipv4") -> Mapping[str, Sequence[PathLike]]: ...


class MigrationError(RuntimeError):
    """A step did not settle. ``applied_on``: None when the step's config reached every node it
    touches; else the nodes it reached before applying failed (the speakers then run a mix)."""

    def __init__(self, step: Step, problems: Sequence[str], applied_on: Sequence[str] | None = None) -> None:
        self.step = step
        self.problems = list(problems)
        self.applied_on = None if applied_on is None else tuple(applied_on)
        shown = "\n  ".join(self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        if self.applied_on is None:
            where = "the topology in force is this step's"
        elif not self.applied_on:
            where = "it was applied nowhere: the topology in force is the previous step's"
        else:
            where = (
                f"it was applied only on {', '.join(self.applied_on)}: "
                "the speakers run a mix of the previous step and this one"
            )
        super().__init__(f"step '{step}' did not settle; {where}. Problems:\n  {shown}{more}")


@dataclass(frozen=True)
class StepResult:
    step: Step
    apply_s: float
    settle_s: float


@dataclass
class MigrationResult:
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    sessions: frozenset[Session] = frozenset()  # where the target now runs

    def table(self) -> list[str]:
        rows = [f"{'step':<60} {'apply s':>8} {'settle s':>9}"]
        for r in self.steps:
            rows.append(f"{str(r.step)[:60]:<60} {r.apply_s:8.2f} {r.settle_s:9.2f}")
        rows.append(f"{'total':<60} {self.seconds:18.2f}")
        return rows


def session_problems(configs: Mapping[str, SpeakerConfig], speakers: Mapping[str, Speaker]) -> list[str]:
    """Configured sessions that are not Established, seen from either end."""
    problems = []
    for name, cfg in sorted(configs.items()):
        if name not in speakers or not cfg.neighbors:
            continue
        states = speakers[name].sessions()
        for n in cfg.neighbors:
            state = states.get(n.address, "absent")
            if state != "Established":
                problems.append(f"{name}: session to {n.name} ({n.address}) is {state}")
    return problems


def learnt_routes(speakers: Mapping[str, Speaker], families: Sequence[str]) -> dict[str, dict[str, set[str]]]:
    """{node: {prefix: addresses of the neighbours it holds a path from}}."""
    out: dict[str, dict[str, set[str]]] = {}
    for name, sp in speakers.items():
        mine: dict[str, set[str]] = {}
        for family in families:
            for prefix, paths in sp.routes(family).items():
                via = {p.from_address for p in paths if p.from_address}
                mine.setdefault(prefix, set()).update(via)
        out[name] = mine
    return out


def run_migration(
    inv: Inventory,
    current: SessionPlan,
    target: SessionPlan,
    speakers: Mapping[str, Speaker],
    *,
    batch: int = 10,
    timers: Timers | None = None,
    step_timeout: float = 60.0,
    poll: float = 0.25,
    alt_nodes: frozenset[str] | None = None,
    on_step: Callable[[int, int, Step], None] | None = None,
    steps: list[Step] | None = None,
) -> MigrationResult:
    """Migrate the live speakers from ``current`` to ``target``; see the module docstring."""
    infos = node_infos(inv)
    if alt_nodes is None:
        alt_nodes = frozenset(n.name for n in infos if n.alt_address)
    steps = steps if steps is not None else migration_steps(current, target, batch, alt_nodes)
    final, _ = realize(current, target, alt_nodes)
    missing = sorted(set(inv.names) - set(speakers))
    if missing:
        raise ValueError(f"no speaker for {', '.join(missing)}")
    expected = [p for n in infos if n.name in target.nodes for p in n.prefixes]
    families = ["ipv4", "ipv6"] if any(":" in p for p in expected) else ["ipv4"]
    nodes = [n for n in inv.names if n in target.nodes]
    result = MigrationResult(sessions=frozenset(final))
    t0 = time.monotonic()
    before: frozenset[Session] = current.sessions
    for i, step in enumerate(steps, 1):
        if on_step is not None:
            on_step(i, len(steps), step)
        log.info(
            "migration step", extra={"step": i, "of": len(steps), "title": str(step), "touched": step.touched}
        )
        a0 = time.monotonic()
        configs = speaker_configs(infos, step.sessions, step.cluster_ids, timers)
        for n_applied, name in enumerate(step.touched):
            try:
                speakers[name].apply(configs[name])
            except Exception as exc:  # a dead or unreachable speaker: stop here, say where
                done = step.touched[:n_applied]
                raise MigrationError(
                    step,
                    [
                        f"{name}: applying the step's config failed: {exc}",
                        f"already applied on: {', '.join(done) or 'none'}",
                    ],
                    applied_on=done,
                ) from exc
        applied = time.monotonic()
        expects = expectations(step, before, final, infos, nodes)
        deadline = applied + step_timeout
        while True:
            try:
                problems = session_problems(configs, speakers)
                if not problems:
                    problems = unmet(expects, learnt_routes(speakers, families))
            except Exception as exc:  # a speaker that cannot be read now may answer at the next poll
                problems = [f"reading the speakers' state failed: {exc}"]
            if not problems:
                break
            if time.monotonic() > deadline:
                raise MigrationError(step, problems)
            time.sleep(poll)
        result.steps.append(StepResult(step, applied - a0, time.monotonic() - applied))
        before = step.sessions
    result.seconds = time.monotonic() - t0
    return result
