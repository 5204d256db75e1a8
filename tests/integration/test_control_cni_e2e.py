"""Pods join L2Networks through the control plane: the lab API server, a ``netkit controller``,
two nodes (network namespaces) each with a real ``netkit agent``; L2Networks applied with
kubectl; pods attached by ``netkit-cni`` invoked as a runtime invokes it.

- each agent publishes the pods attached on its node (``NodeState.status.endpoints``, from the
  plugin's records), and the controller makes them known endpoints of their network on the
  other node: a static FDB entry towards the pod's node and a permanent neighbour entry (ARP
  suppression) on the bridge;
- with those, an ARP request for a remote pod is answered on the asking node: it never
  crosses the underlay (raw sockets on it), while the pods still reach each other;
- the pods of the other network get none of it; DEL removes the pod and, within seconds, its
  entries on the other node.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kubernetes import client, config

from labs.apiserver.lab import ApiLab
from labs.l2lab import L2Lab
from labs.l2verify import Tap, arp_request, ether, vxlan_of
from labs.runid import RunDir, free_port
from netkit.base.netns import netns_exec
from netkit.l2.core.state import bridge_name
from netkit.l2.kernel import Kernel
from tests.cnihelpers import Runtime, build_shim
from tests.kubehelpers import G, Kubectl, V, agent, replica, stop_process, wait_for

pytestmark = [pytest.mark.root, pytest.mark.peers]
NETWORKS = """\
apiVersion: netkit.io/v1alpha1
kind: L2Network
metadata: {name: blue}
spec:
  type: vxlan
  vni: 100
  attachment: {namespaces: [team-a], ipam: {type: static}}
