"""Renderers (bgp.core.render): structure of the BIRD, FRR and GoBGP configs, the FRR vtysh delta,
and the Calico resources reproducing a plan's exact session set. That the real tools accept
these configs and bring sessions up is tests/integration/test_bgp_render_real.py."""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
import yaml

from bgp.core.inventory import Inventory, Policy
from bgp.core.inventory import Node as InvNode
from bgp.core.model import Neighbor, NodeInfo, Role, Session, SpeakerConfig, Timers, speaker_configs
from bgp.core.planner import mesh_plan, plan, speakers_for
from bgp.core.render.bird import render_bird
from bgp.core.render.calico import (
    PASSWORD_SECRET,
    calico_kind_changes,
    calico_yaml,
    plan_sessions,
    render_calico,
)
from bgp.core.render.frr import NEXT_HOP_ROUTE_MAP, NO_FIB_ROUTE_MAP, OWN_PREFIX_LIST, frr_delta, render_frr
from bgp.core.render.gobgp import gobgp_announce_commands, gobgp_withdraw_commands, render_gobgp

ASN = 64512


def node(i: int, **kw: object) -> NodeInfo:
    prefixes = (f"198.19.{i}.0/24", f"2001:db8:{i}::/48")
    return NodeInfo(f"n{i}", f"198.18.0.{i}", ASN, f"198.18.0.{i}", prefixes, **kw)  # type: ignore[arg-type]


NODES = [node(i) for i in range(1, 6)]
# n1 and n2 reflect, meshed; n3 is a client of both; n4 of n1 only; n5 of n2 only
SESSIONS = [
    Session.peer("n1", "n2"),
    Session.rr("n1", "n3"),
    Session.rr("n2", "n3"),
    Session.rr("n1", "n4"),
    Session.rr("n2", "n5"),
]


def configs(sessions: list[Session] = SESSIONS, **kw: object) -> dict[str, SpeakerConfig]:
    return speaker_configs(NODES, sessions, {"n1": "1.1.1.1", "n2": "2.2.2.2"}, **kw)  # type: ignore[arg-type]


def blocks(text: str, keyword: str) -> dict[str, str]:
    """BIRD ``protocol <keyword> NAME { ... }`` blocks by name (the renderer's own layout)."""
    found = re.findall(rf"^protocol {keyword} (\S+) \{{\n(.*?)^\}}", text, re.M | re.S)
    return dict(found)


# -- BIRD ---------------------------------------------------------------------------------------


def test_bird_reflector() -> None:
    text = render_bird(configs()["n1"])
    assert "router id 198.18.0.1;" in text and "protocol device {" in text
    protos = blocks(text, "bgp")
    assert set(protos) == {"n_n2", "n_n3", "n_n4"}
    for name in ("n_n3", "n_n4"):
        assert "rr client;" in protos[name] and "rr cluster id 1.1.1.1;" in protos[name]
    assert "rr client" not in protos["n_n2"] and "rr cluster" not in protos["n_n2"]
    assert (
        "local 198.18.0.1 as 64512;" in protos["n_n3"] and "neighbor 198.18.0.3 as 64512;" in protos["n_n3"]
    )
    for body in protos.values():
        assert body.count("export where source ~ [ RTS_STATIC, RTS_BGP ];") == 1
        assert "ipv4 {" in body and "ipv6 {" not in body  # an IPv4 session carries IPv4 only
        assert "gateway recursive;" in body


def test_bird_client_statics_and_kernel() -> None:
    text = render_bird(configs()["n3"])
    protos = blocks(text, "bgp")
    assert set(protos) == {"n_n1", "n_n2"} and not any("rr client" in b for b in protos.values())
    statics = blocks(text, "static")
    assert "route 198.19.3.0/24 blackhole;" in statics["nk_static4"]
    assert "route 2001:db8:3::/48 blackhole;" in statics["nk_static6"]
    kernels = blocks(text, "kernel")
    assert set(kernels) == {"nk_kernel4", "nk_kernel6"}
    assert all("export where source = RTS_BGP" in k and "import none;" in k for k in kernels.values())
    # without install_routes no kernel protocol at all
    assert "protocol kernel" not in render_bird(configs(install_routes=False)["n3"])


