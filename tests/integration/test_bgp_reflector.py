"""The netkit reflector (ExaBGP + the API process) against real BIRD, FRR and GoBGP clients in
namespace labs; what the clients see is read back through their own tools (``birdc show route
all``, ``vtysh ... json``, ``gobgp ... -j``) by labs.bgpspeakers.

Labs (one L2Lab each; nodes share 198.18.0.0/24, announced prefixes are 198.19.i.0/24 and
2001:db8:i::/48):

- ``two_reflectors`` (IPv4 sessions): BIRD, FRR and GoBGP clients of two netkit reflectors with
  different cluster ids, a BIRD client of the second only, a BIRD non-client peer of the first.
  Proves every prefix reaches every client with the originator's next hop, ORIGINATOR_ID and the
  right CLUSTER_LIST (a route crossing both reflectors carries both ids, in order) and never comes
  back to its originator; the non-client rules (a non-client's route goes to clients only; a route
  learnt from a non-client never goes to a non-client); killing a reflector loses no route at any
  dual-homed client (sampled all the time); the restarted reflector re-learns and re-advertises
  everything; a killed API process is respawned by ExaBGP and resets every session so that the
  peers resend their tables (again no route lost); a client whose session flaps ends with its
  routes everywhere and nothing stale; withdrawals propagate, and so does the prefix announced
  again.
- ``ipv6``: BIRD, FRR and GoBGP clients over IPv6 sessions: IPv6 unicast end to end.
- ``same_cluster``: two reflectors with one cluster id, one on ExaBGP's wire API, one on its text
  API: both reflect, and each drops the other's reflections as cluster loops.
- ``policy``: prefix filters (outside the allowed blocks; a default route), max-prefix keep
  (session kept, excess rejected, the room a withdrawal frees re-used) and teardown (Cease, routes
  gone), TCP MD5 (right and wrong password), and a raw speaker sending loops (our cluster id in
  CLUSTER_LIST, our router id as ORIGINATOR_ID) and a malformed UPDATE (NOTIFICATION 3/10; the
  reflector and the other sessions unharmed); the metrics say all of it.

Needs root and the Debian packages bird2, frr and gobgpd; a missing one fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml

from bgp.core.model import NodeInfo, Session, SpeakerConfig, Timers, speaker_configs
from bgp.core.render.exabgp import render_reflector_config
from bgp.reflector.core.prefix import from_text
from bgp.reflector.core.route import Attrs
from bgp.reflector.core.wire import UpdateEncoder
from labs.bgpspeakers import BgpSpeaker, BirdSpeaker, FrrSpeaker, GoBgpSpeaker, PathInfo, wait_for
from labs.dnspeers import live_group_members, require_binary
from labs.l2lab import L2Lab
from labs.reflector import NetkitReflector
from labs.runid import RunDir

pytestmark = [pytest.mark.peers, pytest.mark.root]

ASN = 64512
CONVERGE_S = 15.0


def v4(i: int) -> str:
    return f"198.19.{i}.0/24"


def v6(i: int) -> str:
    return f"2001:db8:{i}::/48"


def v6_address(i: int) -> str:
    return f"2001:db8:ffff::{i}"


def index(node: str) -> int:
    return int(node[1:])


@dataclass
class Lab:
    """An L2Lab with speakers and netkit reflectors; ``close`` stops them all and checks that no
    process of theirs is left."""

    net: L2Lab
    workdir: Path
    nodes: dict[str, NodeInfo]
    stack: ExitStack = field(default_factory=ExitStack)
    speakers: dict[str, BgpSpeaker] = field(default_factory=dict)
    reflectors: dict[str, NetkitReflector] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)

    def speaker(self, name: str, cls: type[BgpSpeaker], cfg: SpeakerConfig) -> BgpSpeaker:
        sp = self.stack.enter_context(cls(self.net.ns(name), self.workdir, cfg))
        self.speakers[name] = sp
        self.pids += sp.pids
        return sp

    def reflector(self, name: str, config_yaml: str) -> NetkitReflector:
        rr = NetkitReflector(self.net.ns(name), self.workdir, config_yaml, name=name)
        self.stack.callback(rr.stop)
        rr.start()
        self.reflectors[name] = rr
        return rr

    def close(self) -> None:
        rrs = list(self.reflectors.values())
        groups = list(self.pids)
        for rr in rrs:
            groups += rr.pids[:1]  # the launcher's group: the launcher and ExaBGP
            api = rr._api_process()  # the API process now (ExaBGP may have respawned it): its own group
            if api is not None:
                groups.append(api)
        self.stack.close()
        for pid in groups:
            assert live_group_members(pid) == [], f"process group {pid} outlived stop()"
        for rr in rrs:
            assert not rr.running and rr.pids == []


@pytest.fixture(scope="module")
def binaries() -> None:
    for name, pkg in (("bird", "bird2"), ("birdc", "bird2"), ("vtysh", "frr"), ("gobgpd", "gobgpd")):
        require_binary(name, pkg)
    if os.geteuid() != 0:
        pytest.fail("the reflector lab tests need root (network namespaces); the suite runs as root")


def build(n: int) -> tuple[L2Lab, RunDir]:
    net = L2Lab(nodes=n).build()
    return net, RunDir(net.run_id)


def teardown_lab(lab: Lab, rundir: RunDir) -> None:
    try:
        lab.close()
    finally:
        lab.net.close()
        rundir.cleanup()
        assert lab.net.leftovers() == []


def paths_of(sp: BgpSpeaker, family: str = "ipv4") -> dict[str, list[PathInfo]]:
    return {p: [x for x in paths if x.from_address is not None] for p, paths in sp.routes(family).items()}


def converge(check: Callable[[], list[str]], what: str, timeout: float = CONVERGE_S) -> None:
    last: list[str] = []

    def ok() -> bool:
        nonlocal last
        last = check()
        return not last

    try:
        wait_for(ok, timeout, what, interval=0.25)
    except TimeoutError as e:
        pytest.fail(f"{e}\n" + "\n".join(last[:30]))


# ------------------------------------------------------------------------------------------------
# Two reflectors, different cluster ids, IPv4 sessions
# ------------------------------------------------------------------------------------------------

RR1, RR2 = "n4", "n5"
C1, C2 = "198.18.0.4", "198.18.0.5"
DUAL = {"n1": BirdSpeaker, "n2": FrrSpeaker, "n3": GoBgpSpeaker}  # clients of both reflectors
ONLY_RR2 = "n6"  # BIRD, client of RR2 only
NON_CLIENT = "n7"  # BIRD, plain iBGP peer of RR1


def two_reflector_sessions() -> list[Session]:
    s = [Session.rr(rr, c) for rr in (RR1, RR2) for c in DUAL]
    s += [Session.rr(RR2, ONLY_RR2), Session.peer(RR1, RR2), Session.peer(RR1, NON_CLIENT)]
    return s


def expected_paths(client: str, origin: str) -> dict[str, tuple[str, ...]]:
    """{reflector address: CLUSTER_LIST} of the paths ``client`` must hold for ``origin``'s prefix."""
    rr1, rr2 = "198.18.0.4", "198.18.0.5"
    dual = set(DUAL)
    if client == origin:
        return {}
    if client in dual:
        if origin in dual:
            return {rr1: (C1,), rr2: (C2,)}
        if origin == ONLY_RR2:
            return {rr2: (C2,), rr1: (C1, C2)}  # RR2 -> RR1 (non-client) -> RR1's clients
        return {rr1: (C1,)}  # the non-client's route: RR1 reflects it to clients, not to RR2
    if client == ONLY_RR2:
        return {rr2: (C2,)} if origin in dual else {}  # RR2 never gets the non-client's route
    # the non-client: client routes reach it; RR1 learnt ONLY_RR2's from RR2, a non-client
    return {rr1: (C1,)} if origin in dual else {}


