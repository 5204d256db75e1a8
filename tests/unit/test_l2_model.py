"""L2 networks as declared: loading, validation that names the field, the per-node view, MTU rules,
derived interface names."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netkit.l2.core.model import (
    ConfigError,
    Endpoint,
    L2Network,
    Member,
    MtuError,
    Port,
    load_networks,
    networks_for_node,
    overlay_mtu,
)
from netkit.l2.core.state import IFNAMSIZ, bridge_mac, bridge_name, owner_alias, vlan_name, vxlan_name

GOOD = """
networks:
  - name: blue
    vni: 100
    members: {n1: 198.18.0.1, n2: 198.18.0.2, n3: 198.18.0.3}
    ports: {n1: [veth-a], n2: [veth-b]}
    endpoints:
      - {mac: "02:00:00:00:01:02", ip: 198.19.1.2, node: n2}
      - {mac: "02:00:00:00:01:03", node: n3}
  - name: red
    vni: 200
    underlay: eth1
    port: 4790
    mtu: 1400
    members: {n1: "2001:db8::1", n2: "2001:db8::2"}
    ports: [veth-r]
  - name: green
    kind: vlan
    vlan: 300
    underlay: eth2
    members: [n1, n3]
  - name: all-nodes
    kind: vlan
    vlan: 301
    underlay: 198.18.5.1
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_networks(text)
    return info.value.errors


def one(body: str) -> str:
    """A file with one valid vxlan network and ``body`` as the second network."""
    return f"""
networks:
  - name: ok
    vni: 1
    members: {{n1: 198.18.0.1}}
  - {body}
"""


def test_good_file_loads_with_defaults() -> None:
    nets = load_networks(GOOD)
    assert [n.name for n in nets] == ["blue", "red", "green", "all-nodes"]
    blue, red, green, alln = nets
    assert blue.kind == "vxlan" and blue.vni == 100 and blue.port == 4789 and blue.mtu is None
    assert blue.underlay is None
    assert blue.members[1] == Member("n2", "198.18.0.2")
    assert blue.ports == (Port("veth-a", "n1"), Port("veth-b", "n2"))
    assert blue.endpoints == (
        Endpoint("02:00:00:00:01:02", "n2", "198.19.1.2"),
        Endpoint("02:00:00:00:01:03", "n3", None),
    )
    assert red.port == 4790 and red.mtu == 1400 and red.underlay == "eth1" and red.vtep_family == 6
    assert red.ports == (Port("veth-r", None),)
    assert green.kind == "vlan" and green.vlan_id == 300 and green.segment == 300
    assert alln.underlay == "198.18.5.1" and alln.members == ()


