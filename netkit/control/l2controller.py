"""The L2 controller: L2Networks, Nodes and NodeStates in; each node's NodeState.spec.l2Networks,
each L2Network's status and its finalizer out. The decisions are ``netkit.control.core``'s; this
module reads the caches, calls them and writes what differs.

It acts only once every cache has listed (an empty cache before that is "not known yet", never
"nothing desired"), and only while it leads. Writes are merge patches of what changed, so a
restarted controller with unchanged inputs writes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from netkit.control.core.crds import GROUP, VERSION
from netkit.control.core.l2desired import NetworkObject, Node, desired_l2, removal_done
from netkit.control.core.l2publish import node_networks, status_of
from netkit.control.core.rollout import Report, Rollout, step

__all__ = ["FINALIZER", "L2Controller", "nodes_from", "objects_from"]

log = logging.getLogger("netkit.control.l2")
FINALIZER = "netkit.io/l2-nodes"
Obj = dict[str, Any]


def nodes_from(cache: Mapping[str, Obj]) -> list[Node]:
    out = []
    for obj in cache.values():
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        internal = next(
            (a["address"] for a in status.get("addresses") or () if a.get("type") == "InternalIP"), None
        )
        out.append(Node(meta["name"], dict(meta.get("labels") or {}), internal))
    return out


def objects_from(cache: Mapping[str, Obj]) -> list[NetworkObject]:
    out = []
    for obj in cache.values():
        meta = obj.get("metadata") or {}
        out.append(
            NetworkObject(
                meta["name"],
                int(meta.get("generation") or 1),
                str(meta.get("creationTimestamp") or ""),
                obj.get("spec") or {},
                deleting=bool(meta.get("deletionTimestamp")),
            )
        )
    return out


class L2Controller:
    """One reconcile pass at a time (``reconcile``), driven by the informers' events."""

    def __init__(self, api: Any, informers: Mapping[str, Any], now: Any = None) -> None:
        self.api = api  # a CustomObjectsApi
        self.informers = informers  # "l2networks", "nodes", "nodestates" -> Informer
        self.now = now or (lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.dirty = threading.Event()
        self.writes = 0

    def changed(self, _kind: str = "", _obj: Obj | None = None) -> None:
        self.dirty.set()

    def ready(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers.values())

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
            meta = networks[f"/{o.name}"]["metadata"]
            if not o.deleting and FINALIZER not in (meta.get("finalizers") or []):
                self._patch(
                    o.name, {"metadata": {"finalizers": [*(meta.get("finalizers") or []), FINALIZER]}}
                )
        desired = desired_l2(nodes, objects)
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
            entries = node_networks(node.name, desired, rollouts, published.get(node.name, []))
            if node.name not in states:
                self._create_state(node.name, entries)
            elif entries != published.get(node.name, []):
                self._patch_state(node.name, {"spec": {"l2Networks": entries}})
        for o in objects:
            obj = networks[f"/{o.name}"]
            if o.deleting:
                on_nodes = any(e["name"] == o.name for entries in published.values() for e in entries)
                states_of = {n: {k: str(v.get("state")) for k, v in r.items()} for n, r in reports.items()}
                if not on_nodes and removal_done(o.name, states_of):
                    rest = [f for f in obj["metadata"].get("finalizers") or [] if f != FINALIZER]
                    self._patch(o.name, {"metadata": {"finalizers": rest or None}})
                continue
            old = obj.get("status") or {}
            new = status_of(o.name, o.generation, desired, rollouts.get(o.name), old, self.now())
            if new != old:
                self._patch(o.name, {"status": new}, status=True)
        return self.writes - before

    # -- writes ----------------------------------------------------------------------------------

    def _patch(self, name: str, body: Obj, status: bool = False) -> None:
        if status:
            self.api.patch_cluster_custom_object_status(GROUP, VERSION, "l2networks", name, body)
        else:
            self.api.patch_cluster_custom_object(GROUP, VERSION, "l2networks", name, body)
        self.writes += 1

    def _create_state(self, node: str, entries: list[Obj]) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "NodeState",
            "metadata": {"name": node},
            "spec": {"nodeName": node, "l2Networks": entries},
        }
        self.api.create_cluster_custom_object(GROUP, VERSION, "nodestates", body)
        self.writes += 1

    def _patch_state(self, node: str, body: Obj) -> None:
        self.api.patch_cluster_custom_object(GROUP, VERSION, "nodestates", node, body)
        self.writes += 1

    def run(self, leading: threading.Event, stop: threading.Event, period: float = 0.2) -> None:
        """Reconcile on every change (and every ``period`` while one is pending), while leading."""
        while not stop.is_set():
            self.dirty.wait(period)
            if not leading.is_set() or not self.dirty.is_set():
                continue
            self.dirty.clear()
            try:
                self.reconcile()
            except Exception as exc:  # the API refusing or gone: the next change or pass retries
                log.warning("reconcile failed", extra={"error": str(exc)[:300]})
                self.dirty.set()
                stop.wait(1.0)
