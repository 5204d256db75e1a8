"""The L2 planner (pure): what it creates, changes and deletes, in which order, what it never
touches, and that planning again after applying (simulated) finds nothing to do."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netkit.l2.core.model import Endpoint, L2Network, Member, Port, load_networks
from netkit.l2.core.plan import (
    AddFdb,
    AddNeigh,
    AttachPort,
    CreateLink,
    DeleteLink,
    DelFdb,
    DelNeigh,
    DetachPort,
    Op,
    SetLink,
    network_status,
    plan,
    plan_restore,
    simulate,
)
from netkit.l2.core.state import (
    ZERO_MAC,
    FdbEntry,
    Link,
    Neighbour,
    ObservedState,
    VxlanInfo,
    attachment_alias,
    bridge_name,
    owner_alias,
    vlan_name,
    vxlan_name,
)

NODE = "n1"
BLUE_BR, BLUE_VX = bridge_name("blue"), vxlan_name(100)


def base(*extra: Link, mtu: int = 1500) -> ObservedState:
    """Node n1: underlay eth0 (198.18.0.1), eth1 (198.18.1.1), loopback, and ``extra`` links."""
    links = [
        Link("lo", "device", 65536),
        Link("eth0", "veth", mtu),
        Link("eth1", "veth", 9000),
        *extra,
    ]
    return ObservedState.of(
        links, addresses=[("eth0", "198.18.0.1"), ("eth1", "198.18.1.1"), ("lo", "127.0.0.1")]
    )


def blue(**kw: object) -> L2Network:
    fields: dict[str, object] = {
        "name": "blue",
        "kind": "vxlan",
        "vni": 100,
        "members": (Member("n1", "198.18.0.1"), Member("n2", "198.18.0.2"), Member("n3", "198.18.0.3")),
        "ports": (Port("pa", "n1"),),
    }
    fields.update(kw)
    return L2Network(**fields)  # type: ignore[arg-type]


def converge(desired: list[L2Network], observed: ObservedState) -> ObservedState:
    p = plan(desired, NODE, observed)
    after = simulate(observed, p)
    again = plan(desired, NODE, after)
    assert again.empty, again.render()
    return after


def kinds(ops: tuple[Op, ...] | list[Op]) -> list[str]:
    return [type(op).__name__ for op in ops]


# ------------------------------------------------------------------------------------------
# Create, modify, delete
# ------------------------------------------------------------------------------------------


def test_create_from_empty_in_a_valid_order() -> None:
    obs = base(Link("pa", "veth", 1500))
    p = plan([blue()], NODE, obs)
    assert not p.problems
    assert kinds(p.ops) == ["CreateLink", "CreateLink", "AddFdb", "AddFdb", "AttachPort"]
    br, vx = p.ops[0], p.ops[1]
    assert isinstance(br, CreateLink) and br.link.name == BLUE_BR and br.link.kind == "bridge"
    assert br.link.mtu == 1450 and br.link.alias == owner_alias("blue") and br.link.address
    assert br.link.addrgen is False
    assert isinstance(vx, CreateLink) and vx.link.master == BLUE_BR and vx.link.mtu == 1450
    assert vx.link.vxlan == VxlanInfo(100, "198.18.0.1", 4789, False, "eth0")
    assert vx.link.neigh_suppress is False  # no known endpoints: plain flooding
    fdb = {op.entry for op in p.ops if isinstance(op, AddFdb)}
    assert fdb == {FdbEntry(BLUE_VX, ZERO_MAC, "198.18.0.2"), FdbEntry(BLUE_VX, ZERO_MAC, "198.18.0.3")}
    assert p.ops[-1] == AttachPort("blue", "pa", BLUE_BR)
    text = p.render()
    assert "network blue" in text and f"+ link {BLUE_BR}" in text and "Plan: 5 to add, 0 to change" in text
    converge([blue()], obs)


def test_noop_plan_is_empty() -> None:
    obs = converge([blue()], base(Link("pa", "veth", 1500)))
    p = plan([blue()], NODE, obs)
    assert p.ops == () and p.empty
    assert "No changes" in p.render()
    assert [s.status for s in network_status(p, obs)] == ["ok"]


def test_known_endpoints_get_static_fdb_neighbours_and_suppression() -> None:
    net = blue(
        endpoints=(
            Endpoint("02:00:00:00:00:02", "n2", "198.19.0.2"),
            Endpoint("02:00:00:00:00:03", "n3", "2001:db8::3"),
            Endpoint("02:00:00:00:00:01", "n1", "198.19.0.1"),  # local: the bridge learns it
        )
    )
    p = plan([net], NODE, base())
    vx = next(op for op in p.ops if isinstance(op, CreateLink) and op.link.kind == "vxlan")
    assert isinstance(vx, CreateLink) and vx.link.neigh_suppress is True
    fdb = {op.entry for op in p.ops if isinstance(op, AddFdb)}
    assert FdbEntry(BLUE_VX, "02:00:00:00:00:02", "198.18.0.2") in fdb
    assert FdbEntry(BLUE_VX, "02:00:00:00:00:02", None, master=True, state="static") in fdb
    assert not any(e.mac == "02:00:00:00:00:01" for e in fdb)
    neigh = {op.entry for op in p.ops if isinstance(op, AddNeigh)}
    assert neigh == {
        Neighbour(BLUE_BR, "198.19.0.2", "02:00:00:00:00:02"),
        Neighbour(BLUE_BR, "2001:db8::3", "02:00:00:00:00:03"),
    }
    converge([net], base())


def test_members_added_and_removed_touch_only_fdb() -> None:
    obs = converge([blue()], base(Link("pa", "veth", 1500)))
    changed = blue(
        members=(Member("n1", "198.18.0.1"), Member("n3", "198.18.0.3"), Member("n4", "198.18.0.4"))
    )
    p = plan([changed], NODE, obs)
    assert p.ops == (
        DelFdb("blue", FdbEntry(BLUE_VX, ZERO_MAC, "198.18.0.2")),
        AddFdb("blue", FdbEntry(BLUE_VX, ZERO_MAC, "198.18.0.4")),
    )
    converge([changed], obs)


def test_mtu_change_sets_both_links() -> None:
    obs = converge([blue()], base(Link("pa", "veth", 1500)))
    p = plan([blue(mtu=1400)], NODE, obs)
    assert kinds(p.ops) == ["SetLink", "SetLink"]
    assert all(isinstance(op, SetLink) and op.changes[0].new == 1400 for op in p.ops)
    assert "mtu 1450 -> 1400" in p.render()


def test_underlay_mtu_change_moves_the_default_mtu() -> None:
    obs = converge([blue()], base(Link("pa", "veth", 1500)))
    links = dict(obs.links)
    links["eth0"] = replace(links["eth0"], mtu=9000)
    p = plan([blue()], NODE, obs.with_links(links))
    assert {op.changes[0].new for op in p.ops if isinstance(op, SetLink)} == {8950}


def test_removed_network_is_garbage_collected_uplink_first() -> None:
    net = blue(endpoints=(Endpoint("02:00:00:00:00:02", "n2", "198.19.0.2"),))
    obs = converge([net], base(Link("pa", "veth", 1500)))
    p = plan([], NODE, obs)
    assert kinds(p.ops) == ["DeleteLink", "DeleteLink"]
    assert [op.link.name for op in p.ops if isinstance(op, DeleteLink)] == [BLUE_VX, BLUE_BR]
    after = simulate(obs, p)
    assert not after.owned_links() and not after.owned_fdb() and not after.owned_neighbours()
    assert after.links["pa"].master is None  # freed with its bridge, not deleted
    assert "not desired on this node" in p.render()
    # the same when the node is no longer a member
    gone = blue(members=(Member("n2", "198.18.0.2"),), ports=())
    assert kinds(plan([gone], NODE, obs).ops) == ["DeleteLink", "DeleteLink"]


def test_identity_change_replaces_the_vxlan_device() -> None:
    obs = converge([blue()], base(Link("pa", "veth", 1500)))
    p = plan([blue(port=4790)], NODE, obs)
    assert kinds(p.ops) == ["DeleteLink", "CreateLink", "AddFdb", "AddFdb"]
    assert isinstance(p.ops[0], DeleteLink) and "replace: vxlan" in p.ops[0].reason
    converge([blue(port=4790)], obs)


def test_vni_change_renames_the_device() -> None:
    obs = converge([blue()], base())
    p = plan([blue(vni=101)], NODE, obs)
    assert [(type(op).__name__, getattr(op, "link", None) and op.link.name) for op in p.ops][:2] == [  # type: ignore[union-attr]
        ("DeleteLink", "nkvx-100"),
        ("CreateLink", "nkvx-101"),
    ]


def test_vlan_network() -> None:
    net = L2Network("green", "vlan", vlan_id=300, underlay="eth1", ports=(Port("pg"),))
    obs = base(Link("pg", "veth", 1500))
    p = plan([net], NODE, obs)
    sub = p.ops[1]
    assert isinstance(sub, CreateLink) and sub.link.name == vlan_name("green", 300)
    assert sub.link.kind == "vlan" and sub.link.vlan is not None and sub.link.vlan.underlay == "eth1"
    assert sub.link.mtu == 9000 and sub.link.master == bridge_name("green")
    assert not any(isinstance(op, AddFdb) for op in p.ops)
    converge([net], obs)


# ------------------------------------------------------------------------------------------
# Drift
# ------------------------------------------------------------------------------------------


def test_deleted_bridge_is_recreated_and_everything_on_it_restored() -> None:
    net = blue(endpoints=(Endpoint("02:00:00:00:00:02", "n2", "198.19.0.2"),))
    obs = converge([net], base(Link("pa", "veth", 1500)))
    drifted = simulate(obs, [DeleteLink("x", obs.links[BLUE_BR])])
    assert drifted.links[BLUE_VX].master is None
    p = plan([net], NODE, drifted)
    assert kinds(p.ops) == ["CreateLink", "SetLink", "AddFdb", "AddNeigh", "AttachPort"]
    set_vx = p.ops[1]
    assert isinstance(set_vx, SetLink) and {c.field for c in set_vx.changes} == {"master", "neigh_suppress"}
    converge([net], drifted)


def test_flushed_fdb_and_mtu_drift_are_repaired() -> None:
    obs = converge([blue()], base(Link("pa", "veth", 1500)))
    links = dict(obs.links)
    links[BLUE_VX] = replace(links[BLUE_VX], mtu=1300, up=False)
    drifted = ObservedState(links, frozenset(), obs.neighbours, obs.addresses)
    p = plan([blue()], NODE, drifted)
    assert kinds(p.ops) == ["SetLink", "AddFdb", "AddFdb"]
    assert "mtu 1300 -> 1450, up off -> on" in p.render()


def test_stray_owned_fdb_entry_is_removed_unowned_ones_stay() -> None:
    obs = converge([blue()], base(Link("pa", "veth", 1500)))
    stray = FdbEntry(BLUE_VX, ZERO_MAC, "198.18.0.99")
    learned = FdbEntry(BLUE_VX, "02:aa:00:00:00:01", None, master=True, state="dynamic")
    kernel_own = FdbEntry(BLUE_VX, "12:34:56:78:9a:bc", None, master=True, state="permanent")
    on_port = FdbEntry("pa", "02:00:00:00:00:09", None, master=True, state="static")
    dyn_neigh = Neighbour(BLUE_BR, "198.19.0.77", "02:00:00:00:00:77", "reachable")
    state = ObservedState(
        obs.links,
        obs.fdb | {stray, learned, kernel_own, on_port},
        obs.neighbours | {dyn_neigh},
        obs.addresses,
    )
    p = plan([blue()], NODE, state)
    assert p.ops == (DelFdb("blue", stray),)


# ------------------------------------------------------------------------------------------
# Ownership, conflicts, errors
# ------------------------------------------------------------------------------------------


def test_unowned_link_with_our_name_is_a_conflict_and_untouched() -> None:
    squatter = Link(BLUE_BR, "bridge", 1500, alias="someone else's")
    red = blue(name="red", vni=200, ports=())
    obs = base(squatter, Link("pa", "veth", 1500))
    p = plan([blue(), red], NODE, obs)
    assert [pr.kind for pr in p.problems] == ["conflict"]
    assert "is not managed by netkit" in p.problems[0].message and p.problems[0].network == "blue"
    assert all(op.network == "red" for op in p.ops)  # red still goes ahead
    assert p.failed
    assert [s.status for s in network_status(p, obs)] == ["conflict", "missing"]


def test_unowned_vxlan_with_our_vni_is_a_conflict() -> None:
    other = Link("vxlan0", "vxlan", 1450, vxlan=VxlanInfo(100, "198.18.0.1", 4789, True, None))
    p = plan([blue()], NODE, base(other))
    assert p.ops == () and "VNI 100 (port 4789) is already used by vxlan0" in p.problems[0].message
    assert plan([blue(port=4790, ports=())], NODE, base(other)).problems == ()


def test_conflicted_or_failed_network_keeps_its_owned_links() -> None:
    obs = converge([blue()], base(Link("pa", "veth", 1500)))
    # the underlay interface disappears: an error, and nothing of blue is garbage-collected
    links = {k: v for k, v in obs.links.items() if k != "eth0"}
    broken = ObservedState(links, obs.fdb, obs.neighbours, frozenset({("eth1", "198.18.1.1")}))
    p = plan([blue()], NODE, broken)
    assert p.ops == ()
    assert p.problems[0].kind == "error"
    assert p.problems[0].message == "underlay: no interface on node n1 has its VTEP address 198.18.0.1"
    p2 = plan([blue(underlay="eth7")], NODE, obs)
    assert p2.ops == () and p2.problems[0].message == "underlay: interface eth7 not found on node n1"


def test_mtu_the_underlay_cannot_carry_is_an_error() -> None:
    p = plan([blue(mtu=1480)], NODE, base())
    assert p.ops == () and p.problems[0].kind == "error"
    assert "mtu: 1480 cannot be carried by an underlay with MTU 1500" in p.problems[0].message


def test_ports_waiting_foreign_detached_and_moved() -> None:
    foreign = Link("br-admin", "bridge", 1500)
    obs = base(
        foreign,
        Link("pa", "veth", 1500, master="br-admin"),
        Link("pb", "veth", 1500),
    )
    net = blue(ports=(Port("pa"), Port("pb"), Port("pc")))
    p = plan([net], NODE, obs)
    assert sorted((pr.kind, pr.message.split()[1]) for pr in p.problems) == [
        ("conflict", "pa"),
        ("waiting", "pc"),
    ]
    assert [op for op in p.ops if isinstance(op, AttachPort)] == [AttachPort("blue", "pb", BLUE_BR)]
    after = converge([net], obs)
    assert after.links["pa"].master == "br-admin"
    # pb moves to another network: one attach, no detach first
    red = blue(name="red", vni=200, ports=(Port("pb"),))
    p2 = plan([blue(ports=()), red], NODE, after)
    assert [op for op in p2.ops if isinstance(op, (AttachPort, DetachPort))] == [
        AttachPort("red", "pb", bridge_name("red"))
    ]
    # a port no longer declared anywhere is detached from our bridge
    p3 = plan([blue(ports=())], NODE, after)
    assert [op for op in p3.ops if isinstance(op, DetachPort)] == [DetachPort("blue", "pb", BLUE_BR)]


def test_a_pod_veth_netkit_cni_attached_is_a_declared_port_of_its_networks_bridge() -> None:
    built = [lk for lk in converge([blue()], base()).links.values() if lk.name not in ("lo", "eth0", "eth1")]
    obs = base(
        *built,
        Link("nk0123456789abc", "veth", 1450, master=BLUE_BR, alias=attachment_alias("blue")),
        Link("nk0123456789abd", "veth", 1450, master=BLUE_BR, alias=attachment_alias("red")),
        Link("nkhand", "veth", 1450, master=BLUE_BR),
    )
    p = plan([blue()], NODE, obs)
    detached = sorted(op.port for op in p.ops if isinstance(op, DetachPort))
    # ours stays; one declared for another network, and one attached by hand, are detached
    assert detached == ["nk0123456789abd", "nkhand"]
    assert not [op for op in p.ops if getattr(op, "port", None) == "nk0123456789abc"]


def test_link_owned_by_another_network_is_replaced() -> None:
    obs = converge([blue()], base())
    # a new network "green" takes VNI 100 while blue goes away
    green = blue(name="green")
    p = plan([green], NODE, obs)
    deletes = [op for op in p.ops if isinstance(op, DeleteLink)]
    assert {d.link.name for d in deletes} == {BLUE_VX, BLUE_BR}
    assert any("owned by network blue" in d.reason for d in deletes)
    converge([green], obs)


# ------------------------------------------------------------------------------------------
# Rollback
# ------------------------------------------------------------------------------------------


def test_restore_returns_owned_state_to_the_checkpoint() -> None:
    before = converge([blue()], base(Link("pa", "veth", 1500), Link("pb", "veth", 1500)))
    red = blue(name="red", vni=200, ports=(Port("pb"),))
    after = converge([blue(mtu=1400, ports=()), red], before)
    restore = plan_restore(before, after, NODE)
    restored = simulate(after, restore)
    assert plan_restore(before, restored).empty
    assert {n: lk for n, lk in restored.links.items()} == dict(before.links)
    assert restored.owned_fdb() == before.owned_fdb()
    assert plan([blue()], NODE, restored).empty


def test_status_values() -> None:
    obs = converge([blue()], base(Link("pa", "veth", 1500)))
    red = blue(name="red", vni=200, ports=())
    drifted = simulate(obs, [DelFdb("blue", FdbEntry(BLUE_VX, ZERO_MAC, "198.18.0.2"))])
    p = plan([blue(), red, blue(name="bad", vni=300, underlay="nope")], NODE, drifted)
    st_ = {s.network: s.status for s in network_status(p, drifted)}
    assert st_ == {"blue": "drifted", "red": "missing", "bad": "error"}
    orphan = network_status(plan([], NODE, obs), obs)
    assert [(s.network, s.status) for s in orphan] == [("blue", "orphaned")]


def test_example_file_plans_on_every_node() -> None:
    nets = load_networks(
        """
