"""The control plane end to end: three nodes as network namespaces, each with a real ``netkit
agent`` process, the lab API server, two ``netkit controller`` replicas, two real NSD upstreams,
driven with kubectl (a fresh HOME).

- an L2Network applied with kubectl: its bridge and VTEP exist on exactly the selected nodes,
  frames cross between them, ``kubectl wait --for=condition=Ready`` passes, ``kubectl describe``
  shows the controller's Events on it and the agent's on the NodeState;
- edited: rolled out with never more than maxUnavailable nodes in flight, each node probing the
  segment (ARP for a pod across the VXLAN), Ready at the new generation; a probe nobody answers:
  the first node rolls back and reports Failed, the rollout stops there (Degraded, the node
  named), a fixed spec rolls out again;
- a DNSCache applied: every node's cache answers; edited (a stub zone added) under load: every
  node has the zone, by reload, with no query lost or failed; a forwarding loop is Degraded and
  every node serves on as it was;
- the leader SIGKILLed: the other replica takes over within the lease duration, no NodeState
  spec is written again, and a later edit still reaches the nodes;
- the API server stopped for 30 s: no kernel object on any node changes, the caches answer; back,
  the agents resync without a kernel write;
- ``kubectl delete``: the network is gone from every node and the object with its finalizer; the
  caches stop.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from pyroute2 import IPRoute

from labs.apiserver.lab import ApiLab
from labs.chaos.lab import NsNsd
from labs.dnspeers import generate_zone
from labs.l2lab import L2Lab
from labs.l2verify import Tap, ether
from labs.runid import RunDir, free_port
from netkit.base.netns import netns_exec
from netkit.l2.core.state import bridge_name, vxlan_name
from netkit.l2.kernel import Kernel
from tests.kubehelpers import G, Kubectl, V, leading, replica, wait_for

NODE_LOCAL = "169.254.20.10"
UPSTREAM, STUB = "198.18.0.200", "198.18.0.201"
NETWORK = """\
apiVersion: netkit.io/v1alpha1
kind: L2Network
metadata: {{name: blue}}
spec:
  type: vxlan
  vni: 100
  mtu: {mtu}
  maxUnavailable: 1
  nodeSelector: {{matchLabels: {{netkit.io/l2: "yes"}}}}
  probes: {probes}
  ports: {ports}
"""
PROBE_PB = '[{address: "198.19.1.2", timeoutSeconds: 3}]'  # pod pb, on n2: ARP across the VXLAN
CACHE = """\
apiVersion: netkit.io/v1alpha1
kind: DNSCache
metadata: {{name: node-local}}
spec:
  listen: ["{local}:53"]
  upstreams: ["{upstream}:53"]
  zones: {zones}
"""


@dataclass
class World:
    run: RunDir
    api: ApiLab
    l2: L2Lab
    kubectl: Kubectl
    co: client.CustomObjectsApi
    controllers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.run.path.glob("*.log"))
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _kill_cache(state_dir: Path) -> None:
    """A cache left by an agent that was killed (it runs in its own session): by its PID."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((state_dir / "dns.pid").read_text())
        if str(state_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def world(run_dir: RunDir) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.fail("the end-to-end test needs root (network namespaces); the suite runs as root")
    with ApiLab(run_dir.path / "api") as api_lab, L2Lab(nodes=3) as l2:
        home = run_dir.path / "home"
        home.mkdir()
        kubectl = Kubectl(api_lab, home)
        kubectl("apply", "-k", "deploy/crds")
        api = config.new_client_from_config(str(api_lab.kubeconfig))
        core = client.CoreV1Api(api)
        for node in sorted(l2.vtep):
            labels = {"netkit.io/l2": "yes"} if node != "n3" else {}
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node, labels=labels)))
            address = {"type": "InternalIP", "address": l2.vtep[node]}
            core.patch_node_status(node, {"status": {"addresses": [address]}})
            with IPRoute(netns=l2.ns(node), flags=0) as ipr:
                ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=NODE_LOCAL, prefixlen=32)
        l2.add_blue_pods()
        up = l2.add_host("up", UPSTREAM)
        with IPRoute(netns=up, flags=0) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname=f"{l2.run_id}-eth")[0], address=STUB, prefixlen=24)
        nsds = [
            NsNsd(up, [generate_zone("lab.test.", 20)], (UPSTREAM, 53), run_dir.path / "nsd-lab").start(),
            NsNsd(up, [generate_zone("stub.test.", 5)], (STUB, 53), run_dir.path / "nsd-stub").start(),
        ]
        w = World(run_dir, api_lab, l2, kubectl, client.CustomObjectsApi(api))
        try:
            for name in ("a", "b"):
                w.ports[name] = free_port()
                w.controllers[name] = replica(
                    api_lab, f"replica-{name}", w.ports[name], run_dir.path / f"controller-{name}.log"
                )
            for node in sorted(l2.vtep):
                argv = ["agent", "--node", node, "--kubeconfig", str(api_lab.kubeconfig)]
                argv += ["--netns", l2.ns(node), "--state-dir", str(run_dir.path / f"state-{node}")]
                w.ports[node] = free_port()
                argv += ["--resync", "2", "--log-format", "json", "--metrics", f"127.0.0.1:{w.ports[node]}"]
                w.agents[node] = subprocess.Popen(
                    [sys.executable, "-m", "netkit.cli", *argv],
                    stdout=(run_dir.path / f"agent-{node}.log").open("ab"),
                    stderr=subprocess.STDOUT,
                )
            yield w
        finally:
            for proc in [*w.agents.values(), *w.controllers.values()]:
                _stop(proc)
            for node in l2.vtep:
                _kill_cache(run_dir.path / f"state-{node}")
            for nsd in nsds:
                nsd.stop()
            api.close()
    assert l2.leftovers() == []