def two_reflector_problems(lab: Lab, origins: list[str] | None = None) -> list[str]:
    problems = []
    origins = origins or [*DUAL, ONLY_RR2, NON_CLIENT]
    for client, sp in lab.speakers.items():
        routes = paths_of(sp)
        for origin in origins:
            prefix = v4(index(origin))
            want = expected_paths(client, origin)
            got = {p.from_address: p for p in routes.get(prefix, [])}
            if set(got) != set(want):
                problems.append(f"{client}: {prefix} from {sorted(got)}, want {sorted(want)}")
                continue
            o = lab.nodes[origin]
            for rr, clusters in want.items():
                p = got[rr]
                if (p.next_hop, p.originator_id, p.cluster_list) != (o.address, o.router_id, clusters):
                    problems.append(
                        f"{client}: {prefix} via {rr}: next hop {p.next_hop}, originator {p.originator_id}, "
                        f"clusters {p.cluster_list}; want {o.address}, {o.router_id}, {clusters}"
                    )
    return problems


@pytest.fixture(scope="module")
def two_reflectors(binaries: None) -> Iterator[Lab]:
    net, rundir = build(7)
    nodes = {}
    for i in range(1, 8):
        name, addr = f"n{i}", net.vtep[f"n{i}"]
        nodes[name] = NodeInfo(name, addr, ASN, addr, () if name in (RR1, RR2) else (v4(i),))
    lab = Lab(net, rundir.path, nodes)
    try:
        cfgs = speaker_configs(
            nodes.values(), two_reflector_sessions(), {RR1: C1, RR2: C2}, timers=Timers.lab()
        )
        for rr in (RR1, RR2):
            lab.reflector(rr, render_reflector_config(cfgs[rr], metrics=f"{nodes[rr].address}:9179"))
        for name, cls in DUAL.items():
            lab.speaker(name, cls, cfgs[name])
        lab.speaker(ONLY_RR2, BirdSpeaker, cfgs[ONLY_RR2])
        lab.speaker(NON_CLIENT, BirdSpeaker, cfgs[NON_CLIENT])
        for rr in lab.reflectors.values():
            rr.wait_established()
        converge(lambda: two_reflector_problems(lab), "two reflectors converged")
        yield lab
    finally:
        teardown_lab(lab, rundir)


