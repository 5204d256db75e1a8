"""The BGP controller's decisions (pure), driven by simulated agents whose speakers learn what
iBGP propagation over the published sessions gives (``bgp.core.propagation``):

- the first plan goes out as a migration from nothing and ends in force, in the status;
- mesh -> reflectors moves one step at a time, each step only once every node reports it with
  every session Established and every prefix held, and ends with the reflectors' plan in force
  (new sessions on the alternate addresses), the mesh's sessions gone;
- a controller restarted mid-migration (the same status) publishes the same step;
- a node that does not converge holds the step (Ready False, naming it), and past
  stepTimeoutSeconds the migration is Stopped (Degraded) with nothing removed;
- a planner refusal publishes nothing new (the nodes keep what they run) and says Degraded;
- configurations survive the trip through the NodeState (to dict and back).
"""

from __future__ import annotations

import itertools
from typing import Any

from bgp.core.model import Session, SessionKind
from bgp.core.planner import plan_from_dict
from bgp.core.propagation import propagate
from netkit.control.core.bgpdesired import BgpNode
from netkit.control.core.bgppublish import config_from_dict, config_to_dict, decide, topology_status
from netkit.control.core.conditions import find

ZONE = "topology.kubernetes.io/zone"
NOW = "2026-12-06T10:00:00Z"


def nodes(n: int = 6, alt: bool = True) -> list[BgpNode]:
    return [
        BgpNode(
            f"n{i}",
            {ZONE: f"z{i % 3}"},
            f"198.18.0.{i}",
            (f"198.19.{i}.0/24",),
            f"198.18.1.{i}" if alt else None,
        )
        for i in range(1, n + 1)
    ]


def spec(topology: str = "reflectors", **extra: Any) -> dict[str, Any]:
    return {
        "asn": 64512,
        "speaker": "bird",
        "topology": topology,
        "policy": {"failureDomainLabel": ZONE, "redundancy": 2},
        **extra,
    }


def simulate(
    published: dict[str, dict[str, Any]], ns: list[BgpNode], lagging: frozenset[str] = frozenset()
) -> dict[str, dict[str, Any]]:
    """Every node's status.bgp as a speaker running its published config would report it."""
    by_name = {n.name: n for n in ns}
    sessions: set[Session] = set()
    addr: dict[tuple[str, str], set[str]] = {}  # (me, other) -> other's addresses I peer with
    cluster_ids: dict[str, str] = {}
    for me, entry in published.items():
        cfg = entry["config"]
        if cfg.get("clusterId"):
            cluster_ids[me] = cfg["clusterId"]
        for nb in cfg["neighbors"]:
            addr.setdefault((me, nb["name"]), set()).add(nb["address"])
            alt = "localAddress" in nb
            if nb["role"] == "client":
                sessions.add(Session(me, nb["name"], SessionKind.RR, alt))
            elif nb["role"] == "reflector":
                sessions.add(Session(nb["name"], me, SessionKind.RR, alt))
            else:
                sessions.add(Session.peer(me, nb["name"], alt))
    names = sorted(published)
    clients = {(x.a, x.b) for x in sessions if x.kind is SessionKind.RR}  # (reflector, client)
    learnt: dict[str, dict[str, set[str]]] = {n: {} for n in names}
    for origin in names:
        best = propagate(names, sessions, cluster_ids, origin)
        for m, path in best.items():  # what m advertises, to whom (RFC 4271 iBGP, RFC 4456)
            for me in names:
                if (me, m) not in addr or me == origin:
                    continue
                if m == origin:
                    ok = True
                elif (m, path.sender) in clients:  # from a client: to everyone but the sender
                    ok = me != path.sender
                else:  # from a non-client: to clients only
                    ok = (m, me) in clients
                if ok:
                    for p in by_name[origin].pod_cidrs:
                        learnt[me].setdefault(p, set()).update(addr[(me, m)])
    return {
        n: {
            "revision": e["revision"] if n not in lagging else "old",
            "state": "Applied",
            "sessionsConfigured": len(e["config"]["neighbors"]),
            "sessionsEstablished": len(e["config"]["neighbors"]),
            "routes": [{"prefix": p, "via": sorted(v)} for p, v in sorted(learnt[n].items())],
        }
        for n, e in published.items()
    }


