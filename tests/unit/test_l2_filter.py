"""The underlay filter's ruleset (pure rendering; ``test_l2_verify.py`` proves it on a kernel)."""

from __future__ import annotations

from netkit.l2.core.model import load_networks
from netkit.l2.core.plan import Plan, Problem
from netkit.l2.filter import filtered_networks, marker, render

FILE = """
networks:
  - {name: blue, vni: 100, members: {n1: 198.18.0.1, n2: 198.18.0.2, n3: 198.18.0.3}}
  - {name: red, vni: 200, port: 4790, members: {n1: 198.18.0.1, n3: 198.18.0.3}}
  - {name: six, vni: 300, members: {n1: "2001:db8::1", n2: "2001:db8::2"}}
  - {name: green, kind: vlan, vlan: 10, underlay: eth1}
"""


def test_only_other_members_may_send_each_vni() -> None:
    nets = load_networks(FILE)
    text = render([n for n in nets if n.kind == "vxlan"], "n1")
    assert text is not None
    assert 'comment "netkit:l2"' in text and "chain h_" in text
    assert "chain vni_100 {\n\t\tip saddr { 198.18.0.2, 198.18.0.3 } accept\n\t\tdrop\n\t}" in text
    assert "chain vni_200 {\n\t\tip saddr { 198.18.0.3 } accept\n\t\tdrop\n\t}" in text
    assert "chain vni_300 {\n\t\tip6 saddr { 2001:db8::2 } accept\n\t\tdrop\n\t}" in text
    assert "udp dport 4789 @th,96,24 vmap { 100 : jump vni_100, 300 : jump vni_300 }" in text
    assert "udp dport 4790 @th,96,24 vmap { 200 : jump vni_200 }" in text
    assert "198.18.0.1" not in text and "2001:db8::1 " not in text  # the node itself is no peer


def test_no_vxlan_network_no_table_and_the_hash_follows_the_members() -> None:
    nets = load_networks(FILE)
    assert render([n for n in nets if n.kind == "vlan"], "n1") is None
    a = render(nets[:1], "n1")
    b = render(
        load_networks(FILE.replace(", n3: 198.18.0.3}}\n  - {name: red", "}}\n  - {name: red"))[:1], "n1"
    )
    assert a is not None and b is not None and marker(a) != marker(b)
    assert render(nets[:1], "n1") == a  # deterministic


def test_networks_in_conflict_or_error_are_not_filtered() -> None:
    nets = load_networks(FILE)
    pl = Plan(
        "n1",
        problems=(
            Problem("red", "conflict", "x"),
            Problem("blue", "waiting", "port p1 does not exist (yet)"),
        ),
        networks=("blue", "red", "six", "green"),
    )
    assert [n.name for n in filtered_networks(nets, "n1", pl)] == ["blue", "six"]
