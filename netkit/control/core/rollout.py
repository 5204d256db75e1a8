"""Rolling a new generation of an object out to its nodes, at most ``maxUnavailable`` at a time
(pure), as a DaemonSet rolls pods and kubernetes-nmstate rolls a policy.

The controller publishes a generation per node (what that node is told to run); the node's agent
reports what it applied. A node is *done* when it reports the target generation Applied, *in
flight* while it is told the target and has not reported it, *failed* when it reports the target
Failed (it rolled back to what it had). In flight and failed nodes are the unavailable ones; a
step tells the next nodes (by name) the target while fewer than the budget are unavailable. One
failure stops the rollout: no further node is told until the object changes again (a new
target) or the failed node recovers; the status says which node, so nobody waits on a count.

Computed from what is published and reported, never from memory: a controller that restarts (or
the other replica, after a leader change) continues the same rollout, and a step repeated with
unchanged inputs tells nobody anything new.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netkit.control.core.conditions import DEGRADED, PROGRESSING, READY, Problem, set_condition

__all__ = ["Report", "Rollout", "budget", "rollout_status", "step"]

Obj = dict[str, Any]
# reasons that leave only some nodes, or only a NetworkAttachmentDefinition, out: the rest runs
PER_NODE = frozenset({"NodeUnusable", "NodeConflict", "MultusMissing", "AttachmentConflict"})


@dataclass(frozen=True, slots=True)
class Report:
    generation: int | None  # the generation the node last applied (or tried to)
    state: str  # Applied | Failed | Pending | Removed


@dataclass(frozen=True, slots=True)
class Rollout:
    publish: dict[str, int]  # node -> the generation it is told to run (selected nodes only)
    done: tuple[str, ...]
    in_flight: tuple[str, ...]
    failed: tuple[str, ...]
    waiting: tuple[str, ...]  # not yet told the target

    @property
    def complete(self) -> bool:
        return not (self.in_flight or self.failed or self.waiting)

    @property
    def stopped(self) -> bool:
        return bool(self.failed)


def budget(max_unavailable: int | str, selected: int) -> int:
    """Nodes that may be unavailable at once: a number, or a percentage of the selected nodes
    rounded up (as a DaemonSet's); at least 1."""
    if isinstance(max_unavailable, str):
        percent = int(max_unavailable.rstrip("%"))
        return max(1, math.ceil(selected * percent / 100))
    return max(1, max_unavailable)


def step(
    selected: Sequence[str],
    published: Mapping[str, int | None],
    reports: Mapping[str, Report],
    target: int,
    max_unavailable: int | str,
) -> Rollout:
    done, in_flight, failed, waiting = [], [], [], []
    publish: dict[str, int] = {}
    for node in sorted(selected):
        told = published.get(node)
        report = reports.get(node)
        if told != target:
            waiting.append(node)
            if told is not None:
                publish[node] = told
            continue
        publish[node] = target
        if report is not None and report.generation == target and report.state == "Applied":
            done.append(node)
        elif report is not None and report.generation == target and report.state == "Failed":
            failed.append(node)
        else:
            in_flight.append(node)
    room = 0 if failed else budget(max_unavailable, len(selected)) - len(in_flight)
    for node in list(waiting[: max(room, 0)]):
        publish[node] = target
        in_flight.append(node)
        waiting.remove(node)
    return Rollout(publish, tuple(done), tuple(sorted(in_flight)), tuple(failed), tuple(waiting))


def _counts(rollout: Rollout | None) -> Obj:
    """As a DaemonSet counts: selected, told the current generation (updated), applied it (ready)."""
    if rollout is None:
        return {"nodesSelected": 0, "nodesUpdated": 0, "nodesReady": 0, "nodesFailed": []}
    return {
        "nodesSelected": len(set(rollout.publish) | set(rollout.waiting)),
        "nodesUpdated": len(rollout.done) + len(rollout.in_flight) + len(rollout.failed),
        "nodesReady": len(rollout.done),
        "nodesFailed": list(rollout.failed),
    }


def rollout_status(
    generation: int,
    problems: Sequence[Problem],
    rollout: Rollout | None,
    old: Mapping[str, Any],
    now: str,
) -> Obj:
    """An object's status: counts, and Ready/Progressing/Degraded naming the cause. A problem
    whose reason is in ``PER_NODE`` leaves some nodes out and the rest runs; any other (a
    ``Conflict``, an unresolvable reference) keeps the object off every node."""
    conflict = [p for p in problems if p.reason not in PER_NODE]
    unusable = [p for p in problems if p.reason in PER_NODE]
    conditions = list(old.get("conditions") or [])
    counts = _counts(None if conflict else rollout)
    total, ready = counts["nodesSelected"], counts["nodesReady"]

    def put(type_: str, status: str, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, status, reason, message, generation=generation, now=now)  # type: ignore[arg-type]

    if conflict:
        reason = conflict[0].reason
        put(DEGRADED, "True", reason, "; ".join(p.message for p in conflict) + "; nothing of it is applied")
        put(PROGRESSING, "False", reason, f"not rolled out: {reason}")
        put(READY, "False", reason, conflict[0].message)
    elif rollout is not None and rollout.failed:
        failed = ", ".join(rollout.failed)
        put(DEGRADED, "True", "RolloutStopped", f"failed on {failed} (rolled back there); the rollout waits")
        put(PROGRESSING, "False", "RolloutStopped", f"{ready} of {total} nodes ready")
        put(READY, "False", "RolloutStopped", f"failed on {failed}")
    else:
        if unusable:
            put(DEGRADED, "True", unusable[0].reason, "; ".join(p.message for p in unusable))
        else:
            put(DEGRADED, "False", "AsExpected", "no conflict, no failed node")
        complete = rollout is None or rollout.complete
        if complete:
            put(
                PROGRESSING,
                "False",
                "RolloutComplete",
                f"{ready} of {total} nodes at generation {generation}",
            )
            put(READY, "True", "AllNodesReady", f"{ready} of {total} nodes ready")
        else:
            put(PROGRESSING, "True", "RollingOut", f"{counts['nodesUpdated']} of {total} nodes updated")
            put(READY, "False", "RollingOut", f"{ready} of {total} nodes ready")
    return {"observedGeneration": generation, **counts, "conditions": conditions}
