"""The L2 controller against the lab API server (real etcd, the official client, its informers):
three Nodes, an L2Network applied, agents stood in for by a loop that reports what each
NodeState asks as applied; the network is published node by node (maxUnavailable 1), its status
turns Ready with the counts, its finalizer holds a delete until every node has dropped it, and a
restarted controller writes nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from labs.apiserver.lab import ApiLab
from labs.runid import RunDir
from netkit.control.kube import Backoff, Informer
from netkit.control.l2controller import FINALIZER, L2Controller
from tests.kubehelpers import G, V, cluster, wait_for


@pytest.fixture
def world(run_dir: RunDir) -> Iterator[tuple[ApiLab, client.ApiClient]]:
    with cluster(run_dir.path / "api", nodes=3, labels=lambda i: {"zone": "ab"[i % 2]}) as both:
        yield both


def start_controller(api: client.ApiClient) -> tuple[L2Controller, list[Informer], threading.Event]:
    co, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    controller = L2Controller(co, {})
    informers = {
        "l2networks": Informer(
            co.list_cluster_custom_object,
            controller.changed,
            args=(G, V, "l2networks"),
            backoff=Backoff(0.1, 1),
        ),
        "nodes": Informer(core.list_node, controller.changed, backoff=Backoff(0.1, 1)),
        "nodestates": Informer(
            co.list_cluster_custom_object,
            controller.changed,
            args=(G, V, "nodestates"),
            backoff=Backoff(0.1, 1),
        ),
    }
    controller.informers = informers
    for inf in informers.values():
        inf.start()
    assert wait_for(controller.ready, 15)
    return controller, list(informers.values()), threading.Event()


def agents(co: client.CustomObjectsApi, stop: threading.Event, seen_in_flight: list[int]) -> None:
    """Every node applies what its NodeState asks, one pass at a time, and says so."""
    while not stop.is_set():
        states = co.list_cluster_custom_object(G, V, "nodestates")["items"]
        behind = [
            s
            for s in states
            if {e["name"]: e["generation"] for e in s["spec"].get("l2Networks", [])}
            != {a["name"]: a["generation"] for a in (s.get("status") or {}).get("applied", [])}
        ]
        seen_in_flight.append(len(behind))
        for s in behind:
            applied = [
                {"kind": "L2Network", "name": e["name"], "generation": e["generation"], "state": "Applied"}
                for e in s["spec"].get("l2Networks", [])
            ]
            co.patch_cluster_custom_object_status(
                G, V, "nodestates", s["metadata"]["name"], {"status": {"applied": applied}}
            )
        stop.wait(0.3)


def test_publish_rollout_status_finalizer_and_a_quiet_restart(
    world: tuple[ApiLab, client.ApiClient],
) -> None:
    _, api = world
    co = client.CustomObjectsApi(api)
    controller, informers, leading = start_controller(api)
    stop = threading.Event()
    leading.set()
    loop = threading.Thread(target=controller.run, args=(leading, stop), daemon=True)
    loop.start()
    in_flight: list[int] = []
    agent_stop = threading.Event()
    agent = threading.Thread(target=agents, args=(co, agent_stop, in_flight), daemon=True)
    try:
        blue = {
            "apiVersion": f"{G}/{V}",
            "kind": "L2Network",
            "metadata": {"name": "blue"},
            "spec": {"vni": 100, "mtu": 1450, "maxUnavailable": 1},
        }
        co.create_cluster_custom_object(G, V, "l2networks", blue)

        def published() -> list[list[str]]:
            items = co.list_cluster_custom_object(G, V, "nodestates")["items"]
            return sorted([e["name"] for e in s["spec"].get("l2Networks", [])] for s in items)

        assert wait_for(lambda: len(published()) == 3 and ["blue"] in published())
        time.sleep(0.5)  # the controller keeps passing: still one node, until it reports
        first = {
            s["metadata"]["name"]: [e["name"] for e in s["spec"].get("l2Networks", [])]
            for s in co.list_cluster_custom_object(G, V, "nodestates")["items"]
        }
        assert sorted(first.values()) == [[], [], ["blue"]]  # one node at a time
        agent.start()

        def ready() -> bool:
            status = co.get_cluster_custom_object(G, V, "l2networks", "blue").get("status") or {}
            return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))

        assert wait_for(ready, 20)
        obj = co.get_cluster_custom_object(G, V, "l2networks", "blue")
        assert obj["status"]["nodesReady"] == 3 and obj["status"]["observedGeneration"] == 1
        assert FINALIZER in obj["metadata"]["finalizers"]
        assert max(in_flight) <= 1  # never more than maxUnavailable nodes behind
        entry = co.get_cluster_custom_object(G, V, "nodestates", "n0")["spec"]["l2Networks"][0]
        assert entry["vni"] == 100 and {m["node"]: m["vtep"] for m in entry["members"]}["n2"] == "198.18.0.3"
        # a restarted controller (fresh caches) finds nothing to write
        stop.set()
        loop.join(5)
        for inf in informers:
            inf.stop()
        again, again_informers, _ = start_controller(api)
        assert again.reconcile() == 0
        # deleting: the finalizer holds it until every node has dropped it
        co.delete_cluster_custom_object(G, V, "l2networks", "blue")
        assert co.get_cluster_custom_object(G, V, "l2networks", "blue")["metadata"]["deletionTimestamp"]

        def gone() -> bool:
            again.reconcile()
            try:
                co.get_cluster_custom_object(G, V, "l2networks", "blue")
                return False
            except client.ApiException as exc:
                return exc.status == 404

        assert wait_for(gone, 20)
        assert all(
            not s["spec"].get("l2Networks")
            for s in co.list_cluster_custom_object(G, V, "nodestates")["items"]
        )
        for inf in again_informers:
            inf.stop()
    finally:
        stop.set()
        agent_stop.set()
        for inf in informers:
            inf.stop()