def v6_configs() -> dict[str, SpeakerConfig]:
    """The same plan on IPv6 session addresses (router ids stay dotted quads)."""
    nodes = [replace(n, address=f"2001:db8:ff::{i}") for i, n in enumerate(NODES, 1)]
    return speaker_configs(nodes, SESSIONS, {"n1": "1.1.1.1", "n2": "2.2.2.2"})


def test_bird_ipv6_session_carries_ipv6() -> None:
    text = render_bird(v6_configs()["n3"])
    body = blocks(text, "bgp")["n_n1"]
    assert "local 2001:db8:ff::3 as 64512;" in body and "neighbor 2001:db8:ff::1 as 64512;" in body
    assert "ipv6 {" in body and "ipv4 {" not in body
    assert "router id 198.18.0.3;" in text
    assert "route 198.19.3.0/24 blackhole;" in blocks(text, "static")["nk_static4"]  # rendered, unused


def test_bird_timers() -> None:
    lab = render_bird(configs(timers=Timers.lab())["n3"])
    for line in ("hold time 9;", "keepalive time 3;", "connect retry time 1;", "connect delay time 1;"):
        assert line in lab
    assert "error wait time 1, 5;" in lab
    default = render_bird(configs()["n3"])
    assert "hold time 90;" in default and "connect delay time 5;" in default
    assert "error wait time" not in default  # BIRD's own 60-300 s back-off in production


def test_bird_password_quoted_and_alt_session() -> None:
    cfgs = configs(passwords={frozenset(("n1", "n3")): "se cr\\et"})
    assert 'password "se cr\\et";' in blocks(render_bird(cfgs["n3"]), "bgp")["n_n1"]  # BIRD has no escapes
    assert "password" not in blocks(render_bird(cfgs["n3"]), "bgp")["n_n2"]
    with pytest.raises(ValueError, match="BIRD cannot quote"):
        render_bird(configs(passwords={frozenset(("n1", "n3")): 'se"cret'})["n3"])
    alt_nodes = [replace(n, alt_address=f"198.18.1.{i}") for i, n in enumerate(NODES, 1)]
    cfg = speaker_configs(alt_nodes, [Session.rr("n1", "n3", alt=True)], {})["n3"]
    body = blocks(render_bird(cfg), "bgp")["n_n1_alt"]
    assert "local 198.18.1.3 as 64512;" in body and "neighbor 198.18.1.1 as 64512;" in body
    assert body.count("next hop address 198.18.0.3;") == 1  # own prefixes keep the main next hop


# -- FRR ----------------------------------------------------------------------------------------


def af_section(text: str, family: str) -> str:
    return text[
        text.index(f"address-family {family} unicast") : text.index("exit-address-family", text.index(family))
    ]


def test_frr_reflector() -> None:
    text = render_frr(configs()["n1"])
    for line in (
        "router bgp 64512",
        " bgp router-id 198.18.0.1",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        " bgp cluster-id 1.1.1.1",
        " neighbor 198.18.0.3 remote-as 64512",
        " neighbor 198.18.0.3 update-source 198.18.0.1",
    ):
        assert line + "\n" in text
    af = af_section(text, "ipv4")
    assert "network 198.19.1.0/24" in af
    assert all(f"neighbor 198.18.0.{i} activate" in af for i in (2, 3, 4))
    assert "neighbor 198.18.0.3 route-reflector-client" in af
    assert "neighbor 198.18.0.4 route-reflector-client" in af
    assert "neighbor 198.18.0.2 route-reflector-client" not in af
    # IPv4 sessions are not activated for IPv6; the IPv6 prefix is still a network statement
    assert af_section(text, "ipv6").split("\n")[1:] == ["  network 2001:db8:1::/48", " "]
    assert NO_FIB_ROUTE_MAP not in text and NEXT_HOP_ROUTE_MAP not in text
    v6 = render_frr(v6_configs()["n1"])
    assert "neighbor 2001:db8:ff::3 route-reflector-client" in af_section(v6, "ipv6")
    assert "activate" not in af_section(v6, "ipv4")