def test_every_client_sees_every_prefix_with_originator_and_cluster_list(two_reflectors: Lab) -> None:
    lab = two_reflectors
    assert two_reflector_problems(lab) == []
    # the reflectors agree: RR1 dropped nothing, reflects to 3 clients + RR2 + the non-client
    s1 = lab.reflectors[RR1].status()
    assert s1["cluster_id"] == C1 and s1["routes"]["ipv4"] == 5  # n1, n2, n3, n6 (via RR2), n7
    for p in s1["peers"]:
        assert p["state"] == "established" and not p["rejected"], p
    # nothing of a client's own comes back to it (the reflectors never send to the originator)
    for client, sp in lab.speakers.items():
        own = paths_of(sp).get(v4(index(client)), [])
        assert own == [], f"{client} got its own prefix back: {own}"


def test_metrics_describe_sessions_and_prefixes(two_reflectors: Lab) -> None:
    text = two_reflectors.reflectors[RR1].metrics()
    assert 'netkit_bgp_sessions{state="established"} 5.0' in text
    assert 'netkit_bgp_prefixes_accepted{peer="198.18.0.1"} 1.0' in text
    assert 'netkit_bgp_prefixes_received{peer="198.18.0.7"} 1.0' in text
    assert 'netkit_bgp_prefixes_advertised{peer="198.18.0.1"} 4.0' in text  # n2's, n3's, n6's, n7's
    assert "netkit_bgp_update_processing_seconds_bucket" in text
    assert "netkit_bgp_updates_processed_total" in text


class Watch:
    """Samples every client's RIB in a loop and records every moment a required path is missing."""

    def __init__(self, lab: Lab, clients: list[str], origins: list[str]) -> None:
        self.lab, self.clients, self.origins = lab, clients, origins
        self.misses: list[str] = []
        self.rounds = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for client in self.clients:
                    routes = paths_of(self.lab.speakers[client])
                    for origin in self.origins:
                        if origin != client and not routes.get(v4(index(origin))):
                            self.misses.append(f"{time.monotonic():.2f} {client} lacks {v4(index(origin))}")
                self.rounds += 1
        except BaseException as exc:  # a sampler that died would report no misses: fail instead
            self.error = exc

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            pytest.fail(f"sampling the clients' RIBs failed after {self.rounds} rounds: {self.error!r}")


