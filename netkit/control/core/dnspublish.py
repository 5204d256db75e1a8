"""What the DNS controller writes (pure): which DNSCache each node runs, each node's
``NodeState.spec.dns`` and each DNSCache's status from the nodes' reports.

A node runs one cache: where two DNSCaches select one node, the older (creation time, then name)
keeps it and the other is **NodeConflict** there, naming the holder (it runs on the rest). A DNSCache whose
configuration cannot be made (its upstream Service missing) is **Unresolved**: every node keeps
the configuration it runs, rather than being told "no upstreams". A cache being deleted, or no
longer selecting a node, is removed from that node: the agent stops the cache there.

A reload does not drop a query, so a new generation goes to every node at once
(``maxUnavailable`` 100%); a node whose cache refuses it reports Failed and keeps serving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netkit.control.core.conditions import Problem
from netkit.control.core.dnsdesired import DnsDesired
from netkit.control.core.l2desired import NetworkObject, Node
from netkit.control.core.selectors import matches

__all__ = ["DnsAssignment", "assign_caches", "node_dns"]

Obj = dict[str, Any]
CacheObject = NetworkObject  # name, generation, creationTimestamp, spec, deleting: the same shape


@dataclass(frozen=True, slots=True)
class DnsAssignment:
    node_cache: dict[str, str]  # node -> the DNSCache it runs
    selected: dict[str, tuple[str, ...]]  # DNSCache -> the nodes it runs on
    problems: dict[str, tuple[Problem, ...]]  # DNSCache -> why (some of) it is not applied


def assign_caches(
    nodes: Iterable[Node], caches: Iterable[CacheObject], desired: Mapping[str, DnsDesired]
) -> DnsAssignment:
    live = sorted((c for c in caches if not c.deleting), key=lambda c: (c.created, c.name))
    node_cache: dict[str, str] = {}
    selected: dict[str, list[str]] = {c.name: [] for c in live}
    problems: dict[str, list[Problem]] = {c.name: [] for c in live}
    node_list = sorted(nodes, key=lambda n: n.name)
    for cache in live:
        lost: dict[str, list[str]] = {}
        for node in node_list:
            if not matches(cache.spec.get("nodeSelector"), node.labels):
                continue
            holder = node_cache.get(node.name)
            if holder is not None:
                lost.setdefault(holder, []).append(node.name)
                continue
            node_cache[node.name] = cache.name
            selected[cache.name].append(node.name)
        for holder, where in lost.items():
            problems[cache.name].append(
                Problem("NodeConflict", f"nodes {', '.join(where)} already run DNSCache {holder}")
            )
        d = desired.get(cache.name)
        if d is not None and d.config is None:
            problems[cache.name].append(Problem("Unresolved", "; ".join(d.problems)))
    return DnsAssignment(
        node_cache,
        {k: tuple(v) for k, v in selected.items()},
        {k: tuple(v) for k, v in problems.items()},
    )


def node_dns(
    node: str,
    assignment: DnsAssignment,
    desired: Mapping[str, DnsDesired],
    generations: Mapping[str, int],
    previous: Mapping[str, Any] | None,
) -> Obj | None:
    """``node``'s ``spec.dns``: its cache's configuration at the current generation; what it had
    while that cannot be made; None once no cache selects it (or its cache is being deleted)."""
    name = assignment.node_cache.get(node)
    if name is None:
        return None
    d = desired.get(name)
    if d is None or d.config is None:
        return dict(previous) if previous and previous.get("name") == name else None
    return {"name": name, "generation": generations[name], "config": d.document()}
