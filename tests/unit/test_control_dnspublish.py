"""What the DNS controller publishes (pure): one cache per node (the older DNSCache keeps a node,
the newer is NodeConflict there and runs on the rest), an unresolvable configuration keeps what
every node runs, a deleted or de-selecting cache is removed from the node; the status from the
nodes' reports; properties: every node gets at most one cache, deleting every cache ends with
nothing on any node, and publishing again with unchanged inputs changes nothing."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netkit.control.core.conditions import find
from netkit.control.core.dnsdesired import DnsDesired, desired_dns
from netkit.control.core.dnspublish import assign_caches, node_dns
from netkit.control.core.l2desired import NetworkObject, Node
from netkit.control.core.rollout import Report, rollout_status, step

NOW = "2026-12-06T10:00:00Z"
SPEC = {"listen": ["169.254.20.10:53"], "upstreams": ["10.96.0.11:53"]}
NODES = [Node(f"n{i}", {"pool": "edge" if i < 2 else "core"}, f"198.18.0.{i + 1}") for i in range(4)]


def cache(
    name: str, generation: int = 1, created: str = "2026-12-01T00:00:00Z", **spec: Any
) -> NetworkObject:
    deleting = bool(spec.pop("deleting", False))
    return NetworkObject(name, generation, created, {**SPEC, **spec}, deleting=deleting)


def desired(*caches: NetworkObject) -> dict[str, DnsDesired]:
    return {c.name: desired_dns(c.spec, {}) for c in caches if not c.deleting}


def test_every_selected_node_gets_the_configuration_at_the_generation() -> None:
    c = cache("node-local", 3)
    d = desired(c)
    a = assign_caches(NODES, [c], d)
    assert a.selected == {"node-local": ("n0", "n1", "n2", "n3")} and a.problems == {"node-local": ()}
    entry = node_dns("n2", a, d, {"node-local": 3}, None)
    assert entry is not None and (entry["name"], entry["generation"]) == ("node-local", 3)
    assert entry["config"]["upstream"] == ["10.96.0.11:53"]


def test_the_older_cache_keeps_a_node_and_the_newer_runs_on_the_rest() -> None:
    old = cache("all", created="2026-12-01T00:00:00Z", nodeSelector={"matchLabels": {"pool": "edge"}})
    new = cache("everything", created="2026-12-02T00:00:00Z")
    d = desired(old, new)
    a = assign_caches(NODES, [new, old], d)
    assert a.node_cache == {"n0": "all", "n1": "all", "n2": "everything", "n3": "everything"}
    (problem,) = a.problems["everything"]
    assert problem.reason == "NodeConflict" and "n0, n1 already run DNSCache all" in problem.message
    status = rollout_status(1, a.problems["everything"], step(["n2", "n3"], {}, {}, 1, "100%"), {}, NOW)
    degraded = find(status["conditions"], "Degraded")
    assert degraded is not None and degraded["reason"] == "NodeConflict"
    assert status["nodesSelected"] == 2  # it runs on the rest


def test_an_unresolvable_service_keeps_what_every_node_runs() -> None:
    ok = cache("node-local", 1)
    running = node_dns("n0", assign_caches(NODES, [ok], desired(ok)), desired(ok), {"node-local": 1}, None)
    broken = NetworkObject(
        "node-local",
        2,
        ok.created,
        {"listen": SPEC["listen"], "upstreamService": {"namespace": "kube-system", "name": "gone"}},
    )
    d = desired(broken)
    a = assign_caches(NODES, [broken], d)
    assert node_dns("n0", a, d, {"node-local": 2}, running) == running  # kept, not "no upstreams"
    assert node_dns("n0", a, d, {"node-local": 2}, None) is None  # never had it: nothing to keep
    (problem,) = a.problems["node-local"]
    assert problem.reason == "Unresolved" and "kube-system/gone" in problem.message
    status = rollout_status(2, a.problems["node-local"], None, {}, NOW)
    ready = find(status["conditions"], "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "Unresolved"


def test_a_loop_is_refused_before_any_node_sees_it() -> None:
    loop = cache("node-local", 2, upstreams=["169.254.20.10:53"])
    d = desired(loop)
    assert d["node-local"].config is None
    assert "loop" in " ".join(p.message for p in assign_caches(NODES, [loop], d).problems["node-local"])


def test_deleted_or_no_longer_selecting_is_removed_from_the_node() -> None:
    c = cache("node-local", 1)
    running = node_dns("n0", assign_caches(NODES, [c], desired(c)), desired(c), {"node-local": 1}, None)
    gone = cache("node-local", 1, deleting=True)
    assert node_dns("n0", assign_caches(NODES, [gone], {}), {}, {"node-local": 1}, running) is None
    narrowed = cache("node-local", 2, nodeSelector={"matchLabels": {"pool": "core"}})
    a = assign_caches(NODES, [narrowed], desired(narrowed))
    assert node_dns("n0", a, desired(narrowed), {"node-local": 2}, running) is None
    assert node_dns("n3", a, desired(narrowed), {"node-local": 2}, running) is not None


def test_the_status_follows_the_reports() -> None:
    nodes = ["n0", "n1"]
    told = {n: 2 for n in nodes}
    rolling = step(nodes, told, {"n0": Report(2, "Applied"), "n1": Report(1, "Applied")}, 2, "100%")
    s = rollout_status(2, (), rolling, {}, NOW)
    assert (s["nodesReady"], find(s["conditions"], "Progressing")["status"]) == (1, "True")  # type: ignore[index]
    failed = step(nodes, told, {"n0": Report(2, "Applied"), "n1": Report(2, "Failed")}, 2, "100%")
    s2 = rollout_status(2, (), failed, s, NOW)
    assert s2["nodesFailed"] == ["n1"] and find(s2["conditions"], "Degraded")["status"] == "True"  # type: ignore[index]


selectors = st.sampled_from([None, {"matchLabels": {"pool": "edge"}}, {"matchLabels": {"pool": "core"}}])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(selectors, st.integers(1, 5), st.booleans()), min_size=0, max_size=4))
def test_properties(caches: list[tuple[dict[str, Any] | None, int, bool]]) -> None:
    objects = [
        cache(
            f"c{i}",
            g,
            f"2026-12-0{i + 1}T00:00:00Z",
            deleting=deleting,
            **({"nodeSelector": sel} if sel else {}),
        )
        for i, (sel, g, deleting) in enumerate(caches)
    ]
    d = desired(*objects)
    gens = {o.name: o.generation for o in objects}
    a = assign_caches(NODES, objects, d)
    published = {n.name: node_dns(n.name, a, d, gens, None) for n in NODES}
    for node, entry in published.items():  # at most one cache per node, and only a live one
        live = {o.name for o in objects if not o.deleting}
        assert entry is None or entry["name"] in live
        assert sum(node in sel for sel in a.selected.values()) <= 1
    again = {n.name: node_dns(n.name, a, d, gens, published[n.name]) for n in NODES}
    assert again == published  # unchanged inputs: nothing new to write
    every_deleted = [NetworkObject(o.name, o.generation, o.created, o.spec, deleting=True) for o in objects]
    gone = assign_caches(NODES, every_deleted, {})
    assert all(node_dns(n.name, gone, {}, gens, published[n.name]) is None for n in NODES)
