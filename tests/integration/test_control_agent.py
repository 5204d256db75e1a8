"""The node agent's L2 part against the lab API server and a real kernel (network namespaces):
its NodeState's networks appear on the node and it reports them Applied at their generation;
with the API server gone nothing changes in the kernel and drift is still repaired; back, it
resyncs without a write; a network dropped from the NodeState is removed from the node."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from pyroute2 import IPRoute

from labs.apiserver.lab import ApiLab
from labs.l2lab import L2Lab
from labs.runid import RunDir
from netkit.control.agent import NodeAgent
from netkit.control.kube import Backoff, Informer
from netkit.l2.core.state import bridge_name, vxlan_name
from netkit.l2.kernel import Kernel
from tests.kubehelpers import G, V, cluster, wait_for


@pytest.fixture
def world(run_dir: RunDir) -> Iterator[tuple[ApiLab, L2Lab, client.CustomObjectsApi]]:
    if os.geteuid() != 0:
        pytest.fail("the agent test needs root (network namespaces); the suite runs as root")
    with cluster(run_dir.path / "api") as (api_lab, api), L2Lab(nodes=2) as l2:
        yield api_lab, l2, client.CustomObjectsApi(api)
    assert l2.leftovers() == []


def entry(l2: L2Lab, generation: int, **extra: Any) -> dict[str, Any]:
    members = [{"node": n, "vtep": l2.vtep[n]} for n in sorted(l2.vtep)]
    return {
        "name": "blue",
        "generation": generation,
        "type": "vxlan",
        "vni": 100,
        "port": 4789,
        "members": members,
        **extra,
    }


def links(l2: L2Lab, node: str) -> set[str]:
    with Kernel(l2.ns(node)) as k:
        return set(k.read().links)


def applied(co: client.CustomObjectsApi, node: str) -> list[dict[str, Any]]:
    return (co.get_cluster_custom_object(G, V, "nodestates", node).get("status") or {}).get("applied", [])


def publish(co: client.CustomObjectsApi, node: str, entries: list[dict[str, Any]]) -> None:
    """The node's NodeState, as the controller publishes it."""
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "NodeState",
        "metadata": {"name": node},
        "spec": {"nodeName": node, "l2Networks": entries},
    }
    co.create_cluster_custom_object(G, V, "nodestates", body)


def informer_of(
    co: client.CustomObjectsApi, node: str
) -> Callable[[Callable[[str, dict[str, Any]], None]], Informer]:
    """The agent's informer on its own NodeState (a field selector on its name)."""
    listing = functools.partial(
        co.list_cluster_custom_object, G, V, "nodestates", field_selector=f"metadata.name={node}"
    )
    return lambda handler: Informer(listing, handler, backoff=Backoff(0.1, 0.5), name=f"nodestate-{node}")


def test_the_agent_applies_reports_outlives_the_api_and_removes(
    world: tuple[ApiLab, L2Lab, client.CustomObjectsApi],
) -> None:
    api_lab, l2, co = world
    publish(co, "n1", [entry(l2, 1, mtu=1400)])
    agent = NodeAgent(co, informer_of(co, "n1"), "n1", l2.ns("n1"), resync=1.0).start()
    try:
        assert wait_for(lambda: {bridge_name("blue"), vxlan_name(100)} <= links(l2, "n1"))
        assert wait_for(
            lambda: (
                [(a["name"], a["generation"], a["state"]) for a in applied(co, "n1")]
                == [("blue", 1, "Applied")]
            )
        )
        # the API server gone: the kernel stays, drift is still repaired
        api_lab.stop_server()
        rounds = agent.rounds
        with IPRoute(netns=l2.ns("n1"), flags=0) as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=vxlan_name(100))[0])
        assert wait_for(lambda: vxlan_name(100) in links(l2, "n1"))  # repaired from the last NodeState
        time.sleep(1.5)
        assert {bridge_name("blue"), vxlan_name(100)} <= links(l2, "n1") and agent.rounds > rounds
        # back: the agent reconnects; a resync writes nothing
        api_lab.start_server()
        assert wait_for(
            lambda: agent.l2 is not None and agent.l2.last is not None and agent.l2.last.writes == 0, 10
        )
        # the network dropped from the NodeState: gone from the node, reported as nothing applied
        co.patch_cluster_custom_object(G, V, "nodestates", "n1", {"spec": {"l2Networks": []}})
        assert wait_for(lambda: not ({bridge_name("blue"), vxlan_name(100)} & links(l2, "n1")))
        assert wait_for(lambda: applied(co, "n1") == [])
    finally:
        agent.stop()


