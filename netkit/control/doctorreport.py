"""The doctor's findings on the Node (as node-problem-detector reports them): its conditions of
type ``Netkit*`` in the Node's status, written with optimistic concurrency and leaving every
other condition alone, and Events on the Node for transitions and repairs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from netkit.control import kube
from netkit.doctor.core.model import PREFIX

__all__ = ["NodeReporter", "merge_conditions"]

log = logging.getLogger("netkit.doctor")

Condition = dict[str, Any]


def _sans_heartbeat(conds: Sequence[Condition]) -> list[Condition]:
    return [{k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in conds]


def merge_conditions(
    current: Sequence[Condition], ours: Sequence[Condition], heartbeat_due: bool, prune: bool = True
) -> list[Condition] | None:
    """The Node's conditions with ours replaced. ``prune`` (the agent, which runs every check
    of the node): a ``Netkit*`` condition not in ``ours`` is dropped, a check no longer run;
    without it (``netkit doctor --report --only ...``) the others stay. None when nothing but
    heartbeats changed and no heartbeat is due (nothing to write)."""
    mine = {c["type"] for c in ours}

    def replaced(c: Condition) -> bool:
        t = str(c.get("type", ""))
        return t.startswith(PREFIX) and (prune or t in mine)

    others = [c for c in current if not replaced(c)]
    before = sorted((c for c in current if replaced(c)), key=lambda c: c["type"])
    after = sorted(ours, key=lambda c: c["type"])
    if _sans_heartbeat(before) == _sans_heartbeat(after) and not heartbeat_due:
        return None
    return [*others, *after]


class NodeReporter:
    def __init__(
        self,
        api: Any,
        node: str,
        events: kube.EventRecorder | None,
        heartbeat: float = 60.0,
        prune: bool = True,
    ) -> None:
        self.core, self.node, self.events, self.heartbeat = kube.core(api), node, events, heartbeat
        self.prune = prune
        self._last_write = 0.0
        self._uid: str | None = None
        self._lock = threading.Lock()
        self.writes = 0

    def conditions(self, conditions: Sequence[Condition]) -> None:
        due = time.monotonic() - self._last_write >= self.heartbeat

        def change(node: dict[str, Any]) -> dict[str, Any] | None:
            self._uid = (node.get("metadata") or {}).get("uid")
            status = node.setdefault("status", {})
            merged = merge_conditions(status.get("conditions") or [], conditions, due, self.prune)
            if merged is None:
                return None
            status["conditions"] = merged
            return node

        with self._lock:
            try:
                written = kube.update_status(
                    lambda: kube.plain(self.core.read_node_status(self.node)),
                    lambda obj: kube.plain(self.core.replace_node_status(self.node, obj)),  # type: ignore[arg-type]
                    change,
                )
            except Exception as exc:  # the API unreachable: the next round writes them
                log.warning("node conditions not written", extra={"node": self.node, "error": str(exc)[:200]})
                return
            if written is not None:
                self._last_write = time.monotonic()
                self.writes += 1

    def event(self, type_: str, reason: str, message: str) -> None:
        if self.events is None:
            return
        if self._uid is None:  # Events name the Node by its uid, as kubelet's do
            try:
                self._uid = (kube.plain(self.core.read_node(self.node)).get("metadata") or {}).get("uid")
            except Exception as exc:
                log.warning("node not read", extra={"node": self.node, "error": str(exc)[:200]})
        ref = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "uid": self._uid or self.node},
        }
        self.events.record(ref, type_, reason, message)
