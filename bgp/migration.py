"""Make-before-break migration between two plans (pure): the steps and the checks between them.

Every step is a complete session set (with cluster ids), so each node's speaker config for a
step is ``speakers_for(inventory, step.sessions, step.cluster_ids)``. Order:

1. **add**: sessions the target has and the current topology lacks, all at once (nothing is
   lost by adding a session);
2. **reflect**: one step per reflector that starts reflecting on existing sessions (a mesh
   session becomes a client session) or changes cluster id: some speakers (BIRD) restart those
   sessions, so one reflector at a time, while the old paths still carry every route;
3. **gate**: wait until every node has every prefix over a session of the *target* topology;
4. **remove**: old sessions in batches, the check after every batch: nothing missing;
5. **unreflect**: reflectors that stop reflecting (RR -> mesh), one at a time, last.

The reverse migration (reflectors -> mesh) and plan changes (nodes or reflectors added or
removed) are the same algorithm with other inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from bgp.model import Session, SessionKind
from bgp.planner import Plan

__all__ = ["Step", "convergence_problems", "migration_steps"]

StepKind = Literal["add", "reflect", "gate", "remove", "unreflect"]


@dataclass(frozen=True)
class Step:
    kind: StepKind
    title: str
    sessions: frozenset[Session]  # the whole topology once this step is applied
    cluster_ids: Mapping[str, str] = field(default_factory=dict)
    touched: tuple[str, ...] = ()  # nodes whose config changes in this step

    def __str__(self) -> str:
        return f"{self.kind}: {self.title}"


def _touched(before: Iterable[Session], after: Iterable[Session]) -> tuple[str, ...]:
    delta = set(before) ^ set(after)
    return tuple(sorted({n for s in delta for n in (s.a, s.b)}))


def migration_steps(current: Plan, target: Plan, batch: int = 10) -> list[Step]:
    """The steps from ``current`` to ``target``; an empty list when there is nothing to do."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    now = set(current.sessions)
    by_pair = {s.pair: s for s in now}
    target_by_pair = {s.pair: s for s in target.sessions}
    steps: list[Step] = []

    def push(kind: StepKind, title: str, new: set[Session], ids: Mapping[str, str] | None = None) -> None:
        nonlocal now
        touched = _touched(now, new)
        if ids is not None:
            touched = tuple(sorted({*touched, *(n for n in ids if ids.get(n) != cids_now.get(n))}))
        if not touched:
            return
        steps.append(Step(kind, title, frozenset(new), dict(ids or cids_now), touched))
        now = set(new)

    cids_now: dict[str, str] = dict(current.cluster_ids)
    # 1. add
    fresh = {s for p, s in target_by_pair.items() if p not in by_pair}
    if fresh:
        ids = {**cids_now, **{r: c for r, c in target.cluster_ids.items() if r not in cids_now}}
        push("add", f"{len(fresh)} new sessions", now | fresh, ids)
        cids_now = ids
    # 2. reflect: per reflector, pairs that gain reflection from it, and cluster id changes
    gaining: dict[str, set[frozenset[str]]] = {}
    for p, s in target_by_pair.items():
        old = by_pair.get(p)
        if old is not None and old != s and s.kind is SessionKind.RR:
            gaining.setdefault(s.a, set()).add(p)
    recluster = {r for r, c in target.cluster_ids.items() if r in cids_now and cids_now[r] != c}
    for r in sorted(set(gaining) | recluster):
        pairs = gaining.get(r, set())
        new = {s for s in now if s.pair not in pairs} | {target_by_pair[p] for p in pairs}
        ids = {**cids_now, r: target.cluster_ids.get(r, cids_now.get(r, ""))}
        push("reflect", f"{r} reflects to {len(pairs)} clients (cluster id {ids[r]})", new, ids)
        cids_now = ids
    # 3. gate
    steps.append(
        Step("gate", "every node learns every prefix over target sessions", frozenset(now), dict(cids_now))
    )
    # 4. remove, in batches
    gone = sorted(s for s in now if s.pair not in target_by_pair)
    for i in range(0, len(gone), batch):
        part = set(gone[i : i + batch])
        push("remove", f"{len(part)} old sessions ({i + len(part)}/{len(gone)})", now - part)
    # 5. unreflect: sessions still differing from the target (reflection removed or reversed)
    losing: dict[str, set[frozenset[str]]] = {}
    for s in now:
        want = target_by_pair.get(s.pair)
        if want is not None and want != s and s.kind is SessionKind.RR:
            losing.setdefault(s.a, set()).add(s.pair)
    for r in sorted(losing):
        pairs = losing[r]
        new = {s for s in now if s.pair not in pairs} | {target_by_pair[p] for p in pairs}
        push("unreflect", f"{r} stops reflecting to {len(pairs)} peers", new)
    if now != set(target.sessions):  # pragma: no cover - the steps above are complete
        raise AssertionError("migration steps do not reach the target")
    if all(s.kind == "gate" for s in steps):
        return []
    return steps


def convergence_problems(
    learnt: Mapping[str, Mapping[str, Iterable[str]]],
    expected: Mapping[str, str],
    sessions: Iterable[Session],
    nodes: Iterable[str],
) -> list[str]:
    """What keeps a topology from being converged.

    ``learnt[node][prefix]`` is the set of neighbour node names ``node`` holds a path from;
    ``expected`` maps each prefix to the node originating it. Converged: every node in ``nodes``
    has every other node's prefix over a session of ``sessions``.
    """
    neighbours: dict[str, set[str]] = {}
    for s in sessions:
        neighbours.setdefault(s.a, set()).add(s.b)
        neighbours.setdefault(s.b, set()).add(s.a)
    problems = []
    for node in sorted(nodes):
        have = learnt.get(node, {})
        for prefix, origin in sorted(expected.items()):
            if origin == node:
                continue
            via = set(have.get(prefix, ())) & neighbours.get(node, set())
            if not via:
                problems.append(f"{node} lacks {prefix} (from {origin}) over target sessions")
    return problems