def test_kill_a_reflector_no_client_loses_a_route_then_it_relearns_everything(two_reflectors: Lab) -> None:
    lab = two_reflectors
    rr1 = lab.reflectors[RR1]
    dual = list(DUAL)
    with Watch(lab, dual, [*dual, ONLY_RR2]) as watch:
        time.sleep(0.5)
        rr1.kill()  # SIGKILL: launcher, ExaBGP and the API process at once
        # the clients notice (the kernel closes the reflector's sockets) and drop its paths ...
        converge(
            lambda: [
                c
                for c in dual
                if any(
                    p.from_address == "198.18.0.4" for ps in paths_of(lab.speakers[c]).values() for p in ps
                )
            ],
            "clients drop the killed reflector's paths",
        )
        time.sleep(1.0)
    assert watch.rounds >= 5, f"only {watch.rounds} samples"
    assert watch.misses == [], "\n".join(watch.misses[:20])
    # ... and keep everything through RR2; the non-client's prefix had only RR1 (single-homed)
    for c in dual:
        assert v4(index(NON_CLIENT)) not in paths_of(lab.speakers[c])
    rr1.start()
    rr1.wait_established()
    converge(lambda: two_reflector_problems(lab), "the restarted reflector re-advertises everything")
    status = rr1.status()
    assert status["routes"]["ipv4"] == 5
    # RR2 sends RR1 its clients' routes (n1, n2, n3, n6): candidates beside the direct ones
    assert {p["address"]: p["accepted"] for p in status["peers"]} == {
        "198.18.0.1": 1, "198.18.0.2": 1, "198.18.0.3": 1, "198.18.0.5": 4, "198.18.0.7": 1,
    }  # fmt: skip


def test_a_killed_api_process_is_respawned_and_resyncs_every_session(two_reflectors: Lab) -> None:
    """ExaBGP respawns a dead API process; the new one knows nothing of the sessions ExaBGP kept
    up, so it resets them all, and every peer sends its table again. Meanwhile RR1 serves."""
    lab = two_reflectors
    rr2 = lab.reflectors[RR2]
    old = rr2._api_process()
    assert old is not None
    dual = list(DUAL)
    with Watch(lab, dual, list(dual)) as watch:
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: rr2._api_process() not in (None, old), CONVERGE_S, "ExaBGP respawns the API process")
        rr2.wait_established(timeout=CONVERGE_S)
        converge(lambda: two_reflector_problems(lab), "everything back through the respawned API process")
    assert watch.rounds >= 2, f"only {watch.rounds} samples"
    assert watch.misses == [], "\n".join(watch.misses[:20])
    assert "resetting every session" in (lab.workdir / f"netkit-{RR2}" / "reflector.out").read_text()
    assert rr2.running


def test_flapping_client_ends_consistent(two_reflectors: Lab) -> None:
    lab = two_reflectors
    bird = lab.speakers["n1"]
    proto = next(n.ident for n in bird.cfg.neighbors if n.address == "198.18.0.4")
    before = lab.reflectors[RR1].peer("198.18.0.1")["transitions"].get("down", 0)
    for _ in range(4):
        bird.birdc("disable", proto)
        time.sleep(0.3)
        bird.birdc("enable", proto)
        time.sleep(0.3)
    wait_for(lambda: bird.sessions()["198.18.0.4"] == "Established", CONVERGE_S, "n1 back up with RR1")
    converge(lambda: two_reflector_problems(lab), "converged after the flaps")
    after = lab.reflectors[RR1].peer("198.18.0.1")
    assert after["transitions"].get("down", 0) >= before + 1
    assert after["accepted"] == 1 and after["state"] == "established"


def test_withdrawals_propagate(two_reflectors: Lab) -> None:
    lab = two_reflectors
    frr = lab.speakers["n2"]
    cfg = frr.cfg
    frr.apply(replace(cfg, prefixes=()))

    def gone() -> list[str]:
        return [c for c, sp in lab.speakers.items() if v4(2) in paths_of(sp)]

    converge(gone, "n2's prefix withdrawn everywhere")
    for rr in lab.reflectors.values():
        assert rr.peer("198.18.0.2")["accepted"] == 0
    frr.apply(cfg)
    converge(lambda: two_reflector_problems(lab), "n2's prefix back everywhere")