def test_frr_client_timers_password_no_fib() -> None:
    cfgs = configs(timers=Timers.lab(), passwords={frozenset(("n1", "n3")): "pw"}, install_routes=False)
    text = render_frr(cfgs["n3"])
    assert "cluster-id" not in text and "route-reflector-client" not in text
    assert " neighbor 198.18.0.1 timers 3 9\n" in text and " neighbor 198.18.0.1 timers connect 1\n" in text
    assert " neighbor 198.18.0.1 password pw\n" in text and "198.18.0.2 password" not in text
    assert f"route-map {NO_FIB_ROUTE_MAP} deny 10" in text
    assert f"  table-map {NO_FIB_ROUTE_MAP}" in af_section(text, "ipv4")


def test_frr_delta_nothing() -> None:
    cfg = configs()["n1"]
    assert frr_delta(cfg, cfg) == []


def test_frr_delta_remove_and_add_neighbours() -> None:
    old = configs()["n1"]
    new = configs([s for s in SESSIONS if s != Session.rr("n1", "n4")] + [Session.rr("n1", "n5")])["n1"]
    cmds = frr_delta(old, new)
    assert cmds[0] == "router bgp 64512" and cmds[-1] == "exit"
    assert "no neighbor 198.18.0.4" in cmds
    assert (
        "neighbor 198.18.0.5 remote-as 64512" in cmds
        and "neighbor 198.18.0.5 update-source 198.18.0.1" in cmds
    )
    i = cmds.index("address-family ipv4 unicast")
    assert cmds[i + 1 : i + 4] == [
        "neighbor 198.18.0.5 activate",
        "neighbor 198.18.0.5 route-reflector-client",
        "exit-address-family",
    ]
    assert "address-family ipv6 unicast" not in cmds
    # the removal comes first, and untouched neighbours are not mentioned
    assert cmds.index("no neighbor 198.18.0.4") == 1
    assert not any("198.18.0.2" in c or "198.18.0.3" in c for c in cmds)


def test_frr_delta_toggle_reflector_client_and_cluster_id() -> None:
    old = configs()["n1"]
    demoted = configs(
        [s for s in SESSIONS if s.pair != frozenset(("n1", "n3"))] + [Session.peer("n1", "n3")]
    )["n1"]
    cmds = frr_delta(old, demoted)
    assert cmds == [
        "router bgp 64512",
        "address-family ipv4 unicast",
        "no neighbor 198.18.0.3 route-reflector-client",
        "exit-address-family",
        "exit",
    ]
    assert frr_delta(demoted, old)[2] == "neighbor 198.18.0.3 route-reflector-client"
    # n3 stops reflecting altogether when its only clients go
    plain = configs([Session.peer("n1", "n2"), Session.peer("n1", "n3"), Session.peer("n1", "n4")])["n1"]
    cmds = frr_delta(old, plain)
    assert "no bgp cluster-id" in cmds and "bgp cluster-id" not in " ".join(frr_delta(plain, plain))
    assert "bgp cluster-id 1.1.1.1" in frr_delta(plain, old)


def test_frr_delta_prefixes_timers_password_fib() -> None:
    old = configs()["n3"]
    new = replace(
        old,
        prefixes=("198.19.33.0/24", "2001:db8:3::/48"),
        timers=Timers.lab(),
        install_routes=False,
        neighbors=tuple(replace(n, password="x") if n.name == "n1" else n for n in old.neighbors),
    )
    cmds = frr_delta(old, new)
    v4 = cmds[cmds.index("address-family ipv4 unicast") :]
    assert "no network 198.19.3.0/24" in v4 and "network 198.19.33.0/24" in v4
    assert not any("2001:db8:3::/48" in c for c in cmds)
    assert "neighbor 198.18.0.1 timers 3 9" in cmds and "neighbor 198.18.0.2 timers connect 1" in cmds
    assert "neighbor 198.18.0.1 password x" in cmds
    assert cmds[:2] == [f"route-map {NO_FIB_ROUTE_MAP} deny 10", "exit"]
    assert cmds.count(f"table-map {NO_FIB_ROUTE_MAP}") == 2
    back = frr_delta(new, old)
    assert "no neighbor 198.18.0.1 password x" in back and back.count(f"no table-map {NO_FIB_ROUTE_MAP}") == 2


