"""The BGP controller: BGPTopologies, Nodes and NodeStates in; each node's
``NodeState.spec.bgp`` (the migration step its speaker runs), each BGPTopology's status (the plan
in force, the migration, conditions) and its finalizer out. The decisions are
``netkit.control.core.bgppublish``'s; this module reads the caches, calls it and writes what
differs.

One topology plans the cluster: where two select one node, the older keeps it and the other is
Degraded (Conflict) with nothing of it published.

``speaker: calico``: the same plan, steps and gates, but calico/node's BIRD runs the sessions:
each step is also written as Calico's resources (``netkit.control.core.calicopublish``: BGPPeers,
BGPConfiguration, Node labels and annotations), and the agents only observe calico/node's BIRD
and report what it runs, which the gates read as for any speaker. Calico's CRDs missing is
Degraded (CalicoMissing), nothing written. Deleting the topology gives the nodes back to
Calico's own node-to-node mesh before the finalizer goes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from netkit.control.core.bgpdesired import ALT_ADDRESS, BgpNode
from netkit.control.core.bgppublish import BgpDecision, config_from_dict, decide, topology_status
from netkit.control.core.calicopublish import (
    CALICO_GROUP,
    CALICO_VERSION,
    MANAGED_BY,
    TOPOLOGY_LABEL,
    CalicoWrites,
    calico_revert,
    calico_writes,
)
from netkit.control.core.conditions import Problem
from netkit.control.core.l2desired import removal_done
from netkit.control.core.rollout import rollout_status
from netkit.control.core.selectors import matches
from netkit.control.kube import api_status
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

    def __init__(self, *args: Any, core: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.core = core  # a CoreV1Api: Calico mode labels and annotates Nodes

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
            if taken:
                why = Problem("Conflict", f"its nodes are already planned by BGPTopology {', '.join(taken)}")
                new = rollout_status(o.generation, (why,), None, old, self.now())
                if {**old, **new} != old:
                    self.write_status(obj, {**old, **new}, old)
                continue
            for n in mine:
                claimed[n.name] = o.name
            if o.spec.get("speaker") == "calico":  # Calico has no sessions on alternate addresses
                mine = [replace(n, alt_address=None) for n in mine]
            node_reports = {n.name: reports.get(n.name) or {} for n in mine}
            decision = decide(o.name, o.generation, o.spec, mine, old, node_reports, self.now())
            if o.spec.get("speaker") == "calico":
                refused = self._calico_step(o.name, o.spec, decision)
                if refused is not None:  # nothing of this step reaches a node
                    new = rollout_status(o.generation, (refused,), None, old, self.now())
                    if {**old, **new} != old:
                        self.write_status(obj, {**old, **new}, old)
                    continue
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
                if o.spec.get("speaker") == "calico" and not self._calico_reverted(o.name):
                    continue
                self.set_finalizer(topologies[f"/{o.name}"], FINALIZER, False)
        return self.writes - before

    # -- Calico mode -------------------------------------------------------------------------------

    def _calico_read(self, topology: str) -> tuple[Obj | None, dict[str, Obj], dict[str, Obj]]:
        """BGPConfiguration "default" (None: there is none), our BGPPeers, the Node objects.
        Calico's CRDs not served raises LookupError."""
        co = self.api
        try:
            configuration = co.get_cluster_custom_object(
                CALICO_GROUP, CALICO_VERSION, "bgpconfigurations", "default"
            )
        except Exception as exc:
            if api_status(exc) != 404:
                raise
            configuration = None
        try:
            listed = co.list_cluster_custom_object(
                CALICO_GROUP,
                CALICO_VERSION,
                "bgppeers",
                label_selector=f"{MANAGED_BY[0]}={MANAGED_BY[1]},{TOPOLOGY_LABEL}={topology}",
            )
        except Exception as exc:
            if api_status(exc) == 404:
                raise LookupError(
                    f"{CALICO_GROUP}/{CALICO_VERSION} bgppeers is not served: is Calico installed"
                    " (on the Kubernetes datastore)?"
                ) from exc
            raise
        peers = {p["metadata"]["name"]: p for p in listed.get("items") or []}
        nodes = {n["metadata"]["name"]: n for n in self.informers["nodes"].snapshot().values()}
        return configuration, peers, nodes

    def _calico_step(self, topology: str, spec: Mapping[str, Any], decision: BgpDecision) -> Problem | None:
        """The step ``decision`` publishes, written as Calico's resources; a Problem (and nothing
        written) when Calico cannot hold it."""
        if not decision.publish:
            return None
        configs = {n: config_from_dict(e["config"]) for n, e in decision.publish.items()}
        try:
            configuration, peers, nodes = self._calico_read(topology)
            writes = calico_writes(topology, configs, int(spec["asn"]), configuration, peers, nodes)
        except LookupError as exc:
            return Problem("CalicoMissing", str(exc))
        except ValueError as exc:
            return Problem("NotExpressible", f"Calico cannot run this plan: {exc}")
        self._calico_apply(writes)
        return None

    def _calico_reverted(self, topology: str) -> bool:
        """Calico's own mesh back, our peers, labels and annotations gone: True once done (Calico
        not installed any more: nothing left to revert)."""
        try:
            configuration, peers, nodes = self._calico_read(topology)
        except LookupError:
            return True
        writes = calico_revert(topology, configuration, peers, nodes)
        self._calico_apply(writes)
        return writes.empty

    def _calico_apply(self, w: CalicoWrites) -> None:
        """Make before break: the configuration, new and changed peers, passwords and node labels,
        and only then the peers the step no longer has."""
        co = self.api
        if not w.configuration_last:
            self._calico_configuration(w)
        self._calico_peers(w)
        if w.configuration_last:
            self._calico_configuration(w)
        for name in w.delete_peers:
            try:
                co.delete_cluster_custom_object(CALICO_GROUP, CALICO_VERSION, "bgppeers", name)
            except Exception as exc:
                if api_status(exc) != 404:
                    raise
            self.writes += 1

    def _calico_configuration(self, w: CalicoWrites) -> None:
        co = self.api
        if w.configuration is not None:
            if w.create_configuration:
                body = {
                    "apiVersion": f"{CALICO_GROUP}/{CALICO_VERSION}",
                    "kind": "BGPConfiguration",
                    "metadata": {"name": "default"},
                    "spec": w.configuration,
                }
                co.create_cluster_custom_object(CALICO_GROUP, CALICO_VERSION, "bgpconfigurations", body)
            else:
                co.patch_cluster_custom_object(
                    CALICO_GROUP, CALICO_VERSION, "bgpconfigurations", "default", {"spec": w.configuration}
                )
            self.writes += 1

    def _calico_peers(self, w: CalicoWrites) -> None:
        """New and changed peers, passwords and node labels (the "make")."""
        co = self.api
        for name, peer in sorted(w.peers.items()):
            try:
                co.create_cluster_custom_object(CALICO_GROUP, CALICO_VERSION, "bgppeers", peer)
            except Exception as exc:
                if api_status(exc) != 409:
                    raise
                co.patch_cluster_custom_object(
                    CALICO_GROUP,
                    CALICO_VERSION,
                    "bgppeers",
                    name,
                    {"metadata": {"labels": peer["metadata"]["labels"]}, "spec": peer["spec"]},
                )
            self.writes += 1
        if w.secret is not None and self.core is not None:
            meta = w.secret["metadata"]
            try:
                self.core.create_namespaced_secret(meta["namespace"], w.secret)
            except Exception as exc:
                if api_status(exc) != 409:
                    raise
                self.core.patch_namespaced_secret(meta["name"], meta["namespace"], w.secret)
            self.writes += 1
        for node, patch in sorted(w.nodes.items()):
            if self.core is None:
                raise RuntimeError("Calico mode needs the Nodes API")
            self.core.patch_node(node, {"metadata": patch})
            self.writes += 1
