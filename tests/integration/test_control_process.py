"""Two ``netkit controller`` processes against the lab API server: one leads (the Lease says
which, /metrics says so), the L2Network is published to every node and turns Ready; the leader
is killed (SIGKILL, no release) and the other takes over within the lease duration, writing
nothing that was already written; SIGTERM stops a replica with exit 0."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client

from labs.apiserver.lab import ApiLab
from labs.runid import RunDir, free_port
from tests.kubehelpers import G, V, cluster, leading, replica, wait_for


@pytest.fixture
def world(run_dir: RunDir) -> Iterator[tuple[ApiLab, client.ApiClient]]:
    with cluster(run_dir.path / "api", nodes=3) as both:
        yield both


def agents(co: client.CustomObjectsApi, stop: threading.Event) -> None:
    while not stop.is_set():
        for s in co.list_cluster_custom_object(G, V, "nodestates")["items"]:
            want = [
                {"kind": "L2Network", "name": e["name"], "generation": e["generation"], "state": "Applied"}
                for e in s["spec"].get("l2Networks", [])
            ]
            if (s.get("status") or {}).get("applied", []) != want:
                co.patch_cluster_custom_object_status(
                    G, V, "nodestates", s["metadata"]["name"], {"status": {"applied": want}}
                )
        stop.wait(0.2)


def test_two_replicas_one_leader_and_a_takeover(
    world: tuple[ApiLab, client.ApiClient], run_dir: RunDir
) -> None:
    lab, api = world
    co, coord = client.CustomObjectsApi(api), client.CoordinationV1Api(api)
    ports = {"a": free_port(), "b": free_port()}
    procs = {
        name: replica(lab, f"replica-{name}", ports[name], run_dir.path / f"{name}.log") for name in ports
    }
    stop = threading.Event()
    agent = threading.Thread(target=agents, args=(co, stop), daemon=True)
    agent.start()
    try:
        co.create_cluster_custom_object(
            G,
            V,
            "l2networks",
            {
                "apiVersion": f"{G}/{V}",
                "kind": "L2Network",
                "metadata": {"name": "blue"},
                "spec": {"vni": 100},
            },
        )

        def ready() -> bool:
            status = co.get_cluster_custom_object(G, V, "l2networks", "blue").get("status") or {}
            return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))

        assert wait_for(ready, 30), {n: (run_dir.path / f"{n}.log").read_text()[-2000:] for n in ports}
        holder = coord.read_namespaced_lease("netkit-controller", "kube-system").spec.holder_identity
        first, second = ("a", "b") if holder == "replica-a" else ("b", "a")
        assert wait_for(lambda: leading(ports[first])) and not leading(ports[second])  # never two
        for name in ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}/readyz", timeout=2) as resp:
                assert resp.status == 200  # both have listed: the standby's caches are warm
        time.sleep(1.0)
        versions = {
            s["metadata"]["name"]: s["metadata"]["resourceVersion"]
            for s in co.list_cluster_custom_object(G, V, "nodestates")["items"]
        }
        blue_rv = co.get_cluster_custom_object(G, V, "l2networks", "blue")["metadata"]["resourceVersion"]
        killed = time.monotonic()
        procs[first].send_signal(signal.SIGKILL)
        procs[first].wait(5)
        assert wait_for(lambda: leading(ports[second]), 10)
        took = time.monotonic() - killed
        assert took <= 3 + 2, took  # within the lease duration (and a retry or two)
        time.sleep(1.5)  # the new leader has passed over everything: it had nothing to write
        after = {
            s["metadata"]["name"]: s["metadata"]["resourceVersion"]
            for s in co.list_cluster_custom_object(G, V, "nodestates")["items"]
        }
        assert after == versions
        assert (
            co.get_cluster_custom_object(G, V, "l2networks", "blue")["metadata"]["resourceVersion"] == blue_rv
        )
        assert (
            coord.read_namespaced_lease("netkit-controller", "kube-system").spec.holder_identity
            == f"replica-{second}"
        )
        procs[second].send_signal(signal.SIGTERM)
        assert procs[second].wait(10) == 0
    finally:
        stop.set()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)