def test_frr_delta_alt_session_and_asn_change() -> None:
    alt_nodes = [replace(n, alt_address=f"198.18.1.{i}") for i, n in enumerate(NODES, 1)]
    old = speaker_configs(alt_nodes, [Session.rr("n1", "n3")], {})["n3"]
    new = speaker_configs(alt_nodes, [Session.rr("n1", "n3"), Session.rr("n1", "n3", alt=True)], {})["n3"]
    cmds = frr_delta(old, new)
    assert cmds[:5] == [
        f"ip prefix-list {OWN_PREFIX_LIST} seq 5 permit 198.19.3.0/24",  # its IPv4 prefix only
        f"route-map {NEXT_HOP_ROUTE_MAP} permit 10",
        f" match ip address prefix-list {OWN_PREFIX_LIST}",
        " set ip next-hop 198.18.0.3",
        "exit",
    ]
    assert "neighbor 198.18.1.1 update-source 198.18.1.3" in cmds
    assert f"neighbor 198.18.1.1 route-map {NEXT_HOP_ROUTE_MAP} out" in cmds
    assert frr_delta(new, old)[-2:] == [
        f"no route-map {NEXT_HOP_ROUTE_MAP}",
        f"no ip prefix-list {OWN_PREFIX_LIST}",
    ]
    with pytest.raises(ValueError, match="restart"):
        frr_delta(old, replace(old, asn=65000))


# -- GoBGP --------------------------------------------------------------------------------------


def test_gobgp_toml() -> None:
    cfg = configs(timers=Timers.lab(), passwords={frozenset(("n1", "n3")): "pw"})["n1"]
    doc = tomllib.loads(render_gobgp(cfg))
    assert doc["global"]["config"] == {"as": ASN, "router-id": "198.18.0.1"}
    by_addr = {n["config"]["neighbor-address"]: n for n in doc["neighbors"]}
    assert set(by_addr) == {"198.18.0.2", "198.18.0.3", "198.18.0.4"}
    n3 = by_addr["198.18.0.3"]
    assert n3["config"] == {
        "neighbor-address": "198.18.0.3",
        "peer-as": ASN,
        "description": "n3",
        "auth-password": "pw",
    }
    assert n3["route-reflector"]["config"] == {
        "route-reflector-client": True,
        "route-reflector-cluster-id": "1.1.1.1",
    }
    assert "route-reflector" not in by_addr["198.18.0.2"]
    assert n3["timers"]["config"] == {"hold-time": 9, "keepalive-interval": 3, "connect-retry": 1}
    assert n3["transport"]["config"] == {"local-address": "198.18.0.1"}
    families = [a["config"]["afi-safi-name"] for a in n3["afi-safis"]]
    assert families == ["ipv4-unicast"]
    v6 = tomllib.loads(render_gobgp(v6_configs()["n1"]))
    assert {a["config"]["afi-safi-name"] for n in v6["neighbors"] for a in n["afi-safis"]} == {"ipv6-unicast"}


def test_gobgp_announce_commands() -> None:
    cfg = configs()["n4"]
    add = ["gobgp", "-u", "127.0.0.1", "-p", "50051", "global", "rib", "add"]
    assert gobgp_announce_commands(cfg, ("127.0.0.1", 50051)) == [
        [*add, "198.19.4.0/24", "nexthop", "198.18.0.4", "origin", "igp", "-a", "ipv4"],
        [*add, "2001:db8:4::/48", "nexthop", "::ffff:198.18.0.4", "origin", "igp", "-a", "ipv6"],
    ]
    assert [c[3] for c in gobgp_withdraw_commands(cfg)] == ["del", "del"]


