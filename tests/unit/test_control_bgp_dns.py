"""The control plane's BGP and DNS decisions (pure): a BGPTopology and the Nodes -> the
planner's inventory and plan (made against the plan in force; refused, never emptied), a
DNSCache -> the cache's configuration (an unresolved Service keeps what runs)."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscache.core.config import load
from netkit.control.core.bgpdesired import REFLECTOR_LABEL, BgpNode, desired_bgp, inventory_document
from netkit.control.core.dnsdesired import desired_dns

ZONE = "topology.kubernetes.io/zone"
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "netkit"
TOPOLOGY = yaml.safe_load((EXAMPLES / "bgptopology.yaml").read_text())["spec"]
DNSCACHE = yaml.safe_load((EXAMPLES / "dnscache.yaml").read_text())["spec"]


def cluster(n: int) -> list[BgpNode]:
    return [
        BgpNode(f"n{i:02}", {ZONE: "abc"[i % 3]}, f"198.18.0.{i + 1}", (f"10.244.{i}.0/24", "fd00::/64"))
        for i in range(n)
    ]


def test_the_inventory_comes_from_the_nodes() -> None:
    nodes = [*cluster(3), BgpNode("v6", {ZONE: "a"}, "2001:db8::9"), BgpNode("noip", {ZONE: "a"})]
    nodes.append(BgpNode("rr", {ZONE: "b", REFLECTOR_LABEL: "true"}, "198.18.0.50"))
    doc, left_out = inventory_document(nodes, TOPOLOGY)
    assert left_out == ["noip", "v6"]
    by_name = {n["name"]: n for n in doc["nodes"]}
    assert by_name["n00"] == {
        "name": "n00",
        "address": "198.18.0.1",
        "labels": {ZONE: "a"},
        "prefixes": ["10.244.0.0/24"],
    }
    assert by_name["rr"]["reflector"] is True and doc["asn"] == 64512
    assert doc["policy"]["failure_domain"] == ZONE and doc["policy"]["redundancy"] == 2


def test_a_plan_of_reflectors_in_distinct_domains_and_a_mesh_on_request() -> None:
    d = desired_bgp(cluster(6), TOPOLOGY)
    assert d.problems == () and d.plan is not None and d.plan.kind == "rr"
    zone = {n.name: n.labels[ZONE] for n in cluster(6)}
    clients = [n for n in zone if n not in d.plan.reflectors]
    assert clients
    for client in clients:  # redundancy 2: two reflectors, in two zones
        rrs = d.plan.reflectors_of(client)
        assert len(rrs) == 2 and len({zone[r] for r in rrs}) == 2, (client, rrs)
    mesh = desired_bgp(cluster(4), TOPOLOGY | {"topology": "mesh"})
    assert mesh.plan is not None and mesh.plan.kind == "mesh" and len(mesh.plan.sessions) == 6


def test_what_the_planner_refuses_is_said_and_no_plan_replaces_the_one_in_force() -> None:
    unlabelled = [BgpNode("x", {}, "198.18.0.1"), BgpNode("y", {}, "198.18.0.2")]
    d = desired_bgp(unlabelled, TOPOLOGY)
    assert d.plan is None and any(
        "nodes[x].labels.topology.kubernetes.io/zone: missing" in p for p in d.problems
    )
    nobody = desired_bgp([BgpNode("z", {}, None)], TOPOLOGY)
    assert nobody.plan is None and "no node to plan for: the plan in force is kept" in nobody.problems


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 12), st.integers(1, 3))
def test_nodes_joining_never_reshuffle_and_a_restart_changes_nothing(size: int, joining: int) -> None:
    first = desired_bgp(cluster(size), TOPOLOGY)
    assert first.plan is not None
    assert desired_bgp(cluster(size), TOPOLOGY, first.plan).plan == first.plan  # unchanged inputs
    grown = desired_bgp(cluster(size + joining), TOPOLOGY, first.plan)
    assert grown.plan is not None and set(first.plan.reflectors) <= set(grown.plan.reflectors)


def test_a_dnscache_becomes_the_configuration_dns_serve_reads() -> None:
    d = desired_dns(DNSCACHE, {("kube-system", "kube-dns-upstream"): "10.96.0.11"})
    assert d.problems == () and d.config is not None
    assert [str(u) for u in d.config.upstream] == ["10.96.0.11:53"]
    assert [str(z) for z in d.config.zone] == ["corp.example.=10.8.0.53:53,10.8.1.53:53"]
    assert (d.config.cache_size, d.config.cache_bytes, d.config.stale_ttl) == (20000, 64 << 20, 30)
    doc = d.document()
    assert doc is not None and load(doc) == d.config  # the file the agent writes loads back the same
    v6 = desired_dns(DNSCACHE, {("kube-system", "kube-dns-upstream"): "fd00::a"})
    assert v6.config is not None and [str(u) for u in v6.config.upstream] == ["[fd00::a]:53"]


def test_an_unresolved_service_or_a_loop_keeps_what_runs() -> None:
    for services in ({}, {("kube-system", "kube-dns-upstream"): "None"}):
        d = desired_dns(DNSCACHE, services)
        assert d.config is None and d.document() is None
        assert d.problems == (
            "upstreamService: Service kube-system/kube-dns-upstream not found or without a ClusterIP",
        )
    loop = desired_dns({"listen": ["169.254.20.10:53"], "upstreams": ["169.254.20.10:53"]}, {})
    assert loop.config is None and "forwarding loop" in loop.problems[0]
