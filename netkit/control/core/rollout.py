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

__all__ = ["Report", "Rollout", "budget", "step"]


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