def test_per_node_view() -> None:
    blue, red, green, alln = load_networks(GOOD)
    assert [n.name for n in networks_for_node([blue, red, green, alln], "n1")] == [
        "blue",
        "red",
        "green",
        "all-nodes",
    ]
    assert [n.name for n in networks_for_node([blue, red, green, alln], "n3")] == [
        "blue",
        "green",
        "all-nodes",
    ]
    assert [n.name for n in networks_for_node([blue, red, green, alln], "n9")] == ["all-nodes"]
    assert blue.ports_on("n1") == ("veth-a",) and blue.ports_on("n3") == ()
    assert red.ports_on("n2") == ("veth-r",)
    assert blue.vtep("n2") == "198.18.0.2" and blue.vtep("n9") is None
    assert blue.remote_vteps("n1") == [("n2", "198.18.0.2"), ("n3", "198.18.0.3")]
    assert [e.mac for e in blue.remote_endpoints("n2")] == ["02:00:00:00:01:03"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "{name: x, vni: 16777216, members: {n1: 198.18.0.1}}",
            "networks[1].vni: 16777216 is out of range: must be between 1 and 16777215",
        ),
        (
            "{name: x, vni: 0, members: {n1: 198.18.0.1}}",
            "networks[1].vni: 0 is out of range: must be between 1 and 16777215",
        ),
        ("{name: x, vni: true, members: {n1: 198.18.0.1}}", "networks[1].vni: True is not an integer"),
        ("{name: x, members: {n1: 198.18.0.1}}", "networks[1].vni: is required for a vxlan network"),
        (
            "{name: x, kind: vlan, vlan: 4095, underlay: e}",
            "networks[1].vlan: 4095 is out of range: must be between 1 and 4094",
        ),
        ("{name: x, kind: vlan, underlay: e}", "networks[1].vlan: is required for a vlan network"),
        ("{name: x, kind: vlan, vlan: 5}", "networks[1].underlay: is required for a vlan network"),
        ("{name: x, kind: vlan, vlan: 5, vni: 3, underlay: e}", "networks[1].vni: is for vxlan networks"),
        ("{name: x, kind: geneve, vni: 5}", "networks[1].kind: 'geneve' is not one of: vxlan, vlan"),
        ("{name: X_1, vni: 5, members: {n1: 198.18.0.1}}", "networks[1].name: 'X_1' is not a valid name"),
        ("{vni: 5, members: {n1: 198.18.0.1}}", "networks[1].name: is required"),
        ("{name: x, vni: 5, vnii: 6, members: {n1: 198.18.0.1}}", "networks[1].vnii: unknown key"),
        (
            "{name: x, vni: 5, port: 70000, members: {n1: 198.18.0.1}}",
            "networks[1].port: 70000 is out of range",
        ),
        (
            "{name: x, vni: 5, mtu: 60, members: {n1: 198.18.0.1}}",
            "networks[1].mtu: 60 is out of range: must be between 68 and 65535",
        ),
        ("{name: x, vni: 5}", "networks[1].members: is required for a vxlan network"),
        (
            "{name: x, vni: 5, members: {n1: 300.1.1.1}}",
            "networks[1].members.n1: '300.1.1.1' is not an IP address",
        ),
        ("{name: x, vni: 5, members: {n1: 224.0.0.1}}", "networks[1].members.n1: 224.0.0.1 cannot be a VTEP"),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1, n2: '2001:db8::2'}}",
            "networks[1].members.n2: IPv6 VTEP in a network whose VTEPs are IPv4",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1, n2: 198.18.0.1}}",
            "networks[1].members.n2: 198.18.0.1 is also the VTEP of n1",
        ),
        (
            "{name: x, vni: 5, underlay: this-name-is-too-long, members: {n1: 198.18.0.1}}",
            "networks[1].underlay: 'this-name-is-too-long' is 21 bytes long (at most 15)",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1}, ports: {n2: [va]}}",
            "networks[1].ports.n2: n2 is not a member of this network",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1}, ports: [va, 'v/b']}",
            "networks[1].ports[1]: 'v/b' contains a character not allowed",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1}, ports: [va, va]}",
            "networks[1].ports[1]: va is listed twice",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1}, endpoints: [{mac: 'zz', node: n1}]}",
            "networks[1].endpoints[0].mac: 'zz' is not a MAC address",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1}, endpoints: [{mac: '01:00:5e:00:00:01', node: n1}]}",
            "networks[1].endpoints[0].mac: 01:00:5e:00:00:01 is not a unicast MAC address",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1}, endpoints: [{mac: '02:00:00:00:00:01', node: n7}]}",
            "networks[1].endpoints[0].node: n7 is not a member of this network",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1}, endpoints: [{mac: '02:00:00:00:00:01'}]}",
            "networks[1].endpoints[0].node: is required",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1}, endpoints: "
            "[{mac: '02:00:00:00:00:01', node: n1}, {mac: '02:00:00:00:00:01', node: n1}]}",
            "networks[1].endpoints[1].mac: 02:00:00:00:00:01 is listed twice",
        ),
        (
            "{name: x, vni: 5, members: {n1: 198.18.0.1}, endpoints: "
            "[{mac: '02:00:00:00:00:01', node: n1, ip: 198.19.0.1, vlan: 3}]}",
            "networks[1].endpoints[0].vlan: unknown key",
        ),
    ],
)
def test_errors_name_the_field(body: str, expected: str) -> None:
    errs = errors_of(one(body))
    assert any(e.startswith(expected) for e in errs), errs


def test_duplicates_across_networks() -> None:
    text = """
networks:
  - {name: a, vni: 10, members: {n1: 198.18.0.1}, ports: {n1: [p1]}}
  - {name: a, vni: 11, members: {n1: 198.18.0.1}}
  - {name: b, vni: 10, members: {n1: 198.18.0.1}}
  - {name: c, kind: vlan, vlan: 7, underlay: eth1}
  - {name: d, kind: vlan, vlan: 7, underlay: eth1}
  - {name: e, kind: vlan, vlan: 7, underlay: eth2}
  - {name: f, vni: 12, members: {n1: 198.18.0.1}, ports: [p1]}
"""
    errs = errors_of(text)
    assert "networks[1].name: 'a' is already used by networks[0]" in errs
    assert "networks[2].vni: 10 is already used by networks[0] (a)" in errs
    assert "networks[4].vlan: 7 on underlay eth1 is already used by networks[3] (c)" in errs
    assert not any(e.startswith("networks[5]") for e in errs)  # same VLAN id, other underlay: fine
    assert "networks[6].ports: p1 on n1 is already a port of networks[0] (a)" in errs


