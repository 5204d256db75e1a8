"""The doctor's pure decisions and engine: each check's decision over observed facts, property
tested; repairs bounded per window and stopped when they do not hold; Node conditions whose
transition time moves only with status or reason."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bgp.core.speakerstate import PathInfo
from netkit.doctor.core import bgp, dns, engine, l2, node
from netkit.doctor.core.engine import CheckState, RepairPolicy
from netkit.doctor.core.model import Finding, Repair, ok, problem
from netkit.l2 import filter as underlay
from netkit.l2.core.model import load_networks
from netkit.l2.core.plan import AddFdb, Change, Plan, SetLink
from netkit.l2.core.state import FdbEntry

T0 = "2026-12-07T10:00:00Z"
REPAIRABLE = problem("FdbDrift", "1 change pending", ["+ fdb"], repair=Repair("apply 1 operation", ()))
NETS = load_networks(
    "networks: [{name: blue, vni: 100, members: {n1: 198.18.0.1, n2: 198.18.0.2, n3: 198.18.0.3}}]"
)


# -- L2 ------------------------------------------------------------------------------------------

CHANGES = st.lists(
    st.sampled_from(["mtu", "up", "alias", "arp_ignore", "rp_filter", "neigh_suppress"]),
    unique=True,
    min_size=1,
).map(lambda fs: tuple(Change(f, 0, 1) for f in fs))


@given(st.lists(CHANGES, max_size=6))
def test_split_ops_partitions_every_change(changes: list[tuple[Change, ...]]) -> None:
    ops = [SetLink("blue", f"l{i}", cs) for i, cs in enumerate(changes)]
    drift, sysctls = l2.split_ops(ops)
    got = sorted((op.name, c.field) for op in [*drift, *sysctls] for c in op.changes)  # type: ignore[union-attr]
    assert got == sorted((op.name, c.field) for op in ops for c in op.changes)
    assert all(c.field in l2.SYSCTLS for op in sysctls for c in op.changes)  # type: ignore[union-attr]
    assert not any(c.field in l2.SYSCTLS for op in drift for c in op.changes)  # type: ignore[union-attr]


def test_drift_is_fdb_or_link_and_repaired_by_its_operations() -> None:
    fdb = AddFdb("blue", FdbEntry("nkvx-100", "00:00:00:00:00:00", "198.18.0.2"))
    f = l2.decide_drift(Plan("n1", (fdb,), networks=("blue",)))
    assert f.reason == "FdbDrift" and f.repair is not None and f.repair.payload == (fdb,)
    arp = SetLink("blue", "nkbr-x", (Change("arp_ignore", 0, 8),))
    assert l2.decide_drift(Plan("n1", (arp,), networks=("blue",))).status == "ok"
    b = l2.decide_bridge_arp(Plan("n1", (arp, fdb), networks=("blue",)))
    assert b.reason == "BridgeAnswersARP" and b.repair is not None and b.repair.payload == (arp,)
    assert l2.decide_drift(Plan("n1", networks=("blue",))).status == "ok"


def test_filter_rendered_and_listed_the_same_is_ok_and_edits_are_named() -> None:
    text = underlay.render(NETS, "n1")
    assert text is not None
    comment = f'comment "{underlay.COMMENT}"'
    listed = text.replace("{ 198.18.0.2, 198.18.0.3 }", "{ 198.18.0.2, 198.18.0.3 }").replace("\t}", "\t}\n")
    assert l2.decide_filter(text, listed, comment).status == "ok"
    assert l2.decide_filter(text, None, comment).reason == "FilterMissing"
    edited = l2.decide_filter(text, listed.replace("\t\tdrop\n", ""), comment)
    assert edited.reason == "FilterEdited" and edited.evidence == ("- drop",) and edited.repair is not None
    assert l2.decide_filter(None, None, comment).status == "ok"
    assert l2.decide_filter(None, text, comment).reason == "FilterStale"
    foreign = l2.decide_filter(text, "table inet netkit_l2 {\n}\n", comment)
    assert foreign.reason == "FilterNotOwned" and foreign.repair is None  # never touched


def test_one_element_set_is_listed_without_braces() -> None:
    assert l2.filter_lines("\t\tip saddr { 198.18.0.2 } accept\n\n") == ["ip saddr 198.18.0.2 accept"]


@given(st.integers(576, 9000), st.one_of(st.none(), st.integers(576, 9000)))
def test_mtu_problem_exactly_when_the_path_is_smaller(needed: int, largest: int | None) -> None:
    f = l2.decide_mtu(
        [l2.MtuNeed("blue", "198.18.0.2", needed)], {"198.18.0.2": l2.PathMtu("198.18.0.2", largest)}
    )
    if largest is None:
        assert f.reason == "VTEPUnreachable"
    elif largest < needed:
        assert f.reason == "PathMTUTooSmall" and f"needs {needed}" in f.evidence[0] and f.repair is None
    else:
        assert f.status == "ok"


# -- BGP -----------------------------------------------------------------------------------------


def path(prefix: str, learnt: bool = True, best: bool = True) -> PathInfo:
    return PathInfo(prefix, "198.18.0.2", "198.18.0.2" if learnt else None, best, 100)


PREFIXES = st.lists(st.integers(0, 255).map(lambda i: f"198.19.{i}.0/24"), unique=True, max_size=12)


@given(PREFIXES, PREFIXES, st.data())
def test_missing_from_fib_is_learnt_best_minus_fib(
    held: list[str], fib: list[str], data: st.DataObject
) -> None:
    learnt = {p: data.draw(st.booleans()) for p in held}
    routes = {p: [path(p, learnt[p])] for p in held}
    missing = bgp.missing_from_fib(routes, fib)
    assert set(missing) == {p for p in held if learnt[p]} - set(fib)
    f = bgp.decide_fib(routes, fib, "birdc reload out")
    assert (f.status == "problem") == bool(missing)
    assert f.repair is None or missing
    assert bgp.decide_fib(routes, fib, None).repair is None


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["Established", "Active", "Idle"])))
def test_session_down_exactly_when_one_is_not_established(sessions: dict[str, str]) -> None:
    f = bgp.decide_sessions(sessions)
    if not sessions:
        assert f.status == "unknown"
    else:
        assert (f.reason == "SessionDown") == any(s != "Established" for s in sessions.values())


def test_flapping_is_counted_from_transitions_in_the_window() -> None:
    history: tuple[bgp.SessionEvent, ...] = ()
    prev: dict[str, str] = {}
    for t in range(8):  # up, down, up, down ...
        now = {"198.18.0.2": "Established" if t % 2 == 0 else "Active"}
        history = bgp.record_sessions(history, prev, now, float(t), window=600)
        prev = now
    assert len(history) == 4
    assert bgp.decide_sessions({"198.18.0.2": "Established"}, history).reason == "SessionFlapping"
    later = bgp.record_sessions(history, prev, {"198.18.0.2": "Established"}, 1000.0, window=600)
    assert later == () and bgp.decide_sessions({"198.18.0.2": "Established"}, later).status == "ok"


# -- DNS and node --------------------------------------------------------------------------------


def test_a_stopped_cache_is_resumed_only_when_it_is_ours_and_stopped() -> None:
    f = dns.decide_answering("169.254.20.10:53", 0, 3, 42, "T")
    assert f.reason == "CacheNotAnswering" and f.repair is not None and f.repair.payload == 42
    assert dns.decide_answering("169.254.20.10:53", 0, 3, 42, "S").repair is None  # busy, not stopped
    assert dns.decide_answering("169.254.20.10:53", 0, 3).repair is None  # not known to be ours
    assert dns.decide_answering("169.254.20.10:53", 1, 1).status == "ok"


def test_upstreams_down_when_out_of_service_or_answering_nothing() -> None:
    U = dns.UpstreamFacts
    assert dns.decide_upstreams({"a": U(True, 3, 0)}).reason == "AllUpstreamsDown"
    assert dns.decide_upstreams({"a": U(False), "b": U(True, 2, 0)}).reason == "AllUpstreamsDown"
    assert dns.decide_upstreams({"a": U(False), "b": U(True, 2, 1)}).status == "ok"
    assert dns.decide_upstreams({"a": U(True)}).status == "ok"  # no exchange needed: no evidence against
    assert dns.decide_upstreams({}).status == "unknown"


def test_address_missing_is_added_back_on_its_interface_only() -> None:
    f = dns.decide_address(["169.254.20.10"], "nodelocaldns", ["10.0.0.1"])
    assert f.reason == "AddressMissing" and f.repair is not None
    assert f.repair.payload == ("nodelocaldns", ("169.254.20.10",))
    assert dns.decide_address(["169.254.20.10"], "nodelocaldns", None).reason == "InterfaceMissing"
    assert dns.decide_address(["169.254.20.10"], "nodelocaldns", ["169.254.20.10"]).status == "ok"


def test_clients_that_bypass_the_cache() -> None:
    a = ["169.254.20.10"]
    assert dns.decide_clients(a, ["10.96.0.10"], {}).reason == "KubeletBypassesCache"
    assert (
        dns.decide_clients(a, ["169.254.20.10"], {"/p/resolv.conf": ["10.96.0.10"]}).reason
        == "PodsBypassCache"
    )
    assert dns.decide_clients(a, ["169.254.20.10"], {"/p/resolv.conf": ["169.254.20.10"]}).status == "ok"
    assert dns.decide_clients(a, None, {}).status == "unknown"


@given(st.integers(0, 10**6), st.integers(1, 10**6), st.floats(0.0001, 1.0))
def test_conntrack_problem_exactly_at_the_threshold(count: int, maximum: int, threshold: float) -> None:
    f = node.decide_conntrack(count, maximum, threshold)
    assert (f.status == "problem") == (count / maximum >= threshold)
    assert f.repair is None  # the table is the node's, not netkit's


def test_conntrack_not_loaded_is_unknown_and_api_errors_are_problems() -> None:
    assert node.decide_conntrack(None, None, 0.9).status == "unknown"
    assert (
        node.decide_api("https://10.0.0.1:6443", "ConnectionRefused", 0.01).reason == "APIServerUnreachable"
    )
    assert node.decide_api("https://10.0.0.1:6443", None, 0.01).status == "ok"


# -- the engine ----------------------------------------------------------------------------------

RUNS = st.lists(st.tuples(st.booleans(), st.floats(0.0, 400.0)), max_size=40)


@given(RUNS, st.booleans())
def test_repairs_are_bounded_per_window_and_stop_when_they_do_not_hold(
    runs: list[tuple[bool, float]], holds: bool
) -> None:
    """Whatever the sequence of findings and delays, no window holds more than max_attempts
    repairs, and a repair that does not hold is tried at most max_failed times in a row within
    a window (then once more after it)."""
    policy = RepairPolicy(max_attempts=3, window=600.0, max_failed=2)
    state, now, done = CheckState(), 0.0, []
    in_a_row: list[float] = []  # failed repairs in a row
    for faulty, delay in runs:
        now += delay
        finding = REPAIRABLE if faulty else ok("fine")
        state = engine.observe(state, finding, now, policy)
        decision = engine.decide_repair(state, finding, now, policy, fix=True, dry_run=False)
        if decision.repair:
            done.append(now)
            state = engine.repaired(state, now)
            after = ok("fixed") if holds else REPAIRABLE
            state = engine.verified(state, after, now, policy)
            in_a_row = [] if holds else [*in_a_row, now]
            assert len([u for u in in_a_row if now - u < policy.window]) <= policy.max_failed
        elif not faulty:
            in_a_row = []
    for t in done:
        assert len([u for u in done if t <= u < t + policy.window]) <= policy.max_attempts


def test_a_repair_that_does_not_hold_escalates_then_retries_after_the_window() -> None:
    policy = RepairPolicy(max_attempts=5, window=600.0, max_failed=2)
    state = CheckState()
    for t in (0.0, 10.0):
        state = engine.observe(state, REPAIRABLE, t, policy)
        assert engine.decide_repair(state, REPAIRABLE, t, policy, fix=True, dry_run=False).repair
        state = engine.verified(engine.repaired(state, t), REPAIRABLE, t, policy)
    state = engine.observe(state, REPAIRABLE, 20.0, policy)
    d = engine.decide_repair(state, REPAIRABLE, 20.0, policy, fix=True, dry_run=False)
    assert not d.repair and d.why.startswith("escalated")
    cond = engine.condition("NetkitL2Drift", REPAIRABLE, state, T0)
    assert cond["status"] == "True" and cond["reason"] == engine.ESCALATED and "FdbDrift" in cond["message"]
    state = engine.observe(state, REPAIRABLE, 700.0, policy)
    assert engine.decide_repair(state, REPAIRABLE, 700.0, policy, fix=True, dry_run=False).repair


def test_no_repair_without_fix_in_a_dry_run_or_without_a_safe_one() -> None:
    s, p = CheckState(), RepairPolicy()
    assert engine.decide_repair(s, REPAIRABLE, 0, p, fix=False, dry_run=False).why == "not asked (--fix)"
    assert engine.decide_repair(s, REPAIRABLE, 0, p, fix=True, dry_run=True).why == "dry run"
    bare = problem("PathMTUTooSmall", "too small")
    assert engine.decide_repair(s, bare, 0, p, fix=True, dry_run=False).why == "no safe repair"


@given(st.lists(st.sampled_from(["ok", "problem", "unknown", "error"]), min_size=1, max_size=12))
def test_transition_time_moves_only_with_status_or_reason(statuses: list[str]) -> None:
    prev = None
    for i, s in enumerate(statuses):
        f = Finding(s, "AsExpected" if s == "ok" else "Why", "m")  # type: ignore[arg-type]
        now = f"2026-12-07T10:00:{i:02d}Z"
        cond = engine.condition("NetkitX", f, CheckState(), now, prev)
        assert cond["lastHeartbeatTime"] == now
        same = prev is not None and (prev["status"], prev["reason"]) == (cond["status"], cond["reason"])
        assert (
            (cond["lastTransitionTime"] == prev["lastTransitionTime"])
            if same and prev
            else cond["lastTransitionTime"] == now
        )
        event = engine.transition(prev, cond)
        cleared = cond["status"] == "False" and prev is not None and prev["status"] == "True"
        assert (event is not None) == (not same and (cond["status"] == "True" or cleared))
        prev = cond
    assert {"problem": "True", "ok": "False"}.get(statuses[-1], "Unknown") == prev["status"]  # type: ignore[index]
