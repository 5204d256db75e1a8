"""What every controller of ``netkit controller`` shares: the informers' caches it reads, the
"something changed" flag, the loop that reconciles while leading, and its writes (a merge patch
of one object, of its status, or of a node's NodeState, which several controllers fill).

A reconcile does nothing before every cache has listed: an empty cache before that is "not
known yet", never "nothing desired".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from netkit.control.core.crds import GROUP, VERSION
from netkit.control.core.l2desired import NetworkObject, Node
from netkit.control.kube import api_status

__all__ = ["Reconciler", "nodes_from", "objects_from"]

log = logging.getLogger("netkit.control")
Obj = dict[str, Any]


def nodes_from(cache: Mapping[str, Obj]) -> list[Node]:
    """Node objects as name, labels and InternalIP."""
    out = []
    for obj in cache.values():
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        internal = next(
            (a["address"] for a in status.get("addresses") or () if a.get("type") == "InternalIP"), None
        )
        out.append(Node(meta["name"], dict(meta.get("labels") or {}), internal))
    return out


def objects_from(cache: Mapping[str, Obj]) -> list[NetworkObject]:
    """A cache of cluster-scoped objects as records of name, generation, creation time, spec and
    "being deleted" (every kind the controllers own has that shape)."""
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


class Reconciler:
    """Subclasses set ``plural`` (the kind they own) and write ``reconcile``."""

    plural = ""
    kind = ""
    name = "reconciler"

    def __init__(
        self,
        api: Any,
        informers: Mapping[str, Any],
        now: Callable[[], str] | None = None,
        events: Any = None,
    ) -> None:
        self.api = api  # a CustomObjectsApi
        self.informers = informers
        self.events = events  # a kube.EventRecorder, or None
        self.now = now or (lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.dirty = threading.Event()
        self.writes = 0

    def changed(self, _kind: str = "", _obj: Obj | None = None) -> None:
        self.dirty.set()

    def ready(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers.values())

    def reconcile(self) -> int:
        raise NotImplementedError

    def run(self, leading: threading.Event, stop: threading.Event, period: float = 0.2) -> None:
        """Reconcile on every change (and every ``period`` while one is pending), while leading.

        A change seen while not leading, or before every cache has listed, stays pending: an
        informer whose list is empty calls no handler when it syncs, so a change dropped then
        would wait for the next one (or the 5-minute resync) to be acted on."""
        while not stop.is_set():
            if not self.dirty.wait(period):
                continue
            if not leading.is_set() or not self.ready():
                stop.wait(period)  # pending, looked at again in a moment (not a busy loop)
                continue
            self.dirty.clear()
            try:
                self.reconcile()
            except Exception as exc:  # the API refusing or gone: the next change or pass retries
                log.warning("reconcile failed", extra={"controller": self.name, "error": str(exc)[:300]})
                self.dirty.set()
                stop.wait(1.0)

    # -- writes ----------------------------------------------------------------------------------

    def patch(self, name: str, body: Obj, status: bool = False) -> None:
        if status:
            self.api.patch_cluster_custom_object_status(GROUP, VERSION, self.plural, name, body)
        else:
            self.api.patch_cluster_custom_object(GROUP, VERSION, self.plural, name, body)
        self.writes += 1

    def write_status(self, obj: Obj, new: Obj, old: Mapping[str, Any]) -> None:
        """``new`` as the object's status (a merge patch: keys gone from ``new`` are nulled), and
        an Event for every condition that changed its status (Warning for Degraded, Ready
        False not caused by a rollout)."""
        body = dict(new)
        for key in set(old) - set(new):
            body[key] = None
        self.patch(obj["metadata"]["name"], {"status": body}, status=True)
        if self.events is None:
            return
        before = {c["type"]: c for c in old.get("conditions") or []}
        for c in new.get("conditions") or []:
            was = before.get(c["type"])
            if was is not None and was.get("status") == c["status"] and was.get("reason") == c["reason"]:
                continue
            if was is None and c["type"] == "Degraded" and c["status"] == "False":
                continue  # "not degraded" on a new object is no news
            bad = (c["type"] == "Degraded" and c["status"] == "True") or (
                c["type"] == "Ready"
                and c["status"] == "False"
                and c["reason"] not in ("RollingOut", "Migrating", "Converging")
            )
            if c["type"] == "Progressing" and not bad:
                continue  # Ready tells it
            about = {"apiVersion": f"{GROUP}/{VERSION}", "kind": self.kind, **obj}
            message = f"{c['type']}={c['status']}: {c['message']}"
            self.events.record(about, "Warning" if bad else "Normal", c["reason"], message)

    def publish(self, node: str, field: str, value: Any, exists: bool) -> None:
        """``spec.<field>`` of ``node``'s NodeState set to ``value`` (None: removed), replaced
        whole (a JSON patch: a merge patch would keep keys the new value no longer has); the
        NodeState created if it does not exist yet (another controller creating it first: then
        patched)."""
        op = [{"op": "remove", "path": f"/spec/{field}"}] if value is None else []
        op = op or [{"op": "add", "path": f"/spec/{field}", "value": value}]
        if exists:
            self._json_patch(node, op)
            return
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "NodeState",
            "metadata": {"name": node},
            "spec": {"nodeName": node, **({field: value} if value is not None else {})},
        }
        try:
            self.api.create_cluster_custom_object(GROUP, VERSION, "nodestates", body)
        except Exception as exc:
            if api_status(exc) != 409:
                raise
            self._json_patch(node, op)
            return
        self.writes += 1

    def _json_patch(self, node: str, op: list[Obj]) -> None:
        self.api.patch_cluster_custom_object(
            GROUP, VERSION, "nodestates", node, op, _content_type="application/json-patch+json"
        )
        self.writes += 1

    def set_finalizer(self, obj: Obj, finalizer: str, present: bool) -> None:
        meta = obj["metadata"]
        have = list(meta.get("finalizers") or [])
        if present and finalizer not in have:
            self.patch(meta["name"], {"metadata": {"finalizers": [*have, finalizer]}})
        elif not present and finalizer in have:
            rest = [f for f in have if f != finalizer]
            self.patch(meta["name"], {"metadata": {"finalizers": rest or None}})
