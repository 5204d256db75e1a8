"""``netkit lab demo``: the emulated data centre driven the way an administrator drives one, then
broken the way production breaks, every effect measured (effects). Each phase is a proof that can
fail; the demo's exit status says whether every one held.

1. boot        the data centre (``labs.demo.world``)
2. mesh        a BGPTopology applied with kubectl: the full iBGP mesh, every FIB complete
3. reflectors  the same object edited to redundant reflectors: a live migration, every FIB sampled
4. tenants     two L2Networks (VXLAN) and a DNSCache; pods attached through each node's netkit-cni
5. isolation   each pod reaches its tenant's pods on other nodes and nothing of the other tenant
               (a ping matrix, and each pod's marked broadcast caught only in its tenant, as
               ``netkit l2 verify`` floods them); every node resolves through its node-local cache
6. rr-killed   a reflector's speaker killed (SIGKILL): no other node loses a prefix; restarted
7. dns-upstream every DNS upstream gone: hot names keep answering (cache, then serve-stale)
8. dns-roll    the agents (and their caches) rolled to a new version the DaemonSet way (surge):
               not one query fails
9. api-down    the API server stopped: no kernel object on any node changes, DNS answers, pods
               reach each other; restarted, the agents report again
10. link-flap  a node's underlay link down and up: its sessions and tenants' paths come back
11. delete     a tenant network deleted with kubectl: reverted on every node
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from labs.demo.monitors import DnsMonitor, PrefixMonitor
from labs.demo.world import NODE_LOCAL, ROOT, DataCentre, Progress
from labs.runid import RunDir
from netkit.base.netns import netns_exec
from netkit.control.core.bgppublish import config_from_dict
from netkit.l2.core.state import bridge_name
from netkit.l2.kernel import Kernel

__all__ = ["DemoReport", "Phase", "run_demo"]

TOPOLOGY = """\
apiVersion: netkit.io/v1alpha1
kind: BGPTopology
metadata: {{name: cluster}}
spec:
  asn: 64512
  speaker: bird
  topology: {topology}
  timers: {{holdSeconds: 9, keepaliveSeconds: 3, connectRetrySeconds: 1}}
  policy: {{failureDomainLabel: topology.kubernetes.io/zone, redundancy: 2}}
  migration: {{batch: 4, stepTimeoutSeconds: 120}}
"""
TENANTS = """\
apiVersion: netkit.io/v1alpha1
kind: L2Network
metadata: {name: blue}
spec:
  type: vxlan
  vni: 100
  nodeSelector: {matchLabels: {netkit.io/tenant-blue: "true"}}
---
apiVersion: netkit.io/v1alpha1
kind: L2Network
metadata: {name: red}
spec:
  type: vxlan
  vni: 200
  nodeSelector: {matchLabels: {netkit.io/tenant-red: "true"}}
---
apiVersion: netkit.io/v1alpha1
kind: DNSCache
metadata: {name: node-local}
spec:
  listen: ["169.254.20.10:53"]
  upstreams: ["198.18.0.200:53"]
  serveStale: {windowSeconds: 3600, ttlSeconds: 30}
