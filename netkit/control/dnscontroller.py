"""The DNS controller: DNSCaches, Nodes, Services and NodeStates in; each node's
``NodeState.spec.dns``, each DNSCache's status and its finalizer out. The decisions are
``netkit.control.core.dnsdesired`` and ``dnspublish``'s; this module reads the caches, calls
them and writes what differs (so a restart with unchanged inputs writes nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from netkit.control.core.dnsdesired import DnsDesired, desired_dns
from netkit.control.core.dnspublish import assign_caches, node_dns
from netkit.control.core.l2desired import removal_done
from netkit.control.core.rollout import Report, rollout_status, step
from netkit.control.reconciler import Reconciler, nodes_from, objects_from

__all__ = ["FINALIZER", "DnsController", "services_from"]

log = logging.getLogger("netkit.control.dns")
FINALIZER = "netkit.io/dns-nodes"
Obj = dict[str, Any]


def services_from(cache: Mapping[str, Obj]) -> dict[tuple[str, str], str]:
    """Services as (namespace, name) -> ClusterIP."""
    out = {}
    for obj in cache.values():
        meta = obj.get("metadata") or {}
        ip = (obj.get("spec") or {}).get("clusterIP")
        if ip:
            out[(str(meta.get("namespace")), str(meta.get("name")))] = str(ip)
    return out


class DnsController(Reconciler):
    """Informers "dnscaches", "nodes", "services", "nodestates"."""

    plural = "dnscaches"
    kind = "DNSCache"
    name = "dns"

    def reconcile(self) -> int:
        if not self.ready():
            return 0
        before = self.writes
        caches = self.informers["dnscaches"].snapshot()
        states = {o["metadata"]["name"]: o for o in self.informers["nodestates"].snapshot().values()}
        objects = objects_from(caches)
        nodes = nodes_from(self.informers["nodes"].snapshot())
        services = services_from(self.informers["services"].snapshot())
        for o in objects:
            if not o.deleting:
                self.set_finalizer(caches[f"/{o.name}"], FINALIZER, True)
        desired: dict[str, DnsDesired] = {
            o.name: desired_dns(o.spec, services) for o in objects if not o.deleting
        }
        assignment = assign_caches(nodes, objects, desired)
        generations = {o.name: o.generation for o in objects}
        published = {n: (s.get("spec") or {}).get("dns") for n, s in states.items()}
        for node in nodes:
            previous = published.get(node.name)
            new = node_dns(node.name, assignment, desired, generations, previous)
            if new != previous:
                self.publish(node.name, "dns", new, exists=node.name in states)
                published[node.name] = new
        reports = {
            n: {
                a["name"]: a
                for a in (s.get("status") or {}).get("applied") or []
                if a.get("kind") == "DNSCache"
            }
            for n, s in states.items()
        }
        for o in objects:
            obj = caches[f"/{o.name}"]
            if o.deleting:
                on_nodes = any((e or {}).get("name") == o.name for e in published.values())
                states_of = {n: {k: str(v.get("state")) for k, v in r.items()} for n, r in reports.items()}
                if not on_nodes and removal_done(o.name, states_of):
                    self.set_finalizer(obj, FINALIZER, False)
                continue
            selected = list(assignment.selected.get(o.name, ()))
            told = {
                n: e.get("generation") if (e := published.get(n)) and e.get("name") == o.name else None
                for n in selected
            }
            node_reports = {
                n: Report(r.get("generation"), str(r.get("state")))
                for n in selected
                if (r := reports.get(n, {}).get(o.name)) is not None
            }
            rollout = step(selected, told, node_reports, o.generation, "100%")
            old = obj.get("status") or {}
            problems = assignment.problems.get(o.name, ())
            new_status = rollout_status(o.generation, problems, rollout, old, self.now())
            if new_status != old:
                self.write_status(obj, new_status, old)
        return self.writes - before