def test_renderers_reject_nothing_for_a_speaker_without_neighbours() -> None:
    lonely = SpeakerConfig("n9", "198.18.0.9", "198.18.0.9", ASN, ())
    assert "protocol bgp" not in render_bird(lonely)
    assert "neighbor" not in render_frr(lonely)
    assert "neighbors" not in tomllib.loads(render_gobgp(lonely))


def test_neighbor_ident_is_a_valid_name_everywhere() -> None:
    n = Neighbor("rack-1.node", "198.18.0.7", ASN, Role.PEER)
    cfg = SpeakerConfig("n1", "198.18.0.1", "198.18.0.1", ASN, (n,))
    assert "protocol bgp n_rack_1_node {" in render_bird(cfg)


# -- Calico -------------------------------------------------------------------------------------


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Calico's selector syntax, for the subset the renderer emits: ``k == 'v'``, ``has(k)``, ``&&``."""
    ok = True
    for term in (t.strip() for t in selector.split("&&")):
        if m := re.fullmatch(r"has\(([\w./-]+)\)", term):
            ok &= m[1] in labels
        elif m := re.fullmatch(r"([\w./-]+) == '([^']*)'", term):
            ok &= labels.get(m[1]) == m[2]
        else:
            raise ValueError(f"selector term outside the evaluated subset: {term!r}")
    return ok


def test_selector_evaluator() -> None:
    labels = {"netkit.io/rr-n1": "client", "netkit.io/mesh": "x"}
    assert selector_matches("netkit.io/rr-n1 == 'client'", labels)
    assert not selector_matches("netkit.io/rr-n2 == 'client'", labels)
    assert selector_matches("has(netkit.io/mesh) && netkit.io/rr-n1 == 'client'", labels)
    assert not selector_matches("has(netkit.io/node) && netkit.io/rr-n1 == 'client'", labels)
    with pytest.raises(ValueError):
        selector_matches("netkit.io/mesh != 'x'", labels)


def calico_sessions(resources: list[dict[str, Any]]) -> dict[frozenset[str], str | None]:
    """What calico/node would run: {node pair: the end that reflects, None for plain iBGP, "both"
    for two reflectors with different cluster ids}. Pairs come from the BGPPeers as confd builds
    them (node selector x peer selector, both directions, no self-peering); kinds from the Nodes'
    cluster ids as Calico's BIRD template decides ``rr client``."""
    nodes = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Node"}
    labels = {
        n: {k: v for k, v in r["metadata"].get("labels", {}).items() if v is not None}
        for n, r in nodes.items()
    }
    cid = {n: r["spec"]["bgp"]["routeReflectorClusterID"] for n, r in nodes.items()}
    out: dict[frozenset[str], str | None] = {}
    for peer in (r for r in resources if r["kind"] == "BGPPeer"):
        spec = peer["spec"]
        assert set(spec) <= {"nodeSelector", "peerSelector", "password"}
        local = [n for n in nodes if selector_matches(spec["nodeSelector"], labels[n])]
        remote = [n for n in nodes if selector_matches(spec["peerSelector"], labels[n])]
        for a in local:
            for b in remote:
                if a == b:
                    continue
                if cid[a] and cid[b]:
                    kind: str | None = None if cid[a] == cid[b] else "both"
                else:
                    kind = a if cid[a] else b if cid[b] else None
                out[frozenset((a, b))] = kind
    return out


def planned(configs: Mapping[str, SpeakerConfig]) -> dict[frozenset[str], str | None]:
    return plan_sessions(configs)[0]