def test_all_errors_are_reported_at_once() -> None:
    text = """
networks:
  - {name: a, vni: 0, members: {n1: 198.18.0.1}}
  - {name: b, vni: 5, members: {n1: nope}}
  - {name: c, kind: vlan, vlan: 9000, underlay: e}
"""
    errs = errors_of(text)
    assert [e.split(":")[0] for e in errs] == [
        "networks[0].vni",
        "networks[1].members.n1",
        "networks[2].vlan",
    ]


def test_derived_name_collisions_are_rejected() -> None:
    # vlan_name for VLAN 4094 keeps 6 hex digits of the hash: find two names that share them.
    seen: dict[str, str] = {}
    for i in itertools.count():
        name = f"n{i}"
        key = hashlib.sha256(name.encode()).hexdigest()[:6]
        if key in seen:
            first, second = seen[key], name
            break
        seen[key] = name
    assert vlan_name(first, 4094) == vlan_name(second, 4094)
    text = f"""
networks:
  - {{name: {first}, kind: vlan, vlan: 4094, underlay: eth1}}
  - {{name: {second}, kind: vlan, vlan: 4094, underlay: eth2}}
"""
    errs = errors_of(text)
    assert any(
        e.startswith(f"networks[1].name: derives the interface name {vlan_name(first, 4094)}") for e in errs
    ), errs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "networks: the file is empty"),
        ("networks: 5", "networks: expected a list of networks"),
        ("nets: []", "file.nets: unknown key"),
        ("networks:\n  - name: a\n   vni: 3\n", "file: line 3 column"),
        ("networks: [5]", "networks[0]: expected a mapping"),
    ],
)
def test_file_level_errors(text: str, expected: str) -> None:
    errs = errors_of(text)
    assert any(e.startswith(expected) for e in errs), errs


def test_empty_list_is_valid() -> None:
    assert load_networks("networks: []") == []


def vx(mtu: int | None = None, v6: bool = False) -> L2Network:
    vtep = "2001:db8::1" if v6 else "198.18.0.1"
    return L2Network("x", "vxlan", vni=1, mtu=mtu, members=(Member("n1", vtep),))


def test_overlay_mtu_defaults_and_limits() -> None:
    assert overlay_mtu(vx(), 1500) == 1450
    assert overlay_mtu(vx(v6=True), 1500) == 1430
    assert overlay_mtu(vx(), 9000) == 8950
    assert overlay_mtu(vx(1400), 1500) == 1400
    assert overlay_mtu(vx(1450), 1500) == 1450
    vlan = L2Network("g", "vlan", vlan_id=5, underlay="eth1")
    assert overlay_mtu(vlan, 1500) == 1500
    with pytest.raises(MtuError, match=r"mtu: 1500 cannot be carried .* MTU 1500 \(VXLAN over IPv4 adds 50"):
        overlay_mtu(vx(1500), 1500)
    with pytest.raises(MtuError, match="at most 1430"):
        overlay_mtu(vx(1440, v6=True), 1500)
    with pytest.raises(MtuError, match="VLAN"):
        overlay_mtu(L2Network("g", "vlan", vlan_id=5, underlay="e", mtu=9000), 1500)
    with pytest.raises(MtuError, match="below 68"):
        overlay_mtu(vx(), 100)


def test_derived_names() -> None:
    assert vxlan_name(100) == "nkvx-100"
    assert len(vxlan_name(16_777_215)) <= IFNAMSIZ
    assert len(bridge_name("blue")) == IFNAMSIZ and bridge_name("blue") == bridge_name("blue")
    assert bridge_name("blue") != bridge_name("red")
    assert all(len(vlan_name("n", vid)) == IFNAMSIZ for vid in (1, 10, 100, 4094))
    assert owner_alias("blue") == "netkit:l2:blue"
    mac = bridge_mac("blue", "n1")
    assert mac != bridge_mac("blue", "n2") and int(mac[:2], 16) & 0b11 == 0b10  # local, unicast