def test_a_node_without_its_nodestate_waits_and_touches_nothing(
    world: tuple[ApiLab, L2Lab, client.CustomObjectsApi],
) -> None:
    _, l2, co = world
    before = links(l2, "n2")
    agent = NodeAgent(co, informer_of(co, "n2"), "n2", l2.ns("n2")).start()
    try:
        time.sleep(1.0)
        assert agent.l2 is None and links(l2, "n2") == before  # not "no networks": nothing known yet
        publish(co, "n2", [entry(l2, 4)])
        assert wait_for(lambda: bridge_name("blue") in links(l2, "n2"))
        assert wait_for(lambda: [a["generation"] for a in applied(co, "n2")] == [4])
    finally:
        agent.stop()


def test_the_agents_doctor_reports_node_conditions_and_repairs(
    world: tuple[ApiLab, L2Lab, client.CustomObjectsApi], run_dir: RunDir
) -> None:
    """The node checks inside the agent: Netkit* conditions on the Node beside the others, a
    bridge's arp_ignore reset behind the agent's back repaired with an Event on the Node,
    status.doctor in the NodeState."""
    from kubernetes import config

    from netkit.control.doctoragent import DoctorOptions, NodeDoctor
    from netkit.control.kube import EventRecorder
    from tests.kubehelpers import Kubectl

    api_lab, l2, co = world
    api = config.new_client_from_config(str(api_lab.kubeconfig))
    core = client.CoreV1Api(api)
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1")))
    kubelet = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting"}
    core.patch_node_status("n1", {"status": {"conditions": [kubelet]}})
    publish(co, "n1", [entry(l2, 1)])
    events = EventRecorder(core, "netkit-agent", "n1")
    agent = NodeAgent(co, informer_of(co, "n1"), "n1", l2.ns("n1"), resync=30.0, events=events).start()
    agent.doctor = NodeDoctor(agent, api, DoctorOptions(kubelet_config=None)).start()
    try:
        assert wait_for(lambda: [a["state"] for a in applied(co, "n1")] == ["Applied"])

        def conditions() -> dict[str, dict[str, Any]]:
            node = core.read_node_status("n1")
            return {c.type: c.to_dict() for c in node.status.conditions or []}

        assert wait_for(lambda: "NetkitL2Drift" in conditions(), 20)
        conds = conditions()
        assert conds["Ready"]["reason"] == "KubeletReady"  # kubelet's own, untouched
        assert (
            conds["NetkitL2Drift"]["status"] == "False"
            and conds["NetkitAPIServerUnreachable"]["status"] == "False"
        )
        assert conds["NetkitBridgeAnswersARP"]["status"] == "False"
        # arp_ignore reset by sysctl: the agent's L2 reconcile only sees it at its next resync
        # (30 s); the bridge-ARP check finds and repairs it within its interval
        path = f"/proc/sys/net/ipv4/conf/{bridge_name('blue')}/arp_ignore"
        from netkit.base.netns import in_netns

        def sysctl(value: str | None = None) -> str:
            def rw() -> str:
                if value is not None:
                    with open(path, "w") as f:
                        f.write(value)
                with open(path) as f:
                    return f.read().strip()

            return in_netns(l2.ns("n1"), rw)

        assert sysctl("0") == "0"
        assert wait_for(lambda: sysctl() == "8", 15)
        kubectl = Kubectl(api_lab, run_dir.path / "home")
        assert wait_for(lambda: "Repaired" in kubectl("describe", "node", "n1").stdout, 10)
        shown = kubectl("describe", "node", "n1").stdout
        assert "NetkitBridgeAnswersARP" in shown and "set arp_ignore/rp_filter back" in shown

        def summary() -> list[dict[str, Any]]:
            return (co.get_cluster_custom_object(G, V, "nodestates", "n1").get("status") or {}).get(
                "doctor"
            ) or []

        assert wait_for(lambda: bool(summary()), 10)
        assert {s["check"] for s in summary()} >= {"l2-drift", "l2-bridge-arp", "api-server", "conntrack"}
        # netkit doctor by hand, reporting to the Node: its check's condition written, the agent's kept
        argv = [sys.executable, "-m", "netkit.cli", "doctor", "--node", "n1", "--netns", l2.ns("n1")]
        argv += ["--kubeconfig", str(api_lab.kubeconfig), "--report", "--only", "conntrack"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        conds = conditions()
        assert "NetkitL2Drift" in conds and conds["Ready"]["reason"] == "KubeletReady"
        assert conds["NetkitConntrackNearFull"]["status"] == "False"
    finally:
        agent.doctor.stop()
        agent.stop()
        api.close()