"""
HOT = [f"h{i}.cluster.local" for i in range(5)]


@dataclass
class Phase:
    name: str
    title: str
    ok: bool
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    at: tuple[float, float] = (0.0, 0.0)  # seconds since the monitors started: the fault's window


@dataclass
class DemoReport:
    nodes: int
    phases: list[Phase] = field(default_factory=list)
    prefixes: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    dns: dict[int, list[int]] = field(default_factory=dict)
    matrix: dict[str, dict[str, bool]] = field(default_factory=dict)  # src -> dst -> reached
    expected: dict[str, dict[str, bool]] = field(default_factory=dict)
    shown: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.phases) and all(p.ok for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "ok": self.ok,
            "seconds": self.seconds,
            "phases": [p.__dict__ for p in self.phases],
            "matrix": self.matrix,
            "expected": self.expected,
            "shown": self.shown,
        }


@dataclass(frozen=True)
class Pod:
    name: str
    tenant: str
    node: str
    address: str  # with prefix length
    netns: str = ""
    mac: str = ""

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


def _wait(check: Callable[[], bool], timeout: float, what: str, dc: DataCentre) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s\n{dc.logs()}")
        time.sleep(0.2)
    return time.monotonic() - t0


class Demo:
    def __init__(self, dc: DataCentre, report: DemoReport, progress: Progress, fault_seconds: float) -> None:
        self.dc, self.report, self.progress, self.fault = dc, report, progress, fault_seconds
        assert dc.kubectl is not None
        self.k = dc.kubectl
        self.pods: list[Pod] = []
        self.prefixes: PrefixMonitor | None = None
        self.dns: DnsMonitor | None = None
        self.shim = _build_shim(dc.run.path)
        self._shown = 0  # kubectl outputs already printed
        self.t0 = time.monotonic()

    # -- helpers -----------------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds on the monitors' clock (the plots' time axis)."""
        return time.monotonic() - self.t0

    def every_prefix(self, down: frozenset[str] = frozenset()) -> dict[str, set[str]]:
        """What each node must hold: every other live node's pod CIDR."""
        live = [n for n in self.dc.names if n not in down]
        return {n: {f"198.19.{m[1:]}.0/24" for m in live if m != n} for n in live}

    def complete(self, required: dict[str, set[str]]) -> bool:
        """Every node's last FIB sample holds what ``required`` says."""
        assert self.prefixes is not None
        latest = dict(self.prefixes.watch.latest)
        return all(req <= set(latest.get(n, set())) for n, req in required.items())

    def ready(self, *objects: str, timeout: int = 120) -> None:
        self.k.run("wait", "--for=condition=Ready", *objects, f"--timeout={timeout}s")

    def phase(self, name: str, title: str, fn: Callable[[], Phase]) -> Phase:
        self.progress(f"[{len(self.report.phases) + 1}] {title}")
        t0 = time.monotonic()
        try:
            p = fn()
        except Exception as exc:  # a proof that could not even be run: the phase fails, the demo goes on
            p = Phase(name, title, False, 0.0, detail=f"{type(exc).__name__}: {str(exc)[:1500]}")
        p.seconds = round(time.monotonic() - t0, 1)
        self.report.phases.append(p)
        for cmd, text in self.k.shown[self._shown :]:  # what kubectl showed, as it showed it
            self.progress(f"    $ {cmd}")
            for line in text.splitlines():
                self.progress(f"      {line}")
        self._shown = len(self.k.shown)
        mark = "ok" if p.ok else "FAILED"
        figures = ", ".join(f"{k} {v}" for k, v in p.figures.items())
        self.progress(
            f"    {mark} in {p.seconds:.1f} s"
            + (f": {figures}" if figures else "")
            + (f" — {p.detail}" if p.detail and not p.ok else "")
        )
        return p

    def ping(self, src: Pod, dst: Pod) -> bool:
        cmd = netns_exec(src.netns, ["ping", "-c", "1", "-W", "1", dst.ip])
        return subprocess.run(cmd, capture_output=True, timeout=15).returncode == 0

    def dig(self, node: str, name: str) -> bool:
        argv = ["dig", "+short", "+time=1", "+tries=1", f"@{NODE_LOCAL}", name, "A"]
        done = subprocess.run(netns_exec(self.dc.ns(node), argv), capture_output=True, text=True, timeout=10)
        return done.returncode == 0 and bool(done.stdout.strip())

    def links(self) -> dict[str, Any]:
        """Every node's links, static FDB and permanent neighbour entries (what the agents
        program; learned entries come and go with traffic)."""
        out = {}
        for node in self.dc.names:
            with Kernel(self.dc.ns(node)) as k:
                st = k.read(full=True)
            fdb = frozenset(e for e in st.fdb if e.state in ("static", "permanent"))
            neigh = frozenset(n for n in st.neighbours if n.state == "permanent")
            out[node] = (dict(st.links), fdb, neigh)
        return out

    # -- the phases --------------------------------------------------------------------------------------

    def mesh(self) -> Phase:
        self.k.run("apply", "-f", "-", stdin=TOPOLOGY.format(topology="mesh"))
        took = _wait(
            lambda: self.prefixes is not None and not self.prefixes.watch.missing_now(),
            120,
            "the mesh",
            self.dc,
        )
        self.ready("bgptopology/cluster")
        shown = self.k.run("get", "bgptopology", "cluster", "-o", "wide", show=True)
        return Phase(
            "mesh",
            "",
            "Converged" in shown,
            0,
            {
                "sessions": self.k.json("get", "bgptopology", "cluster")["status"]["sessions"],
                "every FIB complete after": f"{took:.1f} s",
            },
        )

    def reflectors(self) -> Phase:
        assert self.prefixes is not None
        self.prefixes.window()
        t0 = self.now()
        self.k.run("apply", "-f", "-", stdin=TOPOLOGY.format(topology="reflectors"))
        _wait(
            lambda: "migration" in (self.k.json("get", "bgptopology", "cluster").get("status") or {}),
            30,
            "a migration",
            self.dc,
        )
        _wait(
            lambda: (
                (self.k.json("get", "bgptopology", "cluster").get("status") or {}).get("phase") == "Converged"
                and "migration" not in self.k.json("get", "bgptopology", "cluster")["status"]
            ),
            180,
            "the migration",
            self.dc,
        )
        self.ready("bgptopology/cluster")
        fib = self.prefixes.window()
        status = self.k.json("get", "bgptopology", "cluster")["status"]
        self.k.run("get", "bgptopology", "cluster", "-o", "wide", show=True)
        figures = {
            "reflectors": ", ".join(status["reflectors"]),
            "sessions": status["sessions"],
            "FIB samples": fib.samples,
            "missing prefix-samples": fib.missing_prefix_samples,
            "longest gap": f"{fib.max_gap_ms:.0f} ms",
        }
        return Phase(
            "reflectors",
            "",
            fib.missing_prefix_samples == 0 and fib.samples > 0,
            0,
            figures,
            fib.summary(),
            (t0, self.now()),
        )

    def tenants(self) -> Phase:
        self.k.run("apply", "-f", "-", stdin=TENANTS)
        self.ready("l2network/blue", "l2network/red", "dnscache/node-local")
        self.k.run("get", "netkit", show=True)
        assert self.dc.l2 is not None
        blue = [n for n in self.dc.names if int(n[1:]) % 2 == 1][:3]
        red = [n for n in self.dc.names if int(n[1:]) % 2 == 0 or int(n[1:]) <= 2][:3]
        wanted = [Pod(f"blue-{n}", "blue", n, f"10.99.0.{10 + int(n[1:])}/24") for n in blue]
        wanted += [Pod(f"red-{n}", "red", n, f"10.99.0.{20 + int(n[1:])}/24") for n in red]
        for pod in wanted:
            netns = self.dc.l2.add_sandbox(pod.name)
            conf = {
                "cniVersion": "1.0.0",
                "name": pod.tenant,
                "type": "netkit-cni",
                "capabilities": {"ips": True},
                "runtimeConfig": {"ips": [pod.address]},
                "stateDir": str(self.dc.run.path / f"cni-state-{pod.node}"),
                "ipam": {"type": "static"},
                "bridgeTimeoutSeconds": 30,
            }
            env = {
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": pod.name,
                "CNI_NETNS": netns,
                "CNI_IFNAME": "eth0",
                "CNI_PATH": "/usr/lib/cni",
                "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=tenant-{pod.tenant};K8S_POD_NAME={pod.name}",
                "NETKIT_CNI_SOCKET": str(self.dc.cni_socket(pod.node)),
            }
            done = subprocess.run(
                [str(self.shim)], input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60
            )
            if done.returncode != 0:
                return Phase("tenants", "", False, 0, detail=f"{pod.name}: {done.stdout.decode()}")
            mac = json.loads(done.stdout)["interfaces"][2]["mac"]
            self.pods.append(Pod(pod.name, pod.tenant, pod.node, pod.address, netns.rsplit("/", 1)[1], mac))
        published = _wait(
            lambda: (
                sum(
                    len((s.get("status") or {}).get("endpoints") or [])
                    for s in self.k.json("get", "nodestates")["items"]
                )
                == len(self.pods)
            ),
            30,
            "the endpoints",
            self.dc,
        )
        return Phase(
            "tenants", "", True, 0, {"pods": len(self.pods), "endpoints published in": f"{published:.1f} s"}
        )

    def broadcasts(self) -> dict[str, set[str]]:
        """Each pod's marked broadcast (raw sockets, as ``netkit l2 verify`` sends them): the
        pods it reached."""
        from labs.l2verify import Tap, ether

        taps = {p.name: Tap(p.name, p.netns, "eth0") for p in self.pods}
        seen: dict[str, set[str]] = {}
        try:
            for sender in self.pods:
                for t in taps.values():
                    t.drain()
                marker = f"netkit demo {sender.name} {time.monotonic_ns()}".encode()
                taps[sender.name].send(ether("ff:ff:ff:ff:ff:ff", sender.mac, 0x88B5, marker))
                time.sleep(0.3)
                seen[sender.name] = {
                    n
                    for n, t in taps.items()
                    if n != sender.name and any(marker in c.data for c in t.drain())
                }
        finally:
            for t in taps.values():
                t.close()
        return seen

    def isolation(self) -> Phase:
        for a in self.pods:
            self.report.matrix[a.name] = {}
            self.report.expected[a.name] = {}
            for b in self.pods:
                if a is b:
                    continue
                self.report.matrix[a.name][b.name] = self.ping(a, b)
                self.report.expected[a.name][b.name] = a.tenant == b.tenant
        flooded = self.broadcasts()
        tenant = {p.name: p.tenant for p in self.pods}
        frame_leaks = [f"{a} => {b}" for a, got in flooded.items() for b in got if tenant[b] != tenant[a]]
        frame_misses = [
            f"{a} => {b.name}"
            for a, got in flooded.items()
            for b in self.pods
            if b.name != a and tenant[b.name] == tenant[a] and b.name not in got
        ]
        leaks = [
            f"{a} -> {b}"
            for a, row in self.report.matrix.items()
            for b, got in row.items()
            if got and not self.report.expected[a][b]
        ]
        misses = [
            f"{a} -> {b}"
            for a, row in self.report.matrix.items()
            for b, got in row.items()
            if not got and self.report.expected[a][b]
        ]
        resolved = {
            n: self.dig(n, "h1.cluster.local") and self.dig(n, "h2.example.org") for n in self.dc.names
        }
        ok = not leaks and not misses and not frame_leaks and not frame_misses and all(resolved.values())
        detail = "; ".join(
            [
                *(f"LEAK {x}" for x in [*leaks, *frame_leaks]),
                *(f"MISS {x}" for x in [*misses, *frame_misses]),
                *(f"{n} does not resolve" for n, r in resolved.items() if not r),
            ]
        )
        pairs = sum(len(r) for r in self.report.matrix.values())
        return Phase(
            "isolation",
            "",
            ok,
            0,
            {
                "pod pairs": pairs,
                "leaks": len(leaks),
                "misses": len(misses),
                "broadcast leaks": len(frame_leaks),
                "broadcast misses": len(frame_misses),
                "nodes resolving": f"{sum(resolved.values())}/{len(resolved)}",
            },
            detail,
        )

    def rr_killed(self) -> Phase:
        assert self.prefixes is not None
        status = self.k.json("get", "bgptopology", "cluster")["status"]
        from labs.bgpspeakers import BirdSpeaker

        victims = [r for r in status["reflectors"] if isinstance(self.dc.speakers[r], BirdSpeaker)]
        if not victims:
            return Phase("rr-killed", "", False, 0, detail="no reflector runs BIRD here")
        victim = victims[0]
        self.prefixes.require(self.every_prefix(frozenset({victim})))
        self.prefixes.window()
        t0 = self.now()
        sp = self.dc.speakers[victim]
        sp.kill()
        time.sleep(max(3.0, self.fault / 3))
        fib = self.prefixes.window()
        t1 = self.now()
        nodestate = self.k.json("get", "nodestate", victim)
        sp.cfg = config_from_dict(nodestate["spec"]["bgp"]["config"])  # what its agent had applied
        sp.start()
        back = _wait(lambda: self.complete(self.every_prefix()), 60, "the reflector's return", self.dc)
        self.prefixes.require(self.every_prefix())  # required again once it holds them
        _wait(
            lambda: not self.prefixes.watch.missing_now() if self.prefixes else False,
            60,
            "the reflector's return",
            self.dc,
        )
        figures = {
            "killed": victim,
            "FIB samples": fib.samples,
            "missing prefix-samples": fib.missing_prefix_samples,
            "every FIB complete again after restart": f"{back:.1f} s",
        }
        return Phase("rr-killed", "", fib.missing_prefix_samples == 0, 0, figures, fib.summary(), (t0, t1))

    def dns_upstream(self) -> Phase:
        assert self.dc.upstream is not None and self.dns is not None
        t0 = self.now()
        self.dc.upstream.stop()
        time.sleep(self.fault)
        t1 = self.now()
        self.dc.upstream.start()
        sent, answered, failed = self.dns.counts(t0, t1)
        return Phase(
            "dns-upstream",
            "",
            failed == 0 and sent > 0,
            0,
            {
                "upstreams down": f"{self.fault:.0f} s",
                "queries": sent,
                "answered": answered,
                "failed": failed,
            },
            at=(t0, t1),
        )

    def dns_roll(self) -> Phase:
        """A new agent version rolled out the DaemonSet way (maxSurge 1, maxUnavailable 0), node
        by node: the new agent starts beside the old one on the same state directory, its cache
        takes the old one's sockets and entries over, then the old agent is stopped."""
        assert self.dns is not None
        t0 = self.now()
        for node in self.dc.names:
            pid_file = self.dc.run.path / f"state-{node}" / "dns.pid"
            first = pid_file.read_text()
            old = self.dc.agents[node]
            self.dc.agents[node] = self.dc.start_agent(node)

            def taken_over(p: Path = pid_file, f: str = first) -> bool:
                return p.exists() and p.read_text() != f

            _wait(taken_over, 60, f"{node}'s takeover", self.dc)
            time.sleep(0.5)
            code = old.stop(20.0, group=False)
            if code != 0:
                return Phase("dns-roll", "", False, 0, detail=f"{node}'s old agent exited {code}")
        t1 = self.now()
        sent, answered, failed = self.dns.counts(t0, t1)
        figures = {
            "nodes rolled": len(self.dc.names),
            "queries": sent,
            "answered": answered,
            "failed": failed,
        }
        return Phase("dns-roll", "", failed == 0 and sent > 0, 0, figures, at=(t0, t1))

    def api_down(self) -> Phase:
        assert self.dc.api is not None and self.dns is not None
        before = self.links()
        t0 = self.now()
        self.dc.api.stop_server()
        time.sleep(self.fault)
        during = self.links()
        reach = all(
            self.ping(a, b) for a in self.pods for b in self.pods if a is not b and a.tenant == b.tenant
        )
        t1 = self.now()
        stopped = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.dc.api.start_server()
        _wait(
            lambda: all(
                (s.get("status") or {}).get("heartbeatTime", "") > stopped
                for s in self.k.json("get", "nodestates")["items"]
            ),
            60,
            "the agents' reports",
            self.dc,
        )
        after = self.links()
        _, _, failed = self.dns.counts(t0, t1)
        same = before == during == after
        figures = {
            "API down": f"{self.fault:.0f} s",
            "kernel objects changed": "none" if same else "SOME",
            "pods reaching each other": reach,
            "DNS failed": failed,
        }
        return Phase("api-down", "", same and reach and failed == 0, 0, figures, at=(t0, t1))

    def link_flap(self) -> Phase:
        assert self.prefixes is not None and self.dc.l2 is not None
        node = self.dc.names[1]
        underlay = self.dc.l2.underlay[node]
        t0 = self.now()
        with IPRoute(netns=self.dc.ns(node), flags=0) as ipr:
            idx = ipr.link_lookup(ifname=underlay)[0]
            ipr.link("set", index=idx, state="down")
            time.sleep(2.0)
            ipr.link("set", index=idx, state="up")
        t1 = self.now()
        back = _wait(
            lambda: not self.prefixes.watch.missing_now() if self.prefixes else False,
            60,
            "the FIBs after the flap",
            self.dc,
        )
        on_node = [p for p in self.pods if p.node == node]
        peers = [p for p in self.pods if on_node and p.tenant == on_node[0].tenant and p.node != node]
        reach = _wait(
            lambda: all(self.ping(on_node[0], p) for p in peers) if on_node else True,
            30,
            "the tenant path after the flap",
            self.dc,
        )
        return Phase(
            "link-flap",
            "",
            True,
            0,
            {
                "node": node,
                "down": "2 s",
                "every FIB complete after": f"{back:.1f} s",
                "pods reach again after": f"{reach:.1f} s",
            },
            at=(t0, t1),
        )

    def _no_local_address(self, node: str) -> None:
        with IPRoute(netns=self.dc.ns(node), flags=0) as ipr:
            ipr.addr("del", index=ipr.link_lookup(ifname="lo")[0], address=NODE_LOCAL, prefixlen=32)

    def _has_local_address(self, node: str) -> bool:
        with IPRoute(netns=self.dc.ns(node), flags=0) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            return NODE_LOCAL in {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=lo)}

    def doctor(self) -> Phase:
        """The node-local DNS address removed from a node's lo, twice: first while its agent is
        wedged (SIGSTOP), so the admin runs ``netkit doctor --fix`` on the node by hand; then
        with the agent running, whose own checks find and repair it (an Event on the Node)."""
        node = self.dc.names[2]
        agent = self.dc.agents[node]
        t0 = self.now()
        agent.signal_leader(signal.SIGSTOP)
        try:
            self._no_local_address(node)
            argv = ["doctor", "--node", node, "--netns", self.dc.ns(node), "--dns", f"{NODE_LOCAL}:53"]
            argv += ["--dns-interface", "lo", "--fix"]
            done = subprocess.run(
                [sys.executable, "-m", "netkit.cli", *argv, "--log-level", "error"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            )
            self.k.shown.append(("netkit " + " ".join(argv), done.stdout.rstrip()))
            by_hand = (
                done.returncode == 0 and "AddressMissing" in done.stdout and self._has_local_address(node)
            )
        finally:
            agent.signal_leader(signal.SIGCONT)
        resolves = self.dig(node, HOT[0])
        # the agent running: its doctor (dns-address, every 5 s) repairs on its own
        self._no_local_address(node)
        back = _wait(lambda: self._has_local_address(node), 30, "the agent's repair of the address", self.dc)
        t1 = self.now()
        resolves = resolves and _wait(lambda: self.dig(node, HOT[0]), 10, "the cache again", self.dc) >= 0
        sel = f"--field-selector=involvedObject.kind=Node,involvedObject.name={node}"
        cols = "-o=custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message"
        _wait(lambda: "Repaired" in self.k.run("get", "events", sel, cols), 20, "the Event", self.dc)
        self.k.run("get", "events", sel, cols, show=True)
        cond = self.k.run(
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='NetkitDNSAddressMissing')].status}",
        )
        return Phase(
            "doctor",
            "",
            by_hand and resolves and cond == "False",
            0,
            {
                "node": node,
                "netkit doctor --fix (agent wedged)": "repaired" if by_hand else "FAILED",
                "the agent's own repair after": f"{back:.1f} s",
                "NetkitDNSAddressMissing": cond,
            },
            at=(t0, t1),
        )

    def delete(self) -> Phase:
        self.k.run("delete", "l2network", "red", "--timeout=60s")
        left = [n for n in self.dc.names if bridge_name("red") in self.links()[n][0]]
        blue = all(
            self.ping(a, b)
            for a in self.pods
            for b in self.pods
            if a is not b and a.tenant == b.tenant == "blue"
        )
        return Phase(
            "delete", "", not left and blue, 0, {"nodes with red left": len(left), "blue still reaches": blue}
        )


