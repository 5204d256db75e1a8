"""netkit.control.kube against the lab API server (real etcd, the official client): an informer
that lists then watches, re-lists after a compaction (410), keeps its cache while the API server
is gone and catches up when it is back; status written through a 409; two leader electors of
which one leads, and the other takes over once the leader stops renewing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from labs.apiserver.lab import ApiLab
from labs.runid import RunDir
from netkit.control.kube import Backoff, Informer, LeaderElector, update_status
from tests.kubehelpers import G, V, cluster, wait_for


@pytest.fixture
def lab(run_dir: RunDir) -> Iterator[ApiLab]:
    with cluster(run_dir.path / "api") as (lab, _):
        yield lab


def network(name: str, vni: int) -> dict[str, Any]:
    return {"apiVersion": f"{G}/{V}", "kind": "L2Network", "metadata": {"name": name}, "spec": {"vni": vni}}


def test_an_informer_lists_watches_relists_and_outlives_the_api_server(lab: ApiLab) -> None:
    co = client.CustomObjectsApi(config.new_client_from_config(str(lab.kubeconfig)))
    co.create_cluster_custom_object(G, V, "l2networks", network("blue", 100))
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def handler(kind: str, obj: dict[str, Any]) -> None:
        with lock:
            seen.append((kind, obj["metadata"]["name"]))

    informer = Informer(
        co.list_cluster_custom_object,
        handler,
        args=(G, V, "l2networks"),
        backoff=Backoff(0.1, 0.5),
        name="l2",
    ).start()
    try:
        assert informer.synced.wait(10) and seen == [("ADDED", "blue")]
        co.create_cluster_custom_object(G, V, "l2networks", network("red", 200))
        co.patch_cluster_custom_object(G, V, "l2networks", "blue", {"spec": {"mtu": 1400}})
        assert wait_for(lambda: ("MODIFIED", "blue") in seen and ("ADDED", "red") in seen)
        # the API server gone: the cache stays, nothing is reported deleted
        lab.stop_server()
        time.sleep(1.5)
        assert set(informer.snapshot()) == {"/blue", "/red"} and not any(k == "DELETED" for k, _ in seen)
        assert informer.errors >= 1
        # meanwhile (straight in etcd, as another API server would): red deleted, compaction
        etcd = lab.etcd.client
        red = etcd.get("/registry/netkit.io/l2networks/red")
        assert red is not None and etcd.delete(red.key, red.mod_revision) is not None
        etcd.compact(etcd.revision())
        lab.start_server()
        assert wait_for(lambda: ("DELETED", "red") in seen, 15), seen  # listed again, the delete found
        assert set(informer.snapshot()) == {"/blue"} and informer.relists >= 2
        co.create_cluster_custom_object(G, V, "l2networks", network("green", 300))
        assert wait_for(lambda: ("ADDED", "green") in seen)
    finally:
        informer.stop()


def test_status_is_written_through_a_conflict(lab: ApiLab) -> None:
    co = client.CustomObjectsApi(config.new_client_from_config(str(lab.kubeconfig)))
    co.create_cluster_custom_object(G, V, "l2networks", network("blue", 100))
    raced = []

    def change(obj: dict[str, Any]) -> dict[str, Any]:
        if not raced:  # someone else writes between our read and our write
            raced.append(
                co.patch_cluster_custom_object_status(
                    G, V, "l2networks", "blue", {"status": {"nodesSelected": 1}}
                )
            )
        return {**obj, "status": {**(obj.get("status") or {}), "observedGeneration": 1}}

    written = update_status(
        lambda: co.get_cluster_custom_object(G, V, "l2networks", "blue"),
        lambda obj: co.replace_cluster_custom_object_status(G, V, "l2networks", "blue", obj),
        change,
    )
    assert written is not None
    assert co.get_cluster_custom_object(G, V, "l2networks", "blue")["status"] == {
        "nodesSelected": 1,
        "observedGeneration": 1,
    }
    assert (
        update_status(
            lambda: co.get_cluster_custom_object(G, V, "l2networks", "blue"), lambda o: o, lambda o: None
        )
        is None
    )


def test_one_leader_and_a_takeover_when_it_stops_renewing(lab: ApiLab) -> None:
    electors = []
    for identity in ("replica-a", "replica-b"):
        api = client.CoordinationV1Api(config.new_client_from_config(str(lab.kubeconfig)))
        electors.append(
            LeaderElector(
                api,
                "kube-system",
                "netkit-controller",
                identity,
                lease_duration=3,
                renew_deadline=2,
                retry_period=0.2,
            )
        )
    a, b = electors
    a.start()
    assert a.leading.wait(5)
    b.start()
    try:
        time.sleep(1.5)
        assert a.leading.is_set() and not b.leading.is_set()  # never two
        started = time.monotonic()
        a.stop()  # the leader dies (stops renewing; its lease is not released)
        assert b.leading.wait(6)
        took = time.monotonic() - started
        assert took <= 3 + 1.5, took  # within the lease duration (and a retry)
        lease = client.CoordinationV1Api(
            config.new_client_from_config(str(lab.kubeconfig))
        ).read_namespaced_lease("netkit-controller", "kube-system")
        assert lease.spec.holder_identity == "replica-b" and lease.spec.lease_transitions == 1
    finally:
        a.stop()
        b.stop()