# ------------------------------------------------------------------------------------------------
# IPv6 sessions
# ------------------------------------------------------------------------------------------------

V6_CLIENTS = {"n1": BirdSpeaker, "n2": FrrSpeaker, "n3": GoBgpSpeaker}
V6_RR = "n4"


@pytest.fixture(scope="module")
def ipv6(binaries: None) -> Iterator[Lab]:
    net, rundir = build(4)
    nodes = {}
    for i in range(1, 5):
        name = f"n{i}"
        subprocess.run(
            [
                "ip",
                "-n",
                net.ns(name),
                "addr",
                "add",
                f"{v6_address(i)}/64",
                "dev",
                net.underlay[name],
                "nodad",
            ],
            check=True,
        )
        nodes[name] = NodeInfo(name, v6_address(i), ASN, net.vtep[name], () if name == V6_RR else (v6(i),))
    lab = Lab(net, rundir.path, nodes)
    try:
        cfgs = speaker_configs(
            nodes.values(), [Session.rr(V6_RR, c) for c in V6_CLIENTS], {}, timers=Timers.lab()
        )
        lab.reflector(V6_RR, render_reflector_config(cfgs[V6_RR], metrics=f"[{v6_address(4)}]:9179"))
        for name, cls in V6_CLIENTS.items():
            lab.speaker(name, cls, cfgs[name])
        lab.reflectors[V6_RR].wait_established()
        yield lab
    finally:
        teardown_lab(lab, rundir)


def test_ipv6_unicast_over_ipv6_sessions(ipv6: Lab) -> None:
    lab = ipv6
    rr = lab.nodes[V6_RR]

    def problems() -> list[str]:
        out = []
        for client, sp in lab.speakers.items():
            routes = paths_of(sp, "ipv6")
            for origin in V6_CLIENTS:
                if origin == client:
                    continue
                o = lab.nodes[origin]
                got = [
                    (p.from_address, p.next_hop, p.originator_id, p.cluster_list)
                    for p in routes.get(v6(index(origin)), [])
                ]
                want = [(rr.address, o.address, o.router_id, (rr.router_id,))]
                if got != want:
                    out.append(f"{client}: {v6(index(origin))} {got}, want {want}")
        return out

    converge(problems, "IPv6 prefixes reflected")
    assert lab.reflectors[V6_RR].status()["routes"] == {"ipv4": 0, "ipv6": 3}


# ------------------------------------------------------------------------------------------------
# Two reflectors, one cluster id; one on the wire API, one on the text API
# ------------------------------------------------------------------------------------------------

SAME = "198.18.0.100"


@pytest.fixture(scope="module")
def same_cluster(binaries: None) -> Iterator[Lab]:
    net, rundir = build(4)
    nodes = {}
    for i in range(1, 5):
        name, addr = f"n{i}", net.vtep[f"n{i}"]
        nodes[name] = NodeInfo(name, addr, ASN, addr, (v4(i),) if i <= 2 else ())
    lab = Lab(net, rundir.path, nodes)
    try:
        sessions = [Session.rr(rr, c) for rr in ("n3", "n4") for c in ("n1", "n2")] + [
            Session.peer("n3", "n4")
        ]
        cfgs = speaker_configs(nodes.values(), sessions, {"n3": SAME, "n4": SAME}, timers=Timers.lab())
        lab.reflector("n3", render_reflector_config(cfgs["n3"], metrics="198.18.0.3:9179"))
        text_api = yaml.safe_load(render_reflector_config(cfgs["n4"], metrics="198.18.0.4:9179"))
        text_api["exabgp"] = {"api": "text", "tuned": True}
        lab.reflector("n4", yaml.safe_dump(text_api))
        lab.speaker("n1", BirdSpeaker, cfgs["n1"])
        lab.speaker("n2", FrrSpeaker, cfgs["n2"])
        for rr in lab.reflectors.values():
            rr.wait_established()
        yield lab
    finally:
        teardown_lab(lab, rundir)


