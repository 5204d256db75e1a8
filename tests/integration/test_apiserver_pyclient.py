"""The lab API server as the official Python client (``kubernetes``, unmodified) sees it: CRDs
created, custom objects created, patched, their status written, a second create refused, Nodes
with status addresses, ConfigMaps by label, a Lease, an Event, and a watch from a list's
resourceVersion."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client, watch

from labs.runid import RunDir
from tests.kubehelpers import ROOT, G, V, cluster


@pytest.fixture
def api(run_dir: RunDir) -> Iterator[client.ApiClient]:
    with cluster(run_dir.path / "api") as (_, api_client):
        yield api_client


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "examples" / "netkit" / name).read_text())  # type: ignore[no-any-return]


def test_custom_objects(api: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    made = co.create_cluster_custom_object(G, V, "l2networks", example("l2network-vxlan.yaml"))
    assert made["metadata"]["generation"] == 1 and made["spec"]["port"] == 4789
    co.patch_cluster_custom_object_status(G, V, "l2networks", "blue", {"status": {"observedGeneration": 1}})
    co.patch_cluster_custom_object(G, V, "l2networks", "blue", {"spec": {"mtu": 1400}})
    blue = co.get_cluster_custom_object(G, V, "l2networks", "blue")
    assert blue["status"] == {"observedGeneration": 1} and blue["metadata"]["generation"] == 2
    with pytest.raises(client.ApiException) as info:
        co.create_cluster_custom_object(G, V, "l2networks", example("l2network-vxlan.yaml"))
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "AlreadyExists"
    bad = example("l2network-vxlan.yaml") | {"metadata": {"name": "bad"}}
    bad["spec"] = {**bad["spec"], "vni": 0}
    with pytest.raises(client.ApiException) as invalid:
        co.create_cluster_custom_object(G, V, "l2networks", bad)
    assert invalid.value.status == 422 and "spec.vni" in invalid.value.body


def test_nodes_configmaps_leases_events(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1", labels={"zone": "a"})))
    core.patch_node_status("n1", {"status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.1"}]}})
    node = core.read_node("n1")
    assert node.status.addresses[0].address == "198.18.0.1" and node.metadata.labels == {"zone": "a"}
    for name, labels in (("x", {"a": "b"}), ("y", {"a": "c"})):
        core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )
    assert [
        c.metadata.name for c in core.list_namespaced_config_map("default", label_selector="a=b").items
    ] == ["x"]
    coord = client.CoordinationV1Api(api)
    lease = coord.create_namespaced_lease(
        "kube-system",
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="netkit-controller"),
            spec=client.V1LeaseSpec(holder_identity="replica-a", lease_duration_seconds=15),
        ),
    )
    lease.spec.holder_identity = "replica-b"
    assert (
        coord.replace_namespaced_lease("netkit-controller", "kube-system", lease).spec.holder_identity
        == "replica-b"
    )
    with pytest.raises(client.ApiException) as stale:  # the same resourceVersion again: someone else won
        coord.replace_namespaced_lease("netkit-controller", "kube-system", lease)
    assert stale.value.status == 409
    event = core.create_namespaced_event(
        "default",
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="blue."),
            involved_object=client.V1ObjectReference(kind="L2Network", name="blue", api_version=f"{G}/{V}"),
            reason="Applied",
            message="on n1",
            type="Normal",
        ),
    )
    assert event.metadata.name.startswith("blue.")
    found = core.list_namespaced_event("default", field_selector="involvedObject.name=blue").items
    assert [e.reason for e in found] == ["Applied"]


def test_a_watch_from_a_lists_resource_version(api: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    co.create_cluster_custom_object(G, V, "l2networks", example("l2network-vxlan.yaml"))
    rv = co.list_cluster_custom_object(G, V, "l2networks")["metadata"]["resourceVersion"]

    def later() -> None:
        time.sleep(0.5)
        co.patch_cluster_custom_object(G, V, "l2networks", "blue", {"spec": {"mtu": 1400}})

    threading.Thread(target=later, daemon=True).start()
    w = watch.Watch()
    seen = []
    for event in w.stream(
        co.list_cluster_custom_object, G, V, "l2networks", resource_version=rv, timeout_seconds=10
    ):
        seen.append((event["type"], event["object"]["metadata"]["generation"]))
        w.stop()
    assert seen == [("MODIFIED", 2)]
