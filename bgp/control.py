"""Control of running speakers (effects): what ``netkit bgp migrate --speakers FILE`` drives.

A speakers file says how to reach each node's speaker on this host (optionally inside a network
namespace)::

    timers: {hold: 90, keepalive: 30, connect_retry: 5}   # what the speakers run (default RFC)
    speakers:
      node-a: {kind: bird, control: /run/bird/bird.ctl, config: /etc/bird/bird.conf}
      node-b: {kind: frr, vty_socket: /run/frr}
      node-c: {kind: bird, control: /run/nk/c.ctl, config: /etc/nk/c.conf, netns: node-c}

The speakers must run the netkit-rendered config of the plan in force (``netkit bgp render``):
BIRD gets a whole new ``bird.conf`` and ``birdc configure`` per step; FRR gets the vtysh
commands of ``frr_delta(old, new)``, computed from the plan in force, so its running config must
be that plan's. Sessions and routes are read back through ``birdc`` and ``vtysh``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bgp.core.model import SpeakerConfig, Timers
from bgp.core.render.bird import render_bird
from bgp.core.render.frr import frr_delta
from bgp.core.speakerstate import (
    PathInfo,
    parse_bird_neighbors,
    parse_bird_protocols,
    parse_bird_routes,
    parse_frr_neighbors,
    parse_frr_prefixes,
    parse_frr_routes,
)
from netkit.base.fields import Errors, int_in, unknown_keys
from netkit.base.netns import netns_exec

__all__ = [
    "BirdControl",
    "BirdObserver",
    "CalicoBirdControl",
    "ControlError",
    "FrrControl",
    "FrrObserver",
    "SpeakersFile",
    "load_speakers",
]


class ControlError(RuntimeError):
    """A control command failed or a speaker answered unexpectedly."""


@dataclass
class _Runner:
    node: str
    netns: str | None = None
    timeout: float = 15.0

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        cmd = netns_exec(self.netns, argv)
        try:
            r = subprocess.run(
                cmd, input=stdin, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ControlError(f"{self.node}: {' '.join(argv)}: {exc}") from exc
        if r.returncode != 0:
            raise ControlError(
                f"{self.node}: {' '.join(argv)} exited {r.returncode}: {(r.stderr or r.stdout).strip()}"
            )
        return r.stdout


class BirdObserver:
    """A running BIRD read through its control socket alone (``netkit doctor`` on a node):
    every BGP protocol, whatever it is called, by its neighbour address."""

    def __init__(self, control: str, netns: str | None = None, node: str = "node") -> None:
        self.control = control
        self._run = _Runner(node, netns)

    def birdc(self, *args: str) -> str:
        return self._run.run(["birdc", "-s", self.control, *args])

    def _protocols(self) -> dict[str, str]:
        return parse_bird_neighbors(self.birdc("show", "protocols", "all"))

    def sessions(self) -> dict[str, str]:
        return parse_bird_protocols(self.birdc("show", "protocols"), self._protocols())

    def routes(self, family: str = "ipv4") -> dict[str, list[PathInfo]]:
        table = {"ipv4": "master4", "ipv6": "master6"}[family]
        return parse_bird_routes(self.birdc("show", "route", "all", "table", table), self._protocols())

    def resync_fib(self) -> str:
        """Have BIRD export its routes to the kernel again (``reload out`` of every kernel
        protocol): what a route deleted behind its back needs; idempotent (a route that is
        there is replaced by itself)."""
        kernel = [
            f[0]
            for f in (line.split() for line in self.birdc("show", "protocols").splitlines())
            if f[1:2] == ["Kernel"]
        ]
        if not kernel:
            raise ControlError("BIRD runs no kernel protocol: it installs no route")
        for name in kernel:
            self.birdc("reload", "out", name)
        return f"birdc reload out {' '.join(kernel)}"


class FrrObserver:
    """A running FRR bgpd read through vtysh alone."""

    def __init__(self, vty_socket: str | None = None, netns: str | None = None, node: str = "node") -> None:
        self.vty_socket = vty_socket
        self._run = _Runner(node, netns)

    def vtysh(self, *commands: str) -> str:
        argv = ["vtysh", *(["--vty_socket", self.vty_socket] if self.vty_socket else [])]
        for c in commands:
            argv += ["-c", c]
        return self._run.run(argv)

    def sessions(self) -> dict[str, str]:
        return parse_frr_neighbors(self.vtysh("show bgp neighbors json"))

    def routes(self, family: str = "ipv4") -> dict[str, list[PathInfo]]:
        prefixes = parse_frr_prefixes(self.vtysh(f"show bgp {family} unicast json"))
        if not prefixes:
            return {}
        return parse_frr_routes(self.vtysh(*(f"show bgp {family} unicast {p} json" for p in prefixes)))


class BirdControl(BirdObserver):
    """A running BIRD 2, through its control socket and config file."""

    def __init__(self, cfg: SpeakerConfig, control: str, config: str, netns: str | None = None) -> None:
        super().__init__(control, netns, cfg.node)
        self.cfg = cfg
        self.config = Path(config)

    def apply(self, new: SpeakerConfig) -> None:
        tmp = self.config.with_name(self.config.name + ".netkit-new")
        tmp.write_text(render_bird(new))
        try:
            self._run.run(["bird", "-p", "-c", str(tmp)])  # a config BIRD rejects never goes live
        except ControlError:
            tmp.unlink(missing_ok=True)
            raise
        previous = self.config.read_text() if self.config.exists() else None
        tmp.replace(self.config)
        try:
            reply = self.birdc("configure")
        except ControlError as exc:
            reply = str(exc)
        if "Reconfigured" not in reply and "Reconfiguration in progress" not in reply:
            if previous is not None:  # the file on disk stays what BIRD runs (a restart loads it)
                self.config.write_text(previous)
            raise ControlError(
                f"{self.cfg.node}: birdc configure: {reply.strip()} (previous config restored)"
            )
        self.cfg = new

    def _protocols(self) -> dict[str, str]:
        return {n.ident: n.address for n in self.cfg.neighbors}


class CalicoBirdControl(BirdObserver):
    """calico/node's BIRD (1.6, its control socket usually ``/var/run/calico/bird.ctl``),
    observed only: confd writes its configuration from the Calico resources the controller
    wrote, so ``apply`` records what the step asks for and the sessions and paths are read by
    neighbour address, whatever confd names the protocols."""

    def __init__(self, cfg: SpeakerConfig, control: str, netns: str | None = None) -> None:
        super().__init__(control, netns, cfg.node)
        self.cfg = cfg

    def apply(self, new: SpeakerConfig) -> None:
        self.birdc("show", "status")  # calico/node's BIRD answers: the step is for it to run
        self.cfg = new

    def _protocols(self) -> dict[str, str]:
        """Protocol -> neighbour, for the neighbours the step configures only."""
        wanted = {n.address for n in self.cfg.neighbors}
        found = parse_bird_neighbors(self.birdc("show", "protocols", "all"))
        return {p: a for p, a in found.items() if a in wanted}

    def routes(self, family: str = "ipv4") -> dict[str, list[PathInfo]]:
        if family != "ipv4":  # calico/node runs a second BIRD (bird6.ctl) for IPv6
            return {}
        return parse_bird_routes(self.birdc("show", "route", "all"), self._protocols())


class FrrControl(FrrObserver):
    """A running FRR bgpd, through vtysh."""

    def __init__(self, cfg: SpeakerConfig, vty_socket: str | None = None, netns: str | None = None) -> None:
        super().__init__(vty_socket, netns, cfg.node)
        self.cfg = cfg

    def apply(self, new: SpeakerConfig) -> None:
        commands = frr_delta(self.cfg, new)
        if commands:
            out = self.vtysh("configure terminal", *commands)
            errors = [line for line in out.splitlines() if line.startswith("%")]
            if errors:  # vtysh applies the commands before the first failing one
                raise ControlError(
                    f"{self.cfg.node}: vtysh rejected part of {commands}: {errors}; the commands before "
                    "the first rejected one took effect (show running-config on the node)"
                )
        self.cfg = new


@dataclass(frozen=True)
class SpeakersFile:
    timers: Timers
    entries: Mapping[str, Mapping[str, str]]

    def controls(self, configs: Mapping[str, SpeakerConfig]) -> dict[str, BirdControl | FrrControl]:
        """One control per node, each starting from the node's config in force (``configs``)."""
        missing = sorted(set(configs) - set(self.entries))
        if missing:
            raise ControlError(f"the speakers file has no entry for {', '.join(missing)}")
        out: dict[str, BirdControl | FrrControl] = {}
        for node, cfg in configs.items():
            e = self.entries[node]
            if e["kind"] == "bird":
                out[node] = BirdControl(cfg, e["control"], e["config"], e.get("netns"))
            else:
                out[node] = FrrControl(cfg, e.get("vty_socket"), e.get("netns"))
        return out


