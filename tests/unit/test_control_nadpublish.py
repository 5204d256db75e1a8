"""The NetworkAttachmentDefinitions the L2 controller keeps (pure): one per network and named
namespace with netkit-cni's configuration; ours replaced when they differ, deleted when nobody
wants them (network deleted, in conflict, namespace dropped); somebody else's never touched."""

from __future__ import annotations

import json
from typing import Any

from netkit.cni.core.spec import parse_request
from netkit.control.core.l2desired import NetworkObject
from netkit.control.core.nadpublish import nad_config, nad_writes

IPAM = {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}


def net(name: str, namespaces: list[str], deleting: bool = False) -> NetworkObject:
    spec: dict[str, Any] = {
        "type": "vxlan",
        "vni": 100,
        "attachment": {"namespaces": namespaces, "ipam": IPAM},
    }
    return NetworkObject(name, 1, "2026-12-01T00:00:00Z", spec, deleting=deleting)


def ours(ns: str, name: str, config: str = "old") -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "netkit", "netkit.io/l2network": name}
    return {"metadata": {"namespace": ns, "name": name, "labels": labels}, "spec": {"config": config}}


def test_the_config_is_one_netkit_cni_takes() -> None:
    config = nad_config("blue", IPAM)
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c",
        "CNI_NETNS": "/x",
        "CNI_IFNAME": "net1",
        "CNI_PATH": "/p",
    }
    req = parse_request(env, config.encode())
    assert req.conf is not None and (req.conf.network, req.conf.ipam["type"]) == ("blue", "host-local")
    assert json.loads(config)["type"] == "netkit-cni"


def test_made_replaced_kept_and_deleted() -> None:
    current = [
        ours("team-a", "blue", nad_config("blue", IPAM)),  # as wanted: kept
        ours("team-b", "blue"),  # stale config: replaced
        ours("team-c", "blue"),  # namespace dropped: deleted
        ours("team-a", "red"),  # network being deleted: deleted
        {"metadata": {"namespace": "team-a", "name": "macvlan"}, "spec": {"config": "{}"}},  # not ours
    ]
    w = nad_writes(
        [net("blue", ["team-a", "team-b", "team-d"]), net("red", ["team-a"], deleting=True)], (), current
    )
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in w.puts] == [
        ("team-b", "blue"),
        ("team-d", "blue"),
    ]
    assert w.deletes == (("team-a", "red"), ("team-c", "blue")) and w.problems == {}
    assert all(p["spec"]["config"] == nad_config("blue", IPAM) for p in w.puts)
    assert w.puts[0]["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "netkit",
        "netkit.io/l2network": "blue",
    }


def test_somebody_elses_nad_is_a_conflict_and_a_blocked_network_loses_its_own() -> None:
    theirs = {"metadata": {"namespace": "team-a", "name": "blue"}, "spec": {"config": "{}"}}
    w = nad_writes([net("blue", ["team-a"])], (), [theirs])
    assert w.puts == () and w.deletes == () and w.problems["blue"][0].reason == "AttachmentConflict"
    assert "team-a/blue exists and is not netkit's" in w.problems["blue"][0].message
    w = nad_writes([net("blue", ["team-a"])], ("blue",), [ours("team-a", "blue")])
    assert w.puts == () and w.deletes == (("team-a", "blue"),)
