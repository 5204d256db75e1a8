"""What the L2 controller publishes per node and says in an L2Network's status (pure), and the
whole loop simulated: controller steps, agents applying, nodes joining, objects edited and
deleted; maxUnavailable never exceeded, every node ends with exactly its desired networks, a
deleted object ends on no node, a restarted controller changes nothing."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from labs.apiserver.schema import validate
from netkit.control.core.conditions import find
from netkit.control.core.crds import definitions
from netkit.control.core.l2desired import NetworkObject, Node, desired_l2
from netkit.control.core.l2publish import entry_of, network_of, node_networks
from netkit.control.core.rollout import Report, budget, rollout_status, step

NODES = [Node(f"n{i}", {"zone": "ab"[i % 2]}, f"198.18.0.{i + 1}") for i in range(4)]
NOW = "2026-12-06T10:00:00Z"


def obj(name: str, generation: int, spec: dict[str, Any], **kw: Any) -> NetworkObject:
    return NetworkObject(
        name,
        generation,
        kw.pop("created", "2026-12-01T00:00:00Z"),
        {"type": "vxlan", "port": 4789, **spec},
        **kw,
    )


def nodestate_spec_schema() -> dict[str, Any]:
    (crd,) = [c for c in definitions() if c["spec"]["names"]["kind"] == "NodeState"]
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]  # type: ignore[no-any-return]


def test_an_entry_round_trips_and_is_valid_for_the_crd() -> None:
    d = desired_l2(
        NODES,
        [
            obj(
                "blue",
                3,
                {
                    "vni": 100,
                    "mtu": 1450,
                    "endpoints": [{"mac": "02:00:00:00:01:02", "node": "n2", "ip": "198.19.1.2"}],
                },
            ),
            obj("store", 1, {"type": "vlan", "vlan": 20, "underlay": {"interface": "eth1"}}),
        ],
    )
    for net in d.per_node["n0"]:
        entry = entry_of(net, d.generations[net.name])
        assert network_of(entry) == net
        assert validate({"nodeName": "n0", "l2Networks": [entry]}, nodestate_spec_schema()) == []


def test_a_node_not_reached_keeps_what_it_ran() -> None:
    v1 = desired_l2(NODES, [obj("blue", 1, {"vni": 100})])
    published = {
        n.name: node_networks(n.name, v1, {"blue": step([n.name for n in NODES], {}, {}, 1, "100%")}, [])
        for n in NODES
    }
    assert all(entries[0]["generation"] == 1 for entries in published.values())
    v2 = desired_l2(NODES, [obj("blue", 2, {"vni": 100, "mtu": 1400})])
    reports = {n.name: Report(1, "Applied") for n in NODES}
    told = {n.name: 1 for n in NODES}
    r = step([n.name for n in NODES], told, reports, 2, 1)
    after = {n.name: node_networks(n.name, v2, {"blue": r}, published[n.name]) for n in NODES}
    assert [after[n][0].get("mtu") for n in ("n0", "n1", "n2", "n3")] == [1400, None, None, None]
    assert after["n1"] == published["n1"]  # exactly the old entry
    new_net = desired_l2(
        NODES, [obj("blue", 2, {"vni": 100}), obj("red", 1, {"vni": 200}, created="2026-12-02T00:00:00Z")]
    )
    r_red = step([n.name for n in NODES], {}, {}, 1, 1)
    assert [e["name"] for e in node_networks("n3", new_net, {"blue": r, "red": r_red}, after["n3"])] == [
        "blue"
    ]
    gone = desired_l2(NODES, [obj("blue", 2, {"vni": 100}, deleting=True)])
    assert node_networks("n0", gone, {}, after["n0"]) == []


def test_status_conditions() -> None:
    nodes = [n.name for n in NODES]
    d = desired_l2(NODES, [obj("blue", 2, {"vni": 100})])
    rolling = step(nodes, {n: 1 for n in nodes}, {n: Report(1, "Applied") for n in nodes}, 2, 1)
    s = rollout_status(2, d.problems.get("blue", ()), rolling, {}, NOW)
    assert (s["nodesSelected"], s["nodesUpdated"], s["nodesReady"]) == (4, 1, 0)
    assert (
        find(s["conditions"], "Progressing")["status"] == "True"
        and find(s["conditions"], "Ready")["status"] == "False"
    )  # type: ignore[index]
    done = step(nodes, {n: 2 for n in nodes}, {n: Report(2, "Applied") for n in nodes}, 2, 1)
    s2 = rollout_status(2, d.problems.get("blue", ()), done, s, NOW)
    ready = find(s2["conditions"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"], ready["message"]) == (
        "True",
        "AllNodesReady",
        "4 of 4 nodes ready",
    )
    again = rollout_status(2, d.problems.get("blue", ()), done, s2, "2026-12-06T11:00:00Z")
    assert again == s2  # again: nothing new to write
    failed = step(
        nodes,
        {n: 2 for n in nodes},
        {**{n: Report(2, "Applied") for n in nodes}, "n2": Report(2, "Failed")},
        2,
        1,
    )
    s3 = rollout_status(2, d.problems.get("blue", ()), failed, s2, NOW)
    assert s3["nodesFailed"] == ["n2"] and find(s3["conditions"], "Degraded")["reason"] == "RolloutStopped"  # type: ignore[index]
    clash = desired_l2(
        NODES, [obj("blue", 2, {"vni": 100}), obj("red", 1, {"vni": 100}, created="2026-12-02T00:00:00Z")]
    )
    s4 = rollout_status(1, clash.problems.get("red", ()), None, {}, NOW)
    degraded = find(s4["conditions"], "Degraded")
    assert (
        degraded is not None and degraded["reason"] == "Conflict" and "L2Network blue" in degraded["message"]
    )
    assert s4["nodesSelected"] == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["edit", "add", "delete", "join", "step", "step", "step"]), st.integers(0, 3)
        ),
        max_size=40,
    ),
    st.sampled_from([1, 2, "50%"]),
)
def test_the_loop_converges_within_its_budget(
    actions: list[tuple[str, int]], max_unavailable: int | str
) -> None:
    nodes = list(NODES[:3])
    objects: dict[str, NetworkObject] = {
        "blue": obj("blue", 1, {"vni": 100, "maxUnavailable": max_unavailable})
    }
    published: dict[str, list[dict[str, Any]]] = {}
    kernel: dict[str, dict[str, int]] = {}  # node -> network -> generation applied

    def control() -> None:
        d = desired_l2(nodes, objects.values())
        rollouts = {}
        for name, generation in d.generations.items():
            selected = list(d.selected.get(name, ()))
            told = {
                n: next((e["generation"] for e in published.get(n, []) if e["name"] == name), None)
                for n in selected
            }
            reports = {
                n: Report(kernel.get(n, {}).get(name), "Applied")
                for n in selected
                if name in kernel.get(n, {})
            }
            r = step(selected, told, reports, generation, max_unavailable)
            assert len(r.in_flight) + len(r.failed) <= budget(max_unavailable, len(selected))
            rollouts[name] = r
        for n in nodes:
            published[n.name] = node_networks(n.name, d, rollouts, published.get(n.name, []))

    def agents() -> None:
        for n in nodes:
            kernel[n.name] = {e["name"]: e["generation"] for e in published.get(n.name, [])}

    for action, arg in actions:
        if action == "edit" and objects:
            name = sorted(objects)[arg % len(objects)]
            o = objects[name]
            objects[name] = NetworkObject(
                o.name, o.generation + 1, o.created, {**o.spec, "mtu": 1300 + arg}, o.deleting
            )
        elif action == "add":
            objects[f"net{arg}"] = obj(
                f"net{arg}",
                1,
                {"vni": 200 + arg, "maxUnavailable": max_unavailable},
                created=f"2026-12-0{arg + 2}T00:00:00Z",
            )
        elif action == "delete" and objects:
            name = sorted(objects)[arg % len(objects)]
            objects[name] = NetworkObject(
                objects[name].name, objects[name].generation, objects[name].created, objects[name].spec, True
            )
        elif action == "join" and len(nodes) < 4:
            nodes.append(NODES[len(nodes)])
        control()
        if action == "step":
            agents()
    for _ in range(20):  # then quiet: it converges
        control()
        agents()
    d = desired_l2(nodes, objects.values())
    for n in nodes:
        want = {net.name: d.generations[net.name] for net in d.per_node[n.name]}
        assert kernel[n.name] == want, (n.name, kernel[n.name], want)
    before = {k: list(v) for k, v in published.items()}
    control()  # a restarted controller, the same inputs
    assert published == before