_KEYS = {"bird": ("kind", "control", "config", "netns"), "frr": ("kind", "vty_socket", "netns")}


def load_speakers(text: str, source: str = "<speakers>") -> SpeakersFile:
    """Parse a speakers file; raises ``ControlError`` listing every problem, each naming its field."""
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ControlError(f"{source}: not valid YAML: {exc}") from exc
    err = Errors()
    if not isinstance(raw, Mapping) or not isinstance(raw.get("speakers"), Mapping):
        raise ControlError(f"{source}: must be a mapping with speakers: (node -> how to reach it)")
    unknown_keys(raw, ("timers", "speakers"), source, err)
    timers = Timers()
    t = raw.get("timers")
    if t is not None:
        if not isinstance(t, Mapping):
            err.add("timers", "must be a mapping of hold, keepalive, connect_retry")
        else:
            unknown_keys(t, ("hold", "keepalive", "connect_retry"), "timers", err)
            timers = Timers(
                hold=int_in(t.get("hold", 90), 3, 65535, "timers.hold", err) or 90,
                keepalive=int_in(t.get("keepalive", 30), 1, 21845, "timers.keepalive", err) or 30,
                connect_retry=int_in(t.get("connect_retry", 5), 1, 65535, "timers.connect_retry", err) or 5,
            )
    entries: dict[str, dict[str, str]] = {}
    for node, e in raw["speakers"].items():
        path = f"speakers.{node}"
        if not isinstance(e, Mapping) or e.get("kind") not in _KEYS:
            err.add(path, "must be a mapping with kind: bird or kind: frr")
            continue
        unknown_keys(e, _KEYS[str(e["kind"])], path, err)
        if e["kind"] == "bird":
            for key in ("control", "config"):
                if not isinstance(e.get(key), str):
                    err.add(f"{path}.{key}", "required (a path)")
        entries[str(node)] = {str(k): str(v) for k, v in e.items()}
    if err.items:
        raise ControlError("\n".join(err.items))
    return SpeakersFile(timers, entries)
