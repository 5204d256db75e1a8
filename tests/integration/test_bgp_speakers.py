"""Real BGP speakers in a namespace lab: BIRD, FRR, BIRD, GoBGP on n1..n4 of one L2Lab, driven by
``speaker_configs`` through labs.bgpspeakers.

Proves: with BIRD (then FRR) reflecting to the three others, every client holds every other
node's IPv4 prefix with the originator's address as next hop, ORIGINATOR_ID and CLUSTER_LIST as
RFC 4456 says, and no IPv6 prefix travels over these IPv4 sessions; the kernel FIBs of the BIRD
and FRR nodes hold the learnt IPv4 prefixes through the right gateway; ``apply`` adds and
removes sessions on running BIRD, FRR and GoBGP (the lab moves from the BIRD reflector to the
FRR one without restarting anything); a killed speaker's routes are withdrawn (no graceful
restart); stop leaves no process behind. Needs root and the Debian packages bird2, frr and gobgpd.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bgp.core.model import NodeInfo, Session, SpeakerConfig, Timers, speaker_configs
from labs.bgpspeakers import BgpSpeaker, BirdSpeaker, FrrSpeaker, GoBgpSpeaker, wait_for
from labs.dnspeers import live_group_members
from labs.l2lab import L2Lab

pytestmark = [pytest.mark.peers, pytest.mark.root]

KINDS: dict[str, type[BgpSpeaker]] = {
    "n1": BirdSpeaker,
    "n2": FrrSpeaker,
    "n3": BirdSpeaker,
    "n4": GoBgpSpeaker,
}
CLUSTER_IDS = {"n1": "1.1.1.1", "n2": "2.2.2.2"}
FIB_NODES = ("n1", "n2", "n3")  # GoBGP installs nothing in the kernel by itself
CONVERGE_S = 20.0


def v4(i: int) -> str:
    return f"198.19.{i}.0/24"


def v6(i: int) -> str:
    return f"2001:db8:{i}::/48"


def star(reflector: str) -> list[Session]:
    return [Session.rr(reflector, c) for c in KINDS if c != reflector]


@pytest.fixture(scope="module")
def lab() -> Iterator[L2Lab]:
    if os.geteuid() != 0:
        pytest.fail("the BGP speaker tests need root (network namespaces); the suite runs as root")
    with L2Lab(nodes=len(KINDS)) as lab:
        yield lab
    assert lab.leftovers() == []


@pytest.fixture(scope="module")
def nodes(lab: L2Lab) -> list[NodeInfo]:
    out = []
    for i, name in enumerate(KINDS, 1):
        addr = lab.vtep[name]
        out.append(NodeInfo(name, addr, 64512, addr, (v4(i), v6(i))))
    return out


def configs(nodes: list[NodeInfo], sessions: list[Session]) -> dict[str, SpeakerConfig]:
    return speaker_configs(nodes, sessions, CLUSTER_IDS, timers=Timers.lab())


class Speakers:
    """The four speakers of one test, stopped (and checked gone) at the end."""

    def __init__(self, lab: L2Lab, workdir: Path, cfgs: dict[str, SpeakerConfig]) -> None:
        self.stack = ExitStack()
        self.by_node: dict[str, BgpSpeaker] = {}
        self.pids: list[int] = []
        for name, cls in KINDS.items():
            sp = self.stack.enter_context(cls(lab.ns(name), workdir, cfgs[name]))
            self.by_node[name] = sp
            self.pids += sp.pids

    def __getitem__(self, name: str) -> BgpSpeaker:
        return self.by_node[name]

    def apply(self, cfgs: dict[str, SpeakerConfig]) -> None:
        for name, sp in self.by_node.items():
            sp.apply(cfgs[name])

    def close(self) -> None:
        self.stack.close()
        for pid in self.pids:
            assert live_group_members(pid) == [], f"process group {pid} outlived stop()"


@pytest.fixture
def speakers(lab: L2Lab, nodes: list[NodeInfo], tmp_path: Path) -> Iterator[Speakers]:
    sp = Speakers(lab, tmp_path, configs(nodes, star("n1")))
    try:
        yield sp
    finally:
        sp.close()


def reflection_problems(sp: Speakers, nodes: list[NodeInfo], reflector: str) -> list[str]:
    """What differs from a converged star around ``reflector`` (empty when all is right)."""
    info = {n.name: n for n in nodes}
    rr = info[reflector]
    problems = []
    for name, speaker in sp.by_node.items():
        states = speaker.sessions()
        want = {n.address for n in speaker.cfg.neighbors}
        if set(states) != want or set(states.values()) != {"Established"}:
            problems.append(f"{name}: sessions {states}, want {sorted(want)} Established")
            continue
        if name == reflector:
            continue
        routes = speaker.routes("ipv4")
        for i, other in enumerate(KINDS, 1):
            if other == name:
                continue
            o = info[other]
            best = [p for p in routes.get(v4(i), []) if p.best]
            if len(best) != 1:
                problems.append(f"{name}: {v4(i)} has best paths {best}")
                continue
            p = best[0]
            reflected = other != reflector
            want_attrs = (
                o.address,  # next hop: the originator, never the reflector
                rr.address,  # learnt over the session to the reflector
                o.router_id if reflected else None,
                (CLUSTER_IDS[reflector],) if reflected else (),
            )
            got = (p.next_hop, p.from_address, p.originator_id, p.cluster_list)
            if got != want_attrs:
                problems.append(f"{name}: {v4(i)} (nh, from, originator, clusters) {got} != {want_attrs}")
        learnt6 = {
            prefix for prefix, paths in speaker.routes("ipv6").items() if any(p.from_address for p in paths)
        }
        if learnt6:
            problems.append(f"{name}: learnt IPv6 prefixes {sorted(learnt6)} over IPv4 sessions")
    return problems


def converge(sp: Speakers, nodes: list[NodeInfo], reflector: str) -> None:
    last: list[str] = []

    def ok() -> bool:
        nonlocal last
        last = reflection_problems(sp, nodes, reflector)
        return not last

    try:
        wait_for(ok, CONVERGE_S, f"star around {reflector}", interval=0.25)
    except TimeoutError as e:
        pytest.fail(f"{e}\n" + "\n".join(last))


def kernel_routes(ns: str) -> dict[str, str]:
    """{destination: gateway} of the namespace's main IPv4 table."""
    out = subprocess.run(["ip", "-j", "-n", ns, "route", "show"], capture_output=True, text=True, check=True)
    return {r["dst"]: r.get("gateway", "") for r in json.loads(out.stdout)}


