"""The node agent's L2 part: its own NodeState in (``spec.l2Networks``, published by the
controller), the existing L2 reconcile (``netkit.l2.agent.Agent``) on the kernel, and what each
round did back out (``status.applied``, a heartbeat).

The L2 agent starts only once the NodeState has been read: before that nothing is known, and a
node whose NodeState does not exist yet is waited for, never taken as "no networks". While the API
server is unreachable the informer keeps the last NodeState, so the kernel stays as it is and the
L2 agent goes on repairing drift against it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from netkit.control.core.crds import GROUP, VERSION
from netkit.control.core.l2publish import network_of
from netkit.l2.agent import Agent, Reconciled
from netkit.l2.core.model import L2Network

__all__ = ["NodeL2Agent", "applied_report"]

log = logging.getLogger("netkit.control.agent")
Obj = dict[str, Any]


def applied_report(entries: list[Obj], rec: Reconciled) -> list[Obj]:
    """``status.applied`` after a round: every entry Applied at its generation, or Failed with why
    (the round's error, or the planner's problem with that network)."""
    problems = {p.network: p.render() for p in rec.plan.problems}
    out = []
    for e in entries:
        why = rec.error or problems.get(e["name"])
        out.append(
            {
                "kind": "L2Network",
                "name": e["name"],
                "generation": e["generation"],
                "state": "Failed" if why else "Applied",
                "message": why or f"{rec.writes} writes in the last round",
                "writes": rec.writes,
            }
        )
    return out


class NodeL2Agent:
    """``node``'s NodeState to its kernel (in ``netns``) and back."""

    def __init__(
        self,
        api: Any,
        informer_factory: Callable[[Callable[[str, Obj], None]], Any],
        node: str,
        netns: str | None = None,
        *,
        resync: float = 30.0,
        now: Callable[[], str] | None = None,
    ) -> None:
        self.api, self.node, self.netns, self.resync = api, node, netns, resync
        self.now = now or (lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.informer = informer_factory(self._changed)
        self.entries: list[Obj] | None = None  # None: not known yet
        self.l2: Agent | None = None
        self.stop_event = threading.Event()
        self.rounds = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _changed(self, _kind: str, obj: Obj) -> None:
        if obj.get("metadata", {}).get("name") != self.node:
            return
        if _kind == "DELETED":
            log.warning("NodeState deleted: keeping the networks as they are", extra={"node": self.node})
            return
        entries = list((obj.get("spec") or {}).get("l2Networks") or [])
        with self._lock:
            if entries == self.entries:
                return
            self.entries = entries
            l2 = self.l2
        if l2 is not None:
            l2.reload(self.networks())

    def networks(self) -> list[L2Network]:
        return [network_of(e) for e in self.entries or []]

    def _report(self, rec: Reconciled) -> None:
        self.rounds += 1
        with self._lock:
            entries = list(self.entries or [])
        status = {"applied": applied_report(entries, rec), "heartbeatTime": self.now()}
        try:
            self.api.patch_cluster_custom_object_status(
                GROUP, VERSION, "nodestates", self.node, {"status": status}
            )
        except Exception as exc:  # the API unreachable: the data plane goes on; the next round reports
            log.warning("status not written", extra={"node": self.node, "error": str(exc)[:200]})

    def start(self, wait: float = 30.0) -> NodeL2Agent:
        self.informer.start()
        if not self.informer.synced.wait(wait):
            raise TimeoutError(f"node {self.node}: the NodeState was not read within {wait:.0f} s")
        self._thread = threading.Thread(target=self._run, name=f"l2-{self.node}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while self.entries is None and not self.stop_event.is_set():  # not published yet: wait
            self.stop_event.wait(0.2)
        if self.stop_event.is_set():
            return
        with self._lock:  # created with the entries of now; a later change reloads it
            self.l2 = Agent(self.networks(), self.node, self.netns, resync=self.resync, on_round=self._report)
        try:
            self.l2.start()
            self.l2.run(self.stop_event)
        finally:
            self.l2.close()

    def stop(self) -> None:
        self.stop_event.set()
        if self.l2 is not None:
            self.l2.stop()
        self.informer.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