def test_same_cluster_id_both_reflect_and_drop_each_others_reflections(same_cluster: Lab) -> None:
    lab = same_cluster

    def problems() -> list[str]:
        out = []
        for client, origin in (("n1", "n2"), ("n2", "n1")):
            o = lab.nodes[origin]
            got = {
                p.from_address: (p.next_hop, p.originator_id, p.cluster_list)
                for p in paths_of(lab.speakers[client]).get(v4(index(origin)), [])
            }
            want = {rr: (o.address, o.router_id, (SAME,)) for rr in ("198.18.0.3", "198.18.0.4")}
            if got != want:
                out.append(f"{client}: {v4(index(origin))} {got}, want {want}")
        return out

    converge(problems, "both reflectors reflect")
    for name, other in (("n3", "198.18.0.4"), ("n4", "198.18.0.3")):
        peer = lab.reflectors[name].peer(other)
        wait_for(lambda peer=peer: peer["rejected"].get("cluster_loop", 0) >= 2, 5.0, f"{name} drops loops")
        assert peer["accepted"] == 0, peer  # every route from the other reflector was a loop


# ------------------------------------------------------------------------------------------------
# Policy, MD5, bad input
# ------------------------------------------------------------------------------------------------

POLICY_RR = "n1"
FILTERED = "n2"  # FRR: allowed 198.19.2.0/24 le 32 only
KEEP = "n3"  # GoBGP: max-prefix 3, keep
TEARDOWN = "n4"  # BIRD: max-prefix 1, teardown (BIRD sends both prefixes in one UPDATE)
MD5_OK = "n5"  # BIRD with the right password; it is also the observer
MD5_BAD = "n6"  # BIRD with a wrong password
RAW = "n7"  # a raw speaker written here (loops, a malformed UPDATE)
KEEP_PREFIXES = tuple(f"198.19.{30 + k}.0/24" for k in range(5))


def policy_yaml() -> str:
    doc = {
        "router_id": "198.18.0.1",
        "asn": ASN,
        "local_address": "198.18.0.1",
        "metrics": "198.18.0.1:9179",
        "timers": {"hold": 9, "keepalive": 3, "connect_retry": 1},
        "neighbors": [
            {
                "name": FILTERED,
                "address": "198.18.0.2",
                "asn": ASN,
                "allowed_prefixes": ["198.19.2.0/24 le 32"],
            },
            {"name": KEEP, "address": "198.18.0.3", "asn": ASN, "max_prefix": {"limit": 3, "action": "keep"}},
            {
                "name": TEARDOWN,
                "address": "198.18.0.4",
                "asn": ASN,
                "max_prefix": {"limit": 1, "action": "teardown"},
            },
            {"name": MD5_OK, "address": "198.18.0.5", "asn": ASN, "password": "s3cret"},
            {"name": MD5_BAD, "address": "198.18.0.6", "asn": ASN, "password": "s3cret"},
            {"name": RAW, "address": "198.18.0.7", "asn": ASN, "passive": True},
        ],
    }
    return yaml.safe_dump(doc)


def client_config(
    lab_nodes: dict[str, NodeInfo], name: str, prefixes: tuple[str, ...], password: str | None = None
) -> SpeakerConfig:
    rr = lab_nodes[POLICY_RR]
    me = lab_nodes[name]
    cfgs = speaker_configs(
        [rr, replace(me, prefixes=prefixes)], [Session.rr(POLICY_RR, name)], {}, timers=Timers.lab()
    )
    cfg = cfgs[name]
    if password is not None:
        cfg = replace(cfg, neighbors=tuple(replace(n, password=password) for n in cfg.neighbors))
    return cfg


@pytest.fixture(scope="module")
def policy(binaries: None) -> Iterator[Lab]:
    net, rundir = build(7)
    nodes = {f"n{i}": NodeInfo(f"n{i}", net.vtep[f"n{i}"], ASN, net.vtep[f"n{i}"]) for i in range(1, 8)}
    lab = Lab(net, rundir.path, nodes)
    try:
        lab.reflector(POLICY_RR, policy_yaml())
        filtered = (v4(2), "198.19.99.0/24", "0.0.0.0/0", "198.19.2.128/25")
        lab.speaker(FILTERED, FrrSpeaker, client_config(nodes, FILTERED, filtered))
        lab.speaker(KEEP, GoBgpSpeaker, client_config(nodes, KEEP, KEEP_PREFIXES))
        lab.speaker(TEARDOWN, BirdSpeaker, client_config(nodes, TEARDOWN, (v4(4), "198.19.40.0/24")))
        lab.speaker(MD5_OK, BirdSpeaker, client_config(nodes, MD5_OK, (v4(5),), password="s3cret"))
        lab.speaker(MD5_BAD, BirdSpeaker, client_config(nodes, MD5_BAD, (v4(6),), password="wrong"))
        lab.reflectors[POLICY_RR].wait_established(neighbors=["198.18.0.2", "198.18.0.3", "198.18.0.5"])
        yield lab
    finally:
        teardown_lab(lab, rundir)


