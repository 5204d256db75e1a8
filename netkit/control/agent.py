"""The node agent: its own NodeState in (published by the controllers), and what it runs back
out (``status.applied``, ``status.dns``, a heartbeat), one status writer for every part:

- L2: ``spec.l2Networks`` to the existing L2 reconcile (``netkit.l2.agent.Agent``) on the kernel;
- DNS: ``spec.dns`` to the node-local cache (``netkit.control.dnsagent.NodeDns``);
- BGP: ``spec.bgp`` to the node's speaker (``netkit.control.bgpagent.NodeBgp``).

The L2 agent starts only once the NodeState has been read: before that nothing is known, and a
node whose NodeState does not exist yet is waited for, never taken as "no networks". While the API
server is unreachable the informer keeps the last NodeState, so the kernel stays as it is and the
L2 agent goes on repairing drift against it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from netkit.base.addr import HostPort
from netkit.base.serving import EndpointServer
from netkit.cni.attachments import load_attachments
from netkit.cni.server import CniServer
from netkit.control import kube
from netkit.control.bgpagent import NodeBgp, SpeakerAccess
from netkit.control.core.conditions import DEGRADED, READY, set_condition
from netkit.control.core.crds import GROUP, VERSION
from netkit.control.core.l2publish import network_of
from netkit.control.dnsagent import NodeDns
from netkit.control.doctoragent import DoctorOptions, NodeDoctor
from netkit.l2.agent import Agent, Reconciled
from netkit.l2.core.model import L2Network
from netkit.l2.core.state import bridge_name
from netkit.l2.probe import arp_probe

__all__ = ["AgentOptions", "NodeAgent", "applied_report", "run_agent"]

log = logging.getLogger("netkit.control.agent")
Obj = dict[str, Any]


def applied_report(
    entries: list[Obj], rec: Reconciled, failed: Mapping[str, tuple[int, str]] | None = None
) -> list[Obj]:
    """``status.applied`` after a round: every entry Applied at its generation, or Failed with why
    (the round's error, the planner's problem with that network, or its probe: ``failed`` maps a
    network to the generation that failed it and why)."""
    problems = {p.network: p.render() for p in rec.plan.problems}
    out = []
    for e in entries:
        gen_failed = (failed or {}).get(e["name"])
        why = rec.error or problems.get(e["name"])
        if gen_failed is not None and gen_failed[0] == e["generation"]:
            why = gen_failed[1]
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


class NodeAgent:
    """``node``'s NodeState to its kernel and DNS cache (in ``netns``) and back. Without a
    ``state_dir`` the node runs no DNS part."""

    def __init__(
        self,
        api: Any,
        informer_factory: Callable[[Callable[[str, Obj], None]], Any],
        node: str,
        netns: str | None = None,
        *,
        resync: float = 30.0,
        state_dir: Path | None = None,
        dns_metrics: str | None = None,
        speaker: SpeakerAccess | None = None,
        bgp_state_dir: Path | None = None,
        cni_state_dir: str | None = None,
        cni_socket: str | None = None,
        events: Any = None,
        now: Callable[[], str] | None = None,
    ) -> None:
        self.api, self.node, self.netns, self.resync = api, node, netns, resync
        self.now = now or (lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.informer = informer_factory(self._changed)
        self.entries: list[Obj] | None = None  # None: not known yet
        self.l2: Agent | None = None
        self.l2_applied: list[Obj] = []
        self.l2_failed: dict[str, tuple[int, str]] = {}  # network -> (generation, why): rolled back
        self._good: dict[str, Obj] = {}  # network -> the last entry that passed its probes
        self._probed: dict[str, int] = {}  # network -> the generation probed
        self.dns = (
            NodeDns(node, state_dir, self.report, netns=netns, metrics=dns_metrics)
            if state_dir is not None
            else None
        )
        self.bgp = (
            NodeBgp(node, speaker, bgp_state_dir or Path("/var/lib/netkit"), self.report, netns=netns)
            if speaker is not None
            else None
        )
        self.cni_state_dir = cni_state_dir  # netkit-cni's records: the pods attached here
        self.cni_server = CniServer(cni_socket, netns) if cni_socket else None  # the shim's calls
        self.endpoints: list[Obj] | None = None  # as published; None: not read yet
        self.events = events  # a kube.EventRecorder, or None
        self.doctor: NodeDoctor | None = None  # the node's checks, when run (run_agent sets it)
        self.nodestate: Obj | None = None  # as last read: what Events are about
        self._told: dict[tuple[str, str], tuple[Any, str]] = {}  # (kind, name) -> (generation, state)
        self.stop_event = threading.Event()
        self.rounds = 0
        self.status_writes = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()

    def _changed(self, _kind: str, obj: Obj) -> None:
        if obj.get("metadata", {}).get("name") != self.node:
            return
        if _kind == "DELETED":
            log.warning("NodeState deleted: keeping everything as it is", extra={"node": self.node})
            return
        self.nodestate = obj
        spec = obj.get("spec") or {}
        if self.dns is not None:
            self.dns.update(spec.get("dns"))
        if self.bgp is not None:
            self.bgp.update(spec.get("bgp"))
        entries = list(spec.get("l2Networks") or [])
        with self._lock:
            if entries == self.entries:
                return
            self.entries = entries
            l2 = self.l2
        if l2 is not None:
            l2.reload(self.networks())

    def ready(self) -> bool:
        """The NodeState read, and the DNS cache serving if one is published (a surge pod is
        ready once it has taken the old one's cache over)."""
        if self.entries is None:
            return False
        return self.dns is None or self.dns.ready()

    def networks(self) -> list[L2Network]:
        """What the kernel should run: the published entries, but the last good one of a network
        whose new generation failed its probe (none, if it never had one)."""
        out = []
        for e in self.entries or []:
            failed = self.l2_failed.get(e["name"])
            if failed is not None and failed[0] == e["generation"]:
                good = self._good.get(e["name"])
                if good is not None:
                    out.append(network_of(good))
                continue
            out.append(network_of(e))
        return out

    def _probe(self, rec: Reconciled, entries: list[Obj]) -> bool:
        """Probe every network whose generation has not been probed yet; a failure rolls it back.
        True when something was rolled back (the L2 agent reloads)."""
        if rec.error is not None:
            return False
        problems = {p.network for p in rec.plan.problems}
        reported = {  # what this node said before (an agent before us): Applied means probed
            a["name"]: a.get("generation")
            for a in ((self.nodestate or {}).get("status") or {}).get("applied") or []
            if a.get("kind") == "L2Network" and a.get("state") == "Applied"
        }
        rolled = False
        for e in entries:
            name, gen = e["name"], e["generation"]
            failed = self.l2_failed.get(name)
            if name in problems or self._probed.get(name) == gen or (failed and failed[0] == gen):
                continue
            if name not in self._probed and reported.get(name) == gen:  # a restart: not probed again
                self._good[name], self._probed[name] = e, gen
                continue
            why = None
            for p in e.get("probes") or ():
                timeout = float(p.get("timeoutSeconds", 5))
                try:
                    why = arp_probe(bridge_name(name), p["address"], timeout, self.netns)
                except Exception as exc:  # a probe that cannot run is a failed probe, said
                    why = f"{type(exc).__name__}: {exc}"
                if why:
                    break
            if why is None:
                self._good[name], self._probed[name] = e, gen
                continue
            good = self._good.get(name)
            back = f"generation {good['generation']}" if good else "nothing (it never passed)"
            self.l2_failed[name] = (gen, f"probe failed: {why}; rolled back to {back}")
            log.warning("probe failed: rolled back", extra={"node": self.node, "network": name, "why": why})
            rolled = True
        return rolled

    def _l2_round(self, rec: Reconciled) -> None:
        self.rounds += 1
        with self._lock:
            entries = list(self.entries or [])
        if self._probe(rec, entries) and self.l2 is not None:
            self.l2.reload(self.networks())
        self.l2_applied = applied_report(entries, rec, self.l2_failed)
        self.report()

    def report(self) -> None:
        """The whole status from every part (a merge patch replaces ``applied`` whole)."""
        with self._report_lock:
            applied = [*self.l2_applied]
            applied += self.dns.applied if self.dns is not None else []
            applied += self.bgp.applied if self.bgp is not None else []
            status: Obj = {"applied": applied, "heartbeatTime": self.now()}
            if self.dns is not None:
                status["dns"] = self.dns.observed()
            if self.bgp is not None:
                status["bgp"] = self.bgp.observed() or None
            if self.endpoints is not None:
                status["endpoints"] = self.endpoints
            if self.doctor is not None:
                status["doctor"] = self.doctor.summary()
            status["conditions"] = self._conditions(applied)
            try:
                self.api.patch_cluster_custom_object_status(
                    GROUP, VERSION, "nodestates", self.node, {"status": status}
                )
                self.status_writes += 1
                self._tell(applied)
            except Exception as exc:  # the API unreachable: the data plane goes on; the next round reports
                log.warning("status not written", extra={"node": self.node, "error": str(exc)[:200]})

    def _conditions(self, applied: list[Obj]) -> list[Obj]:
        """Ready: everything published runs (Applied or Removed); Degraded: something failed."""
        state = self.nodestate or {}
        generation = int((state.get("metadata") or {}).get("generation") or 1)
        old = list((state.get("status") or {}).get("conditions") or [])
        failed = [
            f"{a['kind']} {a['name']}: {a.get('message', '')}" for a in applied if a["state"] == "Failed"
        ]
        pending = [f"{a['kind']} {a['name']}" for a in applied if a["state"] == "Pending"]
        now = self.now()
        if failed:
            out = set_condition(
                old, DEGRADED, "True", "ApplyFailed", "; ".join(failed), generation=generation, now=now
            )
            return set_condition(
                out, READY, "False", "ApplyFailed", failed[0], generation=generation, now=now
            )
        out = set_condition(
            old, DEGRADED, "False", "AsExpected", "nothing failed", generation=generation, now=now
        )
        if pending:
            return set_condition(
                out, READY, "False", "Pending", ", ".join(pending), generation=generation, now=now
            )
        return set_condition(
            out,
            READY,
            "True",
            "AllApplied",
            f"{len(applied)} objects applied",
            generation=generation,
            now=now,
        )

    def _tell(self, applied: list[Obj]) -> None:
        """An Event on the NodeState for every object whose state or generation changed."""
        if self.events is None or self.nodestate is None:
            return
        for a in applied:
            key, now = (a["kind"], a["name"]), (a.get("generation"), a["state"])
            if self._told.get(key) == now:
                continue
            self._told[key] = now
            where = f"{a['kind']} {a['name']}" + (f" generation {now[0]}" if now[0] else "")
            self.events.record(
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeState", **self.nodestate},
                "Warning" if a["state"] == "Failed" else "Normal",
                str(a["state"]),
                f"{where}: {a.get('message', '')}",
            )

    def _read_attachments(self) -> None:
        """netkit-cni's records as ``status.endpoints``, reported when they change. A record that
        cannot be read keeps what was published (never "no pods" because of one bad file)."""
        if self.cni_state_dir is None:
            return
        try:
            found = [
                {
                    "network": a.network,
                    **({"pod": a.pod} if a.pod else {}),
                    "interface": a.ifname,
                    "mac": a.mac,
                    "ips": list(a.ips),
                }
                for a in load_attachments(self.cni_state_dir)
            ]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("cannot read the CNI attachments", extra={"dir": self.cni_state_dir, "error": str(exc)})
            return
        if found != self.endpoints:
            self.endpoints = found
            log.info("attachments", extra={"node": self.node, "pods": len(found)})
            if self.l2 is not None:
                self.report()

    def _watch_attachments(self) -> None:
        while not self.stop_event.wait(0.5):
            self._read_attachments()

    def start(self, wait: float | None = 30.0) -> NodeAgent:
        """Start the parts; with ``wait``, until the NodeState has been listed (TimeoutError)."""
        if self.cni_server is not None:
            self.cni_server.start()
        if self.cni_state_dir is not None:
            self._read_attachments()
            threading.Thread(target=self._watch_attachments, name=f"cni-{self.node}", daemon=True).start()
        if self.dns is not None:
            self.dns.start()
        if self.bgp is not None:
            self.bgp.start()
        self.informer.start()
        if wait is not None and not self.informer.synced.wait(wait):
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
            self.l2 = Agent(
                self.networks(), self.node, self.netns, resync=self.resync, on_round=self._l2_round
            )
        try:
            self.l2.start()
            self.l2.run(self.stop_event)
        finally:
            self.l2.close()

    def stop(self) -> None:
        self.stop_event.set()
        if self.cni_server is not None:
            self.cni_server.stop()
        if self.l2 is not None:
            self.l2.stop()
        self.informer.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.dns is not None:
            self.dns.stop()
        if self.bgp is not None:
            self.bgp.stop()


@dataclass(frozen=True)
class AgentOptions:
    node: str
    kubeconfig: str | None
    netns: str | None = None
    state_dir: Path | None = Path("/var/lib/netkit")  # None: no DNS part
    dns_metrics: str | None = None
    speaker: SpeakerAccess | None = None  # None: no BGP part
    bgp_state_dir: Path = Path("/var/lib/netkit")
    cni_state_dir: str | None = "/var/lib/netkit/cni"  # netkit-cni's stateDir (None: no endpoints)
    cni_socket: str | None = None  # where the netkit-cni shim's calls are served (None: not)
    metrics: HostPort | None = None
    resync: float = 30.0
    doctor: DoctorOptions | None = field(default_factory=DoctorOptions)  # None: no checks


def run_agent(opts: AgentOptions, stop: threading.Event) -> int:
    """``netkit agent`` as a process: the NodeState informer, the parts, /metrics /healthz
    /readyz (ready once the NodeState is read)."""
    registry = CollectorRegistry()
    agent: NodeAgent | None = None
    server: EndpointServer | None = None
    if opts.metrics is not None:  # first: a taken address fails before anything is contacted
        server = EndpointServer(
            opts.metrics,
            registry,
            lambda: agent is not None and agent.ready(),
            not_ready="the node's NodeState has not been read yet, or its DNS cache does not serve yet",
            reuse_port=True,  # a surge pod serves beside the old one until that one goes
        )
        server.start_in_thread()
    rounds = Gauge("netkit_agent_l2_rounds", "L2 reconcile rounds since the start.", registry=registry)
    writes = Gauge(
        "netkit_agent_status_writes", "NodeState status writes since the start.", registry=registry
    )
    serving = Gauge("netkit_agent_dns_serving", "1 while the node-local cache serves.", registry=registry)
    try:
        api = kube.api_client(opts.kubeconfig)
        co = kube.custom_objects(api)
        listing = functools.partial(
            co.list_cluster_custom_object,
            GROUP,
            VERSION,
            "nodestates",
            field_selector=f"metadata.name={opts.node}",
        )
        agent = NodeAgent(
            co,
            lambda handler: kube.Informer(
                listing, handler, resync=opts.resync, name=f"nodestate-{opts.node}"
            ),
            opts.node,
            opts.netns,
            resync=opts.resync,
            state_dir=opts.state_dir,
            dns_metrics=opts.dns_metrics,
            speaker=opts.speaker,
            bgp_state_dir=opts.bgp_state_dir,
            cni_state_dir=opts.cni_state_dir,
            cni_socket=opts.cni_socket,
            events=kube.EventRecorder(kube.core(api), "netkit-agent", opts.node),
        )
        rounds.set_function(lambda: agent.rounds if agent else 0)
        writes.set_function(lambda: agent.status_writes if agent else 0)
        serving.set_function(lambda: float(bool(agent and agent.dns and agent.dns.observed()["serving"])))
        if opts.doctor is not None:
            agent.doctor = NodeDoctor(agent, api, opts.doctor, registry)
        agent.start(wait=None)  # an API server not there yet is waited for, with backoff
        if agent.doctor is not None:
            agent.doctor.start()
        log.info(
            "agent started", extra={"node": opts.node, "netns": opts.netns, "dns": opts.state_dir is not None}
        )
        heartbeat = max(1.0, opts.resync / 3)
        while not stop.wait(heartbeat):
            if agent.entries is None or agent.l2 is None:
                continue  # no NodeState yet, or the L2 part starting: its first round reports
            agent.report()  # a heartbeat while nothing changes
        return 0
    finally:
        if agent is not None:
            if agent.doctor is not None:
                agent.doctor.stop()
            agent.stop()
        if server is not None:
            server.stop_thread()
