"""Migration steps: make before break, and no step ever leaves a node without a route
(checked with the propagation model; the lab test checks it with real speakers)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.core.inventory import Inventory, Policy
from bgp.core.migration import migration_steps
from bgp.core.model import Session, SessionKind
from bgp.core.planner import mesh_plan, plan
from bgp.core.propagation import missing_routes
from tests.unit.test_bgp_planner import inventory, node


def assert_no_step_loses(names: list[str], steps: list, keep: set[str]) -> None:
    for step in steps:
        missing = missing_routes(names, step.sessions, step.cluster_ids)
        lost = {n: m & keep for n, m in missing.items() if n in keep and m & keep}
        assert not lost, (str(step), lost)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(4, 30), zones=st.integers(2, 4), batch=st.integers(1, 40), shared=st.booleans())
def test_mesh_to_rr_and_back_never_loses_a_route(n: int, zones: int, batch: int, shared: bool) -> None:
    # shared groups of two reflectors per zone split evenly only over two zones
    policy = Policy(cluster_id="shared", reflectors_per_domain=2) if shared else Policy()
    inv = inventory(n, policy, 2 if shared else zones)
    mesh, rr = mesh_plan(inv), plan(inv)
    names = list(inv.names)
    forward = migration_steps(mesh, rr, batch)
    if not forward:  # every node is a reflector: the reflector mesh is the full mesh
        assert rr.sessions == mesh.sessions
        return
    assert {s.on(False) for s in forward[-1].sessions} == rr.sessions
    assert_no_step_loses(names, forward, set(names))
    assert not [s for s in forward if s.kind in ("reflect", "unreflect")]
    now = dataclasses.replace(rr, sessions=forward[-1].sessions)
    back = migration_steps(now, mesh, batch)
    assert {s.on(False) for s in back[-1].sessions} == mesh.sessions
    assert_no_step_loses(names, back, set(names))
    # and without alternate addresses: flips in place, one reflector at a time
    flips = migration_steps(mesh, rr, batch, alt_nodes=frozenset())
    assert flips[-1].sessions == rr.sessions
    assert_no_step_loses(names, flips, set(names))


def test_make_before_break_order() -> None:
    inv = inventory(12)
    rr = plan(inv)
    steps = migration_steps(mesh_plan(inv), rr, batch=5)
    kinds = [s.kind for s in steps]
    gate = kinds.index("gate")
    assert kinds[0] == "add" and set(kinds[1:gate]) == {"retire"} and set(kinds[gate + 1 :]) == {"remove"}
    added = steps[0].sessions - mesh_plan(inv).sessions
    assert added == {s.on(True) for s in rr.sessions if s.kind is SessionKind.RR}  # beside, not instead
    assert all(
        len(s.sessions ^ steps[i].sessions) <= 5 for i, s in enumerate(steps[1:]) if s.kind == "remove"
    )
    in_place = [s.kind for s in migration_steps(mesh_plan(inv), rr, batch=5, alt_nodes=frozenset())]
    assert in_place[: in_place.index("gate")] == ["reflect"] * 3
    assert all(len(steps[i].sessions) >= len(steps[i + 1].sessions) for i in range(len(steps) - 1))


def test_adding_and_removing_nodes_later() -> None:
    inv = inventory(15)
    before = plan(inv)
    grown = Inventory((*inv.nodes, node(40), node(41)), inv.policy)
    after = plan(grown, previous=before)
    steps = migration_steps(before, after)
    assert [s.kind for s in steps] == ["add", "gate"]  # new clients: only their sessions are added
    old_names = set(inv.names)
    assert_no_step_loses(list(grown.names), steps, old_names)
    # remove a reflector: its clients move to the replacement before it goes
    victim = sorted(after.reflectors)[0]
    shrunk = Inventory(tuple(x for x in grown.nodes if x.name != victim), inv.policy)
    final = plan(shrunk, previous=after)
    steps = migration_steps(after, final)
    keep = set(shrunk.names)
    assert_no_step_loses(list(grown.names), steps, keep)
    assert {s.on(False) for s in steps[-1].sessions} == final.sessions


def test_nothing_to_do() -> None:
    inv = inventory(9)
    p = plan(inv)
    assert migration_steps(p, p) == []
    with pytest.raises(ValueError):
        migration_steps(p, p, batch=0)


def test_expectations_name_the_gap() -> None:
    from bgp.core.migration import Step, expectations, unmet
    from bgp.core.model import NodeInfo

    infos = [
        NodeInfo("a", "198.18.0.1", 64512, "198.18.0.1", ("198.19.1.0/24",), "198.18.1.1"),
        NodeInfo("b", "198.18.0.2", 64512, "198.18.0.2", ("198.19.2.0/24",), "198.18.1.2"),
        NodeInfo("r", "198.18.0.3", 64512, "198.18.0.3", (), "198.18.1.3"),
    ]
    old = frozenset([Session.peer("a", "b"), Session.peer("a", "r"), Session.peer("b", "r")])
    new = frozenset([Session.rr("r", "a", alt=True), Session.rr("r", "b", alt=True)])
    add = Step("add", "", old | new)
    exp = expectations(add, old, new, infos, ["a", "b", "r"])
    learnt = {
        "a": {"198.19.2.0/24": {"198.18.0.2"}},
        "b": {"198.19.1.0/24": {"198.18.0.1"}},
        "r": {"198.19.1.0/24": {"198.18.0.1"}, "198.19.2.0/24": {"198.18.0.2"}},
    }
    assert unmet(exp, learnt)[0] == "r lacks 198.19.1.0/24 over the new session r -> a (alt)"
    learnt["r"]["198.19.1.0/24"].add("198.18.1.1")
    learnt["r"]["198.19.2.0/24"].add("198.18.1.2")
    assert unmet(exp, learnt) == []
    gate = Step("gate", "", old | new)
    problems = unmet(expectations(gate, old | new, new, infos, ["a", "b", "r"]), learnt)
    assert problems == [
        "a lacks 198.19.2.0/24 over the target topology",
        "b lacks 198.19.1.0/24 over the target topology",
    ]
    learnt["a"]["198.19.2.0/24"].add("198.18.1.3")
    learnt["b"]["198.19.1.0/24"].add("198.18.1.3")
    assert unmet(expectations(gate, old | new, new, infos, ["a", "b", "r"]), learnt) == []
    # a new session between nodes with prefixes must carry them before the old one retires
    direct = frozenset([Session.rr("a", "b", alt=True)])
    exp = expectations(Step("add", "", old | direct), old, direct, infos, ["a", "b", "r"])
    assert unmet(exp, learnt) == [
        "a lacks 198.19.2.0/24 over the new session a -> b (alt)",
        "b lacks 198.19.1.0/24 over the new session a -> b (alt)",
    ]


class _Fake:
    """A speaker that takes configs (or refuses them) and cannot be read."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.applied = 0

    def apply(self, new: object) -> None:
        if self.refuse:
            raise OSError("control socket gone")
        self.applied += 1

    def sessions(self) -> dict[str, str]:
        raise OSError("no answer")

    def routes(self, family: str = "ipv4") -> dict[str, list[object]]:
        return {}


def test_run_migration_failures_say_what_is_in_force() -> None:
    from bgp.migrate import MigrationError, run_migration

    inv = inventory(6)
    mesh, rr = mesh_plan(inv), plan(inv)
    first = migration_steps(mesh, rr, alt_nodes=frozenset())[0]  # no alternate addresses here
    # a speaker that cannot be read is a problem until the timeout, not a crash
    fakes = {n: _Fake() for n in inv.names}
    with pytest.raises(MigrationError) as info:
        run_migration(inv, mesh, rr, fakes, step_timeout=0, poll=0)
    assert info.value.applied_on is None and "the topology in force is this step's" in str(info.value)
    assert info.value.problems == ["reading the speakers' state failed: no answer"]
    # one that refuses the config stops the step half-applied, and the error says so
    refusing = first.touched[1]
    fakes = {n: _Fake(refuse=n == refusing) for n in inv.names}
    with pytest.raises(MigrationError) as info:
        run_migration(inv, mesh, rr, fakes, step_timeout=0, poll=0)
    assert info.value.applied_on == first.touched[:1]
    assert f"applied only on {first.touched[0]}: the speakers run a mix" in str(info.value)
    assert [n for n, f in fakes.items() if f.applied] == [first.touched[0]]
