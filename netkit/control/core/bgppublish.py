"""What the BGP controller decides (pure): which migration step every node's speaker runs, when
a step may give way to the next, and the BGPTopology's status.

The plan in force lives in the BGPTopology's status (``status.plan``, where its sessions run,
alternate address pairs included), so a restarted controller, or the other replica, continues
from it, and the planner is run against it, so a node joining never reshuffles the reflectors.
A change is a **migration** (``bgp.core.migration``): make-before-break steps, each a complete
topology; every node is told the step's configuration (``NodeState.spec.bgp``, with a revision
naming the step) and the next step starts only once every node reports that revision applied,
every configured session Established and every prefix held as the step requires. The first
plan is a migration from nothing; a return to the mesh is a migration too.

A migration runs to its end towards the target it started with (stored in ``status.migration``):
an edit meanwhile is planned once it is done. A step that does not converge within
``stepTimeoutSeconds`` stops the migration (phase Stopped, Degraded): the nodes keep running
that step's complete topology, nothing is removed, and an edit starts over from there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bgp.core.inventory import Inventory
from bgp.core.migration import Step, expectations, migration_steps, unmet
from bgp.core.model import Neighbor, Role, SpeakerConfig, Timers, speaker_configs
from bgp.core.planner import SessionPlan, node_infos, plan_from_dict
from netkit.control.core.bgpdesired import BgpNode, desired_bgp
from netkit.control.core.conditions import DEGRADED, PROGRESSING, READY, Problem, set_condition

__all__ = [
    "BgpDecision",
    "config_from_dict",
    "config_to_dict",
    "decide",
    "revision_of",
    "timers_of",
    "topology_status",
]

Obj = dict[str, Any]
EMPTY = SessionPlan("mesh", {}, frozenset(), ())


def timers_of(spec: Mapping[str, Any]) -> Timers:
    t = spec.get("timers") or {}
    return Timers(
        hold=int(t.get("holdSeconds", 90)),
        keepalive=int(t.get("keepaliveSeconds", 30)),
        connect_retry=int(t.get("connectRetrySeconds", 5)),
    )


def config_to_dict(cfg: SpeakerConfig) -> Obj:
    """A speaker's configuration as ``NodeState.spec.bgp.config``."""
    return {
        "node": cfg.node,
        "routerId": cfg.router_id,
        "address": cfg.address,
        "asn": cfg.asn,
        "prefixes": list(cfg.prefixes),
        **({"clusterId": cfg.cluster_id} if cfg.cluster_id else {}),
        "timers": {
            "holdSeconds": cfg.timers.hold,
            "keepaliveSeconds": cfg.timers.keepalive,
            "connectRetrySeconds": cfg.timers.connect_retry,
        },
        "neighbors": [
            {
                "name": n.name,
                "address": n.address,
                "asn": n.asn,
                "role": str(n.role),
                **({"localAddress": n.local_address} if n.local_address else {}),
            }
            for n in cfg.neighbors
        ],
    }


def config_from_dict(raw: Mapping[str, Any]) -> SpeakerConfig:
    """The agent's side: ``spec.bgp.config`` back to the model the speakers' controls take."""
    return SpeakerConfig(
        node=str(raw["node"]),
        router_id=str(raw["routerId"]),
        address=str(raw["address"]),
        asn=int(raw["asn"]),
        neighbors=tuple(
            Neighbor(
                str(n["name"]),
                str(n["address"]),
                int(n["asn"]),
                Role(str(n["role"])),
                None,
                n.get("localAddress"),
            )
            for n in raw.get("neighbors", ())
        ),
        prefixes=tuple(str(p) for p in raw.get("prefixes", ())),
        cluster_id=raw.get("clusterId"),
        timers=timers_of(raw),
    )


def revision_of(step: Step) -> str:
    """A name for a step's topology, the same on every node (what the agents report back)."""
    body = json.dumps(
        [sorted([s.a, s.b, str(s.kind), s.alt] for s in step.sessions), sorted(step.cluster_ids.items())]
    )
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def _same(a: SessionPlan, b: SessionPlan) -> bool:
    """The same topology, whichever address pair a session runs on."""
    ends = {(s.a, s.b, s.kind) for s in a.sessions} == {(s.a, s.b, s.kind) for s in b.sessions}
    return ends and a.cluster_ids == b.cluster_ids


