"""A BGPTopology and the Node objects -> the planner's inventory and the session plan (pure).

The inventory comes from the cluster, not a file: every node the topology selects, its
InternalIP as session address (and router id, for IPv4), its labels (the failure domain among
them), the ``netkit.io/route-reflector`` label as the "may reflect" mark and its IPv4 pod CIDRs as
the prefixes it originates, and the ``netkit.io/bgp-alternate-address`` annotation as the second
address a hitless migration builds new sessions on. The plan is made against the plan in force,
so a node joining never reshuffles the reflectors. What the planner refuses (a candidate without
the failure-domain label, too few domains for the redundancy asked) is returned as problems and
**no plan**: the caller keeps the plan in force and says Degraded; it never plans "nothing".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bgp.core.inventory import Inventory, InventoryError, parse_inventory
from bgp.core.planner import SessionPlan, mesh_plan, plan
from netkit.control.core.selectors import matches

__all__ = [
    "ALT_ADDRESS",
    "REFLECTOR_LABEL",
    "BgpNode",
    "TopologyDesired",
    "desired_bgp",
    "inventory_document",
]

REFLECTOR_LABEL = "netkit.io/route-reflector"
ALT_ADDRESS = "netkit.io/bgp-alternate-address"  # a second address: sessions built beside old ones


@dataclass(frozen=True, slots=True)
class BgpNode:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    internal_ip: str | None = None
    pod_cidrs: tuple[str, ...] = ()
    alt_address: str | None = None  # annotation netkit.io/bgp-alternate-address


@dataclass(frozen=True, slots=True)
class TopologyDesired:
    inventory: Inventory | None
    plan: SessionPlan | None  # None: keep the plan in force
    problems: tuple[str, ...]
    left_out: tuple[str, ...]  # selected nodes that cannot speak (no usable address)


def inventory_document(nodes: Iterable[BgpNode], spec: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The inventory as the planner's YAML document (what ``netkit bgp plan -f`` reads), and the
    selected nodes left out for want of an address."""
    policy = spec.get("policy") or {}
    top = policy.get("top") or {}
    doc_policy: dict[str, Any] = {
        "failure_domain": policy.get("failureDomainLabel", "topology.kubernetes.io/zone"),
        "redundancy": policy.get("redundancy", 2),
        "reflectors_per_domain": policy.get("reflectorsPerDomain", 1),
        "mode": policy.get("mode", "in-node"),
        "cluster_id": policy.get("clusterId", "per-reflector"),
        "levels": policy.get("levels", 1),
    }
    if doc_policy["levels"] == 2:
        doc_policy["top"] = {
            "failure_domain": top.get("failureDomainLabel", "topology.kubernetes.io/zone"),
            "reflectors_per_domain": top.get("reflectorsPerDomain", 1),
        }
    doc_nodes: list[dict[str, Any]] = []
    left_out: list[str] = []
    for n in sorted(nodes, key=lambda n: n.name):
        if not matches(spec.get("nodeSelector"), n.labels):
            continue
        if n.internal_ip is None:
            left_out.append(n.name)
            continue
        entry: dict[str, Any] = {"name": n.name, "address": n.internal_ip, "labels": dict(n.labels)}
        if ipaddress.ip_address(n.internal_ip).version == 6:
            left_out.append(n.name)  # an IPv6-only node has no router id to take: it needs one set
            continue
        if n.alt_address:
            entry["alt_address"] = n.alt_address
        mark = n.labels.get(REFLECTOR_LABEL)
        if mark in ("true", "false"):
            entry["reflector"] = mark == "true"
        v4 = [c for c in n.pod_cidrs if ipaddress.ip_network(c, strict=False).version == 4]
        if v4:
            entry["prefixes"] = v4
        doc_nodes.append(entry)
    return {"asn": spec["asn"], "nodes": doc_nodes, "policy": doc_policy}, left_out


def desired_bgp(
    nodes: Iterable[BgpNode], spec: Mapping[str, Any], in_force: SessionPlan | None = None
) -> TopologyDesired:
    doc, left_out = inventory_document(nodes, spec)
    said = [f"node {n} has no IPv4 InternalIP to speak BGP from" for n in left_out]
    if not doc["nodes"]:
        return TopologyDesired(
            None, None, (*said, "no node to plan for: the plan in force is kept"), tuple(left_out)
        )
    try:
        inv = parse_inventory(doc)
        mesh = spec.get("topology", "reflectors") == "mesh"
        session_plan = mesh_plan(inv) if mesh else plan(inv, in_force)
    except InventoryError as exc:
        return TopologyDesired(None, None, (*said, *exc.errors), tuple(left_out))
    return TopologyDesired(inv, session_plan, tuple(said), tuple(left_out))