def assert_fib(lab: L2Lab, nodes: list[NodeInfo]) -> None:
    for name in FIB_NODES:
        want = {v4(i): n.address for i, n in enumerate(nodes, 1) if n.name != name}

        def holds(name: str = name, want: dict[str, str] = want) -> bool:
            fib = kernel_routes(lab.ns(name))
            return all(fib.get(dst) == gw for dst, gw in want.items())

        wait_for(holds, 5.0, f"{name}: kernel FIB holds {want}")
        own = v4(list(KINDS).index(name) + 1)
        assert own not in kernel_routes(lab.ns(name))  # own blackhole/network stays in the daemon


def test_bird_reflector_with_frr_bird_gobgp_clients(
    lab: L2Lab, nodes: list[NodeInfo], speakers: Speakers
) -> None:
    converge(speakers, nodes, "n1")
    assert_fib(lab, nodes)


def test_apply_moves_the_reflector_from_bird_to_frr(
    lab: L2Lab, nodes: list[NodeInfo], speakers: Speakers
) -> None:
    converge(speakers, nodes, "n1")
    pids = {n: sp.pids for n, sp in speakers.by_node.items()}
    # make before break: FRR starts reflecting to n3 and n4 beside BIRD (apply adds sessions)
    both = [*star("n1"), Session.rr("n2", "n3"), Session.rr("n2", "n4")]
    speakers.apply(configs(nodes, both))
    for name in ("n3", "n4"):
        speakers[name].wait_established(timeout=CONVERGE_S)
        assert set(speakers[name].sessions()) == {nodes[0].address, nodes[1].address}
    # then BIRD stops (apply removes sessions; n1 -- n2 turns round: FRR reflects to BIRD)
    speakers.apply(configs(nodes, star("n2")))
    converge(speakers, nodes, "n2")
    assert set(speakers["n1"].sessions()) == {nodes[1].address}
    assert_fib(lab, nodes)
    assert {n: sp.pids for n, sp in speakers.by_node.items()} == pids  # nothing restarted