def test_prefix_filters_drop_forbidden_prefixes_and_default_routes(policy: Lab) -> None:
    observer = policy.speakers[MD5_OK]
    converge(
        lambda: [] if {v4(2), "198.19.2.128/25"} <= set(paths_of(observer)) else ["allowed prefixes missing"],
        "allowed prefixes reflected",
    )
    seen = set(paths_of(observer))
    assert "198.19.99.0/24" not in seen and "0.0.0.0/0" not in seen
    peer = policy.reflectors[POLICY_RR].peer("198.18.0.2")
    assert peer["accepted"] == 2 and peer["received"] == 4
    assert peer["rejected"] == {"not_allowed": 1, "default_route": 1}
    text = policy.reflectors[POLICY_RR].metrics()
    assert 'netkit_bgp_prefixes_rejected_total{peer="198.18.0.2",reason="default_route"} 1.0' in text


def test_max_prefix_keep_rejects_the_excess_and_keeps_the_session(policy: Lab) -> None:
    rr = policy.reflectors[POLICY_RR]
    gobgp = policy.speakers[KEEP]
    wait_for(lambda: rr.peer("198.18.0.3")["received"] == 5, CONVERGE_S, "GoBGP's 5 prefixes received")
    peer = rr.peer("198.18.0.3")
    assert (peer["accepted"], peer["rejected"], peer["max_prefix_breaches"]) == (3, {"max_prefix": 2}, 1)
    assert peer["state"] == "established" and gobgp.sessions()["198.18.0.1"] == "Established"
    observer = policy.speakers[MD5_OK]
    converge(
        lambda: [] if len(set(KEEP_PREFIXES) & set(paths_of(observer))) == 3 else ["not 3"], "3 reflected"
    )
    # withdrawing one accepted prefix makes room: a waiting one is accepted in its place
    accepted = sorted(set(KEEP_PREFIXES) & set(paths_of(observer)))
    gobgp.apply(replace(gobgp.cfg, prefixes=tuple(p for p in KEEP_PREFIXES if p != accepted[0])))
    converge(
        lambda: (
            []
            if len(set(KEEP_PREFIXES) & set(paths_of(observer))) == 3
            and accepted[0] not in paths_of(observer)
            else ["not yet"]
        ),
        "a waiting prefix takes the freed place",
    )
    assert rr.peer("198.18.0.3")["accepted"] == 3
    assert 'netkit_bgp_max_prefix_breaches_total{peer="198.18.0.3"} 1.0' in rr.metrics()


def test_max_prefix_teardown_closes_the_session_and_its_routes_never_leak(policy: Lab) -> None:
    rr = policy.reflectors[POLICY_RR]
    wait_for(lambda: rr.peer("198.18.0.4")["max_prefix_breaches"] >= 1, CONVERGE_S, "n4 torn down")
    observer = policy.speakers[MD5_OK]
    for _ in range(10):  # BIRD reconnects and is torn down again; its prefixes never get out
        seen = set(paths_of(observer))
        assert v4(4) not in seen and "198.19.40.0/24" not in seen
        time.sleep(0.2)
    assert rr.peer("198.18.0.4")["accepted"] == 0
    log = (policy.workdir / f"netkit-{POLICY_RR}" / "reflector.out").read_text()
    assert "max-prefix exceeded: tearing the session down" in log


