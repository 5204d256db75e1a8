"""The node agent's BGP part: its NodeState's ``spec.bgp`` (a migration step's configuration for
this node) to the node's running speaker through ``bgp.control`` (BIRD: a new ``bird.conf``
checked by ``bird -p`` and ``birdc configure``; FRR: the vtysh delta from what it runs), and the
speaker's state back: the revision it runs, its sessions and the paths it learnt, which is what
the controller gates every migration step on.

The speaker is the node's, not ours: it is never started or stopped here. ``spec.bgp`` gone (the
BGPTopology deleted or no longer selecting the node) leaves it with no netkit neighbour. The
NodeState unreadable (the API unreachable) is not that: the speaker runs on as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bgp.control import BirdControl, CalicoBirdControl, ControlError, FrrControl
from bgp.core.model import SpeakerConfig
from netkit.control.core.bgppublish import config_from_dict, config_to_dict

__all__ = ["NodeBgp", "SpeakerAccess"]

log = logging.getLogger("netkit.control.agent.bgp")
Obj = dict[str, Any]


@dataclass(frozen=True)
class SpeakerAccess:
    """How this node's speaker is reached (the agent's flags)."""

    bird_control: str | None = None  # BIRD's control socket
    bird_config: str | None = None  # the bird.conf BIRD runs (rewritten on each step)
    frr_vty: str | None = None  # FRR's vty socket directory (None: vtysh's default)
    frr: bool = False  # FRR runs here (vtysh on PATH)
    calico_bird: str | None = None  # calico/node's BIRD control socket (speaker: calico)


class NodeBgp:
    """The speaker of one node. ``update`` is called with each ``spec.bgp`` (returning at once);
    ``report`` with each change of what the speaker runs or holds."""

    def __init__(
        self,
        node: str,
        access: SpeakerAccess,
        state_dir: Path,
        report: Callable[[], None],
        *,
        netns: str | None = None,
        poll: float = 1.0,
    ) -> None:
        self.node, self.access, self.report, self.netns, self.poll = node, access, report, netns, poll
        state_dir.mkdir(parents=True, exist_ok=True)
        self.applied_file = state_dir / "bgp-applied.json"  # what FRR runs: its next delta's base
        self.control: BirdControl | FrrControl | CalicoBirdControl | None = None
        self.running: Obj | None = None  # the spec.bgp entry the speaker runs
        self.observed_state: Obj = {}
        self.applied: list[Obj] = []
        self._wanted: Obj | None = None
        self._known = False
        self._tried: Obj | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bgp-{node}", daemon=True)

    def start(self) -> NodeBgp:
        self._thread.start()
        return self

    def update(self, entry: Mapping[str, Any] | None) -> None:
        self._wanted, self._known = (dict(entry) if entry else None), True
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def observed(self) -> Obj:
        return dict(self.observed_state)

    # -- the worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._stop.is_set() or not self._known:
                continue
            try:
                self._converge(self._wanted)
                self._observe()
            except Exception as exc:  # never the agent's end: said, and tried again
                log.exception("bgp step failed", extra={"node": self.node})
                self._set(self._wanted, "Failed", f"{type(exc).__name__}: {exc}")

    def _make_control(self, cfg: SpeakerConfig, speaker: str) -> BirdControl | FrrControl | CalicoBirdControl:
        """The node's speaker, as the agent's flags name it (a cluster may run BIRD on some
        nodes and FRR on others: the configuration is the same model for both); calico/node's
        BIRD for ``speaker: calico``, observed only."""
        a = self.access
        if speaker == "calico":
            if not a.calico_bird:
                raise ControlError(
                    f"{self.node}: speaker: calico needs --calico-bird-control (calico/node's bird.ctl)"
                )
            return CalicoBirdControl(cfg, a.calico_bird, self.netns)
        if a.bird_control and a.bird_config:
            return BirdControl(cfg, a.bird_control, a.bird_config, self.netns)
        if a.frr:
            return FrrControl(self._frr_base(cfg), a.frr_vty, self.netns)
        raise ControlError(
            f"{self.node}: the agent was given no speaker (--bird-control/--bird-config or --frr)"
        )

    def _frr_base(self, cfg: SpeakerConfig) -> SpeakerConfig:
        """What FRR runs: the last configuration applied here (a restarted agent reads it back),
        else nothing of netkit's yet."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            return config_from_dict(json.loads(self.applied_file.read_text()))
        return replace(cfg, neighbors=(), prefixes=(), cluster_id=None)

    def _converge(self, wanted: Obj | None) -> None:
        if wanted is None:
            if self.running is not None and self.control is not None:
                empty = replace(self.control.cfg, neighbors=(), prefixes=(), cluster_id=None)
                self.control.apply(empty)
                self._save(empty)
                name = self.running.get("name")
                self.running = None
                self.applied = [
                    {
                        "kind": "BGPTopology",
                        "name": name,
                        "state": "Removed",
                        "message": "no netkit neighbour left",
                    }
                ]
                self.observed_state = {}
                log.info("bgp removed", extra={"node": self.node, "topology": name})
                self.report()
            return
        if wanted.get("revision") == (self.running or {}).get("revision") or wanted == self._tried:
            return
        self._tried = wanted
        cfg = config_from_dict(wanted["config"])
        if self.control is None:
            self.control = self._make_control(cfg, str(wanted.get("speaker", "bird")))
        try:
            self.control.apply(cfg)
        except ControlError as exc:
            self._set(wanted, "Failed", f"the speaker refused it and runs on as it was: {exc}")
            return
        self._save(cfg)
        self._set(wanted, "Applied", f"step {wanted.get('step', 0)}/{wanted.get('steps', 0)} applied")

    def _save(self, cfg: SpeakerConfig) -> None:
        tmp = self.applied_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(config_to_dict(cfg)))
        tmp.replace(self.applied_file)

    def _observe(self) -> None:
        if self.control is None or self.running is None:
            return
        try:
            sessions = self.control.sessions()
            routes = self.control.routes("ipv4")
        except ControlError as exc:
            state: Obj = {**self.observed_state, "message": f"the speaker does not answer: {exc}"[:4000]}
            state["sessionsEstablished"] = 0
        else:
            state = {
                "revision": self.running.get("revision"),
                "state": "Applied",
                "message": self.applied[0]["message"] if self.applied else "",
                "sessionsConfigured": len(self.control.cfg.neighbors),
                "sessionsEstablished": sum(1 for s in sessions.values() if s == "Established"),
                "prefixes": len(routes),
                "routes": [
                    {"prefix": p, "via": sorted({x.from_address for x in paths if x.from_address})}
                    for p, paths in sorted(routes.items())
                ],
            }
        if state != self.observed_state:
            self.observed_state = state
            self.report()

    def _set(self, entry: Obj | None, state: str, message: str) -> None:
        if entry is None:
            return
        if state == "Applied":
            self.running = entry
        else:
            self.observed_state = {
                **self.observed_state,
                "revision": entry.get("revision"),
                "state": "Failed",
                "message": message[:4000],
            }
        self.applied = [
            {
                "kind": "BGPTopology",
                "name": entry.get("name"),
                "generation": entry.get("generation"),
                "state": state,
                "message": message[:4000],
            }
        ]
        log.info(
            "bgp " + state.lower(),
            extra={"node": self.node, "revision": entry.get("revision"), "why": message},
        )
        self.report()