def test_kill_is_a_crash_and_stop_is_clean(lab: L2Lab, nodes: list[NodeInfo], tmp_path: Path) -> None:
    cfgs = configs(nodes, [Session.peer("n1", "n2")])
    with (
        BirdSpeaker(lab.ns("n1"), tmp_path, cfgs["n1"]) as bird,
        FrrSpeaker(lab.ns("n2"), tmp_path, cfgs["n2"]) as frr,
    ):
        bird.wait_established()
        frr.wait_established()
        wait_for(lambda: kernel_routes(lab.ns("n1")).get(v4(2)) == nodes[1].address, 5.0, "n1 learns n2")
        frr_pids = frr.pids
        frr.kill()
        assert not frr.running and all(live_group_members(p) == [] for p in frr_pids)
        # BIRD notices the peer is gone within the lab hold time and withdraws its routes
        wait_for(
            lambda: bird.sessions()[nodes[1].address] != "Established",
            Timers.lab().hold + 3,
            "n1 sees n2 down",
        )
        wait_for(lambda: v4(2) not in bird.routes(), 3.0, "n1 withdraws n2's prefix")
        bird_pids = bird.pids
    assert all(live_group_members(p) == [] for p in bird_pids)


def test_gobgp_reflector_apply_flips_reflection(lab: L2Lab, nodes: list[NodeInfo], tmp_path: Path) -> None:
    """GoBGP reflecting to two BIRD clients stops and starts reflecting through ``apply`` (its
    SIGHUP reload alone leaves route-reflector-client on; the manager re-adds the neighbour)."""
    star4 = [Session.rr("n4", "n1"), Session.rr("n4", "n3")]
    plain4 = [Session.peer("n4", "n1"), Session.peer("n4", "n3")]
    with ExitStack() as stack:
        sp = {
            "n1": stack.enter_context(BirdSpeaker(lab.ns("n1"), tmp_path, configs(nodes, star4)["n1"])),
            "n3": stack.enter_context(BirdSpeaker(lab.ns("n3"), tmp_path, configs(nodes, star4)["n3"])),
            "n4": stack.enter_context(GoBgpSpeaker(lab.ns("n4"), tmp_path, configs(nodes, star4)["n4"])),
        }

        def n3_prefix_at_n1() -> tuple[str | None, tuple[str, ...]] | None:
            paths = sp["n1"].routes().get(v4(3), [])
            return (paths[0].originator_id, paths[0].cluster_list) if paths else None

        for s in sp.values():
            s.wait_established()
        assert wait_for(n3_prefix_at_n1, 10.0, "reflected") == (nodes[2].router_id, (nodes[3].router_id,))
        for name, cfg in configs(nodes, plain4).items():
            if name in sp:
                sp[name].apply(cfg)
        wait_for(lambda: n3_prefix_at_n1() is None, 10.0, "GoBGP stops reflecting")
        for name, cfg in configs(nodes, star4).items():
            if name in sp:
                sp[name].apply(cfg)
        assert wait_for(n3_prefix_at_n1, 15.0, "reflected again") == (
            nodes[2].router_id,
            (nodes[3].router_id,),
        )