networks:
  - name: blue
    vni: 100
    members: {n1: 198.18.0.1, n2: 198.18.0.2}
  - name: green
    kind: vlan
    vlan: 10
    underlay: eth1
"""
    )
    p = plan(nets, NODE, base())
    assert p.networks == ("blue", "green") and not p.problems
    assert plan(nets, "n2", base()).problems[0].kind == "error"  # n2's VTEP is not on this "node"


# ------------------------------------------------------------------------------------------
# Properties: never touch what is not ours; plan(apply(plan)) is empty
# ------------------------------------------------------------------------------------------

NETS = ["a", "b", "c", "d"]
NODES = ["n1", "n2", "n3"]
VTEP = {"n1": "198.18.0.1", "n2": "198.18.0.2", "n3": "198.18.0.3"}
PORTS = ["p1", "p2", "p3", "p4"]
MACS = [f"02:00:00:00:00:{i:02x}" for i in range(1, 7)]


@st.composite
def networks(draw: st.DrawFn) -> list[L2Network]:
    names = draw(st.lists(st.sampled_from(NETS), unique=True, max_size=4))
    free_ports = list(PORTS)
    out: list[L2Network] = []
    for i, name in enumerate(names):
        kind = draw(st.sampled_from(["vxlan", "vxlan", "vlan"]))
        nodes = draw(st.lists(st.sampled_from(NODES), unique=True, min_size=1, max_size=3))
        ports = []
        for _ in range(draw(st.integers(0, 2))):
            if free_ports:
                ports.append(Port(free_ports.pop(draw(st.integers(0, len(free_ports) - 1))), "n1"))
        endpoints = tuple(
            Endpoint(mac, draw(st.sampled_from(nodes)), draw(st.sampled_from([None, f"198.19.0.{j + 1}"])))
            for j, mac in enumerate(draw(st.lists(st.sampled_from(MACS), unique=True, max_size=3)))
        )
        mtu = draw(st.sampled_from([None, None, 1400, 1450]))
        if kind == "vxlan":
            out.append(
                L2Network(
                    name,
                    "vxlan",
                    vni=draw(st.sampled_from([10, 20])) + i,
                    port=draw(st.sampled_from([4789, 4789, 4790])),
                    mtu=mtu,
                    members=tuple(Member(n, VTEP[n]) for n in nodes),
                    ports=tuple(ports),
                    endpoints=endpoints,
                )
            )
        else:
            members = tuple(Member(n) for n in nodes) if draw(st.booleans()) else ()
            out.append(
                L2Network(
                    name,
                    "vlan",
                    vlan_id=100 + i,
                    underlay=draw(st.sampled_from(["eth0", "eth1", "eth9"])),
                    mtu=mtu,
                    members=members,
                    ports=tuple(ports),
                    endpoints=endpoints if members else (),
                )
            )
    return out


@st.composite
def unowned_links(draw: st.DrawFn) -> list[Link]:
    """Pre-existing links the agent does not own, some with the names it would use."""
    candidates = PORTS + ["x1", "br0"] + [bridge_name(n) for n in NETS] + [vxlan_name(10), vxlan_name(21)]
    names = draw(st.lists(st.sampled_from(candidates), unique=True, max_size=6))
    names += [p for p in draw(st.lists(st.sampled_from(PORTS), unique=True)) if p not in names]
    links: list[Link] = []
    bridges = [n for n in names if n.startswith(("br", "nkbr"))]
    for name in names:
        if name in bridges:
            links.append(Link(name, "bridge", 1500, draw(st.booleans()), draw(st.sampled_from([None, "x"]))))
        elif name.startswith("nkvx"):
            vni = draw(st.sampled_from([10, 11, 21, 99]))
            links.append(Link(name, "vxlan", 1450, True, None, vxlan=VxlanInfo(vni, None, 4789, True, None)))
        else:
            master = draw(st.sampled_from([None, *bridges]))
            links.append(Link(name, "veth", draw(st.sampled_from([1500, 9000])), True, None, master))
    return links


def drift(draw: st.DrawFn, obs: ObservedState) -> ObservedState:
    """Random damage to owned objects, as someone with `ip` and `bridge` would do it."""
    owned = sorted(lk.name for lk in obs.owned_links())
    ops: list[Op] = []
    for name in draw(st.lists(st.sampled_from(owned), unique=True, max_size=2)) if owned else []:
        ops.append(DeleteLink("drift", obs.links[name]))
    state = simulate(obs, ops)
    links = dict(state.links)
    for name in sorted(lk.name for lk in state.owned_links()):
        how = draw(st.sampled_from(["keep", "keep", "mtu", "down", "alias", "nomaster"]))
        lk = links[name]
        if how == "mtu":
            links[name] = replace(lk, mtu=1300)
        elif how == "down":
            links[name] = replace(lk, up=False)
        elif how == "alias":
            links[name] = replace(lk, alias=owner_alias(draw(st.sampled_from(NETS))))
        elif how == "nomaster" and lk.master:
            links[name] = replace(lk, master=None, neigh_suppress=None)
    fdb = {e for e in state.fdb if draw(st.booleans()) or not state.owns_fdb(e)}
    neigh = set(state.neighbours)
    uplinks = sorted(n for n, lk in links.items() if lk.owner and lk.kind == "vxlan")
    bridges = sorted(n for n, lk in links.items() if lk.owner and lk.kind == "bridge")
    if uplinks and draw(st.booleans()):  # someone adds entries to our devices
        dev = draw(st.sampled_from(uplinks))
        fdb.add(FdbEntry(dev, ZERO_MAC, "198.18.0.99"))
        fdb.add(FdbEntry(dev, draw(st.sampled_from(MACS)), "198.18.0.2"))
        fdb.add(FdbEntry(dev, draw(st.sampled_from(MACS)), None, master=True, state="dynamic"))
    if bridges and draw(st.booleans()):
        neigh.add(Neighbour(draw(st.sampled_from(bridges)), "198.19.0.1", "02:00:00:00:00:99"))
        neigh.add(Neighbour(draw(st.sampled_from(bridges)), "198.19.0.9", "02:00:00:00:00:98", "reachable"))
    return ObservedState(links, frozenset(fdb), frozenset(neigh), state.addresses)


def allowed(op: Op, before: ObservedState, declared: set[str]) -> bool:
    """Whether ``op`` only touches what the agent may touch, judged on the state it runs on."""
    if isinstance(op, CreateLink):
        return op.link.name not in before.links
    if isinstance(op, (SetLink,)):
        return before.links[op.name].owner is not None
    if isinstance(op, DeleteLink):
        return before.links[op.link.name].owner is not None
    if isinstance(op, AttachPort):
        port = before.links[op.port]
        return (
            op.port in declared
            and port.owner is None
            and (port.master is None or before.is_owned_bridge(port.master))
        )
    if isinstance(op, DetachPort):
        return before.is_owned_bridge(before.links[op.port].master)
    if isinstance(op, (AddFdb, AddNeigh)):
        return before.links[op.entry.ifname].owner is not None
    if isinstance(op, DelFdb):
        return before.owns_fdb(op.entry)
    if isinstance(op, DelNeigh):
        return before.owns_neighbour(op.entry)
    raise AssertionError(op)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_never_touches_unowned_and_is_idempotent(data: st.DataObject) -> None:
    mtu = data.draw(st.sampled_from([1500, 9000]))
    start = base(*data.draw(unowned_links()), mtu=mtu)
    previous = data.draw(networks())
    observed = drift(data.draw, simulate(start, plan(previous, NODE, start)))
    desired = data.draw(networks())
    declared = {p for n in desired for p in n.ports_on(NODE)}

    p = plan(desired, NODE, observed)

    state = observed
    for op in p.ops:
        assert allowed(op, state, declared), (op, p.render())
        state = simulate(state, [op])
    for name, link in observed.links.items():
        if link.owner is not None:
            continue
        now = state.links[name]  # never deleted
        if name in declared or observed.is_owned_bridge(link.master):
            now = replace(now, master=link.master, neigh_suppress=link.neigh_suppress)
        assert now == link, name
    unowned_fdb = {e for e in observed.fdb if not observed.owns_fdb(e) and e.ifname in state.links}
    assert {e for e in unowned_fdb if not e.master} <= state.fdb

    again = plan(desired, NODE, state)
    assert again.empty, p.render() + "\n---\n" + again.render()
    assert {pr.network for pr in again.problems} == {pr.network for pr in p.problems}


@pytest.mark.parametrize("seed_nets", [["a"], ["a", "b"]])
def test_property_examples_converge_from_nothing(seed_nets: list[str]) -> None:
    nets = [blue(name=n, vni=100 + i, ports=()) for i, n in enumerate(seed_nets)]
    converge(nets, base())