def check_calico(configs: Mapping[str, SpeakerConfig]) -> None:
    """Calico runs exactly the planned pairs, with the planned reflector on every session except
    those ``calico_kind_changes`` owns up to (and on those, what it says)."""
    resources = render_calico(configs, ASN)
    want, got = planned(configs), calico_sessions(resources)
    assert set(got) == set(want), (sorted(map(sorted, set(got) ^ set(want))),)
    changed = {tuple(line.split(":")[0].split(" -- ")): line for line in calico_kind_changes(configs)}
    for pair, kind in want.items():
        key = tuple(sorted(pair))
        if got[pair] == kind:
            assert key not in changed
            continue
        line = changed.pop(key)
        if got[pair] == "both":
            assert line.endswith("each reflects to the other")
            assert all(configs[n].is_reflector for n in pair)
        else:
            assert kind is None and line.endswith(f"Calico: {got[pair]} reflects")
    assert changed == {}


def test_calico_resources_shape() -> None:
    cfgs = configs(passwords={frozenset(("n1", "n3")): "pw", frozenset(("n1", "n4")): "pw"})
    res = render_calico(cfgs, ASN)
    kinds = [r["kind"] for r in res]
    assert kinds[0] == "BGPConfiguration" and kinds.count("Node") == 5 and kinds[-1] == "Secret"
    assert res[0]["metadata"] == {"name": "default"}
    assert res[0]["spec"] == {"nodeToNodeMeshEnabled": False, "asNumber": ASN}
    nodes = {r["metadata"]["name"]: r for r in res if r["kind"] == "Node"}
    assert nodes["n1"]["spec"]["bgp"]["routeReflectorClusterID"] == "1.1.1.1"
    assert nodes["n3"]["spec"]["bgp"]["routeReflectorClusterID"] == ""
    assert nodes["n3"]["metadata"]["labels"] == {"netkit.io/rr-n1": "client", "netkit.io/rr-n2": "client"}
    assert nodes["n4"]["metadata"]["labels"] == {"netkit.io/rr-n1": "client"}  # not every reflector
    peers = {r["metadata"]["name"]: r["spec"] for r in res if r["kind"] == "BGPPeer"}
    assert peers["netkit-rr-n1"]["nodeSelector"] == "netkit.io/rr-n1 == 'client'"
    assert peers["netkit-rr-n1"]["peerSelector"] == "netkit.io/reflector == 'n1'"
    assert peers["netkit-rr-n1"]["password"] == {
        "secretKeyRef": {"name": PASSWORD_SECRET, "key": "netkit-rr-n1"}
    }
    assert "password" not in peers["netkit-rr-n2"]
    assert res[-1]["stringData"] == {"netkit-rr-n1": "pw"}
    docs = list(yaml.safe_load_all(calico_yaml(res)))
    assert docs == res
    check_calico(cfgs)


def test_calico_reproduces_fixed_plans() -> None:
    check_calico(configs())
    # a full mesh (no reflector): one mesh BGPPeer
    mesh = [Session.peer(f"n{i}", f"n{j}") for i in range(1, 6) for j in range(i + 1, 6)]
    res = render_calico(configs(mesh), ASN)
    assert next(r["metadata"]["name"] for r in res if r["kind"] == "BGPPeer").startswith("netkit-mesh-")
    check_calico(configs(mesh))
    # plain sessions that are no complete group: one BGPPeer per session
    chain = [Session.peer("n1", "n2"), Session.peer("n2", "n3"), Session.rr("n4", "n5")]
    res = render_calico(configs(chain), ASN)
    names = sorted(r["metadata"]["name"] for r in res if r["kind"] == "BGPPeer")
    assert names == ["netkit-peer-n1-n2", "netkit-peer-n2-n3", "netkit-rr-n4"]
    check_calico(configs(chain))
    # reflectors sharing a cluster id peer plainly; with different ids Calico makes them mutual clients
    shared = speaker_configs(NODES, SESSIONS, {"n1": "9.9.9.9", "n2": "9.9.9.9"})
    assert calico_sessions(render_calico(shared, ASN))[frozenset(("n1", "n2"))] is None
    assert calico_kind_changes(shared) == []
    assert calico_sessions(render_calico(configs(), ASN))[frozenset(("n1", "n2"))] == "both"
    assert calico_kind_changes(configs()) == ["n1 -- n2: planned plain, Calico: each reflects to the other"]