def run(
    s: dict[str, Any], ns: list[BgpNode], status: dict[str, Any], passes: int = 40
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Passes of controller and agents until Converged; the statuses seen."""
    seen = []
    reports: dict[str, dict[str, Any]] = {}
    for _ in range(passes):
        d = decide("cluster", 1, s, ns, status, reports, NOW)
        status = topology_status(d, 1, status, NOW)
        seen.append(status)
        if status["phase"] == "Converged" and "migration" not in status and reports:
            ready = find(status["conditions"], "Ready")
            if ready is not None and ready["status"] == "True":
                return status, seen
        reports = simulate(d.publish, ns)
    raise AssertionError(f"not converged: {status}")


def kinds(status: dict[str, Any]) -> set[str]:
    return {str(x.kind) for x in plan_from_dict(status["plan"]).sessions}


def test_the_first_plan_is_a_migration_from_nothing() -> None:
    status, seen = run(spec(), nodes(), {})
    assert "rr" in kinds(status) and len(status["reflectors"]) >= 2  # reflectors peer among themselves
    assert any(s.get("phase") == "Migrating" for s in seen)


def test_mesh_to_reflectors_step_by_step_and_back() -> None:
    ns = nodes()
    mesh, _ = run(spec("mesh"), ns, {})
    assert kinds(mesh) == {"peer"} and mesh["sessions"] == 15
    rr, seen = run(spec(), ns, mesh)
    steps = [s["migration"]["step"] for s in seen if "migration" in s]
    assert steps == sorted(steps) and len(set(steps)) > 2  # one step after the other, never back
    assert all(b - a <= 1 for a, b in itertools.pairwise(steps))
    in_force = plan_from_dict(rr["plan"])
    assert "rr" in {str(x.kind) for x in in_force.sessions} and any(x.alt for x in in_force.sessions)
    back, _ = run(spec("mesh"), ns, rr)
    assert kinds(back) == {"peer"}


def test_a_restart_mid_migration_publishes_the_same_step() -> None:
    ns = nodes()
    mesh, _ = run(spec("mesh"), ns, {})
    first = decide("cluster", 1, spec(), ns, mesh, {}, NOW)
    status = topology_status(first, 1, mesh, NOW)
    again = decide("cluster", 1, spec(), ns, status, {}, NOW)
    assert again.publish == decide("cluster", 1, spec(), ns, status, {}, NOW).publish
    assert again.status["migration"]["step"] == status["migration"]["step"] == 0


def test_a_node_that_does_not_converge_holds_the_step_then_stops_it() -> None:
    ns = nodes()
    mesh, _ = run(spec("mesh"), ns, {})
    d = decide("cluster", 1, spec(), ns, mesh, {}, NOW)
    status = topology_status(d, 1, mesh, NOW)
    reports = simulate(d.publish, ns, lagging=frozenset({"n3"}))
    held = decide("cluster", 1, spec(), ns, status, reports, "2026-12-06T10:01:00Z")
    held_status = topology_status(held, 1, status, "2026-12-06T10:01:00Z")
    assert held_status["migration"]["step"] == 0 and any("n3" in w for w in held.waiting)
    ready = find(held_status["conditions"], "Ready")
    assert ready is not None and ready["status"] == "False" and "n3" in ready["message"]
    late = decide("cluster", 1, spec(), ns, held_status, reports, "2026-12-06T10:03:00Z")
    late_status = topology_status(late, 1, held_status, "2026-12-06T10:03:00Z")
    degraded = find(late_status["conditions"], "Degraded")
    assert (
        late_status["phase"] == "Stopped"
        and degraded is not None
        and degraded["reason"] == "MigrationStopped"
    )
    assert late.publish == held.publish  # nothing removed: the step's complete topology stays


def test_a_refused_plan_publishes_nothing_and_is_degraded() -> None:
    ns = [BgpNode(n.name, {}, n.internal_ip, n.pod_cidrs) for n in nodes()]  # no zone labels
    d = decide("cluster", 1, spec(), ns, {}, {}, NOW)
    assert d.publish == {} and d.problems
    status = topology_status(d, 1, {}, NOW)
    degraded = find(status["conditions"], "Degraded")
    assert degraded is not None and degraded["status"] == "True" and ZONE in degraded["message"]


def test_configurations_survive_the_nodestate() -> None:
    d = decide("cluster", 1, spec(timers={"holdSeconds": 9, "keepaliveSeconds": 3}), nodes(), {}, {}, NOW)
    for entry in d.publish.values():
        cfg = config_from_dict(entry["config"])
        assert config_to_dict(cfg) == entry["config"] and cfg.timers.hold == 9
