"""The reflector planner's properties: redundancy, mesh, O(n*k), determinism, minimal change,
clear errors; and that every planned topology delivers every route (propagation model)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgp.core.inventory import Inventory, InventoryError, Node, Policy, TopPolicy, load_inventory
from bgp.core.model import SessionKind
from bgp.core.planner import SessionPlan, diff_plans, mesh_plan, plan, plan_from_dict, route_problems
from bgp.core.propagation import missing_routes


def node(i: int, zones: int = 3, racks: int = 6, mark: bool | None = None, asn: int = 64512) -> Node:
    return Node(
        f"n{i}",
        f"198.18.{i // 250}.{i % 250 + 1}",
        f"198.18.{i // 250}.{i % 250 + 1}",
        asn,
        {"zone": f"z{i % zones}", "rack": f"r{i % racks}"},
        mark,
        (f"198.19.{i % 250}.0/24",),
    )


def inventory(n: int, policy: Policy | None = None, zones: int = 3) -> Inventory:
    return Inventory(tuple(node(i, zones) for i in range(n)), policy or Policy())


def check_properties(inv: Inventory, p: SessionPlan) -> None:
    k = inv.policy.redundancy
    label = inv.policy.failure_domain
    by_name = {n.name: n for n in inv.nodes}
    for n in inv.nodes:
        if n.name in p.reflectors:
            continue
        mine = p.reflectors_of(n.name)
        assert len(mine) >= k, (n.name, mine)
        assert len({by_name[r].domain(label) for r in mine}) == len(mine), (n.name, mine)
    top_level = max((r.level for r in p.reflectors.values()), default=1)
    meshed = sorted(r for r, info in p.reflectors.items() if info.level == top_level)
    pairs = {s.pair for s in p.sessions}
    for i, a in enumerate(meshed):
        for b in meshed[i + 1 :]:
            assert frozenset((a, b)) in pairs, f"reflectors {a} and {b} are not meshed"
    r = len(p.reflectors)
    assert len(p.sessions) <= len(inv.nodes) * k + r * (r - 1) // 2
    assert missing_routes(inv.names, p.sessions, p.cluster_ids) == {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(4, 60),
    zones=st.integers(2, 4),
    k=st.integers(1, 2),
    per_domain=st.integers(1, 2),
    shared=st.booleans(),
)
def test_plan_properties(n: int, zones: int, k: int, per_domain: int, shared: bool) -> None:
    policy = Policy(
        redundancy=k, reflectors_per_domain=per_domain, cluster_id="shared" if shared else "per-reflector"
    )
    inv = inventory(n, policy, zones)
    try:
        p = plan(inv)
    except InventoryError as exc:
        # the only legitimate refusal: shared groups that do not divide evenly
        assert shared and "shared needs the reflectors to split" in str(exc)
        return
    check_properties(inv, p)


def test_any_one_reflector_down_every_client_keeps_every_route() -> None:
    for policy in (
        Policy(),
        Policy(cluster_id="shared", reflectors_per_domain=2),
        Policy(levels=2, failure_domain="rack", top=TopPolicy("zone", 1)),
        Policy(redundancy=3, reflectors_per_domain=1),
    ):
        inv = inventory(30, policy)
        p = plan(inv)
        check_properties(inv, p)
        for r in p.reflectors:
            missing = missing_routes(inv.names, p.sessions, p.cluster_ids, frozenset([r]))
            assert missing == {}, (policy, r, missing)


def test_shared_cluster_id_with_half_a_group_would_lose_routes() -> None:
    """Why a shared-cluster client must peer with the whole group: the model shows the loss."""
    inv = inventory(12, Policy(cluster_id="shared", reflectors_per_domain=2))
    p = plan(inv)
    client = next(n for n in inv.names if n not in p.reflectors)
    dropped = p.reflectors_of(client)[0]
    broken = frozenset(
        s for s in p.sessions if not (s.kind is SessionKind.RR and s.pair == {dropped, client})
    )
    down = frozenset(r for r in p.reflectors_of(client) if r != dropped)
    assert missing_routes(inv.names, broken, p.cluster_ids, down)


def test_deterministic_whatever_the_order() -> None:
    inv = inventory(40)
    shuffled = list(inv.nodes)
    random.Random(3).shuffle(shuffled)
    assert plan(inv) == plan(Inventory(tuple(shuffled), inv.policy))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(6, 50), extra=st.integers(0, 400), zones=st.integers(2, 4))
def test_adding_a_node_adds_only_its_sessions(n: int, extra: int, zones: int) -> None:
    inv = inventory(n, zones=zones)
    before = plan(inv)
    grown = Inventory(
        (*inv.nodes, dataclasses.replace(node(1000 + extra, zones), reflector=False)), inv.policy
    )
    after = plan(grown, previous=before)
    d = diff_plans(before, after)
    new = f"n{1000 + extra}"
    assert not d.removed and not d.changed and not d.reflectors_added and not d.reflectors_removed
    assert all(s.involves(new) for s in d.added) and len(d.added) == inv.policy.redundancy


@settings(max_examples=25, deadline=None)
@given(n=st.integers(8, 50), victim=st.integers(0, 49), zones=st.integers(2, 4))
def test_removing_a_node_changes_little(n: int, victim: int, zones: int) -> None:
    inv = inventory(n, zones=zones)
    before = plan(inv)
    gone = f"n{victim % n}"
    shrunk = Inventory(tuple(x for x in inv.nodes if x.name != gone), inv.policy)
    after = plan(shrunk, previous=before)
    d = diff_plans(before, after)
    assert all(s.involves(gone) for s in d.removed)
    if gone not in before.reflectors:
        assert not d.added and not d.changed and not d.reflectors_added
    else:
        # one reflector replaced in the same domain: only its clients move, nobody else
        assert len(d.reflectors_added) <= 1 and d.reflectors_removed == (gone,)
        moved = {s.b for s in d.added if s.kind is SessionKind.RR}
        assert moved <= {s.b for s in before.sessions if s.a == gone} | set(d.reflectors_added)
    check_properties(shrunk, after)


def test_a_new_node_never_displaces_a_reflector() -> None:
    inv = inventory(20)
    before = plan(inv)
    for extra in range(200):
        grown = Inventory((*inv.nodes, node(500 + extra)), inv.policy)
        assert set(plan(grown, previous=before).reflectors) == set(before.reflectors)


def test_session_count_is_linear() -> None:
    for n in (10, 100, 1000):
        p = plan(inventory(n))
        assert len(p.sessions) <= 2 * n + 3
    assert len(mesh_plan(inventory(100)).sessions) == 100 * 99 // 2


def test_plan_round_trips_through_dict() -> None:
    p = plan(inventory(15, Policy(levels=2, failure_domain="rack")))
    assert plan_from_dict(p.to_dict()) == p


YAML_OK = """
asn: 64512
nodes:
  - {name: a, address: 198.18.0.1, labels: {zone: x}}
  - {name: b, address: 198.18.0.2, labels: {zone: y}}
  - {name: c, address: 198.18.0.3, labels: {zone: y}, prefixes: [198.19.3.0/24]}