@pytest.mark.parametrize("seed", range(60))
def test_calico_reproduces_random_plans(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(3, 14)
    names = [f"node-{i}" for i in range(n)]
    nodes = [
        NodeInfo(x, f"198.18.0.{i + 1}", ASN, f"198.18.0.{i + 1}", (f"198.19.{i}.0/24",))
        for i, x in enumerate(names)
    ]
    reflectors = rng.sample(names, rng.randint(0, min(4, n - 1)))
    others = [x for x in names if x not in reflectors]
    sessions = {Session.peer(a, b) for a in reflectors for b in reflectors if a < b}
    for c in others:
        for r in rng.sample(reflectors, rng.randint(1, len(reflectors))) if reflectors else []:
            sessions.add(Session.rr(r, c))
    for _ in range(rng.randint(0, 4)):  # stray plain sessions between non-reflectors
        a, b = rng.sample(others, 2) if len(others) >= 2 else (None, None)
        if a is not None and b is not None:
            sessions.add(Session.peer(a, b))
    shared = rng.random() < 0.5
    cids = {r: "10.0.0.1" if shared else f"10.0.0.{i + 2}" for i, r in enumerate(reflectors)}
    check_calico(speaker_configs(nodes, sessions, cids))


@pytest.mark.parametrize(
    "policy",
    [Policy(), Policy(cluster_id="shared", reflectors_per_domain=2), Policy(redundancy=1), Policy(levels=2)],
    ids=["per-reflector", "shared", "k1", "two-levels"],
)
def test_calico_reproduces_the_planners_plans(policy: Policy) -> None:
    inv = Inventory(tuple(inv_node(i) for i in range(30)), policy)
    p = plan(inv)
    check_calico(speakers_for(inv, p.sessions, p.cluster_ids))
    check_calico(speakers_for(inv, mesh_plan(inv).sessions, {}))


def inv_node(i: int) -> InvNode:
    return InvNode(f"n{i}", f"198.18.0.{i + 1}", f"198.18.0.{i + 1}", ASN, {"zone": f"z{i % 3}"}, None, ())


def test_calico_previous_plan_labels_removed_and_errors() -> None:
    old = configs()
    new = configs([s for s in SESSIONS if s != Session.rr("n2", "n3")])
    n3 = next(r for r in render_calico(new, ASN, previous=old) if r["metadata"]["name"] == "n3")
    assert n3["metadata"]["labels"] == {"netkit.io/rr-n1": "client", "netkit.io/rr-n2": None}
    assert "null" in calico_yaml([n3])
    other_as = render_calico(configs(), 65000)
    assert all(r["spec"]["bgp"]["asNumber"] == ASN for r in other_as if r["kind"] == "Node")
    alt_nodes = [replace(n, alt_address=f"198.18.1.{i}") for i, n in enumerate(NODES, 1)]
    with pytest.raises(ValueError, match="alternate"):
        render_calico(speaker_configs(alt_nodes, [Session.rr("n1", "n3", alt=True)], {}), ASN)
    with pytest.raises(ValueError, match="IPv4 cluster id"):
        render_calico(speaker_configs(NODES, SESSIONS, {"n1": "7"}), ASN)
    mixed = configs(passwords={frozenset(("n1", "n3")): "a", frozenset(("n1", "n4")): "b"})
    with pytest.raises(ValueError, match="different passwords"):
        render_calico(mixed, ASN)


def test_calico_long_names_hash_into_labels() -> None:
    long = "r" * 70
    nodes = [replace(NODES[0], name=long), NODES[2]]
    cfgs = speaker_configs(nodes, [Session.rr(long, "n3")], {})
    res = render_calico(cfgs, ASN)
    n3 = next(r for r in res if r["metadata"]["name"] == "n3")
    (key,) = n3["metadata"]["labels"]
    assert key.startswith("netkit.io/rr-h-") and len(key.split("/")[1]) <= 63
    check_calico(cfgs)
