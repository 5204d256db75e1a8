"""``speaker: calico`` through the API: the lab API server (real etcd), a ``netkit controller``
process, kubectl; Calico's two BGP resources as CRDs of the Kubernetes datastore
(``crd.projectcalico.org/v1``, schemas written here for the fields netkit writes: a field it
misspelt would be pruned and the test would see it missing).

calico/node cannot run on this machine, so the nodes' reports (what calico/node's BIRD runs
and learnt, which the agent reads in ``test_control_calico_observer``) come from the simulated
speakers of ``test_control_bgppublish`` (iBGP propagation over the published sessions), written
to each NodeState's status as the agents write it.

- without Calico's CRDs the topology is Degraded (CalicoMissing) and nothing is published;
- a mesh topology is Calico's own mesh: ``nodeToNodeMeshEnabled: true``, no BGPPeer;
- edited to reflectors, the migration runs step by step; at every sample of the API (every
  50 ms) Calico's mesh is on or peers of ours exist; the end is the reflectors' BGPPeers, the
  Node labels their selectors match and the reflectors' cluster-id annotations; an
  administrator's own BGPPeer and labels are never touched;
- ``kubectl delete`` returns once the nodes are back on Calico's mesh with nothing of ours left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from labs.apiserver.lab import ApiLab
from labs.runid import RunDir, free_port
from netkit.control.core.bgpdesired import BgpNode
from netkit.control.core.calicopublish import CID_ANNOTATION, scheme_label
from tests.kubehelpers import G, Kubectl, V, cluster, replica, wait_for
from tests.unit.test_control_bgppublish import simulate

pytestmark = [pytest.mark.peers]
NODES = 6
ZONE = "topology.kubernetes.io/zone"
CG, CV = "crd.projectcalico.org", "v1"
TOPOLOGY = """\
apiVersion: netkit.io/v1alpha1
kind: BGPTopology
metadata: {{name: cluster}}
spec:
  asn: 64512
  speaker: calico
  topology: {topology}
  policy: {{failureDomainLabel: {zone}, redundancy: 2}}
  migration: {{batch: 4, stepTimeoutSeconds: 120}}
"""


def _crd(plural: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": spec},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{CG}"},
        "spec": {
            "group": CG,
            "scope": "Cluster",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
            "versions": [
                {"name": CV, "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


S = {"type": "string"}
CALICO_CRDS = [
    _crd(
        "bgppeers",
        "BGPPeer",
        {
            "node": S,
            "peerIP": S,
            "asNumber": {"type": "integer"},
            "nodeSelector": S,
            "peerSelector": S,
            "password": {
                "type": "object",
                "properties": {"secretKeyRef": {"type": "object", "properties": {"name": S, "key": S}}},
            },
        },
    ),
    _crd(
        "bgpconfigurations",
        "BGPConfiguration",
        {
            "nodeToNodeMeshEnabled": {"type": "boolean"},
            "asNumber": {"type": "integer"},
            "logSeverityScreen": S,
        },
    ),
]


def bgp_nodes() -> list[BgpNode]:
    return [
        BgpNode(f"n{i}", {ZONE: f"z{i % 3}"}, f"198.18.0.{i + 1}", (f"198.19.{i}.0/24",))
        for i in range(NODES)
    ]


def agents(co: client.CustomObjectsApi, stop: threading.Event) -> None:
    """Every node's report, as its agent would write it from calico/node's BIRD."""
    ns = bgp_nodes()
    while not stop.is_set():
        states = {
            s["metadata"]["name"]: s for s in co.list_cluster_custom_object(G, V, "nodestates")["items"]
        }
        published = {n: s["spec"]["bgp"] for n, s in states.items() if s["spec"].get("bgp")}
        reports = simulate(published, [n for n in ns if n.name in published]) if published else {}
        for name, s in states.items():
            entry = published.get(name)
            applied = (
                [
                    {
                        "kind": "BGPTopology",
                        "name": entry["name"],
                        "generation": entry["generation"],
                        "state": "Applied",
                    }
                ]
                if entry
                else []
            )
            status = {"applied": applied, "bgp": reports.get(name)}
            have = s.get("status") or {}
            if have.get("applied", []) != applied or have.get("bgp") != status["bgp"]:
                co.patch_cluster_custom_object_status(G, V, "nodestates", name, {"status": status})
        stop.wait(0.1)


class Sampler:
    """The API's Calico state every 50 ms: (mesh on, peers of ours)."""

    def __init__(self, co: client.CustomObjectsApi) -> None:
        self.co, self.samples = co, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                cfg = self.co.get_cluster_custom_object(CG, CV, "bgpconfigurations", "default")
                mesh = bool(cfg["spec"].get("nodeToNodeMeshEnabled", True))
            except client.ApiException:
                mesh = True  # none: Calico's default, the mesh
            peers = self.co.list_cluster_custom_object(CG, CV, "bgppeers")["items"]
            self.samples.append(
                (mesh, len([p for p in peers if p["metadata"]["name"].startswith("netkit-")]))
            )
            self.stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def world(run_dir: RunDir) -> Iterator[tuple[ApiLab, client.ApiClient]]:
    with cluster(
        run_dir.path / "api", nodes=NODES, labels=lambda i: {ZONE: f"z{i % 3}", "rack": "r1"}
    ) as both:
        core = client.CoreV1Api(both[1])
        for i in range(NODES):
            core.patch_node(
                f"n{i}", {"spec": {"podCIDRs": [f"198.19.{i}.0/24"], "podCIDR": f"198.19.{i}.0/24"}}
            )
        yield both