"""


def test_yaml_loads() -> None:
    inv = load_inventory(YAML_OK)
    assert inv.node("c").prefixes == ("198.19.3.0/24",)
    assert inv.node("a").router_id == "198.18.0.1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (YAML_OK.replace("198.18.0.2", "198.18.0.1"), "duplicate address 198.18.0.1"),
        (YAML_OK + "  - {name: d, address: 198.18.0.4, router_id: 198.18.0.1}\n", "duplicate router id"),
        (YAML_OK.replace("{name: b,", "{name: a,"), "duplicate name a"),
        (YAML_OK + "  - {name: d, address: 198.18.0.4, asn: 65000}\n", "mixed AS numbers 64512, 65000"),
        (YAML_OK + "policy: {redundancy: 3}\n", "need 3 reflectors in distinct 'zone' failure domains"),
        (YAML_OK + "policy: {mode: dedicated}\n", "dedicated needs nodes marked reflector: true"),
        (YAML_OK + "policy: {redundancy: 2, colour: red}\n", "policy.colour: unknown key"),
        (YAML_OK + "policy: {levels: 3}\n", "policy.levels: 3 is out of range: must be between 1 and 2"),
        (YAML_OK.replace("198.19.3.0/24", "198.19.3.1/24"), "nodes[c].prefixes[0]"),
        (YAML_OK.replace("address: 198.18.0.3", "address: 198.18.0.300"), "nodes[c].address"),
        (YAML_OK.replace("asn: 64512\n", ""), "nodes[a].asn: missing"),
        (YAML_OK + "  - {name: d, address: '2001:db8::1'}\n", "nodes[d].router_id: required"),
        (YAML_OK.replace("labels: {zone: x}", "labels: {rack: x}"), "nodes[a].labels.zone: missing"),
        ("nodes: [\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_invalid_inventories_fail_clearly(text: str, message: str) -> None:
    with pytest.raises(InventoryError, match=None) as info:
        plan(load_inventory(text))
    assert message in str(info.value), str(info.value)


def test_mixed_as_with_per_as_policy_plans_each_as() -> None:
    nodes = [node(i) for i in range(9)] + [node(i, asn=65001) for i in range(9, 18)]
    p = plan(Inventory(tuple(nodes), Policy(asn_scope="per-as")))
    asn = {n.name: n.asn for n in nodes}
    assert all(asn[s.a] == asn[s.b] for s in p.sessions)
    assert {asn[r] for r in p.reflectors} == {64512, 65001}


def test_shared_groups_that_do_not_divide_fail_clearly() -> None:
    with pytest.raises(InventoryError, match="left without a group"):
        plan(inventory(12, Policy(cluster_id="shared", redundancy=2), zones=3))


def test_dedicated_mode_uses_only_marked_nodes() -> None:
    nodes = [node(i, mark=(i < 3)) for i in range(12)]
    p = plan(Inventory(tuple(nodes), Policy(mode="dedicated")))
    assert set(p.reflectors) == {"n0", "n1", "n2"}


def test_plan_from_dict_normalises_peer_sessions_and_refuses_bad_ones() -> None:
    p = plan(inventory(9))
    raw = p.to_dict()
    for s in raw["sessions"]:
        if s["kind"] == "peer":
            s["a"], s["b"] = s["b"], s["a"]  # as a hand-edited file might have it
    assert plan_from_dict(raw) == p
    for bad in (
        {"kind": "rr", "sessions": [{"a": "n1", "b": "n1", "kind": "peer"}]},
        {"kind": "rr", "sessions": [], "nodes": "n1"},
        {"kind": "rr", "sessions": [{"a": "n1", "b": "n2", "kind": "mesh"}]},
        None,
    ):
        with pytest.raises(InventoryError, match="not a netkit plan"):
            plan_from_dict(bad)


def test_route_problems_per_as_and_for_the_plan_s_own_nodes() -> None:
    nodes = tuple(node(i, asn=64512 if i <= 4 else 64513) for i in range(1, 9))
    inv = Inventory(nodes, Policy(asn_scope="per-as"))
    assert route_problems(inv, mesh_plan(inv)) == []  # a mesh per AS: nothing lost across ASes
    assert route_problems(inv, plan(inv)) == []
    # no sessions and no nodes: every node of the inventory is cut off, not "nothing to check"
    nothing = SessionPlan("mesh", {}, frozenset())
    assert len(route_problems(inv, nothing, limit=100)) == 8
    assert route_problems(inv, nothing, limit=3)[-1] == "... and 5 more nodes"
    # a node the plan is not for (leaving) is not checked
    rest = mesh_plan(inv.with_nodes(inv.nodes[1:]))
    assert route_problems(inv, rest) == []
    assert route_problems(inv, dataclasses.replace(rest, nodes=()))[0].startswith(
        f"{inv.nodes[0].name} would learn"
    )