def links(w: World, node: str) -> dict[str, Any]:
    with Kernel(w.l2.ns(node)) as k:
        return dict(k.read().links)


def dig(w: World, node: str, name: str) -> list[str]:
    argv = ["dig", "+short", "+time=1", "+tries=1", f"@{NODE_LOCAL}", name, "A"]
    done = subprocess.run(netns_exec(w.l2.ns(node), argv), capture_output=True, text=True, timeout=10)
    return done.stdout.split() if done.returncode == 0 else []


def nodestates(w: World) -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in w.co.list_cluster_custom_object(G, V, "nodestates")["items"]}


def in_flight(w: World, generation: int) -> int:
    """Nodes told ``generation`` of blue that have not reported it Applied."""
    n = 0
    for s in nodestates(w).values():
        told = [e for e in s["spec"].get("l2Networks", []) if e["name"] == "blue"]
        if told and told[0]["generation"] == generation:
            done = [
                a
                for a in (s.get("status") or {}).get("applied", [])
                if a["name"] == "blue" and a.get("generation") == generation and a["state"] == "Applied"
            ]
            n += not done
    return n


def dnsperf(w: World, node: str, seconds: int, qps: int) -> subprocess.Popen[str]:
    names = w.run.path / "names.txt"
    names.write_text("".join(f"h{i}.lab.test A\n" for i in range(20)))
    argv = ["dnsperf", "-s", NODE_LOCAL, "-d", str(names), "-l", str(seconds), "-Q", str(qps), "-t", "2"]
    return subprocess.Popen(
        netns_exec(w.l2.ns(node), argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def frame_across(l2: L2Lab) -> dict[str, list[str]]:
    """A broadcast frame with a unique marker sent from pod pa (n1) with raw sockets: where it
    arrived (pod pb on n2; n3's underlay, which must see none of it), each capture decoded with
    scapy (the marker in a frame from pa's MAC; on n2's underlay, VXLAN VNI 100 around it)."""
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    marker = b"netkit-e2e-" + os.urandom(6).hex().encode()
    pa, pb = l2.pods["pa"], l2.pods["pb"]
    inner = f"{l2.run_id}-eth"
    taps = {"pb": Tap("pb", pb.netns, inner), "n3": Tap("n3", l2.ns("n3"), l2.underlay["n3"])}
    wire = Tap("wire", l2.ns("n2"), l2.underlay["n2"])
    sender = Tap("pa", pa.netns, inner)
    try:
        sender.send(ether("ff:ff:ff:ff:ff:ff", pa.mac, 0x88B5, marker))
        time.sleep(0.5)
        seen: dict[str, list[str]] = {}
        for name, tap in taps.items():
            frames = [Ether(c.data) for c in tap.drain() if marker in c.data]
            seen[name] = [f.summary() for f in frames if f.src == pa.mac or VXLAN in f]
        vxlan = [Ether(c.data) for c in wire.drain() if marker in c.data]
        assert vxlan and all(f[VXLAN].vni == 100 and f[VXLAN][Ether].src == pa.mac for f in vxlan), vxlan
        return seen
    finally:
        for tap in (*taps.values(), wire, sender):
            tap.close()


def test_l2_dns_leader_and_api_outage_end_to_end(world: World) -> None:
    w, k = world, world.kubectl
    blue, vtep = bridge_name("blue"), vxlan_name(100)
    ports = "[" + ", ".join(f"{{interface: {p.port}, node: {p.node}}}" for p in w.l2.pods.values()) + "]"

    def network(mtu: int, probes: str = "[]") -> str:
        return NETWORK.format(mtu=mtu, probes=probes, ports=ports)

    # -- an L2Network on exactly the selected nodes -------------------------------------------------
    k("apply", "-f", "-", stdin=network(1400))
    assert wait_for(lambda: all({blue, vtep} <= set(links(w, n)) for n in ("n1", "n2")), 60), w.logs()
    assert not ({blue, vtep} & set(links(w, "n3")))
    k("wait", "--for=condition=Ready", "l2network/blue", "--timeout=60s")
    for node in w.agents:  # every agent has read its NodeState
        with urllib.request.urlopen(f"http://127.0.0.1:{w.ports[node]}/readyz", timeout=2) as resp:
            assert resp.status == 200
    status = k.json("get", "l2network", "blue")["status"]
    assert status["observedGeneration"] == 1 and status["nodesReady"] == 2
    described = k("describe", "l2network", "blue").stdout  # the controller's Events
    assert "Events:" in described and "AllNodesReady" in described, described
    assert wait_for(lambda: "L2Network blue generation 1" in k("describe", "nodestate", "n1").stdout)
    ping = ["ping", "-c", "3", "-i", "0.2", "-W", "1", w.l2.pods["pb"].address]
    done = subprocess.run(netns_exec(w.l2.pods["pa"].netns, ping), capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout  # frames cross n1 -> n2 over VXLAN
    crossed = frame_across(w.l2)
    assert crossed["pb"] and not crossed["n3"], crossed

    # -- edited: rolled out within maxUnavailable ----------------------------------------------------
    k("apply", "-f", "-", stdin=network(1300, PROBE_PB))
    worst, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        worst = max(worst, in_flight(w, 2))
        s = k.json("get", "l2network", "blue").get("status") or {}
        if s.get("observedGeneration") == 2 and s.get("nodesReady") == 2:
            break
        time.sleep(0.05)
    assert worst <= 1
    k("wait", "--for=condition=Ready", "l2network/blue", "--timeout=30s")
    assert all(links(w, n)[blue].mtu == 1300 for n in ("n1", "n2"))

    # -- a DNSCache on every node, edited under load ------------------------------------------------
    k("apply", "-f", "-", stdin=CACHE.format(local=NODE_LOCAL, upstream=UPSTREAM, zones="[]"))
    assert wait_for(lambda: all(dig(w, n, "h1.lab.test") for n in w.l2.vtep), 60), w.logs()
    k("wait", "--for=condition=Ready", "dnscache/node-local", "--timeout=30s")
    load = dnsperf(w, "n1", 8, 200)
    time.sleep(2)
    zones = f'[{{zone: stub.test, upstreams: ["{STUB}:53"]}}]'
    k("apply", "-f", "-", stdin=CACHE.format(local=NODE_LOCAL, upstream=UPSTREAM, zones=zones))
    assert wait_for(lambda: all(dig(w, n, "h1.stub.test") for n in w.l2.vtep), 30), w.logs()
    out, _ = load.communicate(timeout=30)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    completed = re.search(r"Queries completed:\s+(\d+)", out)
    assert lost and completed and lost.group(1) == "0" and int(completed.group(1)) > 1000, out
    assert re.search(r"Response codes:\s+NOERROR \d+ \(100\.00%\)", out), out
    k("wait", "--for=condition=Ready", "dnscache/node-local", "--timeout=30s")
    assert all(s["status"]["dns"]["configGeneration"] == 2 for s in nodestates(w).values())
    print(k("get", "netkit").stdout)  # what an admin sees (the closing note quotes it)
    # a forwarding loop: Degraded naming it, and every node serves on as it was
    k("apply", "-f", "-", stdin=CACHE.format(local=NODE_LOCAL, upstream=NODE_LOCAL, zones=zones))
    k("wait", "--for=condition=Degraded", "dnscache/node-local", "--timeout=30s")
    degraded = k.json("get", "dnscache", "node-local")["status"]["conditions"]
    assert any(c["type"] == "Degraded" and "loop" in c["message"] for c in degraded), degraded
    assert all(s["spec"]["dns"]["generation"] == 2 for s in nodestates(w).values())
    assert all(dig(w, n, "h3.lab.test") and dig(w, n, "h2.stub.test") for n in w.l2.vtep)

    # -- the leader killed: the other takes over, writing nothing already written ---------------------
    holder = client.CoordinationV1Api(w.co.api_client).read_namespaced_lease(
        "netkit-controller", "kube-system"
    )
    first = "a" if holder.spec.holder_identity == "replica-a" else "b"
    second = "b" if first == "a" else "a"
    generations = {n: s["metadata"]["generation"] for n, s in nodestates(w).items()}
    killed = time.monotonic()
    w.controllers[first].send_signal(signal.SIGKILL)
    w.controllers[first].wait(5)
    assert wait_for(lambda: leading(w.ports[second]), 15)
    assert time.monotonic() - killed <= 3 + 2  # within the lease duration (and a retry)
    time.sleep(1.5)
    assert {n: s["metadata"]["generation"] for n, s in nodestates(w).items()} == generations
    k("apply", "-f", "-", stdin=network(1350, PROBE_PB))
    k("wait", "--for=jsonpath={.status.observedGeneration}=3", "l2network/blue", "--timeout=30s")
    k("wait", "--for=condition=Ready", "l2network/blue", "--timeout=30s")
    assert all(links(w, n)[blue].mtu == 1350 for n in ("n1", "n2"))

    # -- a probe that fails: the first node rolls back, the rollout stops there ---------------------
    bad = '[{address: "198.19.1.99", timeoutSeconds: 1}]'  # nobody has it
    k("apply", "-f", "-", stdin=network(1250, bad))
    k("wait", "--for=condition=Degraded", "l2network/blue", "--timeout=30s")
    s = k.json("get", "l2network", "blue")["status"]
    degraded = next(c for c in s["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "RolloutStopped" and s["nodesFailed"] == ["n1"], s
    assert wait_for(lambda: links(w, "n1")[blue].mtu == 1350)  # rolled back to generation 3
    assert links(w, "n2")[blue].mtu == 1350  # never told: the rollout stopped at n1
    told = {n: [e["generation"] for e in st["spec"].get("l2Networks", [])] for n, st in nodestates(w).items()}
    assert told["n1"] == [4] and told["n2"] == [3], told
    failed = [a for a in nodestates(w)["n1"]["status"]["applied"] if a["name"] == "blue"]
    assert failed[0]["state"] == "Failed" and "198.19.1.99 did not answer ARP" in failed[0]["message"], failed
    assert "probe failed" in k("describe", "nodestate", "n1").stdout  # the agent's Warning
    k("apply", "-f", "-", stdin=network(1350, PROBE_PB))  # fixed: rolled out again
    k("wait", "--for=jsonpath={.status.observedGeneration}=5", "l2network/blue", "--timeout=30s")
    k("wait", "--for=condition=Ready", "l2network/blue", "--timeout=30s")

    # -- the API server gone for 30 s: the nodes keep everything -----------------------------------
    before = {n: links(w, n) for n in w.l2.vtep}
    w.api.stop_server()
    for _ in range(6):
        time.sleep(5)
        assert {n: links(w, n) for n in w.l2.vtep} == before
        assert all(dig(w, n, "h2.lab.test") for n in w.l2.vtep)
    stopped_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    w.api.start_server()

    def resynced() -> bool:
        for s in nodestates(w).values():
            st = s.get("status") or {}
            if st.get("heartbeatTime", "") <= stopped_at:
                return False
        return True

    assert wait_for(resynced, 30), w.logs()
    assert {n: links(w, n) for n in w.l2.vtep} == before  # reconnected: not one kernel write
    for s in nodestates(w).values():
        for a in s["status"]["applied"]:
            assert a["kind"] != "L2Network" or a["writes"] == 0, a

    # -- deleted: gone from every node, finalizers run ----------------------------------------------
    k("delete", "l2network", "blue", "--timeout=60s")
    assert wait_for(lambda: not any({blue, vtep} & set(links(w, n)) for n in w.l2.vtep), 30)
    assert "blue" not in k("get", "l2networks", "-o", "name").stdout
    k("delete", "dnscache", "node-local", "--timeout=60s")
    assert wait_for(lambda: not any(dig(w, n, "h1.lab.test") for n in w.l2.vtep), 30)
    for node, proc in w.agents.items():
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, node
    assert not any((w.run.path / f"state-{n}" / "dns.pid").exists() for n in w.l2.vtep)