def test_md5_right_password_establishes_wrong_one_does_not(policy: Lab) -> None:
    rr = policy.reflectors[POLICY_RR]
    assert rr.sessions()["198.18.0.5"] == "Established"
    assert policy.speakers[MD5_OK].sessions()["198.18.0.1"] == "Established"
    converge(
        lambda: [] if v4(5) in paths_of(policy.speakers[FILTERED]) else ["n5 not reflected"],
        "MD5 peer's route",
    )
    time.sleep(2.0)
    assert rr.sessions()["198.18.0.6"] != "Established"
    assert policy.speakers[MD5_BAD].sessions()["198.18.0.1"] != "Established"


RAW_SPEAKER = r"""
import json, select, socket, sys, time
peer, local, asn, router_id, updates = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
def msg(t, body):
    return b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + bytes([t]) + body
caps = bytes([1, 4, 0, 1, 0, 1, 65, 4]) + asn.to_bytes(4, "big")
params = bytes([2, len(caps)]) + caps
rid = bytes(int(x) for x in router_id.split("."))
s = socket.create_connection((peer, 179), timeout=5, source_address=(local, 0))
head = bytes([4]) + min(asn, 23456).to_bytes(2, "big") + (30).to_bytes(2, "big") + rid
s.sendall(msg(1, head + bytes([len(params)]) + params))
buf, got = b"", []
def read(deadline):
    global buf
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.1)
        if r:
            data = s.recv(65536)
            if not data:
                got.append({"closed": True}); return
            buf += data
        while len(buf) >= 19 and len(buf) >= int.from_bytes(buf[16:18], "big"):
            n = int.from_bytes(buf[16:18], "big")
            m, buf = buf[:n], buf[n:]
            got.append({"type": m[18], "body": m[19:].hex()})
            if m[18] == 3:
                return
read(time.monotonic() + 3)
s.sendall(msg(4, b""))
for u in updates:
    s.sendall(bytes.fromhex(u))
    time.sleep(0.3)
read(time.monotonic() + 2)
print(json.dumps(got))
"""


def raw_session(lab: Lab, updates: list[bytes]) -> list[dict[str, object]]:
    """Open a session from the raw node to the reflector, send ``updates``, return what came back."""
    argv = [
        "ip",
        "netns",
        "exec",
        lab.net.ns(RAW),
        sys.executable,
        "-c",
        RAW_SPEAKER,
        "198.18.0.1",
        "198.18.0.7",
    ]
    argv += [str(ASN), "198.18.0.7", *(u.hex() for u in updates)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    result: list[dict[str, object]] = json.loads(r.stdout)
    return result


def test_loops_are_dropped_and_a_malformed_update_resets_only_that_session(policy: Lab) -> None:
    rr = policy.reflectors[POLICY_RR]
    enc = UpdateEncoder()
    base = Attrs(next_hop="198.18.0.7", local_pref=100)
    cluster_loop = enc.announce(
        base.evolve(cluster_list=("198.18.0.1",), originator_id="198.18.0.99"), [from_text("198.19.71.0/24")]
    )
    originator_loop = enc.announce(base.evolve(originator_id="198.18.0.1"), [from_text("198.19.72.0/24")])
    good = enc.announce(base, [from_text("198.19.7.0/24")])
    # withdrawn routes length 0, attributes length 0, then an NLRI with prefix length 33
    malformed = b"\xff" * 16 + (19 + 6).to_bytes(2, "big") + b"\x02" + b"\x00\x00\x00\x00" + bytes([33, 198])
    got = raw_session(policy, [*cluster_loop, *originator_loop, *good, malformed])
    notifications = [m for m in got if m.get("type") == 3]
    assert notifications and str(notifications[0]["body"]).startswith("030a"), got  # UPDATE error, bad NLRI
    peer = rr.peer("198.18.0.7")
    assert peer["rejected"].get("cluster_loop") == 1 and peer["rejected"].get("originator_loop") == 1
    assert peer["malformed"] == 1
    observer = policy.speakers[MD5_OK]
    seen = set(paths_of(observer))
    assert "198.19.71.0/24" not in seen and "198.19.72.0/24" not in seen
    # the good route came and went with the session; the reflector and the others are unharmed
    wait_for(lambda: "198.19.7.0/24" not in paths_of(observer), 5.0, "the raw speaker's route withdrawn")
    assert rr.running and rr.sessions()["198.18.0.5"] == "Established"
    assert 'netkit_bgp_sessions{state="established"}' in rr.metrics()
