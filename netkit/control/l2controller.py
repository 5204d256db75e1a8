"""The L2 controller: L2Networks, Nodes and NodeStates in; each node's NodeState.spec.l2Networks,
each L2Network's status and its finalizer out. The decisions are ``netkit.control.core``'s; this
module reads the caches, calls them and writes what differs.

It acts only once every cache has listed (an empty cache before that is "not known yet", never
"nothing desired"), and only while it leads. Writes are merge patches of what changed, so a
restarted controller with unchanged inputs writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from netkit.control.core.conditions import Problem
from netkit.control.core.l2desired import Desired, NetworkObject, desired_l2, removal_done
from netkit.control.core.l2publish import node_networks
from netkit.control.core.nadpublish import NAD_GROUP, NAD_PLURAL, NAD_VERSION, NETWORK_LABEL, nad_writes
from netkit.control.core.rollout import Report, Rollout, rollout_status, step
from netkit.control.kube import api_status
from netkit.control.reconciler import Reconciler, nodes_from, objects_from

__all__ = ["FINALIZER", "L2Controller"]

log = logging.getLogger("netkit.control.l2")
FINALIZER = "netkit.io/l2-nodes"
Obj = dict[str, Any]


class L2Controller(Reconciler):
    """One reconcile pass at a time (``reconcile``), driven by the informers' events
    (informers "l2networks", "nodes", "nodestates")."""

    plural = "l2networks"
    kind = "L2Network"
    name = "l2"
    _nads_seen = False  # NetworkAttachmentDefinitions of ours exist (listed while they do)

    def reconcile(self) -> int:
        """One pass; the number of writes it made. Does nothing before every cache has listed."""
        if not self.ready():
            return 0
        before = self.writes
        networks = self.informers["l2networks"].snapshot()
        states = {o["metadata"]["name"]: o for o in self.informers["nodestates"].snapshot().values()}
        objects = objects_from(networks)
        nodes = nodes_from(self.informers["nodes"].snapshot())
        for o in objects:  # a finalizer on every live object: its removal must reach every node
            if not o.deleting:
                self.set_finalizer(networks[f"/{o.name}"], FINALIZER, True)
        attached = {n: list((s.get("status") or {}).get("endpoints") or []) for n, s in states.items()}
        desired = desired_l2(nodes, objects, attached)
        nad_problems = self._attachments(objects, desired)
        probes = {o.name: list(o.spec.get("probes") or []) for o in objects}
        published = {
            n: list((states.get(n) or {}).get("spec", {}).get("l2Networks") or [])
            for n in (x.name for x in nodes)
        }
        reports = {
            n: {
                a["name"]: a
                for a in (s.get("status") or {}).get("applied") or []
                if a.get("kind") == "L2Network"
            }
            for n, s in states.items()
        }
        rollouts: dict[str, Rollout] = {}
        for name, generation in desired.generations.items():
            selected = list(desired.selected.get(name, ()))
            told = {
                n: next((e["generation"] for e in published.get(n, []) if e["name"] == name), None)
                for n in selected
            }
            node_reports = {
                n: Report(r.get("generation"), str(r.get("state")))
                for n in selected
                if (r := reports.get(n, {}).get(name)) is not None
            }
            spec = networks[f"/{name}"].get("spec") or {}
            rollouts[name] = step(selected, told, node_reports, generation, spec.get("maxUnavailable", 1))
        for node in nodes:
            entries = node_networks(node.name, desired, rollouts, published.get(node.name, []), probes)
            if node.name not in states or entries != published.get(node.name, []):
                self.publish(node.name, "l2Networks", entries, exists=node.name in states)
        for o in objects:
            obj = networks[f"/{o.name}"]
            if o.deleting:
                on_nodes = any(e["name"] == o.name for entries in published.values() for e in entries)
                states_of = {n: {k: str(v.get("state")) for k, v in r.items()} for n, r in reports.items()}
                if not on_nodes and removal_done(o.name, states_of):
                    self.set_finalizer(obj, FINALIZER, False)
                continue
            old = obj.get("status") or {}
            problems = (*desired.problems.get(o.name, ()), *nad_problems.get(o.name, ()))
            new = rollout_status(o.generation, problems, rollouts.get(o.name), old, self.now())
            if new != old:
                self.write_status(obj, new, old)
        return self.writes - before

    def _attachments(self, objects: list[NetworkObject], desired: Desired) -> dict[str, tuple[Problem, ...]]:
        """The NetworkAttachmentDefinitions written (``nadpublish``; a deleting network's are
        deleted before its finalizer goes, in the same pass): the problems per network. They are
        listed only while some network has ``spec.attachment`` or ours were seen."""
        wanted = [o for o in objects if o.spec.get("attachment") and not o.deleting]
        if not self._nads_seen and not any(o.spec.get("attachment") for o in objects):
            return {}
        try:
            listed = self.api.list_cluster_custom_object(NAD_GROUP, NAD_VERSION, NAD_PLURAL)
        except Exception as exc:
            if api_status(exc) != 404:
                raise
            why = Problem(
                "MultusMissing",
                f"{NAD_GROUP}/{NAD_VERSION} {NAD_PLURAL} is not served (is Multus installed?): no "
                "NetworkAttachmentDefinition written; pods can still use netkit-cni directly",
            )
            return {o.name: (why,) for o in wanted}
        current = listed.get("items") or []
        blocked = {n for n, ps in desired.problems.items() if any(p.reason == "Conflict" for p in ps)}
        w = nad_writes(objects, blocked, current)
        for nad in w.puts:
            meta = nad["metadata"]
            try:
                self.api.create_namespaced_custom_object(
                    NAD_GROUP, NAD_VERSION, meta["namespace"], NAD_PLURAL, nad
                )
            except Exception as exc:
                if api_status(exc) != 409:
                    raise
                self.api.patch_namespaced_custom_object(
                    NAD_GROUP, NAD_VERSION, meta["namespace"], NAD_PLURAL, meta["name"], {"spec": nad["spec"]}
                )
            self.writes += 1
        for ns, name in w.deletes:
            try:
                self.api.delete_namespaced_custom_object(NAD_GROUP, NAD_VERSION, ns, NAD_PLURAL, name)
            except Exception as exc:
                if api_status(exc) != 404:
                    raise
            self.writes += 1
        self._nads_seen = bool(w.puts) or any(
            (n.get("metadata") or {}).get("labels", {}).get(NETWORK_LABEL) for n in current
        )
        return w.problems