@given(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True), st.integers(1, 4094))
def test_derived_names_fit_and_do_not_look_like_run_prefixes(name: str, vid: int) -> None:
    for ifname in (bridge_name(name), vlan_name(name, vid), vxlan_name(vid * 4000)):
        assert len(ifname.encode()) <= IFNAMSIZ
        # the lab's per-run prefix is "nk" + 4 hex digits: ours never are
        assert ifname[:2] == "nk" and not all(c in "0123456789abcdef" for c in ifname[2:6])


# -- every problem at once, the nodes a file names -------------------------------------------


def test_a_network_with_errors_of_its_own_still_takes_part_in_the_cross_checks() -> None:
    errors = errors_of(
        """
networks:
  - {name: blue, vni: 100, members: {n1: 198.18.0.1, n2: 198.18.0.1}}
  - {name: red, vni: 100, members: {n1: 198.18.0.3}, mtu: 20}
  - {name: blue, vni: 300, members: {n1: 198.18.0.4}}
"""
    )
    assert "networks[0].members.n2: 198.18.0.1 is also the VTEP of n1" in errors
    assert "networks[1].vni: 100 is already used by networks[0] (blue)" in errors
    assert "networks[1].mtu: 20 is out of range: must be between 68 and 65535" in errors
    assert "networks[2].name: 'blue' is already used by networks[0]" in errors
    assert len(errors) == 4


def test_nodes_lists_the_nodes_a_file_is_for_and_members_must_be_among_them() -> None:
    from netkit.l2.core.model import load_network_file

    nf = load_network_file("nodes: [n1, n2, n3]\nnetworks: [{name: b, vni: 1, members: {n1: 198.18.0.1}}]")
    assert nf.nodes == ("n1", "n2", "n3")
    nf.require_node("n3")  # named, in no network: everything is removed from it, as the file says
    errors = errors_of(
        "nodes: [n1, n1, 'bad name']\n"
        "networks: [{name: b, vni: 1, members: {n1: 198.18.0.1, n9: 198.18.0.9}}, "
        "{name: g, kind: vlan, vlan: 5, underlay: eth1, members: [n8]}]"
    )
    assert errors == [
        "nodes[1]: n1 is listed twice",
        "nodes[2]: 'bad name' is not a node name",
        "networks[0].members.n9: n9 is not listed under nodes:",
        "networks[1].members: n8 is not listed under nodes:",
    ]
    assert errors_of("nodes: n1\nnetworks: []") == ["nodes: expected a list of node names"]


@pytest.mark.parametrize(
    ("text", "node", "accepted"),
    [
        ("networks: [{name: b, vni: 1, members: {n1: 198.18.0.1}}]", "n1", True),
        ("networks: [{name: b, vni: 1, members: {n1: 198.18.0.1}}]", "n7", False),
        (
            "networks: [{name: b, vni: 1, members: {n1: 198.18.0.1},"
            " endpoints: [{mac: '02:00:00:00:00:01', node: n1}]}]",
            "n1",
            True,
        ),
        # a file that names no node at all applies to every node (VLANs for all nodes, or none)
        ("networks: [{name: g, kind: vlan, vlan: 5, underlay: eth1}]", "any-node", True),
        ("networks: []", "any-node", True),
        ("nodes: [n1]\nnetworks: []", "n2", False),
    ],
)
def test_require_node(text: str, node: str, accepted: bool) -> None:
    from netkit.l2.core.model import UnknownNodeError, load_network_file

    nf = load_network_file(text)
    if accepted:
        nf.require_node(node)
    else:
        with pytest.raises(UnknownNodeError, match=f"node '{node}' is not named in the file"):
            nf.require_node(node)


def test_require_node_hints_at_the_fqdn_or_short_name() -> None:
    from netkit.l2.core.model import UnknownNodeError, load_network_file

    nf = load_network_file(
        "networks: [{name: b, vni: 1, members: {n1.dc1.example: 198.18.0.1, n2: 198.18.0.2}}]"
    )
    with pytest.raises(UnknownNodeError, match=r"\(did you mean n1\.dc1\.example\?\)"):
        nf.require_node("n1")
    with pytest.raises(UnknownNodeError, match=r"\(did you mean n2\?\)"):
        nf.require_node("n2.dc1.example")
