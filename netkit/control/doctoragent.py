"""The doctor inside ``netkit agent``: the node's checks built from the agent's own parts (its
NodeState's networks, its BGP speaker, its DNS cache), run on their intervals in a thread,
reported as Node conditions and Events, summed up in the NodeState's status."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from netkit.base.addr import AddressError, HostPort, parse_hostport
from netkit.control import kube
from netkit.control.doctorreport import NodeReporter
from netkit.doctor.build import NodeParts, checks_for
from netkit.doctor.check import RepairError
from netkit.doctor.checks.dns import DnsTarget
from netkit.doctor.checks.l2 import L2Desired
from netkit.doctor.runner import Doctor

if TYPE_CHECKING:
    from netkit.control.agent import NodeAgent

__all__ = ["DoctorOptions", "NodeDoctor"]

log = logging.getLogger("netkit.doctor")


@dataclass(frozen=True)
class DoctorOptions:
    dry_run: bool = False  # report, never repair
    dns_interface: str | None = None  # where the cache's listen addresses live
    kubelet_config: str | None = "/var/lib/kubelet/config.yaml"
    resolv_confs: tuple[str, ...] = ()
    conntrack_threshold: float = 0.9


def _hostports(texts: Sequence[str]) -> list[HostPort]:
    out = []
    for t in texts:
        try:
            out.append(parse_hostport(t, 53))
        except AddressError:
            continue  # the DNS part reports a bad address itself
    return out


class NodeDoctor:
    def __init__(
        self, agent: NodeAgent, api: Any, opts: DoctorOptions, registry: CollectorRegistry | None = None
    ) -> None:
        self.agent, self.opts = agent, opts
        parts = NodeParts(netns=agent.netns, conntrack_threshold=opts.conntrack_threshold, session_grace=30.0)
        parts.l2 = L2Desired(
            agent.node,
            self._networks,
            agent.netns,
            reconcile=self._reconcile,
        )
        if agent.bgp is not None:
            bgp = agent.bgp
            parts.speaker = lambda: bgp.control
        if agent.dns is not None:
            dns = agent.dns
            metrics = parse_hostport(dns.metrics) if dns.metrics else None
            parts.dns = DnsTarget(
                listen=lambda: _hostports(dns.listen()),
                netns=agent.netns,
                metrics=metrics,
                interface=opts.dns_interface,
                pid=dns.cache_pid,
                kubelet_config=opts.kubelet_config,
                resolv_confs=opts.resolv_confs,
            )
        parts.api_server = api.configuration.host
        parts.api_probe = kube.version_probe(api)
        self.reporter = NodeReporter(api, agent.node, agent.events)
        self.doctor = Doctor(
            checks_for(parts),
            fix=True,
            dry_run=opts.dry_run,
            reporter=self.reporter,
            registry=registry,
            settle=0.5,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"doctor-{agent.node}", daemon=True)

    def _networks(self) -> list[Any] | None:
        """The desired networks once the agent's L2 reconcile has run a round on them (before,
        what is missing is being built, not drift)."""
        l2 = self.agent.l2
        if self.agent.entries is None or l2 is None or l2.last is None:
            return None
        return self.agent.networks()

    def _reconcile(self, ops: Sequence[Any]) -> str:
        l2 = self.agent.l2
        if l2 is None:
            raise RepairError("the L2 part has not started")
        l2.trigger_resync()
        return f"asked the L2 reconcile to run ({len(ops)} operation(s) pending)"

    def _run(self) -> None:
        waited = 0.0  # nothing known yet: no check; then the L2 part's first round (up to 60 s)
        while not self._stop.is_set() and (
            self.agent.entries is None or (self._networks() is None and waited < 60)
        ):
            self._stop.wait(0.5)
            waited += 0.5 if self.agent.entries is not None else 0.0
        told: list[Any] = []

        def changed() -> None:  # the NodeState's summary follows transitions, not every run
            now = [{k: v for k, v in s.items() if k != "since"} for s in self.doctor.summary()]
            if now != told:
                told[:] = now
                self.agent.report()

        self.doctor.run(self._stop, on_round=changed)

    def summary(self) -> list[dict[str, Any]]:
        return self.doctor.summary()

    def start(self) -> NodeDoctor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
