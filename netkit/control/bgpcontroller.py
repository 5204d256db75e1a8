"""The BGP controller: BGPTopologies, Nodes and NodeStates in; each node's
``NodeState.spec.bgp`` (the migration step its speaker runs), each BGPTopology's status (the plan
in force, the migration, conditions) and its finalizer out. The decisions are
``netkit.control.core.bgppublish``'s; this module reads the caches, calls it and writes what
differs.

One topology plans the cluster: where two select one node, the older keeps it and the other is
Degraded (Conflict) with nothing of it published. ``speaker: calico`` is not driven yet (Degraded,
nothing published).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from netkit.control.core.bgpdesired import ALT_ADDRESS, BgpNode
from netkit.control.core.bgppublish import decide, topology_status
from netkit.control.core.conditions import Problem
from netkit.control.core.l2desired import removal_done
from netkit.control.core.rollout import rollout_status
from netkit.control.core.selectors import matches
from netkit.control.reconciler import Reconciler, objects_from

__all__ = ["FINALIZER", "BgpController", "bgp_nodes_from"]

log = logging.getLogger("netkit.control.bgp")
FINALIZER = "netkit.io/bgp-nodes"
Obj = dict[str, Any]


def bgp_nodes_from(cache: Mapping[str, Obj]) -> list[BgpNode]:
    """Node objects as name, labels, InternalIP, pod CIDRs and the alternate address."""
    out = []
    for obj in cache.values():
        meta, status, spec = obj.get("metadata") or {}, obj.get("status") or {}, obj.get("spec") or {}
        internal = next(
            (a["address"] for a in status.get("addresses") or () if a.get("type") == "InternalIP"), None
        )
        cidrs = tuple(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
        alt = (meta.get("annotations") or {}).get(ALT_ADDRESS)
        out.append(BgpNode(meta["name"], dict(meta.get("labels") or {}), internal, cidrs, alt))
    return out


class BgpController(Reconciler):
    """Informers "bgptopologies", "nodes", "nodestates"."""

    plural = "bgptopologies"
    kind = "BGPTopology"
    name = "bgp"

    def reconcile(self) -> int:
        if not self.ready():
            return 0
        before = self.writes
        topologies = self.informers["bgptopologies"].snapshot()
        states = {o["metadata"]["name"]: o for o in self.informers["nodestates"].snapshot().values()}
        nodes = bgp_nodes_from(self.informers["nodes"].snapshot())
        objects = sorted(objects_from(topologies), key=lambda o: (o.created, o.name))
        published = {n: (s.get("spec") or {}).get("bgp") for n, s in states.items()}
        reports = {n: (s.get("status") or {}).get("bgp") or {} for n, s in states.items()}
        want: dict[str, Obj | None] = {}
        claimed: dict[str, str] = {}
        for o in objects:
            obj = topologies[f"/{o.name}"]
            old = obj.get("status") or {}
            if o.deleting:
                continue
            self.set_finalizer(obj, FINALIZER, True)
            mine = [n for n in nodes if matches(o.spec.get("nodeSelector"), n.labels)]
            taken = sorted({claimed[n.name] for n in mine if n.name in claimed})
            if taken or o.spec.get("speaker") == "calico":
                why = (
                    Problem("Conflict", f"its nodes are already planned by BGPTopology {', '.join(taken)}")
                    if taken
                    else Problem("NotSupported", "speaker: calico is not driven by this controller yet")
                )
                new = rollout_status(o.generation, (why,), None, old, self.now())
                if {**old, **new} != old:
                    self.write_status(obj, {**old, **new}, old)
                continue
            for n in mine:
                claimed[n.name] = o.name
            node_reports = {n.name: reports.get(n.name) or {} for n in mine}
            decision = decide(o.name, o.generation, o.spec, mine, old, node_reports, self.now())
            want.update(decision.publish)
            new = topology_status(decision, o.generation, old, self.now())
            if new != old:
                self.write_status(obj, new, old)
            if decision.status.get("phase") != old.get("phase"):
                log.info("bgp phase", extra={"topology": o.name, "phase": decision.status.get("phase")})
        known = {n.name for n in nodes}
        for node in sorted(known):
            previous = published.get(node)
            keep = previous if previous and previous.get("name") in claimed.values() else None
            new_entry = want.get(node, keep if node in claimed else None)
            if new_entry != previous:
                self.publish(node, "bgp", new_entry, exists=node in states)
                published[node] = new_entry
        for o in objects:
            if not o.deleting:
                continue
            on_nodes = any((e or {}).get("name") == o.name for e in published.values())
            applied = {
                n: {
                    a["name"]: str(a.get("state"))
                    for a in (s.get("status") or {}).get("applied") or []
                    if a.get("kind") == "BGPTopology"
                }
                for n, s in states.items()
            }
            if not on_nodes and removal_done(o.name, applied):
                self.set_finalizer(topologies[f"/{o.name}"], FINALIZER, False)
        return self.writes - before