---
apiVersion: netkit.io/v1alpha1
kind: L2Network
metadata: {name: red}
spec: {type: vxlan, vni: 200}
"""


@dataclass
class World:
    run: RunDir
    l2: L2Lab
    k: Kubectl
    co: client.CustomObjectsApi
    rt: Runtime
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.run.path.glob("*.log"))
        )


@pytest.fixture
def world(run_dir: RunDir) -> Iterator[World]:
    with ApiLab(run_dir.path / "api") as api_lab, L2Lab(nodes=2, run_id=run_dir.run_id) as l2:
        home = run_dir.path / "home"
        home.mkdir()
        k = Kubectl(api_lab, home)
        k("apply", "-k", "deploy/crds")
        api = config.new_client_from_config(str(api_lab.kubeconfig))
        core = client.CoreV1Api(api)
        for node in sorted(l2.vtep):
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
            core.patch_node_status(
                node, {"status": {"addresses": [{"type": "InternalIP", "address": l2.vtep[node]}]}}
            )
        w = World(run_dir, l2, k, client.CustomObjectsApi(api), Runtime(l2, run_dir.path))
        try:
            w.procs.append(replica(api_lab, "replica-a", free_port(), run_dir.path / "controller.log"))
            for node in sorted(l2.vtep):
                args = ["--no-dns", "--netns", l2.ns(node)]
                args += ["--cni-state-dir", str(run_dir.path / f"state-{node}")]
                args += ["--cni-socket", str(run_dir.path / f"cni-{node}.sock")]
                w.procs.append(agent(api_lab, node, args, run_dir.path / f"agent-{node}.log"))
            yield w
        finally:
            for p in w.procs:
                stop_process(p)
            api.close()
    assert l2.leftovers() == []


# Multus's CRD, as it installs it (the schema is the part netkit relies on: spec.config, a string)
NAD_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"},
    "spec": {
        "group": "k8s.cni.cncf.io",
        "scope": "Namespaced",
        "names": {
            "plural": "network-attachment-definitions",
            "singular": "network-attachment-definition",
            "kind": "NetworkAttachmentDefinition",
            "shortNames": ["net-attach-def"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": {"type": "object", "properties": {"config": {"type": "string"}}},
                        },
                    }
                },
            }
        ],
    },
}


def known_on(w: World, node: str, network: str) -> tuple[set[str], set[str]]:
    """(MACs with a static FDB entry, IPs with a permanent neighbour entry) of ``network`` on ``node``."""
    with Kernel(w.l2.ns(node)) as k:
        st = k.read(full=True)
    br = bridge_name(network)
    macs = {e.mac for e in st.fdb if e.state == "static"}
    ips = {n.ip for n in st.neighbours if n.ifname == br and n.state == "permanent"}
    return macs, ips


def test_attached_pods_become_known_endpoints_on_the_other_node(world: World) -> None:
    w, rt = world, world.rt
    w.k("apply", "-f", "-", stdin='{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}')
    w.k("apply", "-f", "-", stdin=NETWORKS)
    ready = w.k("wait", "--for=condition=Ready", "l2network/blue", "l2network/red", "--timeout=60s", ok=False)
    assert ready.returncode == 0, f"{ready.stdout}{ready.stderr}\n{w.logs()}"
    # no Multus: said, and the network runs anyway
    w.k("wait", "--for=condition=Degraded", "l2network/blue", "--timeout=30s")
    assert "MultusMissing" in w.k("get", "l2network", "blue", "-o", "jsonpath={.status.conditions}").stdout
    w.k("apply", "-f", "-", stdin=json.dumps(NAD_CRD))
    assert wait_for(
        lambda: w.k("get", "net-attach-def", "-n", "team-a", "blue", ok=False).returncode == 0, 30
    ), w.logs()
    w.k("wait", "--for=condition=Degraded=False", "l2network/blue", "--timeout=30s")
    nad = w.k.json("get", "net-attach-def", "-n", "team-a", "blue")
    config = json.loads(nad["spec"]["config"])
    assert config == {
        "cniVersion": "1.0.0",
        "name": "blue",
        "network": "blue",
        "type": "netkit-cni",
        "capabilities": {"ips": True},
        "ipam": {"type": "static"},
    }
    pods = {"a1": ("blue", "n1"), "a2": ("blue", "n2"), "b1": ("red", "n1")}
    box, res = {}, {}
    shim = build_shim(w.run.path)  # a2 goes through the node's shim and n2's agent, as in a cluster
    for name, (net, node) in pods.items():
        box[name] = rt.lab.add_sandbox(name)
        conf = rt.conf(net, node)
        conf["ipam"]["dataDir"] += f"-{net}"
        conf["bridgeTimeoutSeconds"] = 10
        via = (
            {"plugin": shim, "env": {"NETKIT_CNI_SOCKET": str(w.run.path / f"cni-{node}.sock")}}
            if name == "a2"
            else {}
        )
        rc, res[name] = rt.call(node, "ADD", conf, name, box[name], **via)
        assert rc == 0, res[name]
    mac = {n: r["interfaces"][2]["mac"] for n, r in res.items()}
    ip = {n: r["ips"][0]["address"].split("/")[0] for n, r in res.items()}

    # published by n1's agent, known on n2 within seconds
    def published() -> list[str]:
        s = w.co.get_cluster_custom_object(G, V, "nodestates", "n1")
        return sorted(e["mac"] for e in (s.get("status") or {}).get("endpoints") or [])

    assert wait_for(lambda: published() == sorted([mac["a1"], mac["b1"]]), 20), w.logs()
    assert wait_for(
        lambda: mac["a1"] in known_on(w, "n2", "blue")[0] and ip["a1"] in known_on(w, "n2", "blue")[1], 20
    ), w.logs()
    endpoints = w.k.json("get", "nodestate", "n1")["status"]["endpoints"]
    assert {e["pod"] for e in endpoints} == {"tenant/a1", "tenant/b1"} and all(
        e["interface"] == "eth0" for e in endpoints
    )
    blue_n2 = next(e for e in w.k.json("get", "nodestate", "n2")["spec"]["l2Networks"] if e["name"] == "blue")
    assert {"mac": mac["a1"], "node": "n1", "ip": ip["a1"]} in blue_n2["endpoints"]
    red_n2 = next(e for e in w.k.json("get", "nodestate", "n2")["spec"]["l2Networks"] if e["name"] == "red")
    assert mac["a1"] not in {e["mac"] for e in red_n2.get("endpoints", [])}

    # ARP for a1 from a2 is answered on n2: nothing of it crosses the underlay
    a2ns = box["a2"].rsplit("/", 1)[1]
    wire = Tap("wire", w.l2.ns("n2"), w.l2.underlay["n2"])
    pod = Tap("a2", a2ns, "eth0")
    try:
        time.sleep(0.2)
        wire.drain()
        pod.drain()
        pod.send(ether("ff:ff:ff:ff:ff:ff", mac["a2"], 0x0806, arp_request(mac["a2"], ip["a2"], ip["a1"])))
        time.sleep(0.5)
        replies = [
            c.data for c in pod.drain() if c.data[12:14] == b"\x08\x06" and c.data[20:22] == b"\x00\x02"
        ]
        crossed = [
            c.data
            for c in wire.drain()
            if vxlan_of(c.data) is not None and c.data[50 + 12 : 50 + 14] == b"\x08\x06"
        ]
    finally:
        wire.close()
        pod.close()
    assert replies and replies[0][22:28] == bytes.fromhex(mac["a1"].replace(":", "")), replies
    assert not crossed, f"{len(crossed)} ARP frames went over VXLAN"
    ping = netns_exec(a2ns, ["ping", "-c", "2", "-i", "0.2", "-W", "1", ip["a1"]])
    assert subprocess.run(ping, capture_output=True, timeout=20).returncode == 0

    # a pod of team-a attached with the NAD's configuration as Multus passes it (the address the
    # pod's annotation asks for, as runtimeConfig.ips), reaching a2 on the other node
    box["c1"] = rt.lab.add_sandbox("c1")
    conf = {**config, "stateDir": str(rt.dir / "state-n1"), "runtimeConfig": {"ips": ["10.99.0.50/24"]}}
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=c1"
    rc, res["c1"] = rt.call("n1", "ADD", conf, "c1", box["c1"], ifname="net1", env={"CNI_ARGS": args})
    assert rc == 0 and res["c1"]["ips"][0]["address"] == "10.99.0.50/24", res["c1"]
    c1ns = box["c1"].rsplit("/", 1)[1]
    ping = netns_exec(c1ns, ["ping", "-c", "2", "-i", "0.2", "-W", "1", ip["a2"]])
    assert subprocess.run(ping, capture_output=True, timeout=20).returncode == 0
    assert wait_for(
        lambda: (
            "team-a/c1" in {e.get("pod") for e in w.k.json("get", "nodestate", "n1")["status"]["endpoints"]}
        ),
        10,
    )

    # a1 goes: its entries on n2 go
    conf = rt.conf("blue", "n1")
    conf["ipam"]["dataDir"] += "-blue"
    assert rt.call("n1", "DEL", {**conf, "prevResult": res["a1"]}, "a1", box["a1"])[0] == 0
    assert wait_for(
        lambda: (
            mac["a1"] not in known_on(w, "n2", "blue")[0] and ip["a1"] not in known_on(w, "n2", "blue")[1]
        ),
        20,
    ), w.logs()
    assert wait_for(lambda: published() == sorted([mac["b1"], res["c1"]["interfaces"][2]["mac"]]), 10)

    # the network deleted: its NetworkAttachmentDefinition goes with it
    w.k("delete", "l2network", "blue", "--timeout=60s")
    assert w.k("get", "net-attach-def", "-n", "team-a", "blue", ok=False).returncode != 0