def _learnt(report: Mapping[str, Any]) -> dict[str, set[str]]:
    return {str(r["prefix"]): set(r.get("via") or ()) for r in report.get("routes") or ()}


@dataclass(frozen=True)
class BgpDecision:
    publish: dict[str, Obj]  # node -> its spec.bgp (selected nodes only; others: removed)
    status: Obj  # plan, migration, phase, reflectors, sessions (conditions are the caller's)
    problems: tuple[Problem, ...]
    waiting: tuple[str, ...]  # why the step has not converged yet (empty: converged)
    steps: int  # of the migration under way (0: none)


def _in_force(status: Mapping[str, Any], known: set[str]) -> SessionPlan:
    """The plan in force, without the sessions of nodes that are gone (they cannot speak)."""
    raw = status.get("plan")
    if not raw:
        return EMPTY
    p = plan_from_dict(raw, "status.plan")
    sessions = frozenset(s for s in p.sessions if s.a in known and s.b in known)
    reflectors = {k: v for k, v in p.reflectors.items() if k in known}
    return SessionPlan(p.kind, reflectors, sessions, tuple(n for n in p.nodes if n in known))


def _seconds_since(stamp: str | None, now: str) -> float:
    if not stamp:
        return 0.0
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (datetime.strptime(now, fmt) - datetime.strptime(stamp, fmt)).total_seconds()


def decide(
    name: str,
    generation: int,
    spec: Mapping[str, Any],
    nodes: Iterable[BgpNode],
    status: Mapping[str, Any],
    reports: Mapping[str, Mapping[str, Any]],
    now: str,
) -> BgpDecision:
    """One pass: ``status`` is the BGPTopology's as read, ``reports`` each node's ``status.bgp``."""
    nodes = list(nodes)
    in_force = _in_force(status, {n.name for n in nodes})
    desired = desired_bgp(nodes, spec, in_force if in_force.sessions else None)
    problems = [Problem("PlanRefused", p) for p in desired.problems if desired.plan is None]
    problems += [Problem("NodeUnusable", p) for p in desired.problems if desired.plan is not None]
    migration = dict(status.get("migration") or {})
    inv: Inventory | None = desired.inventory
    if inv is None:  # nothing to plan with: what the nodes run stays, and so does what is published
        return BgpDecision({}, dict(status), tuple(problems), (), 0)
    assert desired.plan is not None
    target = plan_from_dict(migration["target"], "status.migration.target") if migration else desired.plan
    infos = node_infos(inv)
    alt = frozenset(n.name for n in inv.nodes if n.alt_address)
    batch = int((spec.get("migration") or {}).get("batch", 4))
    steps = (
        migration_steps(in_force, target, batch=batch, alt_nodes=alt) if not _same(in_force, target) else []
    )
    timers = timers_of(spec)
    names = [n.name for n in inv.nodes]
    if not steps:  # steady: the plan in force, as it runs
        step = Step("gate", "the plan in force", in_force.sessions, in_force.cluster_ids)
        index, before = 0, in_force.sessions
    else:
        index = min(int(migration.get("step", 0)), len(steps) - 1) if migration else 0
        step = steps[index]
        before = steps[index - 1].sessions if index else in_force.sessions
    revision = revision_of(step)
    configs = speaker_configs(infos, step.sessions, step.cluster_ids, timers)
    publish = {
        n: {
            "name": name,
            "generation": generation,
            "revision": revision,
            "step": index + 1 if steps else 0,
            "steps": len(steps),
            "speaker": str(spec.get("speaker", "bird")),
            "config": config_to_dict(configs[n]),
        }
        for n in names
    }
    waiting: list[str] = []
    learnt: dict[str, dict[str, set[str]]] = {}
    for n in names:
        r = reports.get(n) or {}
        if r.get("revision") != revision:
            waiting.append(f"{n} has not applied revision {revision} yet")
            continue
        if r.get("state") == "Failed":
            why = f"{n}: {r.get('message', 'the speaker refused the configuration')}"
            waiting.append(why)
            problems.append(Problem("NodeFailed", why))
            continue
        configured = len(configs[n].neighbors)
        if int(r.get("sessionsEstablished", 0)) < configured:
            waiting.append(f"{n}: {r.get('sessionsEstablished', 0)} of {configured} sessions Established")
        learnt[n] = _learnt(r)
    if not waiting:
        final = steps[-1].sessions if steps else in_force.sessions
        waiting += unmet(expectations(step, before, final, infos, names), learnt)[:20]
    new_status: Obj = {k: v for k, v in status.items() if k not in ("migration",)}
    shown = in_force
    phase = "Converged" if not waiting else "Planned"
    if steps:
        started = migration.get("stepStartedAt") if migration.get("step", 0) == index else None
        migration = {
            "target": target.to_dict(),
            "step": index,
            "steps": len(steps),
            "title": str(step),
            "stepStartedAt": started or now,
        }
        timeout = int((spec.get("migration") or {}).get("stepTimeoutSeconds", 120))
        if not waiting and index + 1 < len(steps):
            migration.update(step=index + 1, title=str(steps[index + 1]), stepStartedAt=now)
            phase = "Migrating"
        elif not waiting:  # the last step converged: the target is in force, where it runs
            shown = SessionPlan(target.kind, target.reflectors, step.sessions, target.nodes)
            new_status["plan"] = shown.to_dict()
            migration = {}
            phase = "Converged"
        elif _seconds_since(migration["stepStartedAt"], now) > timeout:
            phase = "Stopped"
            problems.append(
                Problem(
                    "MigrationStopped",
                    f"step {index + 1}/{len(steps)} ({step}) not converged in {timeout} s: "
                    + "; ".join(waiting[:5]),
                )
            )
        else:
            phase = "Migrating"
        if migration:
            new_status["migration"] = migration
    new_status.update(
        phase=phase,
        reflectors=sorted(shown.reflectors),
        sessions=len(shown.sessions),
    )
    return BgpDecision(publish, new_status, tuple(problems), tuple(waiting), len(steps))


