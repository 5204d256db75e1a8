"""The control plane's L2 decisions (pure): label selectors, L2Network objects + Nodes -> what
each node runs (conflicts found and named, the older object keeping what it holds), and the
rollout of a new generation within maxUnavailable."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netkit.control.core.l2desired import NetworkObject, Node, desired_l2, removal_done
from netkit.control.core.rollout import Report, budget, step
from netkit.control.core.selectors import matches

NODES = [
    Node("n1", {"zone": "a", "tenant-blue": "true"}, "198.18.0.1"),
    Node("n2", {"zone": "b", "tenant-blue": "true", "rack": "r7"}, "198.18.0.2"),
    Node("n3", {"zone": "b"}, "198.18.0.3"),
]


def obj(name: str, spec: dict[str, Any], created: str = "2026-12-01T00:00:00Z", **kw: Any) -> NetworkObject:
    return NetworkObject(name, kw.pop("generation", 1), created, {"type": "vxlan", "port": 4789} | spec, **kw)


# -- selectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (None, {}, True),
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
        (
            {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
            {"a": "1"},
            False,
        ),
    ],
)
def test_label_selectors(selector: Any, labels: dict[str, str], expected: bool) -> None:
    assert matches(selector, labels) is expected


def test_an_unknown_operator_is_an_error_not_a_match() -> None:
    with pytest.raises(ValueError, match="'Near' is not In"):
        matches({"matchExpressions": [{"key": "a", "operator": "Near"}]}, {"a": "1"})


# -- desired state -------------------------------------------------------------------------------


def test_vxlan_members_are_the_selected_nodes_with_their_internal_ip() -> None:
    blue = obj("blue", {"vni": 100, "nodeSelector": {"matchLabels": {"tenant-blue": "true"}}, "mtu": 1450})
    d = desired_l2(NODES, [blue])
    assert d.selected == {"blue": ("n1", "n2")} and d.per_node["n3"] == ()
    (net,) = d.per_node["n1"]
    assert (net.kind, net.vni, net.mtu, net.underlay) == ("vxlan", 100, 1450, None)
    assert net.remote_vteps("n1") == [("n2", "198.18.0.2")] and net.vtep("n1") == "198.18.0.1"
    assert d.problems == {"blue": ()} and d.generations == {"blue": 1}


def test_attached_pods_are_endpoints_of_their_network_on_its_nodes() -> None:
    blue = obj(
        "blue",
        {
            "vni": 100,
            "nodeSelector": {"matchLabels": {"tenant-blue": "true"}},
            "endpoints": [{"mac": "02:00:00:00:00:aa", "node": "n2", "ip": "10.0.0.99"}],
        },
    )
    red = obj("red", {"vni": 200})
    attached = {
        "n1": [
            {"network": "blue", "mac": "02:00:00:00:00:01", "ips": ["fd00::1/64", "10.0.0.1/24"]},
            {"network": "red", "mac": "02:00:00:00:00:02", "ips": []},
            {"network": "green", "mac": "02:00:00:00:00:03", "ips": ["10.0.0.3/24"]},  # no such network
        ],
        "n2": [{"network": "blue", "mac": "02:00:00:00:00:AA", "ips": ["10.0.0.7/24"]}],  # declared wins
        "n3": [{"network": "blue", "mac": "02:00:00:00:00:04", "ips": ["10.0.0.4/24"]}],  # not selected
    }
    d = desired_l2(NODES, [blue, red], attached)
    (b1,) = [n for n in d.per_node["n1"] if n.name == "blue"]
    assert [(e.mac, e.node, e.ip) for e in b1.endpoints] == [
        ("02:00:00:00:00:aa", "n2", "10.0.0.99"),
        ("02:00:00:00:00:01", "n1", "10.0.0.1"),
    ]
    assert [(e.mac, e.node) for e in b1.remote_endpoints("n2")] == [("02:00:00:00:00:01", "n1")]
    (r3,) = d.per_node["n3"]
    assert [(e.mac, e.ip) for e in r3.endpoints] == [("02:00:00:00:00:02", None)]
    assert desired_l2(NODES, [blue, red], attached) == d  # the same inputs, the same answer


def test_vlan_underlay_per_node() -> None:
    storage = obj(
        "storage",
        {
            "type": "vlan",
            "vlan": 200,
            "underlay": {
                "interface": "eth1",
                "perNode": [{"nodeSelector": {"matchLabels": {"rack": "r7"}}, "interface": "bond0"}],
            },
        },
    )
    d = desired_l2(NODES, [storage])
    assert {n: nets[0].underlay for n, nets in d.per_node.items()} == {
        "n1": "eth1",
        "n2": "bond0",
        "n3": "eth1",
    }
    assert all(nets[0].kind == "vlan" and nets[0].vlan_id == 200 for nets in d.per_node.values())


def test_a_duplicate_vni_leaves_the_newer_object_out_and_names_the_older() -> None:
    old = obj("blue", {"vni": 100}, created="2026-12-01T00:00:00Z")
    new = obj("red", {"vni": 100}, created="2026-12-02T00:00:00Z")
    green = obj("green", {"vni": 200}, created="2026-12-03T00:00:00Z")
    d = desired_l2(NODES, [green, new, old])
    assert [n.name for n in d.per_node["n1"]] == ["blue", "green"]  # the rest is applied
    ((problem,),) = [d.problems["red"]]
    assert problem.reason == "Conflict" and "VNI 100 is already used by L2Network blue" in problem.message
    assert d.selected["red"] == () and d.problems["blue"] == ()


def test_one_vlan_on_one_underlay_conflicts_only_where_both_land() -> None:
    a = obj(
        "a", {"type": "vlan", "vlan": 10, "underlay": {"interface": "eth1"}}, created="2026-12-01T00:00:00Z"
    )
    b = obj(
        "b",
        {
            "type": "vlan",
            "vlan": 10,
            "underlay": {"interface": "eth2"},
            "nodeSelector": {"matchLabels": {"zone": "b"}},
        },
        created="2026-12-02T00:00:00Z",
    )
    c = obj(
        "c",
        {
            "type": "vlan",
            "vlan": 10,
            "underlay": {"interface": "eth1"},
            "nodeSelector": {"matchLabels": {"zone": "a"}},
        },
        created="2026-12-03T00:00:00Z",
    )
    d = desired_l2(NODES, [a, b, c])
    assert d.problems["b"] == ()  # another underlay: no conflict
    assert "VLAN 10 on eth1 of node n1 is already used by L2Network a" in d.problems["c"][0].message
    assert [n.name for n in d.per_node["n2"]] == ["a", "b"] and [n.name for n in d.per_node["n1"]] == ["a"]


def test_a_node_without_an_internal_ip_is_left_out_and_said() -> None:
    nodes = [*NODES, Node("n4", {}, None)]
    d = desired_l2(nodes, [obj("blue", {"vni": 100})])
    assert d.selected["blue"] == ("n1", "n2", "n3") and d.per_node["n4"] == ()
    assert (
        d.problems["blue"][0].reason == "NodeUnusable"
        and "n4 has no InternalIP" in d.problems["blue"][0].message
    )


def test_mixed_address_families_keep_the_first_nodes() -> None:
    nodes = [*NODES, Node("n4", {}, "2001:db8::4")]
    d = desired_l2(nodes, [obj("blue", {"vni": 100})])
    assert d.selected["blue"] == ("n1", "n2", "n3")
    assert "n4: its InternalIP is not IPv4" in d.problems["blue"][0].message


def test_an_object_being_deleted_is_desired_nowhere_and_its_finalizer_waits_for_every_node() -> None:
    d = desired_l2(NODES, [obj("blue", {"vni": 100}, deleting=True)])
    assert all(nets == () for nets in d.per_node.values()) and "blue" not in d.selected
    assert not removal_done("blue", {"n1": {"blue": "Removed"}, "n2": {"blue": "Applied"}})
    assert removal_done("blue", {"n1": {"blue": "Removed"}, "n2": {}})


names = st.sampled_from(["a", "b", "c", "d", "e"])
specs = st.one_of(
    st.fixed_dictionaries({"type": st.just("vxlan"), "vni": st.integers(1, 4)}),
    st.fixed_dictionaries(
        {
            "type": st.just("vlan"),
            "vlan": st.integers(1, 3),
            "underlay": st.fixed_dictionaries({"interface": st.sampled_from(["eth1", "eth2"])}),
        }
    ),
)
selectors = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"matchLabels": st.fixed_dictionaries({"zone": st.sampled_from(["a", "b"])})}),
)
objects = st.lists(
    st.tuples(names, specs, selectors, st.integers(1, 9), st.booleans()), unique_by=lambda t: t[0], max_size=5
).map(
    lambda items: [
        NetworkObject(n, 1, f"2026-12-0{day}T00:00:00Z", {**spec, "nodeSelector": sel}, deleting=deleting)
        for n, spec, sel, day, deleting in items
    ]
)


@settings(max_examples=300)
@given(objects, st.randoms())
def test_desired_state_properties(objs: list[NetworkObject], rnd: random.Random) -> None:
    d = desired_l2(NODES, objs)
    shuffled = list(objs)
    rnd.shuffle(shuffled)
    assert desired_l2(reversed(NODES), shuffled) == d  # order of the API's lists does not matter
    for o in objs:
        on = {n for n, nets in d.per_node.items() if any(x.name == o.name for x in nets)}
        if o.deleting or any(p.reason == "Conflict" for p in d.problems.get(o.name, ())):
            assert on == set()  # deleted or conflicting: nothing of it anywhere
        else:
            assert on == {n.name for n in NODES if matches(o.spec.get("nodeSelector"), n.labels)}
    vnis = [net.vni for nets in d.per_node.values() for net in nets if net.kind == "vxlan"]
    per_object_vni = {
        net.name: net.vni for nets in d.per_node.values() for net in nets if net.kind == "vxlan"
    }
    assert len(set(per_object_vni.values())) == len(per_object_vni) and set(vnis) == set(
        per_object_vni.values()
    )
    for node, nets in d.per_node.items():
        keys = [(net.underlay, net.vlan_id) for net in nets if net.kind == "vlan"]
        assert len(keys) == len(set(keys)), node
    # a conflicting object taken away changes nothing for the others
    loser = [o for o in objs if any(p.reason == "Conflict" for p in d.problems.get(o.name, ()))]
    if loser:
        rest = desired_l2(NODES, [o for o in objs if o is not loser[0]])
        assert rest.per_node == d.per_node


# -- rollout -------------------------------------------------------------------------------------


def test_budget() -> None:
    assert [budget(1, 10), budget(3, 2), budget("25%", 10), budget("10%", 3), budget("100%", 7)] == [
        1,
        3,
        3,
        1,
        7,
    ]
    assert budget(0, 5) == 1


def test_a_rollout_one_node_at_a_time_and_a_failure_stops_it() -> None:
    nodes = ["n1", "n2", "n3"]
    r = step(
        nodes,
        {"n1": 1, "n2": 1, "n3": 1},
        {n: Report(1, "Applied") for n in nodes},
        target=2,
        max_unavailable=1,
    )
    assert r.publish == {"n1": 2, "n2": 1, "n3": 1} and r.in_flight == ("n1",) and r.waiting == ("n2", "n3")
    again = step(nodes, r.publish, {n: Report(1, "Applied") for n in nodes}, target=2, max_unavailable=1)
    assert again == r  # repeated (a restarted controller): nothing new is told
    reports = {"n1": Report(2, "Failed"), "n2": Report(1, "Applied"), "n3": Report(1, "Applied")}
    stopped = step(nodes, r.publish, reports, target=2, max_unavailable=3)
    assert stopped.stopped and stopped.failed == ("n1",) and stopped.publish == r.publish
    fixed = step(nodes, r.publish, reports | {"n1": Report(2, "Applied")}, target=2, max_unavailable=1)
    assert fixed.publish == {"n1": 2, "n2": 2, "n3": 1} and fixed.done == ("n1",)


@settings(max_examples=300)
@given(
    st.integers(1, 8),
    st.one_of(st.integers(1, 4), st.sampled_from(["10%", "34%", "50%", "100%"])),
    st.lists(st.booleans(), min_size=200, max_size=200),
)
def test_a_rollout_never_exceeds_its_budget_and_completes(
    size: int, max_unavailable: int | str, coin: list[bool]
) -> None:
    nodes = [f"n{i}" for i in range(size)]
    published: dict[str, int | None] = dict.fromkeys(nodes, 1)
    reports = {n: Report(1, "Applied") for n in nodes}
    limit = budget(max_unavailable, size)
    flips = iter(coin)
    waited: dict[str, int] = {}
    for _ in range(100):
        r = step(nodes, published, reports, target=2, max_unavailable=max_unavailable)
        assert len(r.in_flight) + len(r.failed) <= limit
        assert set(r.done) | set(r.in_flight) | set(r.failed) | set(r.waiting) == set(nodes)
        if r.complete:
            break
        published = dict(r.publish)
        for n in r.in_flight:  # each agent applies when it gets round to it: within 3 steps
            waited[n] = waited.get(n, 0) + 1
            if next(flips, True) or waited[n] >= 3:
                reports[n] = Report(2, "Applied")
    assert r.complete and all(g == 2 for g in r.publish.values())