def test_calico_mode_mesh_to_reflectors_and_back_to_calicos_mesh(
    world: tuple[ApiLab, client.ApiClient], run_dir: RunDir
) -> None:
    lab, api = world
    co = client.CustomObjectsApi(api)
    home = run_dir.path / "home"
    home.mkdir()
    k = Kubectl(lab, home)
    controller = replica(lab, "replica-a", free_port(), run_dir.path / "controller.log")
    stop = threading.Event()
    agent = threading.Thread(target=agents, args=(co, stop), daemon=True)
    agent.start()

    def log() -> str:
        return (run_dir.path / "controller.log").read_text()[-3000:]

    def condition(type_: str) -> dict[str, Any]:
        obj = co.get_cluster_custom_object(G, V, "bgptopologies", "cluster")
        return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})

    try:
        # Calico not installed: said, nothing published
        k("apply", "-f", "-", stdin=TOPOLOGY.format(topology="mesh", zone=ZONE))
        assert wait_for(lambda: condition("Degraded").get("reason") == "CalicoMissing", 30), log()
        assert not any(
            s["spec"].get("bgp") for s in co.list_cluster_custom_object(G, V, "nodestates")["items"]
        )
        ext = client.ApiextensionsV1Api(api)
        for crd in CALICO_CRDS:
            ext.create_custom_resource_definition(crd)
        k(
            "apply",
            "-f",
            "-",
            stdin="apiVersion: crd.projectcalico.org/v1\nkind: BGPPeer\nmetadata: {name: admin-tor}\n"
            "spec: {peerIP: 10.0.0.1, asNumber: 65001, nodeSelector: \"rack == 'r1'\"}\n",
        )
        k("wait", "--for=condition=Ready", "bgptopology/cluster", "--timeout=60s")
        cfg = k.json("get", "bgpconfigurations.crd.projectcalico.org", "default")
        assert cfg["spec"] == {"nodeToNodeMeshEnabled": True, "asNumber": 64512}
        assert [p["metadata"]["name"] for p in k.json("get", "bgppeers.crd.projectcalico.org")["items"]] == [
            "admin-tor"
        ]

        # to reflectors, sampled
        with Sampler(co) as sampler:
            k("apply", "-f", "-", stdin=TOPOLOGY.format(topology="reflectors", zone=ZONE))
            assert wait_for(lambda: condition("Progressing").get("reason") == "Migrating", 30), log()
            k("wait", "--for=condition=Ready", "bgptopology/cluster", "--timeout=120s")
            time.sleep(0.3)
        assert all(mesh or ours for mesh, ours in sampler.samples), "an instant with no session"
        assert len(sampler.samples) > 10
        topo = k.json("get", "bgptopology", "cluster")
        reflectors = set(topo["status"]["reflectors"])
        assert len(reflectors) >= 2 and topo["status"]["phase"] == "Converged"
        cfg = k.json("get", "bgpconfigurations.crd.projectcalico.org", "default")
        assert cfg["spec"]["nodeToNodeMeshEnabled"] is False
        peers = {p["metadata"]["name"]: p for p in k.json("get", "bgppeers.crd.projectcalico.org")["items"]}
        assert {f"netkit-rr-{r}" for r in reflectors} <= set(peers) and "admin-tor" in peers
        assert peers["admin-tor"]["spec"]["nodeSelector"] == "rack == 'r1'"
        nodes = {n["metadata"]["name"]: n for n in k.json("get", "nodes")["items"]}
        for name, n in nodes.items():
            meta = n["metadata"]
            assert (CID_ANNOTATION in (meta.get("annotations") or {})) == (name in reflectors)
            assert meta["labels"]["rack"] == "r1"
            if name in reflectors:
                assert meta["labels"]["netkit.io/reflector"] == name
            else:
                assert any(k_.startswith("netkit.io/rr-") for k_ in meta["labels"])
        shown = k("get", "nodes", "-L", "netkit.io/reflector").stdout
        print(shown)
        print(k("get", "bgppeers.crd.projectcalico.org").stdout)
        print(f"{len(sampler.samples)} samples of the API during the migration, none without a session")

        # deleted: back on Calico's mesh, nothing of ours left
        k("delete", "bgptopology", "cluster", "--timeout=60s")
        cfg = k.json("get", "bgpconfigurations.crd.projectcalico.org", "default")
        assert cfg["spec"]["nodeToNodeMeshEnabled"] is True
        assert [p["metadata"]["name"] for p in k.json("get", "bgppeers.crd.projectcalico.org")["items"]] == [
            "admin-tor"
        ]
        for n in k.json("get", "nodes")["items"]:
            meta = n["metadata"]
            assert not any(scheme_label(x) for x in meta["labels"]) and meta["labels"]["rack"] == "r1"
            assert CID_ANNOTATION not in (meta.get("annotations") or {})
    finally:
        stop.set()
        agent.join(5)
        controller.terminate()
        controller.wait(15)