def topology_status(decision: BgpDecision, generation: int, old: Mapping[str, Any], now: str) -> Obj:
    """The whole status: the decision's fields, node counts and Ready/Progressing/Degraded."""
    conditions = list(old.get("conditions") or [])

    def put(type_: str, state: str, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, state, reason, message, generation=generation, now=now)  # type: ignore[arg-type]

    blocking = [p for p in decision.problems if p.reason != "NodeUnusable"]
    if decision.problems:
        put(DEGRADED, "True", decision.problems[0].reason, "; ".join(p.message for p in decision.problems))
    else:
        put(DEGRADED, "False", "AsExpected", "the plan is made and every step converged in time")
    phase = decision.status.get("phase")
    if decision.steps:
        m = decision.status.get("migration") or {}
        put(
            PROGRESSING,
            "True",
            "Migrating",
            f"step {m.get('step', 0) + 1}/{decision.steps}: {m.get('title', '')}",
        )
        put(READY, "False", "Migrating", "; ".join(decision.waiting[:3]) or "moving to the next step")
    elif decision.waiting or blocking:
        why = "; ".join([*(p.message for p in blocking), *decision.waiting][:3])
        put(
            PROGRESSING,
            "True" if decision.waiting else "False",
            "Converging" if decision.waiting else blocking[0].reason,
            why,
        )
        put(READY, "False", "Converging" if decision.waiting else blocking[0].reason, why)
    else:
        put(PROGRESSING, "False", "Converged", f"{decision.status.get('sessions', 0)} sessions Established")
        put(READY, "True", "Converged", "every node holds every prefix over the plan in force")
    total = len(decision.publish)
    stuck = {w.split(" ")[0].rstrip(":") for w in decision.waiting}
    failed = sorted(
        n
        for n in decision.publish
        if any(w.startswith(f"{n}: ") and "refused" in w for w in decision.waiting)
    )
    return {
        **decision.status,
        "phase": phase,
        "observedGeneration": generation,
        "nodesSelected": total,
        "nodesUpdated": total,
        "nodesReady": len([n for n in decision.publish if n not in stuck]),
        "nodesFailed": failed,
        "conditions": conditions,
    }