def run_demo(
    nodes: int,
    out: Path,
    *,
    fault_seconds: float = 20.0,
    hold: Callable[[], None] | None = None,
    progress: Progress = print,
) -> DemoReport:
    """Boot, drive, break, measure; the report (also written to ``out``). Everything is removed
    at the end; ``hold`` (``--keep``) is called first, with the lab still up, and returns when it
    should go."""
    from labs.demo.report import write_report

    t0 = time.monotonic()
    report = DemoReport(nodes)
    run = RunDir()
    dc = DataCentre(run, nodes, progress)
    demo: Demo | None = None
    try:
        progress(f"[boot] an emulated data centre of {nodes} nodes in {run.path}")
        dc.boot()
        demo = Demo(dc, report, progress, fault_seconds)
        demo.prefixes = PrefixMonitor({n: dc.ns(n) for n in dc.names}, t0=demo.t0).start()
        demo.prefixes.require(demo.every_prefix())
        steps = [
            ("mesh", "BGP: the full iBGP mesh, applied with kubectl", demo.mesh),
            (
                "reflectors",
                "BGP: mesh -> redundant route reflectors, live, every FIB sampled",
                demo.reflectors,
            ),
            ("tenants", "two tenant L2Networks (VXLAN), a DNSCache, pods through netkit-cni", demo.tenants),
        ]
        for name, title, fn in steps:
            p = demo.phase(name, title, fn)
            p.title = title
            if not p.ok:
                break
        if all(p.ok for p in report.phases):
            demo.dns = DnsMonitor({n: dc.ns(n) for n in dc.names}, NODE_LOCAL, HOT, t0=demo.t0).start()
            time.sleep(1.0)
            for name, title, fn in [
                (
                    "isolation",
                    "isolation: each tenant reaches its own pods only; every node resolves",
                    demo.isolation,
                ),
                ("rr-killed", "a route reflector killed (SIGKILL), then restarted", demo.rr_killed),
                ("dns-upstream", f"every DNS upstream gone for {fault_seconds:.0f} s", demo.dns_upstream),
                (
                    "dns-roll",
                    "the agent and its DNS cache rolled to a new version, the DaemonSet way",
                    demo.dns_roll,
                ),
                ("api-down", f"the API server stopped for {fault_seconds:.0f} s", demo.api_down),
                ("link-flap", "a node's underlay link down for 2 s", demo.link_flap),
                (
                    "doctor",
                    "a node's DNS address removed: found and repaired by netkit doctor, then by the agent",
                    demo.doctor,
                ),
                ("delete", "a tenant network deleted with kubectl", demo.delete),
            ]:
                demo.phase(name, title, fn).title = title
    finally:
        if demo is not None:
            if demo.prefixes is not None:
                demo.prefixes.stop()
                report.prefixes = demo.prefixes.series
            if demo.dns is not None:
                demo.dns.stop()
                report.dns = demo.dns.per_second
        if dc.kubectl is not None:
            report.shown = dc.kubectl.shown
        report.seconds = round(time.monotonic() - t0, 1)
        write_report(report, out)
        try:
            if hold is not None and dc.api is not None:
                lab = {"kubeconfig": str(dc.api.kubeconfig), "nodes": {n: dc.ns(n) for n in dc.names}}
                (out / "lab.json").write_text(json.dumps(lab, indent=2) + "\n")
                progress(f"the lab is up: KUBECONFIG={dc.api.kubeconfig} kubectl get netkit")
                progress(f"a node's shell: netkit lab shell {dc.names[0]} --lab {out / 'lab.json'}")
                hold()
                (out / "lab.json").unlink(missing_ok=True)
        finally:
            dc.close()
            run.cleanup()
    return report


def _build_shim(directory: Path) -> Path:
    """The node-side netkit-cni, compiled as the image build compiles it."""
    source = Path(__file__).resolve().parents[2] / "netkit" / "cni" / "shim.c"
    out = directory / "netkit-cni"
    subprocess.run(["cc", "-O2", "-static", "-o", str(out), str(source)], check=True, capture_output=True)
    return out
